package passes

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// The passes that turn an inference graph into a training graph, in the
// order Training lists them: whole windows instead of a KV cache, the
// adapter as LowRank ops with trainable weights, a loss, and the backward
// graph built by ir.Backward. Each is an ordinary pass, so --dump-ir shows
// the graph after each one and the verifier checks it in between.

// TrainingOptions choose the training pipeline's passes.
type TrainingOptions struct {
	Objective Objective
	// FlashAttention keeps the fused attention (backward by recomputation
	// from the saved log-sum-exp); without it the spelled-out attention is
	// differentiated as it is.
	FlashAttention bool
	// Recompute adds gradient checkpointing: each layer's activations are
	// recomputed for its backward graph instead of kept (Recompute).
	Recompute bool
}

// Training is the pipeline from a model's inference graph to the graph
// of one training step.
func Training(ad *ir.Adapter, opt TrainingOptions) []Pass {
	ps := []Pass{TrainingForm{}}
	if opt.FlashAttention {
		ps = append(ps, FlashAttention{})
	}
	ps = append(ps, AttachLoRA{Adapter: ad}, AddLoss{Objective: opt.Objective}, Autodiff{})
	if opt.Recompute {
		ps = append(ps, Recompute{})
	}
	return ps
}

// TrainingForm makes the forward graph compute whole windows: every KV
// cache read becomes the transpose it is when a window starts at position
// 0 (the cache holds exactly the window's keys), and every matrix product
// keeps its activations in float32 (Linear's exact), so the gradients are
// those of the function the loss measures.
type TrainingForm struct{}

func (TrainingForm) Name() string { return "train-form" }

func (TrainingForm) Run(m *ir.Model) (Report, error) {
	var r Report
	for _, n := range m.Graph.Nodes {
		switch n.Op {
		case "KVCache":
			n.Op, n.Attrs = "Permute", ir.Attrs{"perm": []int64{1, 0, 2}}
			r.Changed++
		case "Linear":
			if !n.Attrs.Bool("exact") {
				n.Attrs = copyAttrs(n.Attrs)
				n.Attrs["exact"] = true
				r.Changed++
			}
		}
	}
	if err := m.Graph.Reinfer(); err != nil {
		return r, err
	}
	return r, nil
}

func copyAttrs(a ir.Attrs) ir.Attrs {
	out := ir.Attrs{}
	for k, v := range a {
		out[k] = v
	}
	return out
}

// AttachLoRA adds the adapter's update beside each matrix product it
// adapts: y = Linear(x, W) + LowRank(x, A, B), A and B new float32
// weights named as a GGUF adapter names them (<weight>.lora_a,
// <weight>.lora_b), which a trainer then treats as the parameters.
type AttachLoRA struct {
	Adapter *ir.Adapter
}

func (AttachLoRA) Name() string { return "lora-attach" }

// LoRAWeights names the adapter weights AttachLoRA adds for weight w.
func LoRAWeights(w string) (a, b string) { return w + ".lora_a", w + ".lora_b" }

