// Package train trains LoRA adapters on a frozen (quantized) model: the
// model's inference graph becomes a training graph through the passes of
// passes.Training (whole windows, the adapter as LowRank ops, a loss, the
// backward graph from ir.Backward), which a runtime.Trainer runs on any
// backend. Two objectives share the engine: distillation from a teacher
// (residual adapters that win back what quantization lost) and supervised
// fine-tuning on response tokens.
package train

import (
	"fmt"
	"io"
	"time"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime"
)

// Engine computes a training objective and its gradients for an adapter
// over a frozen base.
type Engine struct {
	Objective passes.Objective
	base      *ir.Model
	trainer   *runtime.Trainer
	teacher   *runtime.Model // distillation only
	params    []*runtime.Param
	// lora maps each adapted weight to its parameters and scale.
	lora map[string]*loraParams
}

type loraParams struct {
	a, b  *runtime.Param
	scale float64
	// hfRows maps the adapted weight's canonical rows to the Hugging Face
	// layout's (nil: the same), for writing PEFT files.
	hfRows []int64
}

// EngineOptions configure NewEngine.
type EngineOptions struct {
	Objective passes.Objective
	// Teacher is the model distillation learns from (same vocabulary).
	Teacher *ir.Model
	// Backend runs the student's training graph and the teacher.
	Backend runtime.Backend
	// FlashAttention keeps attention fused (backward from the saved
	// log-sum-exp); off differentiates the spelled-out attention.
	FlashAttention bool
	// Recompute trades compute for memory (gradient checkpointing): each
	// layer's activations are recomputed in the backward pass instead of
	// kept from the forward, so one layer's are alive at a time.
	Recompute bool
	// Trace and Dump, when set, receive the pass pipeline's report and
	// the graph after every pass.
	Trace, Dump io.Writer
}

// NewEngine builds the training graph of base with adapter ad attached
// (its values are the starting point) and binds it. base's graph is
// rewritten in place: base is the training model from here on.
func NewEngine(base *ir.Model, ad *ir.Adapter, opt EngineOptions) (*Engine, error) {
	if opt.Objective == passes.Distill {
		if opt.Teacher == nil {
			return nil, fmt.Errorf("distillation needs a teacher model")
		}
		if err := CheckTeacher(base, opt.Teacher); err != nil {
			return nil, err
		}
	}
	scales := map[string]float64{}
	for name, l := range ad.LoRA {
		scales[name] = l.Scale
	}
	pm := &passes.Manager{Passes: passes.Training(ad, passes.TrainingOptions{Objective: opt.Objective, FlashAttention: opt.FlashAttention, Recompute: opt.Recompute}), Trace: opt.Trace, Dump: opt.Dump}
	if err := pm.Run(base); err != nil {
		return nil, err
	}
	tr, err := runtime.NewTrainer(base, opt.Backend)
	if err != nil {
		return nil, err
	}
	e := &Engine{Objective: opt.Objective, base: base, trainer: tr, params: tr.Params(), lora: map[string]*loraParams{}}
	byName := map[string]*runtime.Param{}
	for _, p := range e.params {
		byName[p.Name] = p
	}
	a, _ := arch.Lookup(base.Arch)
	for name, s := range scales {
		an, bn := passes.LoRAWeights(name)
		if byName[an] == nil || byName[bn] == nil {
			return nil, fmt.Errorf("the training graph has no parameters for %s", name)
		}
		l := &loraParams{a: byName[an], b: byName[bn], scale: s}
		if a != nil {
			if l.hfRows, err = HFRows(a, name, base.Params, l.b.Shape[0]); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		e.lora[name] = l
	}
	if opt.Objective == passes.Distill {
		if e.teacher, err = runtime.Load(opt.Teacher, opt.Backend); err != nil {
			return nil, fmt.Errorf("teacher: %w", err)
		}
	}
	return e, nil
}

// CheckTeacher refuses a teacher that is not the same model as the
// student's base: another architecture, vocabulary or shape.
func CheckTeacher(student, teacher *ir.Model) error {
	switch {
	case teacher.Arch != student.Arch:
		return fmt.Errorf("teacher %s is a %s model, the base is %s", teacher.Source, teacher.Arch, student.Arch)
	case teacher.Params.VocabSize != student.Params.VocabSize:
		return fmt.Errorf("teacher %s has a vocabulary of %d tokens, the base %d: not the same model", teacher.Source, teacher.Params.VocabSize, student.Params.VocabSize)
	case teacher.Params.EmbeddingLength != student.Params.EmbeddingLength || teacher.Params.BlockCount != student.Params.BlockCount:
		return fmt.Errorf("teacher %s has %d layers of width %d, the base %d of width %d: not the same model", teacher.Source,
			teacher.Params.BlockCount, teacher.Params.EmbeddingLength, student.Params.BlockCount, student.Params.EmbeddingLength)
	}
	if teacher.Vocab != nil && student.Vocab != nil {
		for i, tok := range student.Vocab.Tokens {
			if teacher.Vocab.Tokens[i] != tok {
				return fmt.Errorf("teacher %s: token %d is %q, the base's is %q: not the same vocabulary", teacher.Source, i, teacher.Vocab.Tokens[i], tok)
			}
		}
	}
	return nil
}

// Params are the trained tensors, in graph order.
func (e *Engine) Params() []*runtime.Param { return e.params }

// Model is the training model (its graph is the training graph).
func (e *Engine) Model() *ir.Model { return e.base }

// Changed tells the engine the parameters' values were updated.
func (e *Engine) Changed() { e.trainer.Changed() }

// Example is one training window: tokens from position 0, and for SFT the
// target of each position (-1: not scored).
type Example struct {
	Tokens  []int32
	Targets []int32
}

// Scored is the number of positions an example's loss sums over.
func (e *Engine) Scored(ex Example) int {
	if e.Objective == passes.Distill {
		return len(ex.Tokens)
	}
	n := 0
	for _, t := range ex.Targets {
		if t >= 0 {
			n++
		}
	}
	return n
}

// Batch computes the objective's mean over every scored position of the
// examples and accumulates its gradient into the parameters' Grad (which
// the caller zeroes). scored is the number of positions the mean divides
// by: the whole optimizer step's, when a step accumulates several
// batches.
func (e *Engine) Batch(exs []Example, scored int) (float64, error) {
	if scored <= 0 {
		return 0, fmt.Errorf("no scored positions in the batch")
	}
	var sum float64
	for _, ex := range exs {
		w := runtime.Window{Tokens: ex.Tokens, Targets: ex.Targets, Scale: float32(1 / float64(scored))}
		if e.Objective == passes.Distill {
			var err error
			if w.Teacher, err = e.TeacherLogits(ex.Tokens); err != nil {
				return 0, err
			}
		}
		loss, err := e.trainer.Accumulate(w)
		if err != nil {
			return 0, err
		}
		sum += loss
	}
	return sum / float64(scored), nil
}

// TeacherLogits runs the teacher over a window from position 0.
func (e *Engine) TeacherLogits(tokens []int32) ([]float32, error) {
	s, err := e.teacher.NewSession(len(tokens))
	if err != nil {
		return nil, err
	}
	logits, err := s.Forward(tokens, true)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	return logits, nil
}

// Times are the wall time spent in the forward and in the backward graph
// so far (the teacher's forward not included).
func (e *Engine) Times() (forward, backward time.Duration) { return e.trainer.Times() }

// ZeroGrad clears the accumulated gradients.
func (e *Engine) ZeroGrad() { e.trainer.ZeroGrad() }
