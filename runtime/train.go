package runtime

import (
	"fmt"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// Trainer runs a training graph: the forward graph, a loss and its
// backward graph (ir.Backward), whose outputs are the loss followed by
// the gradients "grad.<weight>" of its parameters. The parameters are
// float32 weights the trainer owns: it keeps their values on the host
// (the optimizer's master copy), uploads them before each pass, and adds
// each pass's gradients into host buffers, so a batch may be split into
// any number of windows.
type Trainer struct {
	m      *Model
	params []*Param
	byVal  map[*ir.Value]*Param
	dirty  bool
	// backward is the index of the first node after the loss: the
	// backward graph's.
	backward int
	timed    []time.Duration
}

// Times are the wall time spent in the forward graph (up to the loss)
// and in the backward graph since the trainer was made.
func (tr *Trainer) Times() (forward, backward time.Duration) {
	for i, d := range tr.timed {
		if i < tr.backward {
			forward += d
		} else {
			backward += d
		}
	}
	return forward, backward
}

// Param is one trained weight.
type Param struct {
	Name  string
	Shape []int64
	Value []float32 // the current values
	Grad  []float32 // gradients accumulated since ZeroGrad
	val   *ir.Value
	t     *Tensor
	grad  *ir.Value
}

// NewTrainer binds the training graph of m to backend b; the parameters
// start from their weights' values.
func NewTrainer(m *ir.Model, b Backend) (*Trainer, error) {
	g := m.Graph
	if len(g.Outputs) < 2 {
		return nil, fmt.Errorf("graph %s is not a training graph (it has no gradient outputs)", g.Name)
	}
	tr := &Trainer{byVal: map[*ir.Value]*Param{}}
	for _, o := range g.Outputs[1:] {
		name, ok := strings.CutPrefix(o.Name, "grad.")
		w := g.WeightValue(name)
		if !ok || w == nil {
			return nil, fmt.Errorf("graph output %s is not the gradient of a weight", o.Ref())
		}
		v, err := w.Weight.Float32s()
		if err != nil {
			return nil, err
		}
		p := &Param{Name: name, Shape: w.Weight.Shape, Value: v, Grad: make([]float32, len(v)), val: w, grad: o}
		tr.params = append(tr.params, p)
		tr.byVal[w] = p
	}
	// The parameters are bound as activations the trainer writes; the
	// frozen weights as the backend keeps them.
	rm := &Model{IR: m, Backend: b, weights: map[*ir.Value]*Tensor{}, lastUse: map[*ir.Value]int{}}
	if err := g.Verify(); err != nil {
		return nil, err
	}
	for _, w := range g.Weights {
		if p := tr.byVal[w]; p != nil {
			shape := make([]int, len(p.Shape))
			for i, d := range p.Shape {
				shape[i] = int(d)
			}
			p.t = b.Alloc(quant.F32, shape)
			rm.weights[w] = p.t
			continue
		}
		t, err := b.Weight(w.Weight)
		if err != nil {
			return nil, err
		}
		rm.weights[w] = t
	}
	for i, n := range g.Nodes {
		for _, in := range n.Inputs {
			rm.lastUse[in] = i
		}
	}
	tr.m, tr.dirty = rm, true
	tr.timed = make([]time.Duration, len(g.Nodes))
	for i, n := range g.Nodes {
		if n == g.Outputs[0].Def {
			tr.backward = i + 1
		}
	}
	return tr, nil
}

// Params lists the parameters in the graph's order.
func (tr *Trainer) Params() []*Param { return tr.params }

// Changed tells the trainer that parameter values were updated on the
// host; they are uploaded before the next pass.
func (tr *Trainer) Changed() { tr.dirty = true }

// ZeroGrad clears the accumulated gradients.
func (tr *Trainer) ZeroGrad() {
	for _, p := range tr.params {
		clear(p.Grad)
	}
}

// Window is one training window: the tokens at positions 0…T-1 and what
// the loss compares them with.
type Window struct {
	Tokens []int32
	// Targets (SFT) is the token each position must predict, -1 where
	// nothing is scored.
	Targets []int32
	// Teacher (distillation) is the teacher's logits, T × vocab.
	Teacher []float32
	// Scale multiplies the window's loss in the gradients: 1/N for a mean
	// over the N scored positions of a whole batch.
	Scale float32
}

// Accumulate runs forward and backward on one window, adds the
// gradients of Scale × loss into the parameters' Grad, and returns the
// window's loss (a sum over its positions).
func (tr *Trainer) Accumulate(w Window) (float64, error) {
	m, b := tr.m, tr.m.Backend
	g := m.IR.Graph
	if tr.dirty {
		for _, p := range tr.params {
			if err := b.Write(p.t, ir.F32Bytes(p.Value)); err != nil {
				return 0, fmt.Errorf("parameter %s: %w", p.Name, err)
			}
		}
		tr.dirty = false
	}
	T := len(w.Tokens)
	if T == 0 {
		return 0, fmt.Errorf("an empty window")
	}
	vals := make(map[*ir.Value]*Tensor, len(g.Nodes))
	for v, t := range m.weights {
		vals[v] = t
	}
	dims := map[string]int{"seq": T}
	pos := make([]int32, T)
	for i := range pos {
		pos[i] = int32(i)
	}
	for _, in := range g.Inputs {
		var t *Tensor
		var err error
		switch in.Name {
		case "tokens", "pos":
			src := w.Tokens
			if in.Name == "pos" {
				src = pos
			}
			t = b.Alloc(quant.I32, []int{T})
			err = b.WriteI32(t, src)
		case "targets":
			if len(w.Targets) != T {
				return 0, fmt.Errorf("%d targets for %d tokens", len(w.Targets), T)
			}
			t = b.Alloc(quant.I32, []int{T})
			err = b.WriteI32(t, w.Targets)
		case "teacher":
			V := m.IR.Params.VocabSize
			if len(w.Teacher) != T*V {
				return 0, fmt.Errorf("%d teacher logits for %d tokens of a %d-token vocabulary", len(w.Teacher), T, V)
			}
			t = b.Alloc(quant.F32, []int{T, V})
			err = b.Write(t, ir.F32Bytes(w.Teacher))
		case ir.GradInput:
			t = b.Alloc(quant.F32, []int{1})
			err = b.Write(t, ir.F32Bytes([]float32{w.Scale}))
		default:
			return 0, fmt.Errorf("training graph input %s is not one the trainer binds", in.Name)
		}
		if err != nil {
			return 0, fmt.Errorf("input %s: %w", in.Name, err)
		}
		vals[in] = t
	}
	if err := m.execute(vals, dims, tr.timed); err != nil {
		return 0, err
	}
	var loss [1]float32
	if err := b.ReadF32(vals[g.Outputs[0]], loss[:]); err != nil {
		return 0, err
	}
	buf := []float32{}
	for _, p := range tr.params {
		if cap(buf) < len(p.Grad) {
			buf = make([]float32, len(p.Grad))
		}
		buf = buf[:len(p.Grad)]
		if err := b.ReadF32(vals[p.grad], buf); err != nil {
			return 0, fmt.Errorf("gradient of %s: %w", p.Name, err)
		}
		for i, v := range buf {
			p.Grad[i] += v
		}
	}
	return float64(loss[0]), nil
}
