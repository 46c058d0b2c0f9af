package cpu

import (
	"encoding/binary"

	"github.com/lqc-dev/lqc/quant"
)

// Portable dot products of one encoded weight row with one row of
// activations. Each reads the weight blocks in place (no dequantized
// copy) and accumulates integers within a block, float32 across blocks.
// The SIMD versions (dot_amd64.go) must give the same results; the tests
// compare them.

func f16(b []byte) float32 { return quant.FP16ToFP32(binary.LittleEndian.Uint16(b)) }

// dotF32x4Go sets out[t] to w's dot product with the four tokens'
// activations x[t·stride:t·stride+len(w)].
func dotF32x4Go(w, x []float32, stride int, out *[4]float32) {
	for t := range out {
		out[t] = dotF32Go(w, x[t*stride:t*stride+len(w)])
	}
}

func dotF32Go(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotF16Go and dotBF16Go multiply a row of 16-bit floats with float32
// activations, widening each weight as it is read.
func dotF16Go(w []byte, x []float32) float32 {
	var s float32
	for i, v := range x {
		s += f16(w[2*i:]) * v
	}
	return s
}

func dotBF16Go(w []byte, x []float32) float32 {
	var s float32
	for i, v := range x {
		s += quant.BF16ToFP32(binary.LittleEndian.Uint16(w[2*i:])) * v
	}
	return s
}

// lanes accumulates blocks as the SIMD kernels do: lane L holds the
// products of values 4L..4L+3 of every block, each block's integer lane
// sum converted to float, multiplied by the block's scale and added in.
type lanes [8]float32

func (l *lanes) add(isum *[8]int32, d float32) {
	for k := range l {
		l[k] += float32(float32(isum[k]) * d) // no fused multiply-add: the kernels do not fuse
	}
}

// sum reduces the lanes in the SIMD kernels' order.
func (l *lanes) sum() float32 {
	return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
}

// axpyGo adds a·x to y.
func axpyGo(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

func dotQ4_0Go(w []byte, x []q8Block) float32 {
	var acc lanes
	for b := range x {
		blk := w[18*b : 18*b+18]
		qs := blk[2:18]
		xb := &x[b]
		var isum [8]int32
		for j := range 16 {
			isum[j/4] += int32(int8(qs[j]&0x0F)-8) * int32(xb.qs[j])
			isum[4+j/4] += int32(int8(qs[j]>>4)-8) * int32(xb.qs[j+16])
		}
		acc.add(&isum, f16(blk)*xb.d)
	}
	return acc.sum()
}

// dotQ4_1Go and dotQ5_1Go: value = d·q + m, so each block adds
// d·dx·Σq·x in the lanes and m·Σx (the q8_1 block's s) apart.
func dotQ4_1Go(w []byte, x []q8Block) float32 {
	var acc lanes
	var mins float32
	for b := range x {
		blk := w[20*b : 20*b+20]
		qs := blk[4:20]
		xb := &x[b]
		var isum [8]int32
		for j := range 16 {
			isum[j/4] += int32(qs[j]&0x0F) * int32(xb.qs[j])
			isum[4+j/4] += int32(qs[j]>>4) * int32(xb.qs[j+16])
		}
		acc.add(&isum, f16(blk)*xb.d)
		mins += f16(blk[2:]) * xb.s
	}
	return acc.sum() + mins
}

func dotQ5_0Go(w []byte, x []q8Block) float32 {
	var acc lanes
	for b := range x {
		blk := w[22*b : 22*b+22]
		qh := binary.LittleEndian.Uint32(blk[2:])
		qs := blk[6:22]
		xb := &x[b]
		var isum [8]int32
		for j := range 16 {
			lo := int32(qs[j]&0x0F|byte(qh>>j<<4)&0x10) - 16
			hi := int32(qs[j]>>4|byte(qh>>(j+12))&0x10) - 16
			isum[j/4] += lo * int32(xb.qs[j])
			isum[4+j/4] += hi * int32(xb.qs[j+16])
		}
		acc.add(&isum, f16(blk)*xb.d)
	}
	return acc.sum()
}

func dotQ5_1Go(w []byte, x []q8Block) float32 {
	var acc lanes
	var mins float32
	for b := range x {
		blk := w[24*b : 24*b+24]
		qh := binary.LittleEndian.Uint32(blk[4:])
		qs := blk[8:24]
		xb := &x[b]
		var isum [8]int32
		for j := range 16 {
			lo := int32(qs[j]&0x0F | byte(qh>>j<<4)&0x10)
			hi := int32(qs[j]>>4 | byte(qh>>(j+12))&0x10)
			isum[j/4] += lo * int32(xb.qs[j])
			isum[4+j/4] += hi * int32(xb.qs[j+16])
		}
		acc.add(&isum, f16(blk)*xb.d)
		mins += f16(blk[2:]) * xb.s
	}
	return acc.sum() + mins
}

func dotQ8_0Go(w []byte, x []q8Block) float32 {
	var acc lanes
	for b := range x {
		blk := w[34*b : 34*b+34]
		xb := &x[b]
		var isum [8]int32
		for j := range 32 {
			isum[j/4] += int32(int8(blk[2+j])) * int32(xb.qs[j])
		}
		acc.add(&isum, f16(blk)*xb.d)
	}
	return acc.sum()
}

// dotQ6_KGo: a Q6_K super-block holds 16 groups of 16 values with int8
// scales; value = d·scale·(q-32).
func dotQ6_KGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	var g [16]int32
	for b := range x {
		blk := w[210*b : 210*b+210]
		q6KGroupSums(blk, &x[b], &g)
		sum = addQ6_K(sum, blk, &x[b], g[:])
	}
	return sum
}

// q6KGroupSums sets g to the sums of each 16-value group's levels times
// the activations, in the order of the group scales.
func q6KGroupSums(blk []byte, xb *q8KBlock, g *[16]int32) {
	ql, qh := blk[0:128], blk[128:192]
	*g = [16]int32{}
	for n := 0; n < 256; n += 128 {
		o, h, s := n/2, n/4, n/16
		for l := range 32 {
			q1 := int32(ql[o+l]&0xF|(qh[h+l]>>0&3)<<4) - 32
			q2 := int32(ql[o+l+32]&0xF|(qh[h+l]>>2&3)<<4) - 32
			q3 := int32(ql[o+l]>>4|(qh[h+l]>>4&3)<<4) - 32
			q4 := int32(ql[o+l+32]>>4|(qh[h+l]>>6&3)<<4) - 32
			is := s + l/16
			g[is] += q1 * int32(xb.qs[n+l])
			g[is+2] += q2 * int32(xb.qs[n+l+32])
			g[is+4] += q3 * int32(xb.qs[n+l+64])
			g[is+6] += q4 * int32(xb.qs[n+l+96])
		}
	}
}

// addQ6_K adds a Q6_K super-block's share to sum, given its group sums.
// The portable twin and the NEON kernels (which compute the group sums)
// share it, so both round, and fuse multiply-adds, alike.
func addQ6_K(sum float32, blk []byte, xb *q8KBlock, g []int32) float32 {
	sc := blk[192:208]
	var isum int32
	for k := range 16 {
		isum += int32(int8(sc[k])) * g[k]
	}
	return sum + f16(blk[208:])*xb.d*float32(isum)
}

// The other K-quants against 256-value q8 activations, as ggml's
// ggml_vec_dot_*_q8_K: integer sums per sub-block, scaled once per
// super-block.

// dotQ2_KGo: 16 sub-blocks of 16 values, 2-bit levels; scale and minimum
// (4 bits each) per sub-block.
func dotQ2_KGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	for b := range x {
		blk := w[84*b : 84*b+84]
		sc, q := blk[0:16], blk[16:80]
		xb := &x[b]
		var isum, msum int32
		for is := range 16 {
			shift := 2 * uint((is%8)/2)
			qs := q[32*(is/8)+16*(is%2):]
			var s int32
			for l := range 16 {
				s += int32(qs[l]>>shift&3) * int32(xb.qs[16*is+l])
			}
			isum += int32(sc[is]&0xF) * s
			msum += int32(sc[is]>>4) * int32(xb.bsums[is])
		}
		sum += xb.d*f16(blk[80:])*float32(isum) - xb.d*f16(blk[82:])*float32(msum)
	}
	return sum
}

