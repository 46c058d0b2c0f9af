//go:build amd64

package cpu

import (
	"math"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// Prompt processing for the 32-value block types on AVX-512 VNNI: sixteen
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
	// acts lays out quantized activations ([]q8Block or []q8KBlock) as
	// the kernels read them, actBytes for every 32 values.
	acts     func(xq any, zero int32) []byte
	actBytes int
}

// panelTypes are the types with panel kernels on this CPU (none without
// AVX-512 VNNI).
var panelTypes = map[quant.Type]*panelType{}

func init() {
	if !useAVX512 {
		return
	}
	const act = int(unsafe.Sizeof(panelAct{}))
	panelTypes[quant.Q4_0] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 8, pack: packNibbles,
		one: gemmQ4_0x16x1, four: gemmQ4_0x16x4, eight: gemmQ4_0x16x8, acts: toPanelAct, actBytes: act}
	panelTypes[quant.IQ4_NL] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 128, pack: packNibbles,
		one: gemmIQ4_NLx16x1, four: gemmIQ4_NLx16x4, eight: gemmIQ4_NLx16x8, acts: toPanelAct, actBytes: act}
	panelTypes[quant.Q8_0] = &panelType{step: 32, stepBytes: 8*64 + 64, zero: 128, pack: packBytes,
		one: gemmQ8_0x16x1, four: gemmQ8_0x16x4, eight: gemmQ8_0x16x8, acts: toPanelAct, actBytes: act}
	panelTypes[quant.Q4_K] = &panelType{step: 64, stepBytes: 8*64 + 4*64, pack: packQ4_K,
		one: gemmQ4_Kx16x1, four: gemmQ4_Kx16x4, eight: gemmQ4_Kx16x8, acts: toPanelActK, actBytes: act}
	panelTypes[quant.Q5_K] = &panelType{step: 64, stepBytes: 16*64 + 4*64, pack: packQ5_K,
		one: gemmQ5_Kx16x1, four: gemmQ5_Kx16x4, eight: gemmQ5_Kx16x8, acts: toPanelActK, actBytes: act}
	panelTypes[quant.Q6_K] = &panelType{step: 128, stepBytes: 16*64 + 8*64 + 8*64, pack: packQ6_K,
		one: gemmQ6_Kx16x1, four: gemmQ6_Kx16x4, eight: gemmQ6_Kx16x8, acts: toPanelActQ6_K, actBytes: int(unsafe.Sizeof(panelActQ6_K{}))}
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

// panelAct is 32 values of a token's activations as the panel kernels
// read them (40 bytes, like q8Block): the scale, aux, and the 32 signed
// values. aux is −zero·Σx as an int32 for the 32-value block types, and
// the float32 bits of d·Σx for the K-quants.
type panelAct struct {
	d   float32
	aux uint32
	qs  [32]int8
}

// toPanelAct converts quantized activations ([]q8Block) for weights
// offset by zero.
func toPanelAct(q any, zero int32) []byte {
	xq := q.([]q8Block)
	out := make([]panelAct, len(xq))
	for i := range xq {
		var sum int32
		for _, q := range xq[i].qs {
			sum += int32(q)
		}
		out[i] = panelAct{d: xq[i].d, aux: uint32(-zero * sum), qs: xq[i].qs}
	}
	return asBytes(out)
}

// asBytes is a slice's memory as bytes.
func asBytes[E any](s []E) []byte {
	var e E
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(e)))
}

// toPanelActK splits Q8_K activations into 32-value sub-blocks, each with
// the super-block's scale and its own dx·Σx (from ggml's sums of sixteen).
func toPanelActK(q any, _ int32) []byte {
	xq := q.([]q8KBlock)
	out := make([]panelAct, 8*len(xq))
	for i := range xq {
		x := &xq[i]
		for s := range 8 {
			sum := int32(x.bsums[2*s]) + int32(x.bsums[2*s+1])
			out[8*i+s] = panelAct{d: x.d, aux: math.Float32bits(x.d * float32(sum)), qs: [32]int8(x.qs[32*s : 32*s+32])}
		}
	}
	return asBytes(out)
}

// panelActQ6_K is 32 values of activations for the Q6_K kernels: the
// super-block's scale, −32·Σx of each sixteen (the weights' offset), and
// the values.
type panelActQ6_K struct {
	d    float32
	corr [2]int32
	_    int32
	qs   [32]int8
}

func toPanelActQ6_K(q any, _ int32) []byte {
	xq := q.([]q8KBlock)
	out := make([]panelActQ6_K, 8*len(xq))
	for i := range xq {
		x := &xq[i]
		for s := range 8 {
			a := &out[8*i+s]
			a.d, a.qs = x.d, [32]int8(x.qs[32*s:32*s+32])
			a.corr = [2]int32{-32 * int32(x.bsums[2*s]), -32 * int32(x.bsums[2*s+1])}
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
// weight type has them, and reports whether it did; xq holds the
// activations the type takes, []q8Block or []q8KBlock.
func (b *Backend) linearPanel(w *weight, out []float32, xq any, T int) bool {
	pt := panelTypes[w.typ]
	if pt == nil || T < 4 {
		return false
	}
	xa := pt.acts(xq, pt.zero)
	panels := (w.rows + panelRows - 1) / panelRows
	b.pool.parallel(panels, grainFor(panelRows*w.rowLen*T/16, 1), func(lo, hi int) {
		linearPanels(pt, w, out, xa, T, lo, hi)
	})
	return true
}
