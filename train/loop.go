package train

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Config is how Train runs.
type Config struct {
	Steps     int // optimizer steps in all (the run ends at Steps)
	Batch     int // windows per micro-batch
	GradAccum int // micro-batches per optimizer step
	Schedule  Schedule
	Clip      float64 // global gradient-norm clip (0: none)
	Order     *Order  // which example each window is
	// AfterStep, when set, runs after every optimizer step (checkpoints,
	// evaluation, progress); an error ends training.
	AfterStep func(StepResult) error
}

// StepResult is what one optimizer step did.
type StepResult struct {
	Step     int     `json:"step"` // from 1
	Steps    int     `json:"steps"`
	Loss     float64 `json:"loss"` // the objective on the step's windows, before the update
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Tokens   int     `json:"tokens"`    // positions of the step's windows
	Seconds  float64 `json:"seconds"`   // the step's wall time
	Windows  int     `json:"windows"`   // windows consumed since the start of the run
	TokensPS float64 `json:"tokens_ps"` // training tokens (forward + backward) per second
}

// State is what a run carries from step to step: all a checkpoint needs
// besides the parameters.
type State struct {
	Step int
	Opt  *AdamW
}

// Train runs optimizer steps from st.Step+1 to cfg.Steps over data. Each
// step accumulates the gradients of GradAccum micro-batches of Batch
// windows, the objective averaged over every scored position of the step,
// then clips and applies AdamW. It stops with an error on a NaN or
// infinite loss (before updating), and between steps when ctx is done
// (the state is then that of the last completed step).
func (e *Engine) Train(ctx context.Context, data []Example, cfg Config, st *State) error {
	per := cfg.Batch * cfg.GradAccum
	if per <= 0 {
		return fmt.Errorf("batch %d × accumulation %d", cfg.Batch, cfg.GradAccum)
	}
	if len(data) < cfg.Batch {
		return fmt.Errorf("the data has %d windows, fewer than one batch of %d", len(data), cfg.Batch)
	}
	for st.Step < cfg.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		start := time.Now()
		step := st.Step + 1
		first := st.Step * per
		var windows []Example
		for k := range per {
			windows = append(windows, data[cfg.Order.At(first+k)])
		}
		scored, tokens := 0, 0
		for _, w := range windows {
			scored += e.Scored(w)
			tokens += len(w.Tokens)
		}
		e.ZeroGrad()
		var loss float64
		for mb := 0; mb < cfg.GradAccum; mb++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			l, err := e.Batch(windows[mb*cfg.Batch:(mb+1)*cfg.Batch], scored)
			if err != nil {
				return fmt.Errorf("step %d: %w", step, err)
			}
			loss += l
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return fmt.Errorf("step %d: the loss is %v: training diverged (try a lower --lr or --clip)", step, loss)
		}
		norm := ClipGradNorm(e.params, cfg.Clip)
		if math.IsNaN(norm) || math.IsInf(norm, 0) {
			return fmt.Errorf("step %d: the gradient norm is %v: training diverged (try a lower --lr or --clip)", step, norm)
		}
		lr := cfg.Schedule.At(step)
		if err := st.Opt.Update(e.params, lr); err != nil {
			return err
		}
		e.Changed()
		st.Step = step
		secs := time.Since(start).Seconds()
		if cfg.AfterStep != nil {
			r := StepResult{Step: step, Steps: cfg.Steps, Loss: loss, LR: lr, GradNorm: norm, Tokens: tokens,
				Seconds: secs, Windows: step * per, TokensPS: float64(tokens) / secs}
			if err := cfg.AfterStep(r); err != nil {
				return err
			}
		}
	}
	return nil
}
