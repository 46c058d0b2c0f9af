package cpu

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// Generic versions of the neural-network ops, for imported graphs of any
// float type and shape: computed in float64 and stored in the output's
// type.

func softmaxAxis(out *lqrt.Tensor, x any, attrs ir.Attrs) error {
	s := out.Shape
	ax := -1
	if attrs.Has("axis") {
		ax = int(attrs.Int("axis"))
	}
	if ax < 0 {
		ax += len(s)
	}
	xf, err := floats(x)
	if err != nil {
		return err
	}
	outer, n, inner := prod(s[:ax]), s[ax], prod(s[ax+1:])
	r := make([]float64, len(xf))
	for o := range outer {
		for j := range inner {
			at := func(k int) int { return (o*n+k)*inner + j }
			mx := math.Inf(-1)
			for k := range n {
				mx = max(mx, xf[at(k)])
			}
			var sum float64
			for k := range n {
				e := math.Exp(xf[at(k)] - mx)
				r[at(k)] = e
				sum += e
			}
			for k := range n {
				r[at(k)] /= sum
			}
		}
	}
	setFloats(out.Data, r)
	return nil
}

// matmulN is numpy's matmul: leading axes broadcast, 1-D operands
// promoted.
func matmulN(out *lqrt.Tensor, a, b any, as, bs []int) error {
	a2, b2 := as, bs
	if len(a2) == 1 {
		a2 = []int{1, a2[0]}
	}
	if len(b2) == 1 {
		b2 = []int{b2[0], 1}
	}
	M, K, N := a2[len(a2)-2], a2[len(a2)-1], b2[len(b2)-1]
	ab, bb := a2[:len(a2)-2], b2[:len(b2)-2]
	rank := max(len(ab), len(bb))
	ob := make([]int, rank)
	for i := range ob {
		ob[i] = 1
	}
	for _, s := range [][]int{ab, bb} {
		for i, d := range s {
			if o := &ob[rank-len(s)+i]; d != 1 {
				*o = d
			}
		}
	}
	it := newIter(ob, ab, bb)
	if ai, ok := intsOf(a); ok {
		bi, _ := intsOf(b)
		return setInts(out.Data, matmulLoop(it, M, K, N, ai, bi, out.Len()))
	}
	// Float32 operands (what imported weights are) multiply in float32,
	// as ONNX's reference and runtimes do: each row of a scales rows of b
	// into the output row (SIMD axpy, b read in order).
	a32, aok := a.([]float32)
	b32, bok := b.([]float32)
	if o32, ook := out.Data.([]float32); aok && bok && ook {
		it.each(func(o int, idx []int) {
			for m := range M {
				row := o32[o*M*N+m*N : o*M*N+(m+1)*N]
				clear(row)
				for k := range K {
					axpy(row, a32[idx[0]*M*K+m*K+k], b32[idx[1]*K*N+k*N:idx[1]*K*N+(k+1)*N])
				}
			}
		})
		return nil
	}
	af, err := floats(a)
	if err != nil {
		return err
	}
	bf, err := floats(b)
	if err != nil {
		return err
	}
	r := matmulLoop(it, M, K, N, af, bf, out.Len())
	setFloats(out.Data, r)
	return nil
}

// matmulLoop multiplies the [M,K]·[K,N] matrices it pairs up, exactly in
// int64 or in float64.
func matmulLoop[T int64 | float64](it *iter, M, K, N int, a, b []T, n int) []T {
	r := make([]T, n)
	it.each(func(o int, idx []int) {
		for m := range M {
			for j := range N {
				var s T
				for k := range K {
					s += a[idx[0]*M*K+m*K+k] * b[idx[1]*K*N+k*N+j]
				}
				r[o*M*N+m*N+j] = s
			}
		}
	})
	return r
}

// tailParam broadcasts a parameter over the normalized tail of x.
func tailParam(p any, ps, tail []int) ([]float64, error) {
	pf, err := floats(p)
	if err != nil {
		return nil, err
	}
	out := make([]float64, prod(tail))
	newIter(tail, ps).each(func(o int, idx []int) { out[o] = pf[idx[0]] })
	return out, nil
}

