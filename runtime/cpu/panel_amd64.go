//go:build amd64

package cpu

import (
	"math"
	"unsafe"

	xcpu "golang.org/x/sys/cpu"

	"github.com/lqc-dev/lqc/quant"
)

// Prompt processing for the block types on AVX-512 VNNI: sixteen
// weight rows are repacked side by side (a panel, one row per 32-bit lane)
// and multiplied with eight tokens at a time, so each weight byte loaded
// serves eight tokens and each activation byte sixteen rows. A row-major
// kernel (the wide path) reloads every token's activations for every row;
// the panel reaches about three times its multiply-adds per cycle.

// panelMinTokens is the fewest tokens a product takes the panel kernels
// for: packing a panel costs about what multiplying it with a few tokens
// does (BenchmarkPanelTokens, 2048×2048: at 8 tokens the row kernels are
// as fast for Q4_0 and faster for the K-quants; at 12 the panels win).
var panelMinTokens = 12

// keptPanelMinTokens is the fewest tokens a product takes kept panels for
// (KeepPanels): without the packing, two tokens already go faster than
// row by row.
var keptPanelMinTokens = 2

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
	// chunks lists where a row's bytes go in a panel (panel_pack_amd64.go)
	// and scales writes a row's scales (and minimums) to its lane.
	chunks func(in int) []panelChunk
	scales func(panel, row []byte, lane, in int)
	// acts quantizes T tokens of activations (in values each) into the
	// layout the kernels read, actBytes for every 32 values.
	acts     func(b *Backend, x []float32, T, in int, zero int32) []byte
	actBytes int
	// unkept panels are packed for every product, even with KeepPanels:
	// they take as much memory as the weights.
	unkept bool
	// exact kernels take the activations in float32, so they serve
	// training's exact products too.
	exact bool
}

// panelTypes are the types with panel kernels on this CPU (none without
// AVX-512 VNNI).
var panelTypes = map[quant.Type]*panelType{}

func init() {
	if !useAVX512 {
		return
	}
	const act = int(unsafe.Sizeof(q8SumBlock{}))
	panelTypes[quant.Q4_0] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 8, chunks: chunksNibbles, scales: scalesBlocks,
		one: gemmQ4_0x16x1, four: gemmQ4_0x16x4, eight: gemmQ4_0x16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.IQ4_NL] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 128, chunks: chunksNibbles, scales: scalesBlocks,
		one: gemmIQ4_NLx16x1, four: gemmIQ4_NLx16x4, eight: gemmIQ4_NLx16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.IQ4_XS] = &panelType{step: 32, stepBytes: 4*64 + 64, zero: 128, chunks: chunksIQ4_XS, scales: scalesIQ4_XS,
		one: gemmIQ4_NLx16x1, four: gemmIQ4_NLx16x4, eight: gemmIQ4_NLx16x8, acts: panelActsQ8KZero, actBytes: act}
	panelTypes[quant.Q8_0] = &panelType{step: 32, stepBytes: 8*64 + 64, zero: 128, chunks: chunksBytes, scales: scalesBlocks,
		one: gemmQ8_0x16x1, four: gemmQ8_0x16x4, eight: gemmQ8_0x16x8, acts: panelActsQ8, actBytes: act}
	panelTypes[quant.Q4_K] = &panelType{step: 64, stepBytes: 8*64 + 4*64, chunks: chunksQ4_K, scales: scalesQ4_K,
		one: gemmQ4_Kx16x1, four: gemmQ4_Kx16x4, eight: gemmQ4_Kx16x8, acts: panelActsQ8K, actBytes: act}
	panelTypes[quant.Q5_K] = &panelType{step: 64, stepBytes: 16*64 + 4*64, chunks: chunksQ5_K, scales: scalesQ5_K,
		one: gemmQ5_Kx16x1, four: gemmQ5_Kx16x4, eight: gemmQ5_Kx16x8, acts: panelActsQ8K, actBytes: act}
	const act16 = int(unsafe.Sizeof(q8Sum16Block{}))
	panelTypes[quant.Q6_K] = &panelType{step: 128, stepBytes: 16*64 + 8*64 + 8*64, zero: 32, chunks: chunksQ6_K, scales: scalesQ6_K,
		one: gemmQ6_Kx16x1, four: gemmQ6_Kx16x4, eight: gemmQ6_Kx16x8, acts: panelActs16Zero, actBytes: act16}
	panelTypes[quant.Q3_K] = &panelType{step: 128, stepBytes: 8*64 + 8*64 + 8*64, zero: 4, chunks: chunksQ3_K, scales: scalesQ3_K,
		one: gemmQ3_Kx16x1, four: gemmQ3_Kx16x4, eight: gemmQ3_Kx16x8, acts: panelActs16Zero, actBytes: act16}
	panelTypes[quant.Q2_K] = &panelType{step: 128, stepBytes: 8*64 + 8*64 + 8*64, chunks: chunksQ2_K, scales: scalesQ2_K,
		one: gemmQ2_Kx16x1, four: gemmQ2_Kx16x4, eight: gemmQ2_Kx16x8, acts: panelActs16Min, actBytes: act16}
	noScales := func([]byte, []byte, int, int) {}
	panelTypes[quant.F16] = &panelType{step: 32, stepBytes: 16 * 64, chunks: chunksPairs, scales: noScales,
		one: gemmF16x16x1, four: gemmF16x16x4, eight: gemmF16x16x8, acts: panelActsF32, actBytes: 128, unkept: true, exact: true}
	if useAVX512BF16 {
		panelTypes[quant.BF16] = &panelType{step: 32, stepBytes: 16 * 64, chunks: chunksPairs, scales: noScales,
			one: gemmBF16x16x1, four: gemmBF16x16x4, eight: gemmBF16x16x8, acts: panelActsBF16, actBytes: 64, unkept: true}
	}
}

