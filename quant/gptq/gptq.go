// Package gptq quantizes weight matrices with GPTQ (Frantar et al.,
// "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
// Transformers", 2022): the input columns of a row are rounded one at a
// time, and each rounding error is spread over the columns not yet
// rounded so that the layer's output on the calibration inputs changes
// as little as possible. The second-order information is the Gram matrix
// H = XᵀX of the layer's inputs. The result is stored in ordinary GGML
// blocks, so llama.cpp runs it unchanged: each block's scales are chosen
// by the type's own (importance-weighted) quantizer when GPTQ reaches the
// block, and its values are the levels GPTQ picks.
package gptq

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/lqc-dev/lqc/quant"
)

// Options tune the algorithm; the zero value is the paper's defaults.
type Options struct {
	// Damp is added to H's diagonal as a fraction of its mean (0: 0.01).
	Damp float64
	// ActOrder rounds columns in order of decreasing importance (H's
	// diagonal). The block scales are then fixed before any rounding,
	// from the original weights ("static groups").
	ActOrder bool
	// Threads bounds the rows quantized in parallel (0: GOMAXPROCS).
	Threads int
}

// lazyBlock is the number of columns whose error updates are batched
// before the rest of the row is updated (the paper's B).
const lazyBlock = 128

// Quantizer quantizes rows that multiply one input: it holds the factor
// of that input's inverse Gram matrix, shared by every row and by every
// matrix with the same input (q, k and v).
type Quantizer struct {
	typ        quant.Type
	cols       int
	perm       []int     // column rounded at step i
	u          []float32 // upper Cholesky factor of H⁻¹, in perm order
	importance []float32 // H's diagonal, by column
	actOrder   bool
}

// New prepares the quantization to typ of rows of cols values, given the
// Gram matrix h (cols × cols, row-major, symmetric) of the inputs they
// multiply.
func New(typ quant.Type, cols int, h []float64, opt Options) (*Quantizer, error) {
	bs := typ.BlockSize()
	switch {
	case !typ.HasGrid():
		return nil, fmt.Errorf("gptq: cannot quantize to %v level by level", typ)
	case cols%bs != 0:
		return nil, fmt.Errorf("gptq: rows of %d do not divide into %v blocks of %d", cols, typ, bs)
	case len(h) != cols*cols:
		return nil, fmt.Errorf("gptq: a %d-value Gram matrix for rows of %d", len(h), cols)
	}
	damp := opt.Damp
	if damp == 0 {
		damp = 0.01
	}
	q := &Quantizer{typ: typ, cols: cols, importance: make([]float32, cols), perm: make([]int, cols), actOrder: opt.ActOrder}
	for j := range cols {
		q.importance[j] = float32(h[j*cols+j])
		q.perm[j] = j
	}
	if opt.ActOrder {
		slices.SortStableFunc(q.perm, func(a, b int) int {
			switch {
			case q.importance[a] > q.importance[b]:
				return -1
			case q.importance[a] < q.importance[b]:
				return 1
			}
			return 0
		})
	}
	var err error
	q.u, err = inverseCholesky(h, cols, q.perm, damp)
	if err != nil {
		return nil, err
	}
	return q, nil
}

