package runtime

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// Model is an IR model bound to a backend: its weights made available to
// the backend's kernels (on the CPU, the mapped bytes in place).
type Model struct {
	IR      *ir.Model
	Backend Backend
	weights map[*ir.Value]*Tensor
	// kvShape is the [Hkv, d] of each layer's cached keys and values.
	kvHeads, headDim int
	// lastUse[v] is the index of the last node that reads value v, so that
	// activations can be dropped as soon as they are dead.
	lastUse map[*ir.Value]int
}

// Load binds m to backend b.
func Load(m *ir.Model, b Backend) (*Model, error) {
	if err := m.Graph.Verify(); err != nil {
		return nil, err
	}
	rm := &Model{IR: m, Backend: b, weights: map[*ir.Value]*Tensor{}, lastUse: map[*ir.Value]int{},
		kvHeads: m.Params.HeadCountKV, headDim: m.Params.HeadDim()}
	for _, w := range m.Graph.Weights {
		t, err := b.Weight(w.Weight)
		if err != nil {
			return nil, err
		}
		rm.weights[w] = t
	}
	for i, n := range m.Graph.Nodes {
		for _, in := range n.Inputs {
			rm.lastUse[in] = i
		}
	}
	return rm, nil
}

// VocabSize is the number of logits per token.
func (m *Model) VocabSize() int { return m.IR.Params.VocabSize }

// Session is one sequence being evaluated: its KV cache and position.
type Session struct {
	m     *Model
	ctx   int
	pos   int
	cache map[[2]int64]*Tensor // (layer, 0 for k / 1 for v)

	// Observe, when set, sees the input of every matrix product with a
	// weight before it runs: rows × cols values multiplied by the weight
	// named weight. input identifies the activation, so that matrices
	// sharing an input (q, k and v) can be told apart from ones that do
	// not. Calibration uses it.
	Observe func(weight string, input int, x []float32, cols int)

	adapters []Applied // LoRA adapters applied to this session's matrix products
}

// NewSession starts a sequence that may grow to ctx positions.
func (m *Model) NewSession(ctx int) (*Session, error) {
	if ctx <= 0 {
		return nil, fmt.Errorf("context size %d", ctx)
	}
	return &Session{m: m, ctx: ctx, cache: map[[2]int64]*Tensor{}}, nil
}

// Pos is the number of positions evaluated so far.
func (s *Session) Pos() int { return s.pos }

// Context is the session's maximum length.
func (s *Session) Context() int { return s.ctx }

// Reset forgets the sequence (the cache is reused).
func (s *Session) Reset() { s.pos = 0 }

// Rewind forgets the positions from n on, keeping the first n cached: a
// conversation whose next prompt extends only part of what was
// evaluated goes on from there.
func (s *Session) Rewind(n int) {
	if n < s.pos {
		s.pos = max(n, 0)
	}
}