// panelActsF32 is the float32 activations as they are (F16's kernels).
func panelActsF32(_ *Backend, x []float32, T, in int, _ int32) []byte { return asBytes(x[:T*in]) }

// useAVX512BF16: BF16 prompts multiply with VDPBF16PS, their activations
// rounded to bfloat16 (as llama.cpp's tinyBLAS does on such CPUs), where
// the CPU has AVX512-BF16 (Zen 4 and later, Cooper Lake, Sapphire Rapids).
var useAVX512BF16 = useAVX512 && xcpu.X86.HasAVX512BF16

// chunksPairs: F16 and BF16 rows; 32 values a step, vector p of step s
// holding values 32s+2p and 32s+2p+1, a row's dword as it is.
func chunksPairs(in int) (p []panelChunk) {
	for j := range in / 2 {
		p = append(p, copyChunk(4*j, 64*j))
	}
	return p
}

// panelActsBF16 rounds activations to bfloat16 (to nearest, ties to even).
func panelActsBF16(b *Backend, x []float32, T, in int, _ int32) []byte {
	return asBytes(quantizeTokens(b, x, T, in, 32, func(dst [][32]uint16, x []float32) {
		for i := range dst {
			for j, v := range x[32*i : 32*i+32] {
				dst[i][j] = quant.FP32ToBF16(v)
			}
		}
	}))
}

// panelActsQ8 quantizes activations for the 32-value block types: the
// blocks of quantizeQ8, with −zero·Σq beside each scale, for weights
// offset by zero.
func panelActsQ8(b *Backend, x []float32, T, in int, zero int32) []byte {
	xq := quantizeTokens(b, x, T, in, 32, func(dst []q8SumBlock, x []float32) {
		quantizeQ8Sums(dst, x)
		for i := range dst {
			dst[i].aux = uint32(-zero * int32(dst[i].aux))
		}
	})
	return asBytes(xq)
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
	return splitQ8K(quantizeTokens(b, x, T, in, 256, quantizeQ8K), offsetAux(zero))
}

// panelActsQ8K quantizes activations as Q8_K and splits them into
// 32-value sub-blocks, each with the super-block's scale and its own dx·Σq
// (as float32 bits) for the weights' minimums.
func panelActsQ8K(b *Backend, x []float32, T, in int, _ int32) []byte {
	return splitQ8K(quantizeTokens(b, x, T, in, 256, quantizeQ8K), minAux)
}

