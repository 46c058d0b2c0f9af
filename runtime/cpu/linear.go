package cpu

import (
	"fmt"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// rowGrain is the fewest weight rows a worker takes at once.
const rowGrain = 16

// linear computes out[t, o] = Σ_i x[t, i]·W[o, i] (+ bias[o]) for every
// token t, reading W's encoded rows in place. Each weight row is loaded
// once and multiplied with every token's activations while it is in
// cache, so prompt processing costs about one pass over the weights.
// Activations are quantized to 8 bits for block types, as ggml does,
// unless exact is set (training): then each row is decoded to float32.
func (b *Backend) linear(out, x []float32, wt *lqrt.Tensor, bias []float32, exact bool) error {
	w, err := matrix(wt)
	if err != nil {
		return fmt.Errorf("cpu: Linear: %w", err)
	}
	in, nout := w.rowLen, w.rows
	T := len(x) / in
	// rows is how many weight rows a thread takes at least; the kernels
	// do about sixteen multiply-adds in the time of one simple step.
	rows := grainFor(in*T/16, rowGrain)
	format := activationFormat(w.typ)
	if exact && format != actHalf { // 16-bit float rows are exact as they are
		format = actF32
	}
	switch {
	case b.linearPanel(w, out, x, T, exact):
		// Prompts through the panel kernels where the type has them (F16
		// for exact products too).
	case (format == actF32 || format == actHalf) && gemmPays(T):
		// 16-bit float rows decode exactly.
		b.linearF32(out, x, w, T, false)
	case format == actQ8:
		nb := in / 32
		xq := quantizeTokens(b, x, T, in, 32, quantizeQ8)
		dot, dot4 := dotQ8For(w.typ), dot4For(w.typ)
		if zero, ok := wideZero[w.typ]; ok && wideDot != nil && nb%2 == 0 {
			wa := toWide(xq, T, nb, zero)
			// Cache blocking: for a block of weight rows, a tile of tokens
			// and a slice of the inner dimension, the activations (three
			// bytes a value in the wide layout) stay in L1 while every row
			// of the block passes over them.
			// A tile of four tokens over 2048 values takes 24 KB. Decoding
			// reads every row once: whole rows per call.
			pairs := nb / 2
			tile, kPairs := 4, 32
			if T < 4 {
				kPairs = pairs
			}
			b.pool.parallel(nout, rows, func(lo, hi int) {
				var four [4]float32
				for rb := lo; rb < hi; rb += 32 {
					re := min(rb+32, hi)
					for t0 := 0; t0 < T; t0 += tile {
						t1 := min(t0+tile, T)
						for p0 := 0; p0 < pairs; p0 += kPairs {
							np := min(kPairs, pairs-p0)
							for o := rb; o < re; o++ {
								row := w.row(o)
								for t := t0; t < t1; {
									k := 1
									if t+4 <= t1 {
										k = 4
									}
									wideDot(w.typ, row, &wa, t, p0, np, four[:k])
									for j, v := range four[:k] {
										if p0 == 0 {
											out[(t+j)*nout+o] = v
										} else {
											out[(t+j)*nout+o] += v
										}
									}
									t += k
								}
							}
						}
					}
				}
			})
			break
		}
		b.pool.parallel(nout, rows, func(lo, hi int) { rowDots(w, out, xq, T, nb, lo, hi, dot, dot4) })
	case format == actQ8K:
		nb := in / 256
		xq := quantizeTokens(b, x, T, in, 256, quantizeQ8K)
		dot, dot4 := dotQ8KFor(w.typ), dot4KFor(w.typ)
		b.pool.parallel(nout, rows, func(lo, hi int) { rowDots(w, out, xq, T, nb, lo, hi, dot, dot4) })
	case format == actHalf:
		dot := dotF16
		if w.typ == quant.BF16 {
			dot = dotBF16
		}
		b.pool.parallel(nout, rows, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				row := w.row(o)
				for t := range T {
					out[t*nout+o] = dot(row, x[t*in:(t+1)*in])
				}
			}
		})
	default:
		// Rows are decoded a block at a time and each token's activations
		// meet the whole block while they are in L1: a prompt's
		// activations (2 MB for 256 tokens of 2048) are streamed once per
		// block of rows instead of once per row.
		const rowBlock = 16
		b.pool.parallel(nout, rows, func(lo, hi int) {
			var scratch []float32
			if w.typ != quant.F32 {
				scratch = make([]float32, rowBlock*in)
			}
			var block [rowBlock][]float32
			for r0 := lo; r0 < hi; r0 += rowBlock {
				r1 := min(r0+rowBlock, hi)
				for o := r0; o < r1; o++ {
					var buf []float32
					if scratch != nil {
						buf = scratch[(o-r0)*in : (o-r0+1)*in]
					}
					block[o-r0] = decodeRow(w, o, buf)
				}
				t := 0
				var four [4]float32
				for ; t+4 <= T; t += 4 { // each row's values used for four tokens
					xt := x[t*in : (t+4)*in]
					for o := r0; o < r1; o++ {
						dotF32x4(block[o-r0], xt, in, &four)
						for k, v := range four {
							out[(t+k)*nout+o] = v
						}
					}
				}
				for ; t < T; t++ {
					xt, ot := x[t*in:(t+1)*in], out[t*nout:(t+1)*nout]
					for o := r0; o < r1; o++ {
						ot[o] = dotF32(block[o-r0], xt)
					}
				}
			}
		})
	}
	if bias != nil {
		for t := range T {
			row := out[t*nout : (t+1)*nout]
			for o := range row {
				row[o] += bias[o]
			}
		}
	}
	return nil
}

