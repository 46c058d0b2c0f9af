package runtime

import (
	"context"
	"fmt"
	"time"
)

// Stats are the speeds of a generation.
type Stats struct {
	PromptTokens, GenTokens int
	PromptTime, GenTime     time.Duration
}

// PromptRate is prompt-processing speed in tokens per second.
func (s Stats) PromptRate() float64 {
	return float64(s.PromptTokens) / max(s.PromptTime.Seconds(), 1e-9)
}

// GenRate is generation speed in tokens per second.
func (s Stats) GenRate() float64 { return float64(s.GenTokens) / max(s.GenTime.Seconds(), 1e-9) }

// Generate evaluates prompt as one batch, then samples up to n tokens one
// at a time, calling emit with each; it stops early when stop(id) is true
// (an end-of-generation token, which is not emitted).
func Generate(ctx context.Context, s *Session, prompt []int32, n int, smp *Sampler, stop func(int32) bool, emit func(int32) error) (Stats, error) {
	var st Stats
	if len(prompt) == 0 {
		return st, fmt.Errorf("empty prompt: start from BOS at least")
	}
	t0 := time.Now()
	logits, err := s.Forward(prompt, false)
	if err != nil {
		return st, err
	}
	st.PromptTokens, st.PromptTime = len(prompt), time.Since(t0)
	t0 = time.Now()
	for st.GenTokens < n {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		id := smp.Sample(logits)
		if stop != nil && stop(id) {
			break
		}
		if err := emit(id); err != nil {
			return st, err
		}
		st.GenTokens++
		if st.GenTokens == n || s.Pos() == s.Context() {
			break
		}
		if logits, err = s.Forward([]int32{id}, false); err != nil {
			return st, err
		}
	}
	st.GenTime = time.Since(t0)
	return st, nil
}
