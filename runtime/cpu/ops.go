package cpu

import (
	"fmt"
	"math"
	"unsafe"

	lqrt "github.com/lqc-dev/lqc/runtime"
)

func bytesF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func rmsNorm(p *pool, out, x, w []float32, eps float32) {
	d := len(w)
	p.parallel(len(x)/d, grainFor(d, 1), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row, o := x[t*d:(t+1)*d], out[t*d:(t+1)*d]
			var ss float64
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			s := float32(1 / math.Sqrt(ss/float64(d)+float64(eps)))
			for i, v := range row {
				o[i] = v * s * w[i]
			}
		}
	})
}

func layerNorm(p *pool, out, x, w, bias []float32, eps float32) {
	d := len(w)
	p.parallel(len(x)/d, grainFor(d, 1), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row, o := x[t*d:(t+1)*d], out[t*d:(t+1)*d]
			var mean float64
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(d)
			var varsum float64
			for _, v := range row {
				dv := float64(v) - mean
				varsum += dv * dv
			}
			s := 1 / math.Sqrt(varsum/float64(d)+float64(eps))
			for i, v := range row {
				o[i] = float32((float64(v)-mean)*s)*w[i] + bias[i]
			}
		}
	})
}

// broadcastAdd and broadcastMul compute out = a ∘ b with b repeated over
// a's leading dimensions, each its own loop: through a function value
// every element cost a call.
func broadcastAdd(out, a, b []float32) {
	n := len(b)
	for base := 0; base < len(a); base += n {
		o, x := out[base:base+n], a[base:base+n]
		for i := range o {
			o[i] = x[i] + b[i]
		}
	}
}

func broadcastMul(out, a, b []float32) {
	n := len(b)
	for base := 0; base < len(a); base += n {
		o, x := out[base:base+n], a[base:base+n]
		for i := range o {
			o[i] = x[i] * b[i]
		}
	}
}

// silu and expShift (dst = e^(src−shift)) are vectorized where the CPU
// has AVX2 (dot_amd64.go): a polynomial exp within two ulps of
// math.Exp's (TestExpShift), as ggml's own.
var silu, expShift = siluGo, expShiftGo

func siluGo(out, x []float32) {
	for i, v := range x {
		out[i] = v / (1 + float32(math.Exp(float64(-v))))
	}
}

func expShiftGo(dst, src []float32, shift float32) {
	for i, v := range src {
		dst[i] = float32(math.Exp(float64(v - shift)))
	}
}

// gelu is the tanh approximation (GPT-2's gelu_new).
func gelu(out, x []float32) {
	const c = 0.7978845608028654 // sqrt(2/π)
	for i, v := range x {
		u := float64(v)
		out[i] = float32(0.5 * u * (1 + math.Tanh(c*(u+0.044715*u*u*u))))
	}
}

// geluErf is the exact GELU, x·Φ(x).
func geluErf(out, x []float32) {
	for i, v := range x {
		u := float64(v)
		out[i] = float32(0.5 * u * (1 + math.Erf(u/math.Sqrt2)))
	}
}

func scale(out, x []float32, s float32) {
	for i, v := range x {
		out[i] = v * s
	}
}

// softcap is cap·tanh(x/cap), computed as the fused attention kernel
// computes it.
func softcap(out, x []float32, c float32) {
	for i, v := range x {
		out[i] = c * float32(math.Tanh(float64(v/c)))
	}
}

func softmax(p *pool, out, x []float32, n int) {
	p.parallel(len(x)/n, grainFor(4*n, 1), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row, o := x[r*n:(r+1)*n], out[r*n:(r+1)*n]
			mx := float32(math.Inf(-1))
			for _, v := range row {
				mx = max(mx, v)
			}
			expShift(o, row, mx)
			var sum float64
			for _, e := range o {
				sum += float64(e)
			}
			inv := float32(1 / sum)
			for i := range o {
				o[i] *= inv
			}
		}
	})
}

// causalMask: queries are the last T of S positions; query t may see
// keys 0 … S-T+t.
// With zero set the masked entries are 0 instead of -inf: the mask's
// gradient.
func causalMask(out, x []float32, shape []int, zero bool, window int) {
	T, S := shape[len(shape)-2], shape[len(shape)-1]
	neg := float32(math.Inf(-1))
	if zero {
		neg = 0
	}
	for base := 0; base < len(x); base += T * S {
		for t := range T {
			row := base + t*S
			limit := S - T + t // the query's position
			first := 0         // its first visible key
			if window > 0 {
				first = limit - window + 1
			}
			for s := range S {
				if s > limit || s < first {
					out[row+s] = neg
				} else {
					out[row+s] = x[row+s]
				}
			}
		}
	}
}