// normArgs reads what LayerNormalization and RMSNormalization share: x,
// the axis the normalized tail starts at (default -1), epsilon (default
// 1e-5) and the scale broadcast over the tail.
func normArgs(ds []any, shapes [][]int, attrs ir.Attrs) (x []float64, ax int, eps float64, scale []float64, err error) {
	xs := shapes[0]
	ax = -1
	if attrs.Has("axis") {
		ax = int(attrs.Int("axis"))
	}
	if ax < 0 {
		ax += len(xs)
	}
	if ax < 0 || ax >= len(xs) {
		return nil, 0, 0, nil, fmt.Errorf("axis %d out of range for %v", attrs.Int("axis"), xs)
	}
	eps = 1e-5
	if attrs.Has("epsilon") {
		eps = attrs.Float("epsilon")
	}
	if x, err = floats(ds[0]); err != nil {
		return nil, 0, 0, nil, err
	}
	scale, err = tailParam(ds[1], shapes[1], xs[ax:])
	return x, ax, eps, scale, err
}

func layerNormalization(outs []*lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	xs := shapes[0]
	x, ax, eps, scale, err := normArgs(ds, shapes, attrs)
	if err != nil {
		return err
	}
	tail := xs[ax:]
	var bias []float64
	if len(ds) > 2 {
		if bias, err = tailParam(ds[2], shapes[2], tail); err != nil {
			return err
		}
	}
	outer, inner := prod(xs[:ax]), prod(tail)
	y := make([]float64, len(x))
	mean, inv := make([]float64, outer), make([]float64, outer)
	for o := range outer {
		row := x[o*inner : (o+1)*inner]
		var m float64
		for _, v := range row {
			m += v
		}
		m /= float64(inner)
		var vs float64
		for _, v := range row {
			vs += (v - m) * (v - m)
		}
		is := 1 / math.Sqrt(vs/float64(inner)+eps)
		mean[o], inv[o] = m, is
		for i, v := range row {
			r := (v - m) * is * scale[i]
			if bias != nil {
				r += bias[i]
			}
			y[o*inner+i] = r
		}
	}
	setFloats(outs[0].Data, y)
	if len(outs) > 1 {
		setFloats(outs[1].Data, mean)
	}
	if len(outs) > 2 {
		setFloats(outs[2].Data, inv)
	}
	return nil
}

func rmsNormalization(out *lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	xs := shapes[0]
	x, ax, eps, scale, err := normArgs(ds, shapes, attrs)
	if err != nil {
		return err
	}
	inner := prod(xs[ax:])
	y := make([]float64, len(x))
	for o := range prod(xs[:ax]) {
		row := x[o*inner : (o+1)*inner]
		var ss float64
		for _, v := range row {
			ss += v * v
		}
		is := 1 / math.Sqrt(ss/float64(inner)+eps)
		for i, v := range row {
			y[o*inner+i] = v * is * scale[i]
		}
	}
	setFloats(out.Data, y)
	return nil
}

// rotaryEmbedding is ONNX's RotaryEmbedding: x [B,S,H·d] or [B,H,S,d],
// caches [max_pos, r/2] indexed by position ids [B,S] (or [B,S,r/2]
// without them); the first r of each head's d values rotate, in halves
// or (interleaved) in adjacent pairs.
func rotaryEmbedding(out *lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	xs := shapes[0]
	x, err := floats(ds[0])
	if err != nil {
		return err
	}
	cosC, err := floats(ds[1])
	if err != nil {
		return err
	}
	sinC, err := floats(ds[2])
	if err != nil {
		return err
	}
	var B, S, H, D int
	// at(b, s, h, i) is the flat index of element i of head h at (b, s).
	var at func(b, s, h, i int) int
	if len(xs) == 4 {
		B, H, S, D = xs[0], xs[1], xs[2], xs[3]
		at = func(b, s, h, i int) int { return ((b*H+h)*S+s)*D + i }
	} else {
		H = int(attrs.Int("num_heads"))
		B, S, D = xs[0], xs[1], xs[2]/H
		at = func(b, s, h, i int) int { return ((b*S+s)*H+h)*D + i }
	}
	r := int(attrs.Int("rotary_embedding_dim"))
	if r == 0 {
		r = D
	}
	half := r / 2
	var pos []int64
	if len(ds) > 3 {
		p, ok := intsOf(ds[3])
		if !ok {
			return fmt.Errorf("position ids %T", ds[3])
		}
		pos = p
	}
	cw := shapes[1][len(shapes[1])-1] // cache row width
	inter := attrs.Int("interleaved") != 0
	y := append([]float64(nil), x...)
	for b := range B {
		for s := range S {
			row := b*S + s
			if pos != nil {
				row = int(pos[b*S+s])
			}
			for h := range H {
				for i := range half {
					c, sn := cosC[row*cw+i], sinC[row*cw+i]
					i1, i2 := i, i+half
					if inter {
						i1, i2 = 2*i, 2*i+1
					}
					x1, x2 := x[at(b, s, h, i1)], x[at(b, s, h, i2)]
					y[at(b, s, h, i1)] = c*x1 - sn*x2
					y[at(b, s, h, i2)] = sn*x1 + c*x2
				}
			}
		}
	}
	setFloats(out.Data, y)
	return nil
}

