//go:build amd64

package cpu

import (
	"math"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// Prompt processing for the block types on AVX-512 VNNI: sixteen
// weight rows are repacked side by side (a panel, one row per 32-bit lane)
// and multiplied with eight tokens at a time, so each weight byte loaded
// serves eight tokens and each activation byte sixteen rows. A row-major
// kernel (the wide path) reloads every token's activations for every row;
// the panel reaches about three times its multiply-adds per cycle.

// panelRows is how many weight rows a panel holds: one per 32-bit lane.
const panelRows = 16

// panelKernel is a generated micro-kernel: sixteen rows × tokens.
type panelKernel func(panel, x *byte, xStride, nb int, out *float32, outStride int)

// panelType is how one weight type enters the panel kernels.
type panelType struct {
	// step is how many values of a row one kernel step covers (a block,
	// or a pair of Q4_K's sub-blocks), and stepBytes what they take in a
	// panel of sixteen rows.
	step, stepBytes int
	// zero is what the panel's unsigned bytes are offset by from the
	// signed weights (q = w + zero) for the 32-value block types; the
	// kernels start each block's sum at −zero·Σx. The K-quants' weights
	// are unsigned with a minimum per sub-block instead.
	zero int32
	// one, four and eight are the kernels for that many tokens.
	one, four, eight panelKernel
	// pack writes a row of in values to lane `lane` of a panel.
	pack func(panel []byte, row []byte, lane, in int)
	// acts quantizes T tokens of activations (in values each) into the
	// layout the kernels read, actBytes for every 32 values.
	acts     func(b *Backend, x []float32, T, in int, zero int32) []byte
	actBytes int
}

// panelTypes are the types with panel kernels on this CPU (none without
// AVX-512 VNNI).
var panelTypes = map[quant.Type]*panelType{}

func init() {
	if !useAVX512 {
		return
	}
	quantizeQ8Sums = func(dst []q8SumBlock, x []float32) {
		if len(dst) > 0 {
			_ = x[32*len(dst)-1]
			quantizeQ8AVX512(&x[0], (*byte)(unsafe.Pointer(&dst[0])), len(dst))
		}
	}
	quantizeQ8K = func(dst []q8KBlock, x []float32) {
		if len(dst) > 0 {
			_ = x[256*len(dst)-1]
			quantizeQ8KAVX512(&x[0], (*byte)(unsafe.Pointer(&dst[0])), len(dst))
		}
	}
	const act = int(unsafe.Sizeof(q8SumBlock{}))
	panelTypes[quant.Q4_0] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 8, pack: packNibbles,
		one: gemmQ4_0x16x1, four: gemmQ4_0x16x4, eight: gemmQ4_0x16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.IQ4_NL] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 128, pack: packNibbles,
		one: gemmIQ4_NLx16x1, four: gemmIQ4_NLx16x4, eight: gemmIQ4_NLx16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.IQ4_XS] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 128, pack: packIQ4_XS,
		one: gemmIQ4_NLx16x1, four: gemmIQ4_NLx16x4, eight: gemmIQ4_NLx16x8, acts: panelActsQ8KZero, actBytes: act}
	panelTypes[quant.Q8_0] = &panelType{step: 32, stepBytes: 8*64 + 64, zero: 128, pack: packBytes,
		one: gemmQ8_0x16x1, four: gemmQ8_0x16x4, eight: gemmQ8_0x16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.Q4_K] = &panelType{step: 64, stepBytes: 8*64 + 4*64, pack: packQ4_K,
		one: gemmQ4_Kx16x1, four: gemmQ4_Kx16x4, eight: gemmQ4_Kx16x8, acts: panelActsQ8K, actBytes: act}
	panelTypes[quant.Q5_K] = &panelType{step: 64, stepBytes: 16*64 + 4*64, pack: packQ5_K,
		one: gemmQ5_Kx16x1, four: gemmQ5_Kx16x4, eight: gemmQ5_Kx16x8, acts: panelActsQ8K, actBytes: act}
	const act16 = int(unsafe.Sizeof(q8Sum16Block{}))
	panelTypes[quant.Q6_K] = &panelType{step: 128, stepBytes: 16*64 + 8*64 + 8*64, zero: 32, pack: packQ6_K,
		one: gemmQ6_Kx16x1, four: gemmQ6_Kx16x4, eight: gemmQ6_Kx16x8, acts: panelActs16Zero, actBytes: act16}
	panelTypes[quant.Q3_K] = &panelType{step: 128, stepBytes: 8*64 + 8*64 + 8*64, zero: 4, pack: packQ3_K,
		one: gemmQ3_Kx16x1, four: gemmQ3_Kx16x4, eight: gemmQ3_Kx16x8, acts: panelActs16Zero, actBytes: act16}
	panelTypes[quant.Q2_K] = &panelType{step: 128, stepBytes: 8*64 + 8*64 + 8*64, pack: packQ2_K,
		one: gemmQ2_Kx16x1, four: gemmQ2_Kx16x4, eight: gemmQ2_Kx16x8, acts: panelActs16Min, actBytes: act16}
}

