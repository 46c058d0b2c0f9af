package ir

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant"
)

// PeakLive is the most bytes of activations (graph inputs and node
// outputs; weights are not counted) alive at once when the graph's nodes
// run in order with symbolic dimensions bound to dims, each value freed
// after its last reader, the graph's outputs kept to the end, a Reshape a
// view of its input's buffer and a KVCache's output a view of the cache
// (which the session owns, and is not counted), as the runtime executes a
// graph. It also returns the index of the node at which the peak is
// reached (-1: before the first node). It is what a memory plan reads
// before anything is allocated, and how a test sees what gradient
// checkpointing saves.
func (g *Graph) PeakLive(dims map[string]int) (peak int64, at int, err error) {
	return g.PeakLiveWith(dims, LiveOptions{})
}

// LiveOptions adjust how PeakLiveWith sizes values.
type LiveOptions struct {
	// OutputRows, when positive, is how many rows of the graph's first
	// output are computed: 1 for a generating session, which runs the
	// classifier on its last token only.
	OutputRows int
	// FloatBytes, when positive, is the size of an element of a float32
	// activation: 2 where activations are kept in bf16 or f16.
	FloatBytes int
	// PoolBytes, when positive, models a backend that keeps freed float32
	// buffers of at least PoolMinBytes, up to PoolBytes in all, for the
	// next allocation of exactly their size (the CPU backend): what it
	// holds is what is live plus what is pooled. The schedule then runs
	// twice, the second time with the pool the first left, as the windows
	// of a training run or the prompts of a session follow each other.
	PoolBytes, PoolMinBytes int64
}

// PeakLiveWith is PeakLive with values sized as opt says.
func (g *Graph) PeakLiveWith(dims map[string]int, opt LiveOptions) (peak int64, at int, err error) {
	// root: the value whose buffer a value uses (itself, or what a chain
	// of Reshapes views); cached: KVCache outputs, views of a cache.
	root := map[*Value]*Value{}
	rootOf := func(v *Value) *Value {
		if r := root[v]; r != nil {
			return r
		}
		return v
	}
	cached := map[*Value]bool{}
	lastUse := map[*Value]int{} // by root
	for i, n := range g.Nodes {
		if n.Op == "Reshape" {
			root[n.Outputs[0]] = rootOf(n.Inputs[0])
		}
		if n.Op == "KVCache" {
			cached[n.Outputs[0]] = true
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
		if cached[v] {
			return 0, nil
		}
		n := int64(1)
		for i, d := range v.Shape() {
			s := d.Size
			if !d.Known() {
				b, ok := dims[d.Sym]
				if !ok {
					return 0, fmt.Errorf("%s: unbound dimension %s", v.Ref(), d.Sym)
				}
				s = int64(b)
			}
			if i == 0 && v == g.Outputs[0] && opt.OutputRows > 0 {
				s = int64(opt.OutputRows)
			}
			n *= s
		}
		if v.Type() == quant.F32 && opt.FloatBytes > 0 {
			return n * int64(opt.FloatBytes), nil
		}
		return v.Type().RowSize(n), nil
	}
	var live, pooled int64
	pool := map[int64]int{} // pooled buffers by size
	alloc := func(v *Value, s int64) {
		if opt.PoolBytes > 0 && v.Type() == quant.F32 && pool[s] > 0 {
			pool[s]--
			pooled -= s
		}
		live += s
	}
	free := func(v *Value, s int64) {
		live -= s
		if opt.PoolBytes > 0 && v.Type() == quant.F32 && s >= opt.PoolMinBytes && pooled+s <= opt.PoolBytes {
			pool[s]++
			pooled += s
		}
	}
	peak, at = -1, -1
	passes := 1
	if opt.PoolBytes > 0 {
		passes = 2
	}
	for range passes {
		live = 0
		for _, in := range g.Inputs {
			s, err := size(in)
			if err != nil {
				return 0, 0, err
			}
			alloc(in, s)
		}
		if live+pooled > peak {
			peak, at = live+pooled, -1
		}
		for i, n := range g.Nodes {
			for _, o := range n.Outputs {
				if rootOf(o) != o {
					continue
				}
				s, err := size(o)
				if err != nil {
					return 0, 0, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
				}
				alloc(o, s)
			}
			if live+pooled > peak {
				peak, at = live+pooled, i
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
					free(r, s)
				}
			}
		}
		// The outputs, read by the caller, are garbage after the pass.
	}
	return peak, at, nil
}