// attention is ONNX's Attention (opset 23) as its reference computes it:
// scores q·kᵀ·scale, plus the mask (boolean: false is -inf) and the
// causal mask (offset by the past), softcapped, softmaxed, times v; GQA
// maps query head h to key/value head h/(Hq/Hkv). Outputs y, the present
// key and value (past joined with the new), and the scores as
// qk_matmul_output_mode asks.
func attention(outs []*lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	fl := make([][]float64, len(ds))
	for i, d := range ds {
		if _, isBool := d.([]bool); isBool {
			continue
		}
		if is, ok := intsOf(d); ok { // nonpad_kv_seqlen
			fl[i] = make([]float64, len(is))
			for j, v := range is {
				fl[i][j] = float64(v)
			}
			continue
		}
		f, err := floats(d)
		if err != nil {
			return err
		}
		fl[i] = f
	}
	// q, k, v are [B, H, seq, d].
	qs := shapes[0]
	B, Hq, T, dq := qs[0], qs[1], qs[2], qs[3]
	Hkv, S, dv := shapes[1][1], shapes[1][2], shapes[2][3]
	qAt := func(b, h, t, i int) int { return ((b*Hq+h)*T+t)*dq + i }
	kAt := func(b, h, t, i int) int { return ((b*Hkv+h)*S+t)*dq + i }
	vAt := func(b, h, t, i int) int { return ((b*Hkv+h)*S+t)*dv + i }
	k := 3
	var mask []float64
	var maskB []bool
	var maskShape []int
	if attrs.Bool("has_mask") {
		mask, maskShape = fl[k], shapes[k]
		if mb, ok := ds[k].([]bool); ok {
			maskB = mb
		}
		k++
	}
	past := 0
	var pk, pv []float64
	if attrs.Bool("has_past") {
		pk, pv = fl[k], fl[k+1]
		past = shapes[k][2]
		k += 2
	}
	// nonpad[b] keys of batch b are real; the rest are padding.
	var nonpad []float64
	if attrs.Bool("has_nonpad") {
		nonpad = fl[k]
	}
	total := past + S
	// present key and value: [B, Hkv, total, d]
	presK := make([]float64, B*Hkv*total*dq)
	presV := make([]float64, B*Hkv*total*dv)
	for b := range B {
		for h := range Hkv {
			for t := range total {
				for i := range dq {
					o := ((b*Hkv+h)*total+t)*dq + i
					if t < past {
						presK[o] = pk[((b*Hkv+h)*past+t)*dq+i]
					} else {
						presK[o] = fl[1][kAt(b, h, t-past, i)]
					}
				}
				for i := range dv {
					o := ((b*Hkv+h)*total+t)*dv + i
					if t < past {
						presV[o] = pv[((b*Hkv+h)*past+t)*dv+i]
					} else {
						presV[o] = fl[2][vAt(b, h, t-past, i)]
					}
				}
			}
		}
	}
	scale := 1 / math.Sqrt(float64(dq))
	if attrs.Has("scale") {
		scale = attrs.Float("scale")
	}
	softcap := attrs.Float("softcap")
	causal := attrs.Int("is_causal") != 0
	mode := attrs.Int("qk_matmul_output_mode")
	// Mask element for (b, h, t, s), broadcast from its shape, padded with
	// -inf (false) when shorter than the keys.
	maskAt := func(b, h, t, s int) float64 {
		if maskShape == nil {
			return 0
		}
		ms := maskShape
		if s >= ms[len(ms)-1] {
			return math.Inf(-1)
		}
		full := []int{b, h, t, s}
		idx, stride := 0, 1
		for i := len(ms) - 1; i >= 0; i-- {
			c := full[4-len(ms)+i]
			if ms[i] == 1 {
				c = 0
			}
			idx += c * stride
			stride *= ms[i]
		}
		if maskB != nil {
			if maskB[idx] {
				return 0
			}
			return math.Inf(-1)
		}
		return mask[idx]
	}
	y := make([]float64, B*Hq*T*dv)
	qk := make([]float64, B*Hq*T*total)
	group := Hq / Hkv
	row := make([]float64, total)
	for b := range B {
		for h := range Hq {
			hk := h / group
			for t := range T {
				for s := range total {
					var dot float64
					for i := range dq {
						dot += fl[0][qAt(b, h, t, i)] * presK[((b*Hkv+hk)*total+s)*dq+i]
					}
					v := dot * scale
					qkIdx := ((b*Hq+h)*T+t)*total + s
					if mode == 0 {
						qk[qkIdx] = v
					}
					// Softcap bounds the scores before the mask is added
					// (ONNX 1.22), so a -inf mask stays -inf.
					if softcap > 0 {
						v = softcap * math.Tanh(v/softcap)
					}
					if mode == 1 {
						qk[qkIdx] = v
					}
					v += maskAt(b, h, t, s)
					if causal && s > past+t || nonpad != nil && s >= int(nonpad[b]) {
						v = math.Inf(-1)
					}
					if mode == 2 {
						qk[qkIdx] = v
					}
					row[s] = v
				}
				mx := math.Inf(-1)
				for _, v := range row {
					mx = max(mx, v)
				}
				var sum float64
				for s, v := range row {
					row[s] = math.Exp(v - mx)
					sum += row[s]
				}
				for s := range row {
					row[s] /= sum
					if mode == 3 {
						qk[((b*Hq+h)*T+t)*total+s] = row[s]
					}
				}
				for i := range dv {
					var acc float64
					for s, p := range row {
						acc += p * presV[((b*Hkv+hk)*total+s)*dv+i]
					}
					if len(qs) == 4 {
						y[((b*Hq+h)*T+t)*dv+i] = acc
					} else {
						y[((b*T+t)*Hq+h)*dv+i] = acc
					}
				}
			}
		}
	}
	setFloats(outs[0].Data, y)
	if len(outs) > 1 {
		setFloats(outs[1].Data, presK)
	}
	if len(outs) > 2 {
		setFloats(outs[2].Data, presV)
	}
	if len(outs) > 3 {
		setFloats(outs[3].Data, qk)
	}
	return nil
}

