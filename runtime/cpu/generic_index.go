package cpu

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// wrapIndex checks an index against an axis of n and makes it
// non-negative.
func wrapIndex(v int64, n int) (int, error) {
	if v < -int64(n) || v >= int64(n) {
		return 0, fmt.Errorf("index %d out of range for an axis of %d", v, n)
	}
	if v < 0 {
		v += int64(n)
	}
	return int(v), nil
}

func gatherElements(out *lqrt.Tensor, data, indices any, ds, is []int, ax int64) error {
	if ax < 0 {
		ax += int64(len(ds))
	}
	idx, ok := intsOf(indices)
	if !ok {
		return fmt.Errorf("indices %T", indices)
	}
	st := stridesOf(ds)
	var err error
	walkErr := copyFrom(out.Data, data, func(set func(o, i int)) {
		newIter(is).eachIndex(func(o int, ctr []int) {
			j, e := wrapIndex(idx[o], ds[ax])
			if e != nil {
				err = e
				return
			}
			off := 0
			for a, c := range ctr {
				if a == int(ax) {
					c = j
				}
				off += c * st[a]
			}
			set(o, off)
		})
	})
	if err != nil {
		return err
	}
	return walkErr
}

func gatherND(out *lqrt.Tensor, data, indices any, ds, is []int, batch int) error {
	idx, ok := intsOf(indices)
	if !ok {
		return fmt.Errorf("indices %T", indices)
	}
	m := is[len(is)-1]
	tuples := prod(is[:len(is)-1])
	perBatch := tuples / max(1, prod(is[:batch]))
	st := stridesOf(ds)
	slice := prod(ds[batch+m:])
	batchStride := prod(ds[batch:])
	bst := stridesOf(ds[:batch])
	_ = bst
	var err error
	walkErr := copyFrom(out.Data, data, func(set func(o, i int)) {
		for t := range tuples {
			off := (t / perBatch) * batchStride
			for k := range m {
				j, e := wrapIndex(idx[t*m+k], ds[batch+k])
				if e != nil {
					err = e
					return
				}
				off += j * st[batch+k]
			}
			for i := range slice {
				set(t*slice+i, off+i)
			}
		}
	})
	if err != nil {
		return err
	}
	return walkErr
}

// einsum sums products over every combination of the labels: the output
// labels index the result, the rest are summed.
func einsum(out *lqrt.Tensor, ds []any, shapes [][]int, eq string) error {
	ranks := make([]int, len(shapes))
	irShapes := make([]ir.Shape, len(shapes))
	for i, s := range shapes {
		ranks[i] = len(s)
		for _, d := range s {
			irShapes[i] = append(irShapes[i], ir.D(int64(d)))
		}
	}
	e, err := ir.ParseEinsum(eq, ranks)
	if err != nil {
		return err
	}
	size, err := e.Sizes(irShapes)
	if err != nil {
		return err
	}
	inOut := map[int]bool{}
	for _, l := range e.Output {
		inOut[l] = true
	}
	var summed []int
	for l, s := range size {
		if s >= 0 && !inOut[l] {
			summed = append(summed, l)
		}
	}
	// Each operand's element offset is a sum of per-label strides (0 for
	// a broadcast axis of size 1).
	// A label repeated in one term (a trace, a diagonal) adds its axes'
	// strides, so it is listed once in distinct.
	strides := make([][]int, len(ds))
	distinct := make([][]int, len(ds))
	for i, labels := range e.Inputs {
		strides[i] = make([]int, e.Labels)
		st := stridesOf(shapes[i])
		seen := map[int]bool{}
		for k, l := range labels {
			if shapes[i][k] != 1 || size[l] == 1 {
				strides[i][l] += st[k]
			}
			if !seen[l] {
				seen[l] = true
				distinct[i] = append(distinct[i], l)
			}
		}
	}
	vals := make([][]float64, len(ds))
	ints := make([][]int64, len(ds))
	isInt := false
	for i, d := range ds {
		if v, ok := intsOf(d); ok {
			ints[i], isInt = v, true
		} else if vals[i], err = floats(d); err != nil {
			return err
		}
	}
	outDims := make([]int, len(e.Output))
	for i, l := range e.Output {
		outDims[i] = int(size[l])
	}
	sumDims := make([]int, len(summed))
	for i, l := range summed {
		sumDims[i] = int(size[l])
	}
	at := make([]int, e.Labels)
	nSum := prod(sumDims)
	rf := make([]float64, out.Len())
	ri := make([]int64, out.Len())
	newIter(outDims).eachIndex(func(o int, ctr []int) {
		for i, l := range e.Output {
			at[l] = ctr[i]
		}
		var accF float64
		var accI int64
		for s := range nSum {
			rem := s
			for i := len(summed) - 1; i >= 0; i-- {
				at[summed[i]] = rem % sumDims[i]
				rem /= sumDims[i]
			}
			pf, pi := 1.0, int64(1)
			for i := range ds {
				off := 0
				for _, l := range distinct[i] {
					off += at[l] * strides[i][l]
				}
				if isInt {
					pi *= ints[i][off]
				} else {
					pf *= vals[i][off]
				}
			}
			accF += pf
			accI += pi
		}
		rf[o], ri[o] = accF, accI
	})
	if isInt {
		return setInts(out.Data, ri)
	}
	setFloats(out.Data, rf)
	return nil
}

