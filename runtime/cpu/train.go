package cpu

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// The kernels of the backward ops (ir/grad.go) and the losses. Every
// reduction runs in a fixed order whatever the number of threads (work is
// split by output element, never by summand), so training gives the same
// bits on 1 or 64 cores.

type kernel func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error

var trainingKernels map[string]kernel

func init() {
	trainingKernels = map[string]kernel{
		"LinearT": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			return b.linearT(f32s(out), f32s(in[0]), in[1])
		},
		"LinearGradW": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			b.linearGradW(f32s(out), f32s(in[0]), f32s(in[1]), out.Shape[0], out.Shape[1])
			return nil
		},
		"EmbeddingGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			return embeddingGrad(f32s(out), f32s(in[0]), in[1].Data.([]int32), out.Shape[1])
		},
		"RMSNormGrad": func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			normGrad(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), f32s(in[2]), attrs.Float("eps"), attrs.Str("wrt") == "w", true)
			return nil
		},
		"LayerNormGrad": func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			normGrad(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), f32s(in[2]), attrs.Float("eps"), attrs.Str("wrt") == "w", false)
			return nil
		},
		"SiLUGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			elementwise2(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), siluGrad)
			return nil
		},
		"GELUGrad": func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			f := geluTanhGrad
			if attrs.Str("approximate") == "none" {
				f = geluErfGrad
			}
			elementwise2(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), f)
			return nil
		},
		"ReluGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			elementwise2(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), func(x float64) float64 {
				if x > 0 {
					return 1
				}
				return 0
			})
			return nil
		},
		"SoftcapGrad": func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			c := attrs.Float("cap")
			elementwise2(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), func(x float64) float64 {
				t := math.Tanh(x / c)
				return 1 - t*t
			})
			return nil
		},
		"SoftmaxGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			softmaxGrad(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), out.Shape[len(out.Shape)-1])
			return nil
		},
		"CrossEntropy": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			return b.crossEntropy(f32s(out), nil, f32s(in[0]), in[1].Data.([]int32), 0)
		},
		"CrossEntropyGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			return b.crossEntropy(nil, f32s(out), f32s(in[0]), in[1].Data.([]int32), f32s(in[2])[0])
		},
		"KLDiv": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			b.klDiv(f32s(out), nil, f32s(in[0]), f32s(in[1]), in[0].Shape[1], 0)
			return nil
		},
		"KLDivGrad": func(b *Backend, _ ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			b.klDiv(nil, f32s(out), f32s(in[0]), f32s(in[1]), in[0].Shape[1], f32s(in[2])[0])
			return nil
		},
		"SliceGrad": func(b *Backend, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
			sliceGrad(out, in[0], int(attrs.Int("axis")), int(attrs.Int("start")))
			return nil
		},
	}
}

// linearT computes dx[t, i] = Σ_o dy[t, o]·W[o, i], reading W's encoded
// rows in place a panel at a time (linearTF32): the weight is never
// decoded whole, and every output element sums over o in order.
func (b *Backend) linearT(dx, dy []float32, wt *lqrt.Tensor) error {
	w, err := matrix(wt)
	if err != nil {
		return fmt.Errorf("cpu: LinearT: %w", err)
	}
	b.linearTF32(dx, dy, w, len(dy)/w.rows)
	return nil
}

func embeddingGrad(out, dy []float32, ids []int32, d int) error {
	clear(out)
	rows := len(out) / d
	for t, id := range ids {
		if id < 0 || int(id) >= rows {
			return fmt.Errorf("token id %d is outside the table of %d rows", id, rows)
		}
		axpy(out[int(id)*d:(int(id)+1)*d], 1, dy[t*d:(t+1)*d])
	}
	return nil
}

// normGrad is the gradient of RMSNorm (rms) or LayerNorm with respect to
// x (into out, x's shape) or to w (wrtW: out is w's shape, a sum over
// rows in order).
func normGrad(p *pool, out, x, w, dy []float32, eps float64, wrtW, rms bool) {
	d := len(w)
	rows := len(x) / d
	// stats gives a row's mean (0 for RMSNorm) and 1/σ.
	stats := func(row []float32) (mean, inv float64) {
		if !rms {
			for _, v := range row {
				mean += float64(v)
			}
			mean /= float64(d)
		}
		var ss float64
		for _, v := range row {
			c := float64(v) - mean
			ss += c * c
		}
		return mean, 1 / math.Sqrt(ss/float64(d)+eps)
	}
	if wrtW {
		acc := make([]float64, d)
		for t := range rows {
			row, g := x[t*d:(t+1)*d], dy[t*d:(t+1)*d]
			mean, inv := stats(row)
			for i, v := range row {
				acc[i] += float64(g[i]) * (float64(v) - mean) * inv
			}
		}
		for i, v := range acc {
			out[i] = float32(v)
		}
		return
	}
	p.parallel(rows, 8, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row, g, o := x[t*d:(t+1)*d], dy[t*d:(t+1)*d], out[t*d:(t+1)*d]
			mean, inv := stats(row)
			// With x̂ = (x−mean)/σ and gw = dy·w: RMSNorm's
			// dx = (gw − x̂·mean(gw·x̂))/σ; LayerNorm subtracts mean(gw) too.
			var sumG, sumGX float64
			for i, v := range row {
				gw := float64(g[i]) * float64(w[i])
				sumG += gw
				sumGX += gw * (float64(v) - mean) * inv
			}
			sumG /= float64(d)
			sumGX /= float64(d)
			if rms {
				sumG = 0
			}
			for i, v := range row {
				gw := float64(g[i]) * float64(w[i])
				o[i] = float32((gw - sumG - (float64(v)-mean)*inv*sumGX) * inv)
			}
		}
	})
}