func (p AttachLoRA) Run(m *ir.Model) (Report, error) {
	var r Report
	ad := p.Adapter
	if err := ad.Check(m); err != nil {
		return r, err
	}
	if len(ad.Replace) > 0 {
		return r, fmt.Errorf("%s: whole-weight replacements (modules_to_save) are not trained", ad.Name)
	}
	g := m.Graph
	done := map[string]bool{}
	for _, n := range append([]*ir.Node(nil), g.Nodes...) {
		if n.Op != "Linear" || n.Inputs[1].Weight == nil {
			continue
		}
		name := n.Inputs[1].Weight.Name
		l := ad.LoRA[name]
		if l == nil {
			continue
		}
		if l.Magnitude != nil {
			return r, fmt.Errorf("%s: %s: DoRA is not trained", ad.Name, name)
		}
		if done[name] {
			return r, fmt.Errorf("%s: weight %s is used by more than one product", ad.Name, name)
		}
		done[name] = true
		an, bn := LoRAWeights(name)
		A, err := ir.Convert(l.A.WithName(an), quant.F32)
		if err != nil {
			return r, err
		}
		B, err := ir.Convert(l.B.WithName(bn), quant.F32)
		if err != nil {
			return r, err
		}
		y := n.Outputs[0]
		lr, err := g.InsertAfter(n, "LowRank", ir.Attrs{"scale": l.Scale}, n.Inputs[0], g.AddWeight(A), g.AddWeight(B))
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		sum, err := g.InsertAfter(lr[0].Def, "Add", nil, y, lr[0])
		if err != nil {
			return r, fmt.Errorf("%s: %w", name, err)
		}
		g.ReplaceUses(y, sum[0], lr[0].Def, sum[0].Def)
		r.Changed++
	}
	for _, name := range ad.Names() {
		if !done[name] {
			return r, fmt.Errorf("%s: no matrix product of the graph reads %s", ad.Name, name)
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("%s: LoRA on %d weights", ad.Name, len(done)))
	return r, nil
}

// Objective is what a training step minimises.
type Objective int

const (
	// Distill is the mean over positions of KL(teacher ‖ student): the
	// graph takes the teacher's logits as input "teacher" [seq, vocab].
	Distill Objective = iota
	// SFT is the mean token cross-entropy: the graph takes "targets"
	// [seq], the next token at each position or -1 where nothing is
	// scored.
	SFT
)

func (o Objective) String() string {
	if o == SFT {
		return "sft"
	}
	return "distill"
}

// Names of the inputs a loss adds.
const (
	TeacherInput = "teacher"
	TargetsInput = "targets"
)

// AddLoss appends the objective on the graph's logits (its first output),
// which becomes the graph's only output: the loss summed over the
// window's positions.
type AddLoss struct {
	Objective Objective
}

func (AddLoss) Name() string { return "loss" }

func (p AddLoss) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	logits := g.Outputs[0]
	ls := logits.Shape()
	if len(ls) != 2 {
		return Report{}, fmt.Errorf("logits are %v, want [seq, vocab]", ls)
	}
	var loss []*ir.Value
	var err error
	if p.Objective == SFT {
		targets := g.Input(TargetsInput, quant.I32, ir.Shape{ls[0]})
		loss, err = g.Apply("CrossEntropy", nil, logits, targets)
	} else {
		teacher := g.Input(TeacherInput, quant.F32, ls)
		loss, err = g.Apply("KLDiv", nil, logits, teacher)
	}
	if err != nil {
		return Report{}, err
	}
	loss[0].Name = "loss"
	g.Outputs = []*ir.Value{loss[0]}
	return Report{Changed: 1, Notes: []string{p.Objective.String() + " loss on " + logits.Ref()}}, nil
}

// Autodiff appends the backward graph of the loss (the graph's output)
// with respect to every float32 weight named as AttachLoRA names them;
// the graph's outputs become the loss followed by each parameter's
// gradient, in weight order.
type Autodiff struct{}

func (Autodiff) Name() string { return "autodiff" }

// IsLoRAWeight reports whether a weight is an adapter's (a parameter).
func IsLoRAWeight(name string) bool {
	n := len(name)
	return n > 7 && (name[n-7:] == ".lora_a" || name[n-7:] == ".lora_b")
}

func (Autodiff) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	var params []*ir.Value
	for _, w := range g.Weights {
		if IsLoRAWeight(w.Weight.Name) {
			params = append(params, w)
		}
	}
	if len(params) == 0 {
		return Report{}, fmt.Errorf("the graph has no trainable weights")
	}
	forward := len(g.Nodes)
	loss := g.Outputs[0]
	grads, err := ir.Backward(g, loss, params)
	if err != nil {
		return Report{}, err
	}
	g.Outputs = append([]*ir.Value{loss}, grads...)
	return Report{Changed: len(g.Nodes) - forward,
		Notes: []string{fmt.Sprintf("backward graph of %d nodes for %d parameters (forward %d nodes)", len(g.Nodes)-forward, len(params), forward)}}, nil
}
