package runtime

import (
	"fmt"
	"sort"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// Batched decoding: several sequences advance one token each in one pass
// over the weights. Every op whose output row t depends only on input
// row t (the matrix products, norms, activations, RoPE) runs once over
// all the sequences' rows; attention and the KV cache run per sequence.
// Each sequence keeps its own LoRA adapters: the base product is shared,
// and the low-rank updates run per adapter over the rows of the
// sequences that use it, which Step makes contiguous (the batching
// Punica and S-LoRA serve many adapters with).

// rowLocalOps compute output row t from input row t alone.
var rowLocalOps = map[string]bool{
	"Embedding": true, "RMSNorm": true, "LayerNorm": true, "Linear": true, "Add": true, "Mul": true,
	"SiLU": true, "GELU": true, "Scale": true, "Softcap": true, "RoPE": true, "Reshape": true, "Slice": true,
}

// rowLocal reports whether n can run over the rows of several sequences
// at once: a row-wise op whose activations all lead with the sequence.
func rowLocal(n *ir.Node) bool {
	if !rowLocalOps[n.Op] {
		return false
	}
	if n.Op == "Slice" && n.Attrs.Int("axis") == 0 {
		return false
	}
	seqFirst := func(v *ir.Value) bool {
		s := v.Shape()
		return len(s) > 0 && s[0].Sym == "seq"
	}
	if !seqFirst(n.Outputs[0]) {
		return false
	}
	for _, in := range n.Inputs {
		if in.Weight == nil && !seqFirst(in) {
			return false
		}
	}
	return true
}

// Step evaluates one more token of each session (tokens[i] for
// sessions[i]) and returns each session's logits for it.
func (m *Model) Step(sessions []*Session, tokens []int32) ([][]float32, error) {
	B := len(sessions)
	if B == 0 || len(tokens) != B {
		return nil, fmt.Errorf("step: %d sessions, %d tokens", B, len(tokens))
	}
	seen := map[*Session]bool{}
	for _, s := range sessions {
		switch {
		case s.m != m:
			return nil, fmt.Errorf("step: a session of another model")
		case seen[s]:
			return nil, fmt.Errorf("step: a session appears twice")
		case s.pos+1 > s.ctx:
			return nil, fmt.Errorf("context full: %d positions cached, 1 more does not fit in %d", s.pos, s.ctx)
		case s.Observe != nil:
			return nil, fmt.Errorf("step: sessions observed for calibration run alone")
		}
		seen[s] = true
	}
	// Order the rows so that sessions with the same adapters are adjacent.
	order := make([]int, B)
	for i := range order {
		order[i] = i
	}
	keys := make([]string, B)
	for i, s := range sessions {
		for _, a := range s.adapters {
			keys[i] += fmt.Sprintf("%p:%g;", a.Adapter, a.Scale)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return keys[order[a]] < keys[order[b]] })
	seqs := make([]*Session, B)
	for r, i := range order {
		seqs[r] = sessions[i]
	}
	// groups: runs of rows whose sessions apply the same adapters.
	type group struct{ start, end int }
	var groups []group
	for r := 0; r < B; {
		e := r + 1
		for e < B && keys[order[e]] == keys[order[r]] {
			e++
		}
		groups = append(groups, group{r, e})
		r = e
	}

	b, g := m.Backend, m.IR.Graph
	batched := map[*ir.Value]*Tensor{}
	per := map[*ir.Value][]*Tensor{}
	bufs := newBuffers(b)
	tok, pos := make([]int32, B), make([]int32, B)
	for r, s := range seqs {
		tok[r], pos[r] = tokens[order[r]], int32(s.pos)
	}
	if err := m.bindTokens(batched, tok, pos); err != nil {
		return nil, err
	}
	all := func(v *ir.Value) (*Tensor, error) {
		if w, ok := m.weights[v]; ok {
			return w, nil
		}
		if t, ok := batched[v]; ok {
			return t, nil
		}
		parts := per[v]
		shape := append([]int{B}, parts[0].Shape[1:]...)
		t := b.Alloc(quant.F32, shape)
		if err := b.Run("Concat", nil, t, parts); err != nil {
			return nil, err
		}
		batched[v] = t
		bufs.bind(t, nil, v == g.Outputs[0])
		return t, nil
	}
	one := func(v *ir.Value, r int) (*Tensor, error) {
		if w, ok := m.weights[v]; ok {
			return w, nil
		}
		if ts, ok := per[v]; ok {
			return ts[r], nil
		}
		t := batched[v]
		parts := make([]*Tensor, B)
		for i := range parts {
			parts[i] = b.Alloc(t.Type, append([]int{1}, t.Shape[1:]...))
			if err := b.Run("Slice", ir.Attrs{"axis": int64(0), "start": int64(i), "end": int64(i + 1)}, parts[i], []*Tensor{t}); err != nil {
				return nil, err
			}
			bufs.bind(parts[i], nil, v == g.Outputs[0])
		}
		per[v] = parts
		return parts[r], nil
	}
	rowDims := map[string]int{"seq": B}
	for i, n := range g.Nodes {
		o := n.Outputs[0]
		if rowLocal(n) {
			in := make([]*Tensor, len(n.Inputs))
			for j, v := range n.Inputs {
				t, err := all(v)
				if err != nil {
					return nil, err
				}
				in[j] = t
			}
			shape, err := bind(o.Shape(), rowDims)
			if err != nil {
				return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
			}
			out, err := seqs[0].runNode(n, in, shape)
			if err != nil {
				return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
			}
			if n.Op == "Linear" {
				for _, gr := range groups {
					if err := seqs[gr.start].applyAdapters(n, in[0], out, gr.start, gr.end); err != nil {
						return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
					}
				}
			}
			batched[o] = out
			bufs.bindOutput(out, n, in, o == g.Outputs[0])
		} else {
			outs := make([]*Tensor, B)
			for r, s := range seqs {
				in := make([]*Tensor, len(n.Inputs))
				for j, v := range n.Inputs {
					t, err := one(v, r)
					if err != nil {
						return nil, err
					}
					in[j] = t
				}
				shape, err := bind(o.Shape(), map[string]int{"seq": 1, ir.KVDim: s.pos + 1})
				if err != nil {
					return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
				}
				if outs[r], err = s.runNode(n, in, shape); err != nil {
					return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
				}
				bufs.bindOutput(outs[r], n, in, o == g.Outputs[0])
			}
			per[o] = outs
		}
		for _, v := range n.Inputs {
			if m.lastUse[v] == i && v.Weight == nil {
				bufs.drop(batched[v])
				for _, t := range per[v] {
					bufs.drop(t)
				}
				delete(batched, v)
				delete(per, v)
			}
		}
	}
	res, err := all(g.Outputs[0])
	if err != nil {
		return nil, err
	}
	logits := make([]float32, res.Len())
	if err := b.ReadF32(res, logits); err != nil {
		return nil, err
	}
	vocab := len(logits) / B
	out := make([][]float32, B)
	for r, s := range seqs {
		out[order[r]] = logits[r*vocab : (r+1)*vocab]
		s.pos++
	}
	return out, nil
}