func elementwise2(p *pool, out, x, dy []float32, f func(x float64) float64) {
	p.parallel(len(x), 4096, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = float32(float64(dy[i]) * f(float64(x[i])))
		}
	})
}

func siluGrad(x float64) float64 {
	s := 1 / (1 + math.Exp(-x))
	return s * (1 + x*(1-s))
}

func geluTanhGrad(x float64) float64 {
	const c = 0.7978845608028654 // sqrt(2/π)
	t := math.Tanh(c * (x + 0.044715*x*x*x))
	return 0.5*(1+t) + 0.5*x*(1-t*t)*c*(1+3*0.044715*x*x)
}

func geluErfGrad(x float64) float64 {
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*math.Exp(-x*x/2)/math.Sqrt(2*math.Pi)
}

func softmaxGrad(p *pool, out, y, dy []float32, n int) {
	p.parallel(len(y)/n, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			yr, gr, o := y[r*n:(r+1)*n], dy[r*n:(r+1)*n], out[r*n:(r+1)*n]
			var dot float64
			for i, v := range yr {
				dot += float64(v) * float64(gr[i])
			}
			for i, v := range yr {
				o[i] = float32(float64(v) * (float64(gr[i]) - dot))
			}
		}
	})
}

// logSoftmaxRow returns the row's log-sum-exp.
func logSumExp(row []float32) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	return mx + math.Log(s)
}

// crossEntropy computes the summed loss into loss[0], or its gradient
// (scaled by dl) into grad. Rows are independent; the sum runs over them
// in order.
func (b *Backend) crossEntropy(loss, grad, logits []float32, targets []int32, dl float32) error {
	T := len(targets)
	V := len(logits) / max(T, 1)
	for t, y := range targets {
		if y >= int32(V) {
			return fmt.Errorf("target %d at position %d is outside the vocabulary of %d", y, t, V)
		}
	}
	per := make([]float64, T)
	b.pool.parallel(T, 4, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			row := logits[t*V : (t+1)*V]
			y := targets[t]
			if y < 0 {
				if grad != nil {
					clear(grad[t*V : (t+1)*V])
				}
				continue
			}
			lse := logSumExp(row)
			per[t] = lse - float64(row[y])
			if grad != nil {
				g := grad[t*V : (t+1)*V]
				for i, v := range row {
					g[i] = float32(float64(dl) * math.Exp(float64(v)-lse))
				}
				g[y] = float32(float64(dl) * (math.Exp(float64(row[y])-lse) - 1))
			}
		}
	})
	if loss != nil {
		var s float64
		for _, v := range per {
			s += v
		}
		loss[0] = float32(s)
	}
	return nil
}

// klDiv computes Σ_t KL(softmax(teacher_t) ‖ softmax(logits_t)) into
// loss[0], or its gradient dl·(softmax(logits) − softmax(teacher)) into
// grad.
func (b *Backend) klDiv(loss, grad, logits, teacher []float32, V int, dl float32) {
	T := len(logits) / V
	per := make([]float64, T)
	b.pool.parallel(T, 4, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			s, q := logits[t*V:(t+1)*V], teacher[t*V:(t+1)*V]
			ls, lq := logSumExp(s), logSumExp(q)
			if grad != nil {
				g := grad[t*V : (t+1)*V]
				for i := range g {
					g[i] = float32(float64(dl) * (math.Exp(float64(s[i])-ls) - math.Exp(float64(q[i])-lq)))
				}
				continue
			}
			var kl float64
			for i := range s {
				lp := float64(q[i]) - lq
				if p := math.Exp(lp); p > 0 {
					kl += p * (lp - (float64(s[i]) - ls))
				}
			}
			per[t] = kl
		}
	})
	if loss != nil {
		var sum float64
		for _, v := range per {
			sum += v
		}
		loss[0] = float32(sum)
	}
}

// sliceGrad places dy at [start, start+len) along axis of a zero out.
func sliceGrad(out, dy *lqrt.Tensor, axis, start int) {
	clear(f32s(out))
	sliceCopy(dy, out, axis, start, true)
}