// dotQ3_KGo: 16 sub-blocks of 16 values, 3-bit levels (two bits in qs, the
// third in hmask, clear meaning −4), signed 6-bit scales.
func dotQ3_KGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	for b := range x {
		blk := w[110*b : 110*b+110]
		hm, q, sc := blk[0:32], blk[32:96], blk[96:108]
		xb := &x[b]
		var isum int32
		for is := range 16 {
			shift := 2 * uint((is%8)/2)
			m := byte(1) << (4*(is/8) + (is%8)/2)
			half := 16 * (is % 2)
			qs := q[32*(is/8)+half:]
			var s int32
			for l := range 16 {
				v := int32(qs[l] >> shift & 3)
				if hm[half+l]&m == 0 {
					v -= 4
				}
				s += v * int32(xb.qs[16*is+l])
			}
			isum += int32(quant.ScaleQ3K(sc, is)) * s
		}
		sum += f16(blk[108:]) * xb.d * float32(isum)
	}
	return sum
}

// dotQ4_KGo: 8 sub-blocks of 32 values, 4-bit levels, 6-bit scales and
// minimums; the minimums meet the activations' 16-value sums.
func dotQ4_KGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	var sub [8]int32
	for b := range x {
		blk := w[144*b : 144*b+144]
		q4KSubSums(blk, &x[b], &sub)
		sum = addQ4_K(sum, blk, &x[b], sub[:])
	}
	return sum
}