// rowDots computes out[t, o] for weight rows [lo, hi) and every token t
// from the quantized activations xq (nb blocks a token), four tokens at a
// time where the type has a four-token kernel.
func rowDots[B actBlock](w *weight, out []float32, xq []B, T, nb, lo, hi int, dot func([]byte, []B) float32, dot4 func([]byte, []B, int, *[4]float32)) {
	nout := w.rows
	var four [4]float32
	for o := lo; o < hi; o++ {
		row := w.row(o)
		t := 0
		if dot4 != nil {
			for ; t+4 <= T; t += 4 {
				dot4(row, xq[t*nb:(t+4)*nb], nb, &four)
				for k, v := range four {
					out[(t+k)*nout+o] = v
				}
			}
		}
		for ; t < T; t++ {
			out[t*nout+o] = dot(row, xq[t*nb:(t+1)*nb])
		}
	}
}

// matrix is a 2-D operand as the matrix kernels read it: a weight's
// encoded rows, or a dense float32 tensor (a trained parameter) seen as
// F32 rows in place.
func matrix(t *lqrt.Tensor) (*weight, error) {
	switch d := t.Data.(type) {
	case *weight:
		return d, nil
	case []float32:
		if len(t.Shape) != 2 || t.Stride0 != 0 {
			return nil, fmt.Errorf("operand %v is not a dense matrix", t.Shape)
		}
		var data []byte
		if len(d) > 0 {
			data = unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 4*len(d))
		}
		return &weight{typ: quant.F32, rows: t.Shape[0], rowLen: t.Shape[1], rowBytes: 4 * t.Shape[1], data: data}, nil
	}
	return nil, fmt.Errorf("operand %v%v is not a matrix", t.Type, t.Shape)
}

// decodeRow returns weight row r as float32: in place for F32 weights,
// decoded into scratch otherwise.
func decodeRow(w *weight, r int, scratch []float32) []float32 {
	if w.typ == quant.F32 {
		return bytesF32(w.row(r))
	}
	decode(w.typ, scratch, w.row(r))
	return scratch
}

// dot4For is the four-token kernel of a type, if it has one.
func dot4For(t quant.Type) func([]byte, []q8Block, int, *[4]float32) {
	switch t {
	case quant.Q4_0:
		return dotQ4_0x4
	case quant.Q8_0:
		return dotQ8_0x4
	case quant.IQ4_NL:
		return dotIQ4_NLx4
	case quant.Q5_0:
		return dotQ5_0x4
	case quant.Q4_1:
		return dotQ4_1x4
	case quant.Q5_1:
		return dotQ5_1x4
	}
	return nil
}