// Forward evaluates tokens at the next positions and returns logits: for
// every token (T·vocab values) when all is set, else for the last one.
func (s *Session) Forward(tokens []int32, all bool) ([]float32, error) {
	T := len(tokens)
	if T == 0 {
		return nil, fmt.Errorf("no tokens to evaluate")
	}
	if s.pos+T > s.ctx {
		return nil, fmt.Errorf("context full: %d positions cached, %d more do not fit in %d", s.pos, T, s.ctx)
	}
	m, b := s.m, s.m.Backend
	g := m.IR.Graph
	dims := map[string]int{"seq": T, ir.KVDim: s.pos + T}
	vals := make(map[*ir.Value]*Tensor, len(g.Nodes))
	for v, t := range m.weights {
		vals[v] = t
	}
	pos := make([]int32, T)
	for i := range pos {
		pos[i] = int32(s.pos + i)
	}
	if err := m.bindTokens(vals, tokens, pos); err != nil {
		return nil, err
	}
	output := g.Outputs[0]
	// Activations go back to the backend after their last use, so a
	// prompt's next layer reuses this layer's buffers instead of fresh,
	// zeroed pages.
	bufs := newBuffers(b)
	for i, n := range g.Nodes {
		in := make([]*Tensor, len(n.Inputs))
		for j, v := range n.Inputs {
			in[j] = vals[v]
		}
		o := n.Outputs[0]
		shape, err := bind(o.Shape(), dims)
		if err != nil {
			return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
		}
		// Generation needs only the last token's logits: the classifier,
		// the largest matmul of a small model, then runs on one row.
		if o == output && !all && n.Op == "Linear" && T > 1 {
			last, err := s.lastRow(in[0])
			if err != nil {
				return nil, err
			}
			in[0] = last
			shape[0] = 1
		}
		out, err := s.runNode(n, in, shape)
		if err != nil {
			return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
		}
		if n.Op == "Linear" {
			if err := s.applyAdapters(n, in[0], out, 0, out.Shape[0]); err != nil {
				return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
			}
		}
		vals[o] = out
		bufs.bindOutput(out, n, in, o == output)
		for _, v := range n.Inputs {
			if m.lastUse[v] == i && v.Weight == nil {
				if t, live := vals[v]; live {
					delete(vals, v)
					bufs.drop(t)
				}
			}
		}
	}
	res := vals[output]
	logits := make([]float32, res.Len())
	if err := b.ReadF32(res, logits); err != nil {
		return nil, err
	}
	bufs.handBack(res) // all of a window's logits are large: the next window reuses them
	s.pos += T
	if !all && T > 1 && len(logits) > m.VocabSize() {
		logits = logits[len(logits)-m.VocabSize():]
	}
	return logits, nil
}

// runNode runs one node of the session's graph on bound inputs.
func (s *Session) runNode(n *ir.Node, in []*Tensor, shape []int) (*Tensor, error) {
	b := s.m.Backend
	if s.Observe != nil && n.Op == "Linear" && n.Inputs[1].Weight != nil {
		x := make([]float32, in[0].Len())
		if err := b.ReadF32(in[0], x); err != nil {
			return nil, err
		}
		s.Observe(n.Inputs[1].Weight.Name, n.Inputs[0].ID, x, in[0].Shape[len(in[0].Shape)-1])
	}
	switch n.Op {
	case "Reshape":
		return b.View(in[0], shape), nil
	case "KVCache":
		key := [2]int64{n.Attrs.Int("layer"), 0}
		if n.Attrs.Str("slot") == "v" {
			key[1] = 1
		}
		cache := s.cache[key]
		if cache == nil {
			x := in[0].Shape
			cache = b.Alloc(quant.F32, []int{x[1], s.ctx, x[2]})
			s.cache[key] = cache
		}
		out := &Tensor{Type: quant.F32, Shape: shape}
		attrs := ir.Attrs{"pos": int64(s.pos)}
		for k, v := range n.Attrs {
			attrs[k] = v
		}
		return out, b.Run(n.Op, attrs, out, []*Tensor{in[0], cache})
	}
	out := b.Alloc(n.Outputs[0].Type(), shape)
	return out, b.Run(n.Op, n.Attrs, out, in)
}

func (s *Session) lastRow(x *Tensor) (*Tensor, error) {
	b := s.m.Backend
	shape := append([]int{1}, x.Shape[1:]...)
	out := b.Alloc(quant.F32, shape)
	err := b.Run("Slice", ir.Attrs{"axis": int64(0), "start": int64(x.Shape[0] - 1), "end": int64(x.Shape[0])}, out, []*Tensor{x})
	return out, err
}

func bind(s ir.Shape, dims map[string]int) ([]int, error) {
	out := make([]int, len(s))
	for i, d := range s {
		if d.Known() {
			out[i] = int(d.Size)
			continue
		}
		n, ok := dims[d.Sym]
		if !ok {
			return nil, fmt.Errorf("unbound dimension %s", d.Sym)
		}
		out[i] = n
	}
	return out, nil
}

// bindTokens writes the token ids and their positions into the graph's
// two inputs, tokens and pos.
func (m *Model) bindTokens(vals map[*ir.Value]*Tensor, tokens, pos []int32) error {
	for _, in := range m.IR.Graph.Inputs {
		t := m.Backend.Alloc(quant.I32, []int{len(tokens)})
		src := tokens
		if in.Name == "pos" {
			src = pos
		}
		if err := m.Backend.WriteI32(t, src); err != nil {
			return err
		}
		vals[in] = t
	}
	return nil
}
