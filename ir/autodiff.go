package ir

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant"
)

// GradInput names the graph input Backward adds for the gradient of the
// loss: the seed of reverse mode. A trainer binds it to 1/N for a mean
// over N positions of a batch split across several calls, so that every
// call's gradients add up to the batch's.
const GradInput = "dloss"

// Backward appends to g the reverse-mode derivative of loss with respect
// to each of params (weights of g): one vector-Jacobian rule per node
// (grad.go), applied from the loss back to the parameters, gradients of a
// value read by several nodes summed. Only the nodes between the
// parameters and the loss are differentiated: frozen weights and
// everything that does not depend on a parameter get no gradient, so a
// quantized weight is only ever read (by LinearT), never differentiated.
// It returns the gradient of each parameter, in order; g's outputs are
// left to the caller.
func Backward(g *Graph, loss *Value, params []*Value) ([]*Value, error) {
	isParam := map[*Value]bool{}
	for _, p := range params {
		if p.Weight == nil {
			return nil, fmt.Errorf("autodiff: %s is not a weight", p.Ref())
		}
		if p.Type() != quant.F32 {
			return nil, fmt.Errorf("autodiff: parameter %s is %v: only float32 weights are trained", p.Ref(), p.Type())
		}
		isParam[p] = true
	}
	forward := append([]*Node(nil), g.Nodes...)
	// varies: values that depend on a parameter.
	varies := map[*Value]bool{}
	for p := range isParam {
		varies[p] = true
	}
	for _, n := range forward {
		for _, in := range n.Inputs {
			if varies[in] {
				for _, o := range n.Outputs {
					varies[o] = true
				}
				break
			}
		}
	}
	// useful: values the loss depends on.
	useful := map[*Value]bool{loss: true}
	lossAt := -1
	for i := len(forward) - 1; i >= 0; i-- {
		n := forward[i]
		for _, o := range n.Outputs {
			if o == loss {
				lossAt = i
			}
			if useful[o] {
				for _, in := range n.Inputs {
					useful[in] = true
				}
				break
			}
		}
	}
	if lossAt < 0 {
		return nil, fmt.Errorf("autodiff: the loss %s is not computed by graph %s", loss.Ref(), g.Name)
	}
	for _, p := range params {
		if !useful[p] {
			return nil, fmt.Errorf("autodiff: the loss does not depend on parameter %s", p.Ref())
		}
	}
	needs := func(v *Value) bool { return varies[v] && useful[v] }

	seed := g.Input(GradInput, loss.Type(), loss.Shape())
	b := &gradBuilder{NewBuilder(g)}
	grad := map[*Value]*Value{loss: seed}
	for i := lossAt; i >= 0; i-- {
		n := forward[i]
		dys := make([]*Value, len(n.Outputs))
		any := false
		for k, o := range n.Outputs {
			dys[k] = grad[o]
			any = any || dys[k] != nil
		}
		need := make([]bool, len(n.Inputs))
		anyNeed := false
		for k, in := range n.Inputs {
			need[k] = needs(in)
			anyNeed = anyNeed || need[k]
		}
		if !any || !anyNeed {
			continue
		}
		if dys[0] == nil {
			return nil, fmt.Errorf("autodiff: node %d (%s): only its first output is differentiated", i, n.Op)
		}
		rule, ok := grads[n.Op]
		if !ok {
			return nil, fmt.Errorf("autodiff: op %s (node %d, %s) has no gradient rule", n.Op, i, n.Outputs[0].Ref())
		}
		dins := rule(b, n, dys, need)
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("autodiff: node %d (%s): %w", i, n.Op, err)
		}
		for k, in := range n.Inputs {
			if !need[k] {
				continue
			}
			if k >= len(dins) || dins[k] == nil {
				return nil, fmt.Errorf("autodiff: node %d (%s): the rule gives no gradient for input %s", i, n.Op, in.Ref())
			}
			d := dins[k]
			if !d.Shape().Equal(in.Shape()) {
				return nil, fmt.Errorf("autodiff: node %d (%s): gradient of %s is %v, the input is %v", i, n.Op, in.Ref(), d.Shape(), in.Shape())
			}
			if prev := grad[in]; prev != nil {
				d = b.Op("Add", nil, prev, d)
			}
			grad[in] = d
		}
		if err := b.Err(); err != nil {
			return nil, fmt.Errorf("autodiff: node %d (%s): %w", i, n.Op, err)
		}
	}
	out := make([]*Value, len(params))
	for i, p := range params {
		out[i] = grad[p]
		out[i].Name = "grad." + p.Weight.Name
	}
	return out, nil
}