// packNibbles lays out a row of Q4_0 or IQ4_NL blocks (f16 scale, 16 bytes
// of nibbles): chunk c of block b holds the row's nibble bytes 4c..4c+3
// (values 4c..4c+3 low, 16+4c.. high) at lane·4. Packing runs once per
// panel and prompt, so it copies words, bounds checked once.
func packNibbles(panel, row []byte, lane, in int) {
	const size, stride = 18, 4*64 + 64
	nb := in / 32
	_, _ = row[nb*size-1], panel[nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for range nb {
		for c := range 4 {
			*(*uint32)(unsafe.Add(dst, 64*c)) = *(*uint32)(unsafe.Add(src, 2+4*c))
		}
		*(*float32)(unsafe.Add(dst, 256)) = quant.FP16ToFP32(*(*uint16)(src))
		src, dst = unsafe.Add(src, size), unsafe.Add(dst, stride)
	}
}

// packIQ4_XS lays out a row of IQ4_XS super-blocks (f16 d, 16 bits of
// high scale bits, four bytes of low ones, eight sub-blocks of 16 bytes of
// nibbles in IQ4_NL's order) as packNibbles does IQ4_NL blocks, each
// sub-block with its scale d·(ls−32).
func packIQ4_XS(panel, row []byte, lane, in int) {
	const size, stride = 136, 4*64 + 64
	nb := in / 256
	_, _ = row[nb*size-1], panel[8*nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for b := range nb {
		blk := row[b*size : b*size+size]
		d, sh := quant.FP16ToFP32(*(*uint16)(src)), int32(blk[2])|int32(blk[3])<<8
		for ib := range 8 {
			for c := range 4 {
				*(*uint32)(unsafe.Add(dst, 64*c)) = *(*uint32)(unsafe.Add(src, 8+16*ib+4*c))
			}
			ls := int32(blk[4+ib/2]>>(4*(ib%2))&0xF) | (sh>>(2*ib)&3)<<4
			*(*float32)(unsafe.Add(dst, 256)) = d * float32(ls-32)
			dst = unsafe.Add(dst, stride)
		}
		src = unsafe.Add(src, size)
	}
}

// packBytes lays out a row of Q8_0 blocks (f16 scale, 32 signed bytes):
// chunk j holds values 4j..4j+3 plus 128.
func packBytes(panel, row []byte, lane, in int) {
	const size, stride = 34, 8*64 + 64
	nb := in / 32
	_, _ = row[nb*size-1], panel[nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for range nb {
		for j := range 8 {
			*(*uint32)(unsafe.Add(dst, 64*j)) = *(*uint32)(unsafe.Add(src, 2+4*j)) ^ 0x80808080
		}
		*(*float32)(unsafe.Add(dst, 512)) = quant.FP16ToFP32(*(*uint16)(src))
		src, dst = unsafe.Add(src, size), unsafe.Add(dst, stride)
	}
}

// packQ4_K lays out a row of Q4_K super-blocks (f16 d and dmin, twelve
// bytes of 6-bit scales and minimums, 128 bytes of nibbles): for each pair
// of sub-blocks, chunk j holds nibble bytes 4j..4j+3 of the pair's 32
// (low nibbles: the first sub-block's values 4j..4j+3, high: the
// second's), then each sub-block's d·scale and dmin·min.
func packQ4_K(panel, row []byte, lane, in int) { packQ45_K(panel, row, lane, in, false) }

// packQ5_K is packQ4_K for Q5_K (f16 d and dmin, scales[12], qh[32],
// qs[128]) with the pair's fifth bits after its nibbles: qh >> 2k, so
// that bit 0 of each byte is sub-block 2k's and bit 1 sub-block 2k+1's.
func packQ5_K(panel, row []byte, lane, in int) { packQ45_K(panel, row, lane, in, true) }

func packQ45_K(panel, row []byte, lane, in int, fifth bool) {
	size, chunks, qs := 144, 8, 16
	if fifth {
		size, chunks, qs = 176, 16, 48
	}
	stride := 64*chunks + 4*64
	nb := in / 256
	_, _ = row[nb*size-1], panel[4*nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for b := range nb {
		scales := row[b*size+4 : b*size+16]
		d, dmin := quant.FP16ToFP32(*(*uint16)(src)), quant.FP16ToFP32(*(*uint16)(unsafe.Add(src, 2)))
		for k := range 4 {
			for j := range 8 {
				*(*uint32)(unsafe.Add(dst, 64*j)) = *(*uint32)(unsafe.Add(src, qs+32*k+4*j))
				if fifth {
					*(*uint32)(unsafe.Add(dst, 512+64*j)) = *(*uint32)(unsafe.Add(src, 16+4*j)) >> (2 * k) & 0x03030303
				}
			}
			for h := range 2 {
				sc, m := quant.ScaleMinK4(2*k+h, scales)
				*(*float32)(unsafe.Add(dst, 64*chunks+128*h)) = d * float32(sc)
				*(*float32)(unsafe.Add(dst, 64*chunks+128*h+64)) = dmin * float32(m)
			}
			dst = unsafe.Add(dst, stride)
		}
		src = unsafe.Add(src, size)
	}
}

// packQ6_K lays out a row of Q6_K super-blocks (ql[128] low nibbles,
// qh[64] high bit pairs, sixteen int8 scales, f16 d): for each half, ql's
// 64 bytes as sixteen chunks, qh's 32 as eight, then d·scale of each
// sixteen values, in the order of ggml's values.
func packQ6_K(panel, row []byte, lane, in int) {
	const size, stride = 210, 16*64 + 8*64 + 8*64
	nb := in / 256
	_, _ = row[nb*size-1], panel[2*nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for range nb {
		d := quant.FP16ToFP32(*(*uint16)(unsafe.Add(src, 208)))
		for h := range 2 {
			for j := range 16 {
				*(*uint32)(unsafe.Add(dst, 64*j)) = *(*uint32)(unsafe.Add(src, 64*h+4*j))
			}
			for j := range 8 {
				*(*uint32)(unsafe.Add(dst, 1024+64*j)) = *(*uint32)(unsafe.Add(src, 128+32*h+4*j))
			}
			for i := range 8 {
				*(*float32)(unsafe.Add(dst, 1536+64*i)) = d * float32(*(*int8)(unsafe.Add(src, 192+8*h+i)))
			}
			dst = unsafe.Add(dst, stride)
		}
		src = unsafe.Add(src, size)
	}
}

// packQ3_K lays out a row of Q3_K super-blocks (hmask[32], qs[64] of
// 2-bit values, twelve bytes of 6-bit scales, f16 d): for each half, its
// 32 bytes of qs as eight chunks, hmask shifted right by 4·half so that
// bit g is group g's as eight more, then d·scale of each sixteen values.
func packQ3_K(panel, row []byte, lane, in int) {
	const size, stride = 110, 8*64 + 8*64 + 8*64
	nb := in / 256
	_, _ = row[nb*size-1], panel[2*nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for b := range nb {
		scales := row[b*size+96 : b*size+108]
		d := quant.FP16ToFP32(*(*uint16)(unsafe.Add(src, 108)))
		for h := range 2 {
			for j := range 8 {
				*(*uint32)(unsafe.Add(dst, 64*j)) = *(*uint32)(unsafe.Add(src, 32+32*h+4*j))
				*(*uint32)(unsafe.Add(dst, 512+64*j)) = *(*uint32)(unsafe.Add(src, 4*j)) >> (4 * h) & 0x0F0F0F0F
			}
			for i := range 8 {
				*(*float32)(unsafe.Add(dst, 1024+64*i)) = d * float32(quant.ScaleQ3K(scales, 8*h+i))
			}
			dst = unsafe.Add(dst, stride)
		}
		src = unsafe.Add(src, size)
	}
}

// packQ2_K lays out a row of Q2_K super-blocks (sixteen bytes of 4-bit
// scales and minimums, qs[64] of 2-bit values, f16 d and dmin): for each
// half, its 32 bytes of qs as eight chunks, then d·scale and dmin·min of
// each sixteen values.
func packQ2_K(panel, row []byte, lane, in int) {
	const size, stride = 84, 8*64 + 8*64 + 8*64
	nb := in / 256
	_, _ = row[nb*size-1], panel[2*nb*stride-1]
	src, dst := unsafe.Pointer(&row[0]), unsafe.Pointer(&panel[4*lane])
	for range nb {
		d, dmin := quant.FP16ToFP32(*(*uint16)(unsafe.Add(src, 80))), quant.FP16ToFP32(*(*uint16)(unsafe.Add(src, 82)))
		for h := range 2 {
			for j := range 8 {
				*(*uint32)(unsafe.Add(dst, 64*j)) = *(*uint32)(unsafe.Add(src, 16+32*h+4*j))
			}
			for i := range 8 {
				sc := *(*uint8)(unsafe.Add(src, 8*h+i))
				*(*float32)(unsafe.Add(dst, 512+64*i)) = d * float32(sc&0xF)
				*(*float32)(unsafe.Add(dst, 1024+64*i)) = dmin * float32(sc>>4)
			}
			dst = unsafe.Add(dst, stride)
		}
		src = unsafe.Add(src, size)
	}
}

// panelActsQ8 quantizes activations for the 32-value block types: the
// blocks of quantizeQ8, with −zero·Σq beside each scale, for weights
// offset by zero.
func panelActsQ8(b *Backend, x []float32, T, in int, zero int32) []byte {
	nb := in / 32
	xq := make([]q8SumBlock, T*nb)
	b.pool.parallel(T, grainFor(in, 1), func(lo, hi int) {
		quantizeQ8Sums(xq[lo*nb:hi*nb], x[lo*in:hi*in])
		for i := lo * nb; i < hi*nb; i++ {
			xq[i].aux = uint32(-zero * int32(xq[i].aux))
		}
	})
	return asBytes(xq)
}

// quantizeQ8KTokens quantizes T tokens as the K-quants' row kernels take
// them (ggml's Q8_K).
func quantizeQ8KTokens(b *Backend, x []float32, T, in int) []q8KBlock {
	nb := in / 256
	xq := make([]q8KBlock, T*nb)
	b.pool.parallel(T, grainFor(in, 1), func(lo, hi int) {
		quantizeQ8K(xq[lo*nb:hi*nb], x[lo*in:hi*in])
	})
	return xq
}

// asBytes is a slice's memory as bytes.
func asBytes[E any](s []E) []byte {
	var e E
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(e)))
}

// panelActsQ8KZero quantizes activations as Q8_K (ggml's for IQ4_XS) and
// splits them into 32-value blocks as panelActsQ8 lays them out: the
// super-block's scale and −zero·Σq of the block.
func panelActsQ8KZero(b *Backend, x []float32, T, in int, zero int32) []byte {
	return splitQ8K(quantizeQ8KTokens(b, x, T, in), func(_ float32, sum int32) uint32 { return uint32(-zero * sum) })
}

// panelActsQ8K quantizes activations as Q8_K and splits them into
// 32-value sub-blocks, each with the super-block's scale and its own dx·Σq
// (as float32 bits) for the weights' minimums.
func panelActsQ8K(b *Backend, x []float32, T, in int, _ int32) []byte {
	return splitQ8K(quantizeQ8KTokens(b, x, T, in), func(d float32, sum int32) uint32 { return math.Float32bits(d * float32(sum)) })
}

// splitQ8K splits Q8_K blocks into 32-value q8SumBlocks with aux(d, Σq)
// (Σq from ggml's sums of sixteen).
func splitQ8K(xq []q8KBlock, aux func(d float32, sum int32) uint32) []byte {
	out := make([]q8SumBlock, 8*len(xq))
	for i := range xq {
		x := &xq[i]
		for s := range 8 {
			sum := int32(x.bsums[2*s]) + int32(x.bsums[2*s+1])
			out[8*i+s] = q8SumBlock{d: x.d, aux: aux(x.d, sum), qs: [32]int8(x.qs[32*s : 32*s+32])}
		}
	}
	return asBytes(out)
}

// q8Sum16Block is 32 values of activations for the kernels with a scale
// per sixteen values (Q6_K, Q3_K, Q2_K): the super-block's scale, for each
// sixteen −zero·Σq as int32 or d·Σq as float32 bits, and the values.
type q8Sum16Block struct {
	d   float32
	aux [2]uint32
	_   uint32
	qs  [32]int8
}

// panelActs16Zero lays out Q8_K activations for weights offset by zero.
func panelActs16Zero(b *Backend, x []float32, T, in int, zero int32) []byte {
	return split16(quantizeQ8KTokens(b, x, T, in), func(_ float32, sum int16) uint32 { return uint32(-zero * int32(sum)) })
}

// panelActs16Min lays out Q8_K activations for weights with minimums.
func panelActs16Min(b *Backend, x []float32, T, in int, _ int32) []byte {
	return split16(quantizeQ8KTokens(b, x, T, in), func(d float32, sum int16) uint32 { return math.Float32bits(d * float32(sum)) })
}

// split16 splits Q8_K blocks into q8Sum16Blocks with aux(d, Σq) of each
// sixteen values (ggml's sums).
func split16(xq []q8KBlock, aux func(d float32, sum int16) uint32) []byte {
	out := make([]q8Sum16Block, 8*len(xq))
	for i := range xq {
		x := &xq[i]
		for s := range 8 {
			a := &out[8*i+s]
			a.d, a.qs = x.d, [32]int8(x.qs[32*s:32*s+32])
			a.aux = [2]uint32{aux(x.d, x.bsums[2*s]), aux(x.d, x.bsums[2*s+1])}
		}
	}
	return asBytes(out)
}

// linearPanels computes out[t, o] for every token and the weight rows of
// panels [lo, hi) (sixteen rows each): each panel is packed once, then
// multiplied with the tokens eight, four and one at a time.
func linearPanels(pt *panelType, w *weight, out []float32, xa []byte, T, lo, hi int) {
	nout, in := w.rows, w.rowLen
	steps, xStride := in/pt.step, in/32*pt.actBytes
	panel := make([]byte, steps*pt.stepBytes)
	var tile [8 * panelRows]float32
	for p := lo; p < hi; p++ {
		r0 := p * panelRows
		rows := min(panelRows, nout-r0)
		if rows < panelRows {
			clear(panel)
		}
		for lane := range rows {
			pt.pack(panel, w.row(r0+lane), lane, in)
		}
		for t := 0; t < T; {
			k, kern := 1, pt.one
			switch {
			case t+8 <= T:
				k, kern = 8, pt.eight
			case t+4 <= T:
				k, kern = 4, pt.four
			}
			_ = xa[(t+k)*xStride-1]
			x := &xa[t*xStride]
			if rows == panelRows {
				_ = out[(t+k-1)*nout+r0+panelRows-1]
				kern(&panel[0], x, xStride, steps, &out[t*nout+r0], 4*nout)
			} else {
				kern(&panel[0], x, xStride, steps, &tile[0], 4*panelRows)
				for j := range k {
					copy(out[(t+j)*nout+r0:(t+j)*nout+r0+rows], tile[j*panelRows:])
				}
			}
			t += k
		}
	}
}

// linearPanel runs a prompt's product through the panel kernels where the
// weight type has them, and reports whether it did; x holds the float32
// activations of T tokens.
func (b *Backend) linearPanel(w *weight, out, x []float32, T int) bool {
	pt := panelTypes[w.typ]
	if pt == nil || T < 4 {
		return false
	}
	xa := pt.acts(b, x, T, w.rowLen, pt.zero)
	panels := (w.rows + panelRows - 1) / panelRows
	b.pool.parallel(panels, grainFor(panelRows*w.rowLen*T/16, 1), func(lo, hi int) {
		linearPanels(pt, w, out, xa, T, lo, hi)
	})
	return true
}
