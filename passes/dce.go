package passes

import "github.com/lqc-dev/lqc/ir"

// DeadCode removes nodes whose outputs nothing reads and weights no node
// reads, so that imported graphs carrying unused branches or buffers do
// not drag dead tensors into the output file.
type DeadCode struct{}

func (DeadCode) Name() string { return "dce" }

func (DeadCode) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	live := map[*ir.Value]bool{}
	for _, o := range g.Outputs {
		live[o] = true
	}
	var r Report
	// Nodes are in topological order, so one backward sweep finds every
	// node that contributes to an output.
	keep := make([]bool, len(g.Nodes))
	for i := len(g.Nodes) - 1; i >= 0; i-- {
		n := g.Nodes[i]
		for _, o := range n.Outputs {
			if live[o] {
				keep[i] = true
				break
			}
		}
		if keep[i] {
			for _, in := range n.Inputs {
				live[in] = true
			}
		}
	}
	nodes := g.Nodes[:0]
	for i, n := range g.Nodes {
		if keep[i] {
			nodes = append(nodes, n)
		} else {
			r.Changed++
		}
	}
	g.Nodes = nodes
	weights := g.Weights[:0]
	for _, w := range g.Weights {
		if live[w] {
			weights = append(weights, w)
		} else {
			r.Changed++
			r.Notes = append(r.Notes, "removed unused weight "+w.Weight.Name)
		}
	}
	g.Weights = weights
	return r, nil
}
