package runtime

import (
	"fmt"
	"time"

	"github.com/lqc-dev/lqc/ir"
)

// Run evaluates the model's graph once on the given inputs (by graph
// input name) and returns its outputs in order: imported graphs, which
// take whole sequences and keep no cache. Symbolic dimensions are bound
// from the inputs' shapes.
func (m *Model) Run(inputs map[string]*ir.Tensor) ([]*ir.Tensor, error) {
	b, g := m.Backend, m.IR.Graph
	dims := map[string]int{}
	vals := make(map[*ir.Value]*Tensor, len(g.Nodes))
	for v, t := range m.weights {
		vals[v] = t
	}
	for _, in := range g.Inputs {
		t := inputs[in.Name]
		if t == nil {
			return nil, fmt.Errorf("no value for input %s", in.Name)
		}
		if t.Type != in.Type() {
			return nil, fmt.Errorf("input %s is %v, the graph takes %v", in.Name, t.Type, in.Type())
		}
		want := in.Shape()
		if len(want) != len(t.Shape) {
			return nil, fmt.Errorf("input %s has shape %v, the graph takes %v", in.Name, t.Shape, want)
		}
		shape := make([]int, len(t.Shape))
		for i, d := range want {
			shape[i] = int(t.Shape[i])
			switch {
			case d.Known() && d.Size != t.Shape[i]:
				return nil, fmt.Errorf("input %s has shape %v, the graph takes %v", in.Name, t.Shape, want)
			case !d.Known():
				if n, ok := dims[d.Sym]; ok && n != shape[i] {
					return nil, fmt.Errorf("input %s: dimension %s is %d here and %d elsewhere", in.Name, d.Sym, shape[i], n)
				}
				dims[d.Sym] = shape[i]
			}
		}
		data, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		bt := b.Alloc(t.Type, shape)
		if err := b.Write(bt, data); err != nil {
			return nil, fmt.Errorf("input %s: %w", in.Name, err)
		}
		vals[in] = bt
	}
	if err := m.execute(vals, dims, nil); err != nil {
		return nil, err
	}
	res := make([]*ir.Tensor, len(g.Outputs))
	for i, o := range g.Outputs {
		t := vals[o]
		if t == nil {
			return nil, fmt.Errorf("output %s has no value", o.Ref())
		}
		var err error
		if res[i], err = read(b, t, o); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// execute runs every node of the graph on the values bound in vals (its
// inputs and weights), symbolic dimensions bound by dims. An activation is
// dropped after the last node that reads it (an output nothing reads, at
// once), so a training graph keeps a forward value exactly until its
// backward use; the graph's outputs stay in vals. ir.Graph.PeakLive
// counts the bytes this keeps alive. With timed set, each node's wall
// time is added to timed[i].
func (m *Model) execute(vals map[*ir.Value]*Tensor, dims map[string]int, timed []time.Duration) error {
	g := m.IR.Graph
	keep := map[*ir.Value]bool{}
	for _, o := range g.Outputs {
		keep[o] = true
	}
	bufs := newBuffers(m.Backend)
	for i, n := range g.Nodes {
		in := make([]*Tensor, len(n.Inputs))
		for j, v := range n.Inputs {
			if in[j] = vals[v]; in[j] == nil {
				return fmt.Errorf("node %d (%s): input %s has no value", i, n.Op, v.Ref())
			}
		}
		var start time.Time
		if timed != nil {
			start = time.Now()
		}
		outs, err := m.runOp(n, in, dims)
		if err != nil {
			return fmt.Errorf("node %d (%s): %w", i, n.Op, err)
		}
		if timed != nil {
			timed[i] += time.Since(start)
		}
		for k, o := range n.Outputs {
			bufs.bindOutput(outs[k], n, in, keep[o])
			if _, read := m.lastUse[o]; read || keep[o] {
				vals[o] = outs[k]
			} else {
				bufs.drop(outs[k])
			}
		}
		for _, v := range n.Inputs {
			if m.lastUse[v] == i && v.Weight == nil && !keep[v] {
				if t, live := vals[v]; live {
					delete(vals, v)
					bufs.drop(t)
				}
			}
		}
	}
	return nil
}

// buffers hands activations back to a Releaser backend once nothing live
// uses them: the executor of whole graphs, Session.Forward and
// Model.Step all use it. It tracks tensors rather than values, since a
// batched step holds a value as one tensor, as one tensor per session, or
// both (Concat and Slice convert between them). A Reshape's output is a
// view of its input's buffer and a KVCache's a view of the cache (never
// released), as are the graph's outputs and the tensors bound from
// outside (inputs, weights).
type buffers struct {
	r     Releaser
	root  map[*Tensor]*Tensor // the buffer each live tensor uses
	users map[*Tensor]int     // live tensors per buffer
	kept  map[*Tensor]bool
}

func newBuffers(b Backend) *buffers {
	r, _ := b.(Releaser)
	return &buffers{r: r, root: map[*Tensor]*Tensor{}, users: map[*Tensor]int{}, kept: map[*Tensor]bool{}}
}

// bind records live tensor t using buffer buf (t itself when nil).
func (s *buffers) bind(t, buf *Tensor, keep bool) {
	if s.r == nil {
		return
	}
	if buf == nil {
		buf = t
	}
	s.root[t] = buf
	s.users[buf]++
	if keep {
		s.kept[buf] = true
	}
}

// bindOutput records the output of node n run on in.
func (s *buffers) bindOutput(out *Tensor, n *ir.Node, in []*Tensor, keep bool) {
	switch n.Op {
	case "Reshape":
		buf := s.root[in[0]]
		if buf == nil { // a view of a weight or a bound input
			buf = in[0]
			s.kept[buf] = true
		}
		s.bind(out, buf, keep)
	case "KVCache":
		s.bind(out, nil, true)
	default:
		s.bind(out, nil, keep)
	}
}

// release hands back t, a scratch tensor nothing else uses (never bound).
func (s *buffers) release(t *Tensor) {
	if s.r != nil {
		s.r.Release(t)
	}
}

// handBack returns the buffer of a graph output the caller has read and
// will not touch again, unless it is a view of another buffer.
func (s *buffers) handBack(t *Tensor) {
	if s.r == nil || s.root[t] != t || s.users[t] != 1 {
		return
	}
	delete(s.root, t)
	delete(s.users, t)
	delete(s.kept, t)
	s.r.Release(t)
}

// drop ends tensor t's life (nil or untracked: nothing).
func (s *buffers) drop(t *Tensor) {
	buf := s.root[t]
	if buf == nil {
		return
	}
	delete(s.root, t)
	if s.users[buf]--; s.users[buf] == 0 {
		delete(s.users, buf)
		if !s.kept[buf] {
			s.r.Release(buf)
		}
	}
}

// read copies a backend tensor out as the value v it holds.
func read(b Backend, t *Tensor, v *ir.Value) (*ir.Tensor, error) {
	data, err := b.Read(t)
	if err != nil {
		return nil, err
	}
	shape := make([]int64, len(t.Shape))
	for k, d := range t.Shape {
		shape[k] = int64(d)
	}
	return ir.FromBytes(v.Name, v.Type(), shape, data)
}

// runOp runs one node with every output allocated from its bound shape.
func (m *Model) runOp(n *ir.Node, in []*Tensor, dims map[string]int) ([]*Tensor, error) {
	b := m.Backend
	outs := make([]*Tensor, len(n.Outputs))
	for k, o := range n.Outputs {
		shape, err := bind(o.Shape(), dims)
		if err != nil {
			return nil, err
		}
		if n.Op == "Reshape" {
			return []*Tensor{b.View(in[0], shape)}, nil
		}
		outs[k] = b.Alloc(o.Type(), shape)
	}
	if len(outs) == 1 {
		return outs, b.Run(n.Op, n.Attrs, outs[0], in)
	}
	return outs, b.RunOutputs(n.Op, n.Attrs, outs, in)
}

// EvalNode evaluates one node whose inputs are all constants, on backend
// b: how importers fold the arithmetic of shapes.
func EvalNode(b Backend, n *ir.Node, inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	in := make([]*Tensor, len(inputs))
	for i, t := range inputs {
		w, err := b.Weight(t)
		if err != nil {
			return nil, err
		}
		in[i] = w
	}
	m := &Model{Backend: b}
	outs, err := m.runOp(n, in, nil)
	if err != nil {
		return nil, err
	}
	res := make([]*ir.Tensor, len(outs))
	for i, t := range outs {
		if res[i], err = read(b, t, n.Outputs[i]); err != nil {
			return nil, err
		}
	}
	return res, nil
}
