package train

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/runtime"
)

// AdamW is PyTorch's torch.optim.AdamW (decoupled weight decay, bias
// correction), with the moments kept in float32 beside each parameter.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	// Step counts the updates made (the bias correction's t).
	Step int
	M, V [][]float32
}

// NewAdamW makes an optimizer for params.
func NewAdamW(params []*runtime.Param, beta1, beta2, eps, weightDecay float64) *AdamW {
	o := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, WeightDecay: weightDecay}
	for _, p := range params {
		o.M = append(o.M, make([]float32, len(p.Value)))
		o.V = append(o.V, make([]float32, len(p.Value)))
	}
	return o
}

// Update applies one step with learning rate lr to every parameter from
// its Grad.
func (o *AdamW) Update(params []*runtime.Param, lr float64) error {
	if len(params) != len(o.M) {
		return fmt.Errorf("optimizer state for %d tensors, %d parameters", len(o.M), len(params))
	}
	o.Step++
	c1 := 1 - math.Pow(o.Beta1, float64(o.Step))
	c2 := 1 - math.Pow(o.Beta2, float64(o.Step))
	for i, p := range params {
		m, v := o.M[i], o.V[i]
		for j, g := range p.Grad {
			x := float64(p.Value[j])
			x -= lr * o.WeightDecay * x
			mj := o.Beta1*float64(m[j]) + (1-o.Beta1)*float64(g)
			vj := o.Beta2*float64(v[j]) + (1-o.Beta2)*float64(g)*float64(g)
			m[j], v[j] = float32(mj), float32(vj)
			x -= lr * (mj / c1) / (math.Sqrt(vj/c2) + o.Eps)
			p.Value[j] = float32(x)
		}
	}
	return nil
}

// ClipGradNorm scales every gradient so that their global L2 norm is at
// most maxNorm (torch.nn.utils.clip_grad_norm_), and returns the norm
// before clipping. maxNorm ≤ 0 only measures.
func ClipGradNorm(params []*runtime.Param, maxNorm float64) float64 {
	var ss float64
	for _, p := range params {
		for _, g := range p.Grad {
			ss += float64(g) * float64(g)
		}
	}
	norm := math.Sqrt(ss)
	if maxNorm > 0 && norm > maxNorm {
		f := float32(maxNorm / (norm + 1e-6))
		for _, p := range params {
			for j := range p.Grad {
				p.Grad[j] *= f
			}
		}
	}
	return norm
}

// Schedule is the learning rate at each step (from 1): linear warmup from
// 0, then constant or cosine decay to MinLR at Total.
type Schedule struct {
	LR, MinLR     float64
	Warmup, Total int
	Cosine        bool
}

// At is the learning rate of step (1-based).
func (s Schedule) At(step int) float64 {
	if s.Warmup > 0 && step <= s.Warmup {
		return s.LR * float64(step) / float64(s.Warmup)
	}
	if !s.Cosine || s.Total <= s.Warmup {
		return s.LR
	}
	p := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	p = min(1, max(0, p))
	return s.MinLR + (s.LR-s.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}