// offsetAux is the aux of weights offset by zero: −zero·Σq as an int32.
func offsetAux(zero int32) func(float32, int32) uint32 {
	return func(_ float32, sum int32) uint32 { return uint32(-zero * sum) }
}

// minAux is the aux of weights with minimums: d·Σq as float32 bits.
func minAux(d float32, sum int32) uint32 { return math.Float32bits(d * float32(sum)) }

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
	return split16(quantizeTokens(b, x, T, in, 256, quantizeQ8K), offsetAux(zero))
}

// panelActs16Min lays out Q8_K activations for weights with minimums.
func panelActs16Min(b *Backend, x []float32, T, in int, _ int32) []byte {
	return split16(quantizeTokens(b, x, T, in, 256, quantizeQ8K), minAux)
}

// split16 splits Q8_K blocks into q8Sum16Blocks with aux(d, Σq) of each
// sixteen values (ggml's sums).
func split16(xq []q8KBlock, aux func(d float32, sum int32) uint32) []byte {
	out := make([]q8Sum16Block, 8*len(xq))
	for i := range xq {
		x := &xq[i]
		for s := range 8 {
			a := &out[8*i+s]
			a.d, a.qs = x.d, [32]int8(x.qs[32*s:32*s+32])
			a.aux = [2]uint32{aux(x.d, int32(x.bsums[2*s])), aux(x.d, int32(x.bsums[2*s+1]))}
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
	size := steps * pt.stepBytes
	var panel []byte
	if w.panels == nil {
		panel = make([]byte, size)
	}
	var tile [8 * panelRows]float32
	for p := lo; p < hi; p++ {
		r0 := p * panelRows
		rows := min(panelRows, nout-r0)
		if w.panels != nil {
			panel = w.panels[p*size : (p+1)*size]
		} else {
			pack(pt, w, panel, p)
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

// pack packs panel p of w (rows 16p..16p+15) into panel.
func pack(pt *panelType, w *weight, panel []byte, p int) {
	r0 := p * panelRows
	rows := min(panelRows, w.rows-r0)
	if rows < panelRows {
		clear(panel)
	}
	prog := pt.program(w.rowLen)
	gatherPanel(&panel[0], &w.data[r0*w.rowBytes], w.rowBytes, &prog[0].src, len(prog), 1<<rows-1)
	for lane := range rows {
		pt.scales(panel, w.row(r0+lane), lane, w.rowLen)
	}
}

// keptPanels packs every panel of w once, in parallel, and keeps them.
func (b *Backend) keptPanels(pt *panelType, w *weight) {
	w.packOnce.Do(func() {
		size := w.rowLen / pt.step * pt.stepBytes
		panels := (w.rows + panelRows - 1) / panelRows
		all := make([]byte, panels*size)
		b.pool.parallel(panels, grainFor(panelRows*w.rowLen/4, 1), func(lo, hi int) {
			for p := lo; p < hi; p++ {
				pack(pt, w, all[p*size:(p+1)*size], p)
			}
		})
		w.panels = all
	})
}

// linearPanel runs a prompt's product through the panel kernels where the
// weight type has them, and reports whether it did; x holds the float32
// activations of T tokens, exact asks for training's exact products.
func (b *Backend) linearPanel(w *weight, out, x []float32, T int, exact bool) bool {
	pt := panelTypes[w.typ]
	if pt == nil || w.rowLen%pt.step != 0 || exact && !pt.exact {
		return false
	}
	keep := b.keepPanels && !pt.unkept
	if T < panelMinTokens && !(keep && T >= keptPanelMinTokens) {
		return false
	}
	if keep {
		b.keptPanels(pt, w)
	}
	xa := pt.acts(b, x, T, w.rowLen, pt.zero)
	panels := (w.rows + panelRows - 1) / panelRows
	b.pool.parallel(panels, grainFor(panelRows*w.rowLen*T/16, 1), func(lo, hi int) {
		linearPanels(pt, w, out, xa, T, lo, hi)
	})
	return true
}