// quantParamIndex maps an element of x (multi-index ctr) to its scale /
// zero point: per tensor, per axis (1-D parameters), or per block along
// the axis (parameters of x's rank, block_size > 0).
func quantParamIndex(ps, xs []int, axis, block int) func(ctr []int) int {
	if prod(ps) == 1 {
		return func([]int) int { return 0 }
	}
	if axis < 0 {
		axis += len(xs)
	}
	if len(ps) == 1 && block == 0 {
		return func(ctr []int) int { return ctr[axis] }
	}
	pst := stridesOf(ps)
	return func(ctr []int) int {
		i := 0
		for ax, c := range ctr {
			if ax == axis && block > 0 {
				c /= block
			}
			i += c * pst[ax]
		}
		return i
	}
}

func typeRange(t quant.Type) (lo, hi float64) {
	switch t {
	case quant.I8:
		return -128, 127
	case quant.U8:
		return 0, 255
	case quant.I4:
		return -8, 7
	case quant.U4:
		return 0, 15
	case quant.I2:
		return -2, 1
	case quant.U2:
		return 0, 3
	case quant.I16:
		return -32768, 32767
	case quant.U16:
		return 0, 65535
	case quant.I32:
		return math.MinInt32, math.MaxInt32
	case quant.U32:
		return 0, math.MaxUint32
	}
	return math.Inf(-1), math.Inf(1)
}