// dot4KFor is the four-token kernel of a type over q8K activations, if
// it has one.
func dot4KFor(t quant.Type) func([]byte, []q8KBlock, int, *[4]float32) {
	switch t {
	case quant.Q4_K:
		return dotQ4_Kx4
	case quant.Q5_K:
		return dotQ5_Kx4
	case quant.IQ4_XS:
		return dotIQ4_XSx4
	case quant.Q2_K:
		return dotQ2_Kx4
	case quant.Q3_K:
		return dotQ3_Kx4
	case quant.Q6_K:
		return dotQ6_Kx4
	}
	return nil
}

func dotQ8For(t quant.Type) func([]byte, []q8Block) float32 {
	switch t {
	case quant.Q4_0:
		return dotQ4_0
	case quant.Q4_1:
		return dotQ4_1
	case quant.Q5_0:
		return dotQ5_0
	case quant.Q5_1:
		return dotQ5_1
	case quant.IQ4_NL:
		return dotIQ4_NL
	}
	return dotQ8_0
}

// dotQ8KFor is the kernel of a type whose activations are 256-value q8
// blocks.
func dotQ8KFor(t quant.Type) func([]byte, []q8KBlock) float32 {
	switch t {
	case quant.Q2_K:
		return dotQ2_K
	case quant.Q3_K:
		return dotQ3_K
	case quant.Q4_K:
		return dotQ4_K
	case quant.Q5_K:
		return dotQ5_K
	case quant.IQ4_XS:
		return dotIQ4_XS
	}
	return dotQ6_K
}

// embedding copies the rows of table picked by ids, decoded to float32.
func (b *Backend) embedding(out []float32, table *lqrt.Tensor, ids []int32) error {
	w, err := matrix(table)
	if err != nil {
		return fmt.Errorf("cpu: Embedding table: %w", err)
	}
	d := w.rowLen
	for t, id := range ids {
		if id < 0 || int(id) >= w.rows {
			return fmt.Errorf("token id %d is outside the vocabulary of %d", id, w.rows)
		}
		if err := w.typ.Decode(out[t*d:(t+1)*d], w.row(int(id))); err != nil {
			return err
		}
	}
	return nil
}

// lowRank adds scale·(x·Aᵀ)·Bᵀ to rows [start, end) of out, x's rows
// being the same: a LoRA update beside the base product. The product
// with A is spread over the pool by rank, the one with B by output
// column: an adapter's factors are read from memory for every step, and
// one thread alone would wait on them.
func (b *Backend) lowRank(out []float32, x, a, bw *lqrt.Tensor, scale float64, start, end int) error {
	wa, err := matrix(a)
	if err != nil {
		return fmt.Errorf("cpu: LowRank: %w", err)
	}
	wb, err := matrix(bw)
	if err != nil || wa.rows != wb.rowLen {
		return fmt.Errorf("cpu: LowRank weights are not a matching pair of matrices")
	}
	in, r, nout := wa.rowLen, wa.rows, wb.rows
	rows := end - start
	xs := f32s(x)[start*in : end*in]
	t := make([]float32, rows*r)
	if gemmPays(rows) {
		// A prompt or a training window: both products as GEMMs.
		b.linearF32(t, xs, wa, rows, false)
		for i := range t {
			t[i] *= float32(scale)
		}
		b.linearF32(out[start*nout:end*nout], t, wb, rows, true)
		return nil
	}
	s := float32(scale)
	b.pool.parallel(r, grainFor(rows*in, 1), func(lo, hi int) {
		var scratch []float32
		if wa.typ != quant.F32 {
			scratch = make([]float32, in)
		}
		for k := lo; k < hi; k++ {
			ak := decodeRow(wa, k, scratch)
			for i := range rows {
				t[i*r+k] = s * dotF32(ak, xs[i*in:(i+1)*in])
			}
		}
	})
	// B's columns, r of them, each added to every output row scaled by
	// that row's value of t: r long vector updates per row, instead of a
	// dot product of length r per output value.
	bt, err := wb.transposed()
	if err != nil {
		return fmt.Errorf("cpu: LowRank: %w", err)
	}
	dst := out[start*nout : end*nout]
	b.pool.parallel(nout, grainFor(rows*r, 256), func(lo, hi int) {
		for i := range rows {
			d := dst[i*nout+lo : i*nout+hi]
			for k, tk := range t[i*r : (i+1)*r] {
				axpy(d, tk, bt[k*nout+lo:k*nout+hi])
			}
		}
	})
	return nil
}
