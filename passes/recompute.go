package passes

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// Recompute is gradient checkpointing as a graph rewrite: every layer's
// backward graph reads a recomputed copy of the forward values it needs
// instead of the forward's own, so those die as soon as the forward has
// used them and only what crosses a layer boundary (the residual stream)
// lives until the backward graph comes back to it. Each layer's copy is
// placed just before that layer's backward graph first reads it, so at
// most one layer's activations are alive at a time; it holds only the
// nodes the backward graph needs (a projection whose output nothing in
// the backward graph reads is not recomputed). The recomputed nodes are
// the forward's own ops on the same inputs, so the gradients are the same
// to the bit. The last layer keeps its activations: its backward graph
// starts as soon as its forward ends.
//
// A node's layer is the highest block index ("blk.N.") among the weights
// it reads and the layers of its inputs; the embedding lookup and what
// feeds it are layer -1, the output norm and the classifier belong to the
// last layer.
type Recompute struct{}

func (Recompute) Name() string { return "recompute" }

func (Recompute) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	if len(g.Outputs) < 2 || g.Outputs[0].Def == nil {
		return Report{}, fmt.Errorf("graph %s is not a training graph: recompute runs after autodiff", g.Name)
	}
	lossAt := -1
	for i, n := range g.Nodes {
		if n == g.Outputs[0].Def {
			lossAt = i
		}
	}
	forward, backward := g.Nodes[:lossAt+1], g.Nodes[lossAt+1:]

	layer := map[*ir.Value]int{} // forward values by layer; absent: -1
	layerOf := func(v *ir.Value) int {
		if v.Weight != nil {
			return blockIndex(v.Weight.Name)
		}
		if l, ok := layer[v]; ok {
			return l
		}
		return -1
	}
	last := -1
	for _, n := range forward {
		l := -1
		for _, in := range n.Inputs {
			l = max(l, layerOf(in))
		}
		for _, o := range n.Outputs {
			layer[o] = l
		}
		last = max(last, l)
	}
	// kept: forward values another layer's forward reads (the residual
	// stream, RoPE's tables) and the graph's outputs: these stay alive.
	kept := map[*ir.Value]bool{}
	for _, o := range g.Outputs {
		kept[o] = true
	}
	for _, n := range forward {
		for _, in := range n.Inputs {
			if _, ok := layer[in]; ok && layer[in] != layer[n.Outputs[0]] {
				kept[in] = true
			}
		}
	}
	// first[l]: the backward node that first reads a value of layer l
	// that is not kept.
	first := map[int]int{}
	recomputed := func(v *ir.Value) bool {
		l, ok := layer[v]
		return ok && l >= 0 && l < last && !kept[v]
	}
	for i, n := range backward {
		for _, in := range n.Inputs {
			if recomputed(in) {
				if _, seen := first[layer[in]]; !seen {
					first[layer[in]] = i
				}
			}
		}
	}
	if len(first) == 0 {
		return Report{Notes: []string{"nothing to recompute"}}, nil
	}

	// Each layer's copy is built by Apply (appended to the graph), then
	// moved before the backward node that first reads it.
	copyOf := map[*ir.Value]*ir.Value{}
	before := map[int][]*ir.Node{} // backward index → the copies placed before it
	var clone func(v *ir.Value) (*ir.Value, error)
	clone = func(v *ir.Value) (*ir.Value, error) {
		if !recomputed(v) {
			return v, nil
		}
		if c := copyOf[v]; c != nil {
			return c, nil
		}
		n := v.Def
		ins := make([]*ir.Value, len(n.Inputs))
		for k, in := range n.Inputs {
			c, err := clone(in)
			if err != nil {
				return nil, err
			}
			ins[k] = c
		}
		outs, err := g.Apply(n.Op, copyAttrs(n.Attrs), ins...)
		if err != nil {
			return nil, fmt.Errorf("recomputing %s: %w", v.Ref(), err)
		}
		if len(outs) != len(n.Outputs) {
			return nil, fmt.Errorf("recomputing %s: %s gives %d outputs, the forward's %d", v.Ref(), n.Op, len(outs), len(n.Outputs))
		}
		for k, o := range n.Outputs {
			if o.Name != "" {
				outs[k].Name = o.Name + ".recomputed"
			}
			copyOf[o] = outs[k]
		}
		at := first[layer[v]]
		before[at] = append(before[at], g.Nodes[len(g.Nodes)-1])
		return copyOf[v], nil
	}
	copies := 0
	for _, n := range backward {
		for k, in := range n.Inputs {
			if !recomputed(in) {
				continue
			}
			c, err := clone(in)
			if err != nil {
				return Report{}, err
			}
			n.Inputs[k] = c
		}
	}
	nodes := append([]*ir.Node(nil), forward...)
	for i, n := range backward {
		copies += len(before[i])
		nodes = append(nodes, before[i]...)
		nodes = append(nodes, n)
	}
	g.Nodes = nodes
	return Report{Changed: copies, Notes: []string{fmt.Sprintf("%d forward nodes recomputed in the backward graphs of %d layers (layer %d keeps its activations)", copies, len(first), last)}}, nil
}

// blockIndex is the layer of a per-layer weight ("blk.N.…"), -1 for the
// others.
func blockIndex(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return -1
	}
	num, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(num)
	if err != nil {
		return -1
	}
	return n
}