// Quantize quantizes w, rows × cols float32 values in row-major order, to
// typ, given the Gram matrix h of the inputs the rows multiply, on
// opt.Threads goroutines. It returns the encoded rows.
func Quantize(w []float32, rows, cols int, typ quant.Type, h []float64, opt Options) ([]byte, error) {
	if len(w) != rows*cols {
		return nil, fmt.Errorf("gptq: %d weights for %d×%d", len(w), rows, cols)
	}
	q, err := New(typ, cols, h, opt)
	if err != nil {
		return nil, err
	}
	rowBytes := int(typ.RowSize(int64(cols)))
	out := make([]byte, rows*rowBytes)
	threads := opt.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	per := (rows + threads - 1) / threads
	errs := make([]error, threads)
	var wg sync.WaitGroup
	for t := range threads {
		r0, r1 := t*per, min(rows, (t+1)*per)
		if r0 >= r1 {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[t] = q.Rows(out[r0*rowBytes:r1*rowBytes], w[r0*cols:r1*cols])
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// Rows quantizes rows of w (len a multiple of the row length) into dst.
func (q *Quantizer) Rows(dst []byte, w []float32) error {
	rowBytes := int(q.typ.RowSize(int64(q.cols)))
	buf := make([]float32, q.cols)
	errBuf := make([]float32, lazyBlock)
	for r := range len(w) / q.cols {
		if err := q.row(dst[r*rowBytes:(r+1)*rowBytes], w[r*q.cols:(r+1)*q.cols], buf, errBuf); err != nil {
			return err
		}
	}
	return nil
}

// row quantizes one row (src, in column order) into dst; w and errs are
// scratch space.
func (q *Quantizer) row(dst []byte, src, w, errs []float32) error {
	bs, cols := q.typ.BlockSize(), q.cols
	grids := make([]*quant.Grid, cols/bs)
	fit := func(g int, x []float32) error {
		var err error
		grids[g], err = q.typ.FitGrid(x, q.importance[g*bs:(g+1)*bs])
		return err
	}
	if q.actOrder { // static block scales, from the original row
		for g := range grids {
			if err := fit(g, src[g*bs:(g+1)*bs]); err != nil {
				return err
			}
		}
	}
	// w is the row in perm order, updated as the errors spread.
	for i, c := range q.perm {
		w[i] = src[c]
	}
	block := make([]float32, bs)
	for i1 := 0; i1 < cols; i1 += lazyBlock {
		i2 := min(i1+lazyBlock, cols)
		for i := i1; i < i2; i++ {
			c := q.perm[i]
			g := c / bs
			if !q.actOrder && c%bs == 0 {
				// Without act-order perm is the identity: the block's
				// values are w[i:i+bs], with every error so far spread.
				copy(block, w[i:i+bs])
				if err := fit(g, block); err != nil {
					return err
				}
			}
			level, v := grids[g].Nearest(c%bs, w[i])
			grids[g].Set(c%bs, level)
			urow := q.u[i*cols:]
			e := (w[i] - v) / urow[i]
			errs[i-i1] = e
			for j := i + 1; j < i2; j++ {
				w[j] -= e * urow[j]
			}
		}
		for k := i1; k < i2; k++ {
			e, urow := errs[k-i1], q.u[k*cols:(k+1)*cols]
			for j := i2; j < cols; j++ {
				w[j] -= e * urow[j]
			}
		}
	}
	tb := q.typ.TypeSize()
	for g, gr := range grids {
		copy(dst[g*tb:], gr.Bytes())
	}
	return nil
}

// inverseCholesky returns U, the upper-triangular factor with UᵀU = H⁻¹,
// of H permuted by perm and damped, in float32 for the row loop. When H
// is not positive definite the damping grows tenfold, up to three times.
func inverseCholesky(h []float64, n int, perm []int, damp float64) ([]float32, error) {
	var mean float64
	for j := range n {
		mean += h[j*n+j]
	}
	mean /= float64(n)
	if mean <= 0 || math.IsNaN(mean) || math.IsInf(mean, 0) {
		mean = 1
	}
	for try := 0; try < 4; try++ {
		// Reversing the order turns the lower Cholesky factor of the
		// reversed matrix into an upper factor U' with H = U'U'ᵀ; then
		// U = U'⁻¹ satisfies UᵀU = (U'U'ᵀ)⁻¹ = H⁻¹.
		a := make([]float64, n*n)
		for i := range n {
			for j := range n {
				a[(n-1-i)*n+(n-1-j)] = h[perm[i]*n+perm[j]]
			}
			d := &a[(n-1-i)*n+(n-1-i)]
			if *d == 0 { // a column no calibration input reached
				*d = 1
			}
			*d += damp * mean
		}
		if err := cholesky(a, n); err != nil {
			damp *= 10
			continue
		}
		// U' = J L J is upper triangular; invert it.
		up := make([]float64, n*n)
		for i := range n {
			for j := 0; j <= i; j++ {
				up[(n-1-i)*n+(n-1-j)] = a[i*n+j]
			}
		}
		inv := invertUpper(up, n)
		u := make([]float32, n*n)
		for i, v := range inv {
			u[i] = float32(v)
		}
		return u, nil
	}
	return nil, errors.New("gptq: the Gram matrix is not positive definite even with damping")
}

// cholesky factors a (n×n, symmetric positive definite) in place into its
// lower-triangular factor L, a = LLᵀ; the upper triangle is left as is.
func cholesky(a []float64, n int) error {
	for j := range n {
		rj := a[j*n : j*n+j]
		d := a[j*n+j]
		for _, v := range rj {
			d -= v * v
		}
		if d <= 0 || math.IsNaN(d) {
			return errors.New("not positive definite")
		}
		d = math.Sqrt(d)
		a[j*n+j] = d
		for i := j + 1; i < n; i++ {
			ri := a[i*n : i*n+j]
			s := a[i*n+j]
			for k, v := range ri {
				s -= v * rj[k]
			}
			a[i*n+j] = s / d
		}
	}
	return nil
}

// invertUpper inverts an upper-triangular matrix.
func invertUpper(u []float64, n int) []float64 {
	inv := make([]float64, n*n)
	// Column by column of the inverse, bottom up: U x = e_j.
	x := make([]float64, n)
	for j := range n {
		clear(x)
		for i := j; i >= 0; i-- {
			s := 0.0
			if i == j {
				s = 1
			}
			for k := i + 1; k <= j; k++ {
				s -= u[i*n+k] * x[k]
			}
			x[i] = s / u[i*n+i]
		}
		for i := 0; i <= j; i++ {
			inv[i*n+j] = x[i]
		}
	}
	return inv
}
