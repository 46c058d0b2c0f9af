package quant

import "math"

// kvaluesIQ4NL are the sixteen non-linear levels of IQ4_NL and IQ4_XS.
var kvaluesIQ4NL = [16]int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

// bestIndexInt8 is the index of the level nearest x (ties to the upper
// one), by bisection as in the llama.cpp that made the golden files.
func bestIndexInt8(val *[16]int8, x float32) int {
	if x <= float32(val[0]) {
		return 0
	}
	if x >= float32(val[15]) {
		return 15
	}
	ml, mu := 0, 15
	for mu-ml > 1 {
		mav := (ml + mu) / 2
		if x < float32(val[mav]) {
			mu = mav
		} else {
			ml = mav
		}
	}
	if x-float32(val[mu-1]) < float32(val[mu])-x {
		return mu - 1
	}
	return mu
}

func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// iq4Block quantizes one super-block of superSize values (32 for IQ4_NL,
// 256 for IQ4_XS) in 32-value blocks to the non-linear levels, as
// llama.cpp's quantize_row_iq4_nl_impl does with ntry 7: each value is
// weighted by x², or with importance weights qw by qw·sqrt(σ² + x²). It
// returns the f16 super-block scale bits; for IQ4_XS it also fills the
// 6-bit block scales.
func iq4Block(x []float32, q4 []byte, scalesH *uint16, scalesL []byte, qw []float32) uint16 {
	const ntry = 7
	superSize := len(x)
	var L [qkK]uint8
	var scales [8]float32
	var weight [32]float32
	var sigma2 float32
	if qw != nil {
		for _, v := range x {
			sigma2 += float32(v * v)
		}
		sigma2 = float32(sigma2 * (2 / float32(superSize)))
	}
	clear(q4[:superSize/2])
	var maxScale, amaxScale float32
	v0 := float32(kvaluesIQ4NL[0])
	for ib := 0; ib < superSize/32; ib++ {
		xb := x[32*ib : 32*ib+32]
		Lb := L[32*ib : 32*ib+32]
		for j, v := range xb {
			if qw != nil {
				weight[j] = float32(qw[32*ib+j] * sqrt32(sigma2+float32(v*v)))
			} else {
				weight[j] = float32(v * v)
			}
		}
		amax, mx := amaxSigned(xb)
		if amax < groupMaxEps {
			scales[ib] = 0
			continue
		}
		d := -mx / v0
		id := 1 / d
		var sumqx, sumq2 float32
		for j, v := range xb {
			l := bestIndexInt8(&kvaluesIQ4NL, float32(id*v))
			Lb[j] = uint8(l)
			q := float32(kvaluesIQ4NL[l])
			w := weight[j]
			sumqx += float32(float32(w*q) * v)
			sumq2 += float32(float32(w*q) * q)
		}
		d = sumqx / sumq2
		best := float32(d * sumqx)
		for itry := -ntry; itry <= ntry; itry++ {
			id = float32(itry+int(kvaluesIQ4NL[0])) / mx
			sumqx, sumq2 = 0, 0
			for j, v := range xb {
				l := bestIndexInt8(&kvaluesIQ4NL, float32(id*v))
				q := float32(kvaluesIQ4NL[l])
				w := weight[j]
				sumqx += float32(float32(w*q) * v)
				sumq2 += float32(float32(w*q) * q)
			}
			if sumq2 > 0 && float32(sumqx*sumqx) > float32(best*sumq2) {
				d = sumqx / sumq2
				best = float32(d * sumqx)
			}
		}
		scales[ib] = d
		if a := abs32(d); a > amaxScale {
			amaxScale, maxScale = a, d
		}
	}
	var dh uint16
	if superSize > 32 {
		*scalesH = 0
		d := -maxScale / 32
		dh = FP32ToFP16(d)
		var id float32
		if d != 0 {
			id = 1 / d
		}
		for ib := 0; ib < superSize/32; ib++ {
			l := clampInt(nearestInt(float32(id*scales[ib])), -32, 31)
			dl := float32(d * float32(l))
			var idl float32
			if dl != 0 {
				idl = 1 / dl
			}
			for j, v := range x[32*ib : 32*ib+32] {
				L[32*ib+j] = uint8(bestIndexInt8(&kvaluesIQ4NL, float32(idl*v)))
			}
			l += 32
			lo, hi := uint8(l&0xF), uint16(l>>4)
			if ib%2 == 0 {
				scalesL[ib/2] = lo
			} else {
				scalesL[ib/2] |= lo << 4
			}
			*scalesH |= hi << (2 * (ib % 8))
		}
	} else {
		dh = FP32ToFP16(scales[0])
		var id float32
		if scales[0] != 0 {
			id = 1 / scales[0]
		}
		for j, v := range x {
			L[j] = uint8(bestIndexInt8(&kvaluesIQ4NL, float32(id*v)))
		}
	}
	packIQ4(q4, L[:superSize])
	return dh
}

// packIQ4 stores 4-bit table indices, 32 values per 16 bytes: the first
// sixteen in the low nibbles.
func packIQ4(q4 []byte, L []uint8) {
	for i := 0; i < len(L)/32; i++ {
		for j := range 16 {
			q4[16*i+j] = L[32*i+j] | L[32*i+16+j]<<4
		}
	}
}

// iq4_nl: {f16 d; uint8 qs[16]}, value = d·kvalues[q]
type iq4_NLCodec struct{}

func (iq4_NLCodec) encode(dst []byte, src []float32) {
	var unusedH uint16
	for ; len(src) > 0; src, dst = src[32:], dst[18:] {
		dh := iq4Block(src[:32], dst[2:18], &unusedH, nil, nil)
		dst[0], dst[1] = byte(dh), byte(dh>>8)
	}
}

func (iq4_NLCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[32:], src[18:] {
		d := getF16(src)
		for j := range 16 {
			q := src[2+j]
			dst[j] = d * float32(kvaluesIQ4NL[q&0xF])
			dst[j+16] = d * float32(kvaluesIQ4NL[q>>4])
		}
	}
}

// iq4_xs: {f16 d; uint16 scales_h; uint8 scales_l[4]; uint8 qs[128]}
type iq4_XSCodec struct{}

func (iq4_XSCodec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qkK:], dst[136:] {
		var sh uint16
		dh := iq4Block(src[:qkK], dst[8:136], &sh, dst[4:8], nil)
		dst[0], dst[1] = byte(dh), byte(dh>>8)
		dst[2], dst[3] = byte(sh), byte(sh>>8)
	}
}

func (iq4_XSCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[136:] {
		d := getF16(src)
		sh := uint16(src[2]) | uint16(src[3])<<8
		for ib := range 8 {
			ls := int(src[4+ib/2]>>(4*(ib%2))&0xF) | int(sh>>(2*ib)&3)<<4
			dl := float32(d * float32(ls-32))
			qs := src[8+16*ib : 8+16*ib+16]
			for j := range 16 {
				dst[32*ib+j] = dl * float32(kvaluesIQ4NL[qs[j]&0xF])
				dst[32*ib+j+16] = dl * float32(kvaluesIQ4NL[qs[j]>>4])
			}
		}
	}
}