// q4KSubSums sets sub to the sums of each 32-value sub-block's levels
// times the activations.
func q4KSubSums(blk []byte, xb *q8KBlock, sub *[8]int32) {
	q := blk[16:144]
	for j := range 4 {
		var lo, hi int32
		for l := range 32 {
			lo += int32(q[32*j+l]&0xF) * int32(xb.qs[64*j+l])
			hi += int32(q[32*j+l]>>4) * int32(xb.qs[64*j+32+l])
		}
		sub[2*j], sub[2*j+1] = lo, hi
	}
}

// addQ4_K adds a Q4_K super-block's share to sum, given its sub-block
// sums; shared by the portable twin and the NEON kernels as addQ6_K is.
func addQ4_K(sum float32, blk []byte, xb *q8KBlock, sub []int32) float32 {
	sc := blk[4:16]
	var isum, msum int32
	for j := range 4 {
		s1, m1 := quant.ScaleMinK4(2*j, sc)
		s2, m2 := quant.ScaleMinK4(2*j+1, sc)
		isum += int32(s1)*sub[2*j] + int32(s2)*sub[2*j+1]
		msum += int32(m1)*(int32(xb.bsums[4*j])+int32(xb.bsums[4*j+1])) + int32(m2)*(int32(xb.bsums[4*j+2])+int32(xb.bsums[4*j+3]))
	}
	return sum + (f16(blk[0:])*xb.d*float32(isum) - f16(blk[2:])*xb.d*float32(msum))
}

// dotQ5_KGo is dotQ4_KGo with a fifth bit per value in qh.
func dotQ5_KGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	for b := range x {
		blk := w[176*b : 176*b+176]
		sc, qh, q := blk[4:16], blk[16:48], blk[48:176]
		xb := &x[b]
		var isum, msum int32
		for j := range 4 {
			s1, m1 := quant.ScaleMinK4(2*j, sc)
			s2, m2 := quant.ScaleMinK4(2*j+1, sc)
			u1, u2 := byte(1)<<(2*j), byte(2)<<(2*j)
			var lo, hi int32
			for l := range 32 {
				v1, v2 := int32(q[32*j+l]&0xF), int32(q[32*j+l]>>4)
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				lo += v1 * int32(xb.qs[64*j+l])
				hi += v2 * int32(xb.qs[64*j+32+l])
			}
			isum += int32(s1)*lo + int32(s2)*hi
			msum += int32(m1)*(int32(xb.bsums[4*j])+int32(xb.bsums[4*j+1])) + int32(m2)*(int32(xb.bsums[4*j+2])+int32(xb.bsums[4*j+3]))
		}
		sum += f16(blk[0:])*xb.d*float32(isum) - f16(blk[2:])*xb.d*float32(msum)
	}
	return sum
}

var iq4Values = quant.IQ4NLValues()

// dotIQ4_XSGo: 8 sub-blocks of 32 values on the IQ4_NL grid, signed 6-bit
// scales.
func dotIQ4_XSGo(w []byte, x []q8KBlock) float32 {
	var sum float32
	for b := range x {
		blk := w[136*b : 136*b+136]
		sh := int32(blk[2]) | int32(blk[3])<<8
		xb := &x[b]
		var isum int32
		for ib := range 8 {
			ls := int32(blk[4+ib/2]>>(4*(ib%2))&0xF) | (sh>>(2*ib)&3)<<4
			qs := blk[8+16*ib : 8+16*ib+16]
			var s int32
			for j := range 16 {
				s += int32(iq4Values[qs[j]&0xF])*int32(xb.qs[32*ib+j]) + int32(iq4Values[qs[j]>>4])*int32(xb.qs[32*ib+16+j])
			}
			isum += (ls - 32) * s
		}
		sum += f16(blk[0:]) * xb.d * float32(isum)
	}
	return sum
}

// dotIQ4_NLGo: 32-value blocks on the IQ4_NL grid against q8 blocks.
func dotIQ4_NLGo(w []byte, x []q8Block) float32 {
	var acc lanes
	for b := range x {
		blk := w[18*b : 18*b+18]
		xb := &x[b]
		var isum [8]int32
		for j := range 16 {
			isum[j/4] += int32(iq4Values[blk[2+j]&0xF]) * int32(xb.qs[j])
			isum[4+j/4] += int32(iq4Values[blk[2+j]>>4]) * int32(xb.qs[j+16])
		}
		acc.add(&isum, f16(blk)*xb.d)
	}
	return acc.sum()
}