// quantParams reads Quantize/DequantizeLinear's scale, optional zero
// point and how an element's counter picks its parameter (per tensor, per
// axis, or per block along the axis).
func quantParams(ds []any, shapes [][]int, attrs ir.Attrs) (sc, zp []float64, pi func([]int) int, err error) {
	if sc, err = floats(ds[1]); err != nil {
		return nil, nil, nil, err
	}
	if len(ds) > 2 {
		zp = numbers(ds[2])
	}
	axis := 1
	if attrs.Has("axis") {
		axis = int(attrs.Int("axis"))
	}
	return sc, zp, quantParamIndex(shapes[1], shapes[0], axis, int(attrs.Int("block_size"))), nil
}

func quantizeLinear(out *lqrt.Tensor, in []*lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	x, err := floats(ds[0])
	if err != nil {
		return err
	}
	sc, zp, pi, err := quantParams(ds, shapes, attrs)
	if err != nil {
		return err
	}
	r := make([]float64, len(x))
	xt := in[0].Type
	mini := out.Type.IsMiniFloat()
	lo, hi := typeRange(out.Type)
	if mini && (!attrs.Has("saturate") || attrs.Int("saturate") != 0) {
		hi = float64(quant.MaxFinite(out.Type))
		lo = -hi
	}
	newIter(shapes[0]).eachIndex(func(o int, ctr []int) {
		p := pi(ctr)
		// The quotient is rounded to x's precision first, as ONNX computes
		// it in x's type; that decides ties. Small float outputs are
		// rounded to their format afterwards (roundTo).
		v := roundOne(xt, x[o]/sc[p])
		if !mini {
			v = math.RoundToEven(v)
		}
		if zp != nil {
			v += zp[p]
		}
		if !math.IsNaN(v) {
			v = max(lo, min(hi, v))
		}
		r[o] = v
	})
	if mini {
		setFloats(out.Data, r)
		return nil
	}
	is := make([]int64, len(r))
	for i, v := range r {
		is[i] = int64(v)
	}
	return setInts(out.Data, is)
}

func dequantizeLinear(out *lqrt.Tensor, ds []any, shapes [][]int, attrs ir.Attrs) error {
	x := numbers(ds[0])
	sc, zp, pi, err := quantParams(ds, shapes, attrs)
	if err != nil {
		return err
	}
	r := make([]float64, len(x))
	newIter(shapes[0]).eachIndex(func(o int, ctr []int) {
		p := pi(ctr)
		v := x[o]
		if zp != nil {
			v -= zp[p]
		}
		r[o] = v * sc[p]
	})
	setFloats(out.Data, r)
	return nil
}

func dynamicQuantizeLinear(outs []*lqrt.Tensor, x any) error {
	xf, err := floats(x)
	if err != nil {
		return err
	}
	// In float32 throughout, as ONNX defines it: the range always holds 0,
	// and an all-zero input gets scale 1/255.
	var lo, hi float32
	for _, v := range xf {
		lo, hi = min(lo, float32(v)), max(hi, float32(v))
	}
	span := hi - lo
	if span == 0 {
		span = 1
	}
	scale := span / 255
	zp := float32(max(0, min(255, math.RoundToEven(float64(-lo/scale)))))
	y := outs[0].Data.([]uint8)
	for i, v := range xf {
		q := float32(math.RoundToEven(float64(float32(v)/scale))) + zp
		y[i] = uint8(max(0, min(255, q)))
	}
	outs[1].Data.([]float32)[0] = scale
	outs[2].Data.([]uint8)[0] = uint8(zp)
	return nil
}

func matmulInteger(out *lqrt.Tensor, ds []any, shapes [][]int) error {
	a, _ := intsOf(ds[0])
	b, _ := intsOf(ds[1])
	as, bs := shapes[0], shapes[1]
	if len(ds) > 2 { // a's zero point: scalar or one per row of a
		z, _ := intsOf(ds[2])
		K := as[len(as)-1]
		for i := range a {
			if len(z) == 1 {
				a[i] -= z[0]
			} else {
				a[i] -= z[(i/K)%len(z)]
			}
		}
	}
	if len(ds) > 3 { // b's zero point: scalar or one per column of b
		z, _ := intsOf(ds[3])
		N := bs[len(bs)-1]
		for i := range b {
			if len(z) == 1 {
				b[i] -= z[0]
			} else {
				b[i] -= z[i%N]
			}
		}
	}
	return matmulN(out, a, b, as, bs)
}
