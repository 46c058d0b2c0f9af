package cpu

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// rowGrain is the fewest weight rows a worker takes at once.
const rowGrain = 16

// linear computes out[t, o] = Σ_i x[t, i]·W[o, i] (+ bias[o]) for every
// token t, reading W's encoded rows in place. Each weight row is loaded
// once and multiplied with every token's activations while it is in
// cache, so prompt processing costs about one pass over the weights.
func (b *Backend) linear(out, x []float32, wt *lqrt.Tensor, bias []float32) error {
	w, ok := wt.Data.(*weight)
	if !ok {
		return fmt.Errorf("cpu: Linear weight is not a matrix")
	}
	in, nout := w.rowLen, w.rows
	T := len(x) / in
	switch activationFormat(w.typ) {
	case actQ8:
		nb := in / 32
		xq := make([]q8Block, T*nb)
		b.pool.parallel(T, 1, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				quantizeQ8(xq[t*nb:(t+1)*nb], x[t*in:(t+1)*in])
			}
		})
		dot := dotQ8For(w.typ)
		b.pool.parallel(nout, rowGrain, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				row := w.row(o)
				for t := range T {
					out[t*nout+o] = dot(row, xq[t*nb:(t+1)*nb])
				}
			}
		})
	case actQ8K:
		nb := in / 256
		xq := make([]q8KBlock, T*nb)
		b.pool.parallel(T, 1, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				quantizeQ8K(xq[t*nb:(t+1)*nb], x[t*in:(t+1)*in])
			}
		})
		b.pool.parallel(nout, rowGrain, func(lo, hi int) {
			for o := lo; o < hi; o++ {
				row := w.row(o)
				for t := range T {
					out[t*nout+o] = dotQ6_K(row, xq[t*nb:(t+1)*nb])
				}
			}
		})
	default:
		b.pool.parallel(nout, rowGrain, func(lo, hi int) {
			var scratch []float32
			if w.typ != quant.F32 {
				scratch = make([]float32, in)
			}
			for o := lo; o < hi; o++ {
				wr := decodeRow(w, o, scratch)
				for t := range T {
					out[t*nout+o] = dotF32(wr, x[t*in:(t+1)*in])
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

// decodeRow returns weight row r as float32: in place for F32 weights,
// decoded into scratch otherwise.
func decodeRow(w *weight, r int, scratch []float32) []float32 {
	if w.typ == quant.F32 {
		return bytesF32(w.row(r))
	}
	w.typ.Decode(scratch, w.row(r))
	return scratch
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
	}
	return dotQ8_0
}

// embedding copies the rows of table picked by ids, decoded to float32.
func (b *Backend) embedding(out []float32, table *lqrt.Tensor, ids []int32) error {
	w, ok := table.Data.(*weight)
	if !ok {
		return fmt.Errorf("cpu: Embedding table is not a matrix")
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
