package runtime

import (
	"math"
	"math/rand/v2"
	"sort"
)

// SamplerOptions choose the next token from logits. Temp 0 is greedy
// (argmax, the first of equal maxima); otherwise the TopK most likely
// tokens (0: all) are kept, then the smallest set whose probability
// reaches TopP (1: all), and one is drawn with probability ∝ exp(logit/Temp).
type SamplerOptions struct {
	Temp float32
	TopK int
	TopP float32
	Seed uint64
}

// Sampler draws tokens; with a fixed seed the draws repeat.
type Sampler struct {
	opt SamplerOptions
	rng *rand.Rand
}

// NewSampler returns a sampler for opt.
func NewSampler(opt SamplerOptions) *Sampler {
	return &Sampler{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x5851F42D4C957F2D))}
}

// Argmax is the index of the largest logit (the first, on ties).
func Argmax(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// Sample picks the next token.
func (s *Sampler) Sample(logits []float32) int32 {
	if s.opt.Temp <= 0 {
		return Argmax(logits)
	}
	idx := make([]int, len(logits))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return logits[idx[a]] > logits[idx[b]] })
	if k := s.opt.TopK; k > 0 && k < len(idx) {
		idx = idx[:k]
	}
	probs := make([]float64, len(idx))
	mx := float64(logits[idx[0]])
	var sum float64
	for i, id := range idx {
		probs[i] = math.Exp((float64(logits[id]) - mx) / float64(s.opt.Temp))
		sum += probs[i]
	}
	if p := float64(s.opt.TopP); p > 0 && p < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i] / sum
			if cum >= p {
				idx, probs = idx[:i+1], probs[:i+1]
				break
			}
		}
		sum = 0
		for _, q := range probs {
			sum += q
		}
	}
	r := s.rng.Float64() * sum
	for i, q := range probs {
		if r -= q; r < 0 {
			return int32(idx[i])
		}
	}
	return int32(idx[len(idx)-1])
}
