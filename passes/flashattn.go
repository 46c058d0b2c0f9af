package passes

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
)

// FlashAttention rewrites spelled-out attention,
//
//	MatMul(q, k, transpose_b) → Scale (or Mul by a constant) → [Add mask]
//	→ [CausalMask] → Softmax(last axis) → MatMul(·, v)
//
// into one FlashAttention op, which the runtime computes in tiles without
// materialising the T×S scores. It leaves near-misses alone and says why:
// a softmax over another axis, a scale that is not a constant, an
// intermediate read by anything else (its value would be lost).
type FlashAttention struct{}

func (FlashAttention) Name() string { return "flash-attn" }

func (FlashAttention) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	var r Report
	for _, n := range append([]*ir.Node(nil), g.Nodes...) {
		if n.Op != "Softmax" {
			continue
		}
		users := g.Users()
		outputs := map[*ir.Value]bool{}
		for _, o := range g.Outputs {
			outputs[o] = true
		}
		a, reason := matchAttention(n, users, outputs)
		if a == nil {
			r.Notes = append(r.Notes, "skipped softmax "+n.Outputs[0].Ref()+": "+reason)
			continue
		}
		attrs := ir.Attrs{"scale": a.scale, "causal": a.causal, "n_head": a.heads, "n_head_kv": a.kvHeads, "softcap": 0.0}
		inputs := []*ir.Value{a.q, a.k, a.v}
		if a.mask != nil {
			inputs = append(inputs, a.mask)
		}
		g.Fuse(a.region, "FlashAttention", attrs, inputs, a.out)
		r.Changed++
		r.Notes = append(r.Notes, fmt.Sprintf("fused attention%s into FlashAttention: %d query heads, %d key/value heads, scale %.6g, causal %v, mask %v (%d nodes)",
			a.where(), a.heads, a.kvHeads, a.scale, a.causal, a.mask != nil, len(a.region)))
	}
	return r, nil
}

// attention is a matched attention subgraph.
type attention struct {
	q, k, v, mask  *ir.Value
	out            *ir.Value
	scale          float64
	causal         bool
	heads, kvHeads int64
	region         []*ir.Node
}

func (a *attention) where() string {
	if d := a.k.Def; d != nil && d.Op == "KVCache" {
		return fmt.Sprintf(" of layer %d", d.Attrs.Int("layer"))
	}
	return " at " + a.out.Ref()
}

// matchAttention matches the attention pattern around a Softmax node, or
// says why it does not.
func matchAttention(sm *ir.Node, users map[*ir.Value][]*ir.Node, outputs map[*ir.Value]bool) (*attention, string) {
	if sm.Attrs.Has("axis") {
		if ax := sm.Attrs.Int("axis"); ax != -1 && ax != int64(len(sm.Inputs[0].Shape())-1) {
			return nil, fmt.Sprintf("softmax over axis %d, not the last", ax)
		}
	}
	// single reports whether v feeds only the next node of the pattern.
	single := func(v *ir.Value) bool { return len(users[v]) == 1 && !outputs[v] }
	p := sm.Outputs[0]
	if !single(p) {
		return nil, "the probabilities have other users"
	}
	pv := users[p][0]
	if pv.Op != "MatMul" || pv.Inputs[0] != p || pv.Attrs.Bool("transpose_b") {
		return nil, "not followed by a product with the values"
	}
	a := &attention{v: pv.Inputs[1], out: pv.Outputs[0], scale: 1, region: []*ir.Node{pv, sm}}
	x := sm.Inputs[0]
	for {
		d := x.Def
		if d == nil {
			return nil, "no product of queries and keys under the softmax"
		}
		if !single(x) {
			return nil, fmt.Sprintf("intermediate %s (%s) has other users", x.Ref(), d.Op)
		}
		a.region = append(a.region, d)
		switch d.Op {
		case "CausalMask":
			if a.causal {
				return nil, "two causal masks"
			}
			a.causal = true
			x = d.Inputs[0]
		case "Add":
			s, m := d.Inputs[0], d.Inputs[1]
			if len(m.Shape()) != 2 || len(s.Shape()) != 3 {
				return nil, fmt.Sprintf("Add %s is not scores plus a [T,S] mask", d.Outputs[0].Ref())
			}
			if a.mask != nil {
				return nil, "two masks"
			}
			a.mask, x = m, s
		case "Scale":
			a.scale *= d.Attrs.Float("scale")
			x = d.Inputs[0]
		case "Mul":
			c, ok := constScalar(d.Inputs[1])
			if !ok {
				return nil, fmt.Sprintf("the scale %s is not a constant scalar", d.Inputs[1].Ref())
			}
			a.scale *= c
			x = d.Inputs[0]
		case "MatMul":
			if !d.Attrs.Bool("transpose_b") {
				return nil, "the scores are not a product of queries with transposed keys"
			}
			a.q, a.k = d.Inputs[0], d.Inputs[1]
			qs, ks := a.q.Shape(), a.k.Shape()
			if !qs[0].Known() || !ks[0].Known() {
				return nil, "the number of heads is not known"
			}
			a.heads, a.kvHeads = qs[0].Size, ks[0].Size
			return a, ""
		default:
			return nil, fmt.Sprintf("%s between the scores and the softmax", d.Op)
		}
	}
}

// constScalar returns the value of a one-element weight.
func constScalar(v *ir.Value) (float64, bool) {
	if v.Weight == nil || v.Weight.NumElements() != 1 {
		return 0, false
	}
	f, err := v.Weight.Float32s()
	if err != nil {
		return 0, false
	}
	return float64(f[0]), true
}