// qlinearMatMul: (a-az)·(b-bz) exactly in integers, scaled by
// a_scale·b_scale/y_scale in float64, rounded half to even, shifted by the
// output zero point and saturated. Scales and zero points are per tensor,
// per row of a ([M] or […, M, 1]) and per column of b ([N] or […, 1, N]).
func qlinearMatMul(out *lqrt.Tensor, ds []any, shapes [][]int) error {
	as, bs := shapes[0], shapes[3]
	a, aok := intsOf(ds[0])
	b, bok := intsOf(ds[3])
	if !aok || !bok {
		return fmt.Errorf("operands are not integers")
	}
	M, K, N := as[len(as)-2], as[len(as)-1], bs[len(bs)-1]
	param := func(d any, n int, perRow bool) (func(i int) float64, error) {
		var v []float64
		if is, ok := intsOf(d); ok {
			v = make([]float64, len(is))
			for i, x := range is {
				v[i] = float64(x)
			}
		} else {
			f, err := floats(d)
			if err != nil {
				return nil, err
			}
			v = f
		}
		switch {
		case len(v) == 1:
			return func(int) float64 { return v[0] }, nil
		case len(v)%n == 0:
			return func(i int) float64 { return v[i%len(v)] }, nil
		}
		return nil, fmt.Errorf("%d quantization parameters for %d %s", len(v), n, map[bool]string{true: "rows", false: "columns"}[perRow])
	}
	aScale, err := param(ds[1], M, true)
	if err != nil {
		return err
	}
	aZero, err := param(ds[2], M, true)
	if err != nil {
		return err
	}
	bScale, err := param(ds[4], N, false)
	if err != nil {
		return err
	}
	bZero, err := param(ds[5], N, false)
	if err != nil {
		return err
	}
	yScale, err := param(ds[6], 1, true)
	if err != nil {
		return err
	}
	yZero, err := param(ds[7], 1, true)
	if err != nil {
		return err
	}
	// Zero points subtracted per row of a (index: matrix row) and per
	// column of b.
	ai := append([]int64(nil), a...)
	for i := range ai {
		ai[i] -= int64(aZero((i / K) % M))
	}
	bi := append([]int64(nil), b...)
	for i := range bi {
		bi[i] -= int64(bZero(i % N))
	}
	c := &lqrt.Tensor{Shape: out.Shape, Data: make([]int64, out.Len())}
	if err := matmulN(c, ai, bi, as, bs); err != nil {
		return err
	}
	lo, hi := typeRange(out.Type)
	r := make([]int64, out.Len())
	for o, v := range c.Data.([]int64) {
		row, col := (o/N)%M, o%N
		f := float64(v) * (aScale(row) * bScale(col) / yScale(0))
		r[o] = int64(max(lo, min(hi, math.RoundToEven(f)+yZero(0))))
	}
	return setInts(out.Data, r)
}