// rope rotates x[T,H,d] by position. Frequencies are computed in float64
// as θ_i = pos·base^(-2i/n_dims): "normal" rotates pairs (2i, 2i+1),
// "neox" pairs (i, i+n_dims/2). inverse rotates by −θ_i: the
// transpose of the rotation, which is its gradient. factors, when given,
// divide θ_i (Llama 3's frequency scaling); freqScale multiplies the
// positions (linear scaling).
func rope(out, x []float32, pos []int32, factors []float32, freqScale float64, shape []int, nDims int, base float64, neox, inverse bool) {
	T, H, d := shape[0], shape[1], shape[2]
	copy(out, x)
	freq := make([]float64, nDims/2) // the same for every token
	for i := range freq {
		freq[i] = math.Pow(base, -2*float64(i)/float64(nDims))
	}
	for t := range T {
		for i, f := range freq {
			theta := float64(pos[t]) * freqScale * f
			if factors != nil {
				theta /= float64(factors[i])
			}
			sin, cos := math.Sincos(theta)
			c, s := float32(cos), float32(sin)
			if inverse {
				s = -s
			}
			for h := range H {
				row := out[(t*H+h)*d:]
				src := x[(t*H+h)*d:]
				a, b := 2*i, 2*i+1
				if neox {
					a, b = i, i+nDims/2
				}
				x0, x1 := src[a], src[b]
				row[a] = x0*c - x1*s
				row[b] = x0*s + x1*c
			}
		}
	}
}

// keepsOrder reports whether permuting axes of a tensor of this shape
// leaves its elements in the same order: the axes longer than one keep
// their relative order.
func keepsOrder(shape []int, perm []int64) bool {
	last := -1
	for _, p := range perm {
		if shape[p] == 1 {
			continue
		}
		if int(p) < last {
			return false
		}
		last = int(p)
	}
	return true
}

// matmul multiplies batches of matrices: a[B,M,K] · b[Bk,K,N] (or b[Bk,N,K]
// transposed), batch i of a with batch i/(B/Bk) of b. Either operand may be
// a strided view (a KV cache).
func (b *Backend) matmul(out, a, bb *lqrt.Tensor, transB bool) error {
	B, M, K := a.Shape[0], a.Shape[1], a.Shape[2]
	Bk := bb.Shape[0]
	N := out.Shape[2]
	if B%Bk != 0 {
		return fmt.Errorf("cpu: MatMul batch %d is not a multiple of %d", B, Bk)
	}
	group := B / Bk
	as, bs := a.Step0(), bb.Step0()
	ad, bd, od := f32s(a), f32s(bb), f32s(out)
	// One batch per task: b's matrix, transposed when it is not already,
	// is then read along rows by dotF32.
	b.pool.parallel(B, 1, func(lo, hi int) {
		var bt []float32
		for i := lo; i < hi; i++ {
			bm := bd[(i/group)*bs:]
			if !transB {
				if bt == nil {
					bt = make([]float32, N*K)
				}
				for k := range K {
					for n := range N {
						bt[n*K+k] = bm[k*N+n]
					}
				}
				bm = bt
			}
			for m := range M {
				arow := ad[i*as+m*K : i*as+(m+1)*K]
				orow := od[(i*M+m)*N : (i*M+m+1)*N]
				for n := range N {
					orow[n] = dotF32(arow, bm[n*K:(n+1)*K])
				}
			}
		}
	})
	return nil
}

// permute copies x (dense, up to 4 axes) into out with axes reordered.
func permute(out, x *lqrt.Tensor, perm []int64) error {
	if len(perm) != 3 || x.Stride0 != 0 {
		return fmt.Errorf("cpu: Permute supports dense 3-D tensors, have %v", x.Shape)
	}
	src, dst := f32s(x), f32s(out)
	s := x.Shape
	if keepsOrder(s, perm) { // moving axes of length 1 only: a token's heads when decoding
		copy(dst, src[:len(dst)])
		return nil
	}
	strides := []int{s[1] * s[2], s[2], 1}
	o := out.Shape
	i := 0
	for a := range o[0] {
		for b := range o[1] {
			for c := range o[2] {
				idx := [3]int{}
				idx[perm[0]], idx[perm[1]], idx[perm[2]] = a, b, c
				dst[i] = src[idx[0]*strides[0]+idx[1]*strides[1]+idx[2]*strides[2]]
				i++
			}
		}
	}
	return nil
}

// slice copies x[..., start:start+len] along axis into out.
func slice(out, x *lqrt.Tensor, axis, start int) { sliceCopy(out, x, axis, start, false) }

// sliceCopy copies between the whole tensor full and the part of it at
// [start, start+len) along axis: into part, or, with into set, from part
// into full (the slice's gradient; the rest of full is left as it is).
func sliceCopy(part, full *lqrt.Tensor, axis, start int, into bool) {
	if axis < 0 {
		axis += len(full.Shape)
	}
	outer := 1
	for _, d := range full.Shape[:axis] {
		outer *= d
	}
	inner := 1
	for _, d := range full.Shape[axis+1:] {
		inner *= d
	}
	p, f := f32s(part), f32s(full)
	n, whole := part.Shape[axis]*inner, full.Shape[axis]*inner
	for o := range outer {
		at := o*whole + start*inner
		if into {
			copy(f[at:at+n], p[o*n:(o+1)*n])
		} else {
			copy(p[o*n:(o+1)*n], f[at:at+n])
		}
	}
}

// kvCache writes x[T,Hkv,d] into cache[Hkv,ctx,d] at positions pos… and
// makes out a view of the first pos+T positions.
func kvCache(out, x, cache *lqrt.Tensor, pos int) {
	T, H, d := x.Shape[0], x.Shape[1], x.Shape[2]
	ctx := cache.Shape[1]
	src, c := f32s(x), f32s(cache)
	for t := range T {
		for h := range H {
			copy(c[(h*ctx+pos+t)*d:(h*ctx+pos+t+1)*d], src[(t*H+h)*d:(t*H+h+1)*d])
		}
	}
	out.Data, out.Stride0 = c, ctx*d
}
