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
	if len(tokens) != len(sessions) {
		return nil, fmt.Errorf("step: %d sessions, %d tokens", len(sessions), len(tokens))
	}
	each := make([][]int32, len(tokens))
	for i := range tokens {
		each[i] = tokens[i : i+1]
	}
	return m.Batch(sessions, each)
}

// Batch evaluates the next tokens of several sessions in one pass over the
// weights: tokens[i], one or more (a chunk of a prompt, or the token last
// sampled), for sessions[i]. It returns each session's logits after its
// last token. A server prefills new prompts and decodes running requests
// in one batch this way, instead of one weight pass per prompt.
func (m *Model) Batch(sessions []*Session, tokens [][]int32) ([][]float32, error) {
	B := len(sessions)
	if B == 0 || len(tokens) != B {
		return nil, fmt.Errorf("step: %d sessions, %d token lists", B, len(tokens))
	}
	seen := map[*Session]bool{}
	for i, s := range sessions {
		switch k := len(tokens[i]); {
		case s.m != m:
			return nil, fmt.Errorf("step: a session of another model")
		case seen[s]:
			return nil, fmt.Errorf("step: a session appears twice")
		case k == 0:
			return nil, fmt.Errorf("step: no tokens for a session")
		case s.pos+k > s.ctx:
			return nil, fmt.Errorf("context full: %d positions cached, %d more do not fit in %d", s.pos, k, s.ctx)
		case s.Observe != nil:
			return nil, fmt.Errorf("step: sessions observed for calibration run alone")
		}
		seen[s] = true
	}
	// Order the sessions so that those with the same adapters are adjacent.
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
	// Session r (in that order) owns rows [first[r], first[r+1]) of the
	// batched activations.
	first := make([]int, B+1)
	for r, i := range order {
		seqs[r] = sessions[i]
		first[r+1] = first[r] + len(tokens[i])
	}
	R := first[B]
	// groups: runs of sessions that apply the same adapters.
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
	output := g.Outputs[0]
	batched := map[*ir.Value]*Tensor{}
	per := map[*ir.Value][]*Tensor{}
	bufs := newBuffers(b)
	tok, pos := make([]int32, 0, R), make([]int32, 0, R)
	for r, s := range seqs {
		for j, t := range tokens[order[r]] {
			tok, pos = append(tok, t), append(pos, int32(s.pos+j))
		}
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
		rows := 0
		for _, p := range parts {
			rows += p.Shape[0]
		}
		t := b.Alloc(quant.F32, append([]int{rows}, parts[0].Shape[1:]...))
		if err := b.Run("Concat", nil, t, parts); err != nil {
			return nil, err
		}
		batched[v] = t
		bufs.bind(t, nil, v == output)
		return t, nil
	}
	// rowsOf slices rows [lo[r], hi[r]) of t for each session r.
	rowsOf := func(t *Tensor, lo, hi func(r int) int) ([]*Tensor, error) {
		parts := make([]*Tensor, B)
		for r := range parts {
			parts[r] = b.Alloc(t.Type, append([]int{hi(r) - lo(r)}, t.Shape[1:]...))
			if err := b.Run("Slice", ir.Attrs{"axis": int64(0), "start": int64(lo(r)), "end": int64(hi(r))}, parts[r], []*Tensor{t}); err != nil {
				return nil, err
			}
		}
		return parts, nil
	}
	one := func(v *ir.Value, r int) (*Tensor, error) {
		if w, ok := m.weights[v]; ok {
			return w, nil
		}
		if ts, ok := per[v]; ok {
			return ts[r], nil
		}
		parts, err := rowsOf(batched[v], func(r int) int { return first[r] }, func(r int) int { return first[r+1] })
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			bufs.bind(p, nil, v == output)
		}
		per[v] = parts
		return parts[r], nil
	}
	rowDims := map[string]int{"seq": R}
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
			// Each session needs the logits after its last token only:
			// the classifier runs on those rows, one per session.
			span := func(r int) int { return first[r] } // session r's first row
			var lastRows *Tensor
			if o == output && n.Op == "Linear" && R > B {
				lasts, err := rowsOf(in[0], func(r int) int { return first[r+1] - 1 }, func(r int) int { return first[r+1] })
				if err != nil {
					return nil, err
				}
				lastRows = b.Alloc(quant.F32, append([]int{B}, in[0].Shape[1:]...))
				if err := b.Run("Concat", nil, lastRows, lasts); err != nil {
					return nil, err
				}
				for _, t := range lasts {
					bufs.release(t)
				}
				in[0], shape[0] = lastRows, B
				span = func(r int) int { return r }
			}
			out, err := seqs[0].runNode(n, in, shape)
			if err != nil {
				return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
			}
			if n.Op == "Linear" {
				for _, gr := range groups {
					if err := seqs[gr.start].applyAdapters(n, in[0], out, span(gr.start), span(gr.end)); err != nil {
						return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
					}
				}
			}
			if lastRows != nil {
				bufs.release(lastRows)
			}
			batched[o] = out
			bufs.bindOutput(out, n, in, o == output)
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
				k := first[r+1] - first[r]
				shape, err := bind(o.Shape(), map[string]int{"seq": k, ir.KVDim: s.pos + k})
				if err != nil {
					return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
				}
				if outs[r], err = s.runNode(n, in, shape); err != nil {
					return nil, fmt.Errorf("node %d (%s): %w", i, n.Op, err)
				}
				bufs.bindOutput(outs[r], n, in, o == output)
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
	res, err := all(output)
	if err != nil {
		return nil, err
	}
	logits := make([]float32, res.Len())
	if err := b.ReadF32(res, logits); err != nil {
		return nil, err
	}
	vocab := m.VocabSize()
	rows := len(logits) / vocab
	out := make([][]float32, B)
	for r, s := range seqs {
		row := r // the classifier ran on each session's last row
		if rows == R {
			row = first[r+1] - 1
		}
		out[order[r]] = logits[row*vocab : (row+1)*vocab]
		s.pos += first[r+1] - first[r]
	}
	return out, nil
}
