package ir

import "fmt"

// PeakLive is the most bytes of activations (graph inputs and node
// outputs; weights are not counted) alive at once when the graph's nodes
// run in order with symbolic dimensions bound to dims, each value freed
// after its last reader, the graph's outputs kept to the end, and a
// Reshape a view of its input's buffer, as the runtime executes a graph.
// It also returns the index of the node at which the peak is reached
// (-1: before the first node). It is what a memory plan reads before
// anything is allocated, and how a test sees what gradient checkpointing
// saves.
func (g *Graph) PeakLive(dims map[string]int) (peak int64, at int, err error) {
	// root: the value whose buffer a value uses (itself, or what a chain
	// of Reshapes views).
	root := map[*Value]*Value{}
	rootOf := func(v *Value) *Value {
		if r := root[v]; r != nil {
			return r
		}
		return v
	}
	lastUse := map[*Value]int{} // by root
	for i, n := range g.Nodes {
		if n.Op == "Reshape" {
			root[n.Outputs[0]] = rootOf(n.Inputs[0])
		}
		for _, in := range n.Inputs {
			if in.Weight == nil {
				lastUse[rootOf(in)] = i
			}
		}
	}
	for _, o := range g.Outputs {
		lastUse[rootOf(o)] = len(g.Nodes)
	}
	size := func(v *Value) (int64, error) {
		n := int64(1)
		for _, d := range v.Shape() {
			s := d.Size
			if !d.Known() {
				b, ok := dims[d.Sym]
				if !ok {
					return 0, fmt.Errorf("%s: unbound dimension %s", v.Ref(), d.Sym)
				}
				s = int64(b)
			}
			n *= s
		}
		return v.Type().RowSize(n), nil
	}
	var live int64
	for _, in := range g.Inputs {
		s, err := size(in)
		if err != nil {
			return 0, 0, err
		}
		live += s
	}
	peak, at = live, -1
	for i, n := range g.Nodes {
		for _, o := range n.Outputs {
			if rootOf(o) != o {
				continue
			}
			s, err := size(o)
			if err != nil {
				return 0, 0, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
			}
			live += s
		}
		if live > peak {
			peak, at = live, i
		}
		// Freed after the node: the roots whose last reader it was, and
		// outputs nothing reads.
		freed := map[*Value]bool{}
		for _, v := range append(append([]*Value(nil), n.Inputs...), n.Outputs...) {
			r := rootOf(v)
			if r.Weight != nil || freed[r] {
				continue
			}
			if last, read := lastUse[r]; (read && last == i) || (!read && r.Def == n) {
				freed[r] = true
				s, err := size(r)
				if err != nil {
					return 0, 0, err
				}
				live -= s
			}
		}
	}
	return peak, at, nil
}
