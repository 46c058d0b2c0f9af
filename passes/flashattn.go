package passes

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// FlashAttention rewrites attention into one FlashAttention op, which the
// runtime computes in tiles without materialising the T×S scores. It
// recognises the forms that occur:
//
//   - the architecture builders' graph: MatMul(q, k, transpose_b) → Scale
//     → [Add mask] → [CausalMask] → Softmax → MatMul(·, v);
//   - PyTorch's ONNX export and ONNX's expanded Attention function, with a
//     batch axis: MatMul(q, Transpose(k)) with the scale as a constant Mul
//     or Div of the scores, or of q and k; the mask an Add, or a Where on
//     a constant condition (causal or not); an optional softcap
//     (Div, Tanh, Mul by one constant); k and v repeated for grouped-query
//     attention by Unsqueeze/Expand/Reshape (repeat_interleave);
//   - the ONNX Attention op (opset 23) when only its output is used.
//
// It leaves near-misses alone and says why: a softmax over another axis, a
// scale that is not a constant, an intermediate read by anything else (its
// value would be lost), heads repeated by Tile (query head h would read
// key head h mod Hkv, not h/(H/Hkv)).
type FlashAttention struct{}

func (FlashAttention) Name() string { return "flash-attn" }

func (FlashAttention) Run(m *ir.Model) (Report, error) {
	g := m.Graph
	var r Report
	for _, n := range append([]*ir.Node(nil), g.Nodes...) {
		if n.Op != "Softmax" && n.Op != "Attention" {
			continue
		}
		users := g.Users()
		outputs := map[*ir.Value]bool{}
		for _, o := range g.Outputs {
			outputs[o] = true
		}
		var a *attention
		var reason string
		if n.Op == "Attention" {
			a, reason = matchAttentionOp(n, users, outputs)
		} else {
			a, reason = matchAttention(n, users, outputs)
		}
		if a == nil {
			r.Notes = append(r.Notes, fmt.Sprintf("skipped %s %s: %s", lower(n.Op), n.Outputs[0].Ref(), reason))
			continue
		}
		if a.newMask != nil {
			a.mask = g.AddWeight(a.newMask)
		}
		attrs := ir.Attrs{"scale": a.scale, "causal": a.causal, "n_head": a.heads, "n_head_kv": a.kvHeads, "softcap": a.softcap}
		if a.window > 0 {
			attrs["window"] = a.window
		}
		inputs := []*ir.Value{a.q, a.k, a.v}
		if a.mask != nil {
			inputs = append(inputs, a.mask)
		}
		if n.Op == "Attention" {
			// The op's other outputs are unused: the fused node takes its
			// place with the first one.
			n.Outputs = n.Outputs[:1]
		}
		g.Fuse(a.region, "FlashAttention", attrs, inputs, a.out)
		r.Changed++
		window := ""
		if a.window > 0 {
			window = fmt.Sprintf(", window %d", a.window)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("fused attention%s into FlashAttention: %d query heads, %d key/value heads, scale %.6g, causal %v%s, mask %v, softcap %g (%d nodes)",
			a.where(), a.heads, a.kvHeads, a.scale, a.causal, window, a.mask != nil, a.softcap, len(a.region)))
	}
	if r.Changed > 0 {
		// Repeats of k and v, Transposes and scalings that fed only the
		// fused attention are dead now.
		dr, err := DeadCode{}.Run(m)
		if err != nil {
			return r, err
		}
		r.Changed += dr.Changed
	}
	return r, nil
}

func lower(op string) string {
	if op == "Softmax" {
		return "softmax"
	}
	return "Attention op"
}

// attention is a matched attention subgraph.
type attention struct {
	q, k, v, mask  *ir.Value
	newMask        *ir.Tensor // a mask made from a boolean condition, to add as a weight
	out            *ir.Value
	scale, softcap float64
	causal         bool
	window         int64 // sliding window of the causal mask (0: none)
	heads, kvHeads int64
	region         []*ir.Node
}

func (a *attention) where() string {
	if d := a.k.Def; d != nil && d.Op == "KVCache" {
		return fmt.Sprintf(" of layer %d", d.Attrs.Int("layer"))
	}
	return " at " + a.out.Ref()
}

// Stages of the scores, from the softmax upwards: masks are added after
// the softcap, which bounds the scaled product.
const (
	stageMask = iota
	stageSoftcap
	stageScale
)

// matchAttention matches the attention pattern around a Softmax node, or
// says why it does not.
func matchAttention(sm *ir.Node, users map[*ir.Value][]*ir.Node, outputs map[*ir.Value]bool) (*attention, string) {
	rank := len(sm.Inputs[0].Shape())
	if sm.Attrs.Has("axis") {
		if ax := sm.Attrs.Int("axis"); ax != -1 && ax != int64(rank-1) {
			return nil, fmt.Sprintf("softmax over axis %d, not the last", ax)
		}
	}
	if rank != 3 && rank != 4 {
		return nil, fmt.Sprintf("scores of rank %d, not [H,T,S] or [B,H,T,S]", rank)
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
	a := &attention{out: pv.Outputs[0], scale: 1, region: []*ir.Node{pv, sm}}
	v, vGroup := repeatedKV(pv.Inputs[1])
	a.v = v
	stage := stageMask
	advance := func(to int, what string) string {
		if to < stage {
			return what + " comes before the softcap or the scale, where the fused op cannot apply it"
		}
		stage = to
		return ""
	}
	softcap := func(cap float64) string {
		if why := advance(stageSoftcap, "a softcap"); why != "" {
			return why
		}
		if a.softcap != 0 {
			return "two softcaps"
		}
		a.softcap = cap
		return ""
	}
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
			if why := advance(stageMask, "a causal mask"); why != "" {
				return nil, why
			}
			if a.causal {
				return nil, "two causal masks"
			}
			a.causal = true
			a.window = d.Attrs.Int("window")
			x = d.Inputs[0]
		case "Add":
			// scores + mask (the scores are the computed operand).
			s, m := d.Inputs[0], d.Inputs[1]
			if s.Def == nil {
				s, m = m, s
			}
			if why := advance(stageMask, "a mask"); why != "" {
				return nil, why
			}
			if why := a.addMask(m, s.Shape()); why != "" {
				return nil, why
			}
			x = s
		case "Where":
			// Where(cond, -inf, scores) or Where(cond, scores, -inf) on a
			// constant condition is an additive mask (the most negative
			// float does as -inf: its exponential is 0 all the same).
			cond, s, fill, maskWhere := d.Inputs[0], d.Inputs[2], d.Inputs[1], true
			if _, ok := constScalar(fill); !ok {
				s, fill, maskWhere = d.Inputs[1], d.Inputs[2], false
			}
			f, ok := constScalar(fill)
			if !ok || cond.Weight == nil || f > -1e30 {
				return nil, "a Where that is not a constant mask filling -inf"
			}
			if why := advance(stageMask, "a mask"); why != "" {
				return nil, why
			}
			t, err := boolMask(cond.Weight, maskWhere)
			if err != nil {
				return nil, err.Error()
			}
			if why := a.addConstMask(t, s.Shape()); why != "" {
				return nil, why
			}
			x = s
		case "Scale":
			if why := advance(stageScale, "a scale"); why != "" {
				return nil, why
			}
			a.scale *= d.Attrs.Float("scale")
			x = d.Inputs[0]
		case "Softcap":
			if why := softcap(d.Attrs.Float("cap")); why != "" {
				return nil, why
			}
			x = d.Inputs[0]
		case "Mul", "Div":
			if cap, inner, ok := softcapOf(d, single); ok {
				if why := softcap(cap); why != "" {
					return nil, why
				}
				a.region = append(a.region, inner.Def, inner.Def.Inputs[0].Def)
				x = inner.Def.Inputs[0].Def.Inputs[0]
				continue
			}
			s, c := d.Inputs[0], d.Inputs[1]
			if d.Op == "Mul" && s.Weight != nil && c.Weight == nil {
				s, c = c, s
			}
			f, ok := constScalar(c)
			if !ok {
				return nil, fmt.Sprintf("the scale %s is not a constant scalar", c.Ref())
			}
			if why := advance(stageScale, "a scale"); why != "" {
				return nil, why
			}
			if d.Op == "Div" {
				f = 1 / f
			}
			a.scale *= f
			x = s
		case "MatMul":
			q, kT := d.Inputs[0], d.Inputs[1]
			// A scale may multiply q or kᵀ before the product.
			for _, side := range []*ir.Value{q, kT} {
				if sd := side.Def; sd != nil && sd.Op == "Mul" && single(side) {
					if f, ok := constScalar(sd.Inputs[1]); ok {
						a.scale *= f
						a.region = append(a.region, sd)
						if side == q {
							q = sd.Inputs[0]
						} else {
							kT = sd.Inputs[0]
						}
					}
				}
			}
			var k *ir.Value
			if d.Attrs.Bool("transpose_b") {
				k = kT
			} else {
				t := kT.Def
				if t == nil || t.Op != "Permute" || !swapsLastTwo(t.Attrs.Ints("perm")) || !single(kT) {
					return nil, "the scores are not a product of queries with transposed keys"
				}
				a.region = append(a.region, t)
				k = t.Inputs[0]
			}
			// A scale may also multiply k before its transpose.
			if sd := k.Def; sd != nil && sd.Op == "Mul" && single(k) {
				if f, ok := constScalar(sd.Inputs[1]); ok {
					a.scale *= f
					a.region = append(a.region, sd)
					k = sd.Inputs[0]
				}
			}
			base, kGroup := repeatedKV(k)
			if kGroup != vGroup {
				return nil, "keys and values are repeated differently across heads"
			}
			if tiled(k) || tiled(pv.Inputs[1]) {
				return nil, "key/value heads repeated by Tile: query head h would read h mod Hkv, the fused op reads h/(H/Hkv)"
			}
			a.q, a.k = q, base
			qs, ks, vs := a.q.Shape(), a.k.Shape(), a.v.Shape()
			r := len(qs)
			if len(ks) != r || len(vs) != r {
				return nil, fmt.Sprintf("q %v, k %v and v %v differ in rank", qs, ks, vs)
			}
			if !qs[r-3].Known() || !ks[r-3].Known() {
				return nil, "the number of heads is not known"
			}
			if a.q.Type() != quant.F32 || a.k.Type() != quant.F32 || a.v.Type() != quant.F32 {
				return nil, "q, k and v are not all float32"
			}
			a.heads, a.kvHeads = qs[r-3].Size, ks[r-3].Size
			if a.kvHeads == 0 || a.heads%a.kvHeads != 0 {
				return nil, fmt.Sprintf("%d query heads do not group over %d key/value heads", a.heads, a.kvHeads)
			}
			return a, ""
		default:
			return nil, fmt.Sprintf("%s between the scores and the softmax", d.Op)
		}
	}
}

// addMask takes m as the additive mask of the scores. A constant mask
// goes through addConstMask.
func (a *attention) addMask(m *ir.Value, scores ir.Shape) string {
	if m.Weight != nil {
		return a.addConstMask(m.Weight, scores)
	}
	if b, err := ir.BroadcastShapes(m.Shape(), scores); err != nil || !b.Equal(scores) || len(m.Shape()) > len(scores) || m.Type() != quant.F32 {
		return fmt.Sprintf("%s %v is not a float mask of the scores %v", m.Ref(), m.Shape(), scores)
	}
	if a.mask != nil || a.newMask != nil {
		return "two masks"
	}
	a.mask = m
	return ""
}

// addConstMask takes a constant additive mask: nothing when it is all
// zeros (an expanded Attention without a mask adds one), the causal flag
// when it masks exactly the keys after each query (the tiles above the
// diagonal are then skipped), else the mask itself.
func (a *attention) addConstMask(t *ir.Tensor, scores ir.Shape) string {
	shape := make(ir.Shape, len(t.Shape))
	for i, d := range t.Shape {
		shape[i] = ir.D(d)
	}
	if b, err := ir.BroadcastShapes(shape, scores); err != nil || !b.Equal(scores) || len(shape) > len(scores) {
		return fmt.Sprintf("mask %v does not broadcast to the scores %v", t.Shape, scores)
	}
	f, err := t.Float32s()
	if err != nil {
		return fmt.Sprintf("mask %s: %v", t.Name, err)
	}
	zero, causal := true, len(t.Shape) >= 2
	r := len(scores)
	T, S := scores[r-2].Size, scores[r-1].Size
	mt, ms := int64(1), int64(1)
	if n := len(t.Shape); n >= 2 {
		mt, ms = t.Shape[n-2], t.Shape[n-1]
	}
	causal = causal && mt == T && ms == S && scores[r-2].Known() && scores[r-1].Known()
	for i, x := range f {
		zero = zero && x == 0
		if causal {
			tt, ss := int64(i)/S%T, int64(i)%S
			above := ss > tt+S-T
			causal = above && math.IsInf(float64(x), -1) || !above && x == 0
		}
	}
	switch {
	case zero:
		return ""
	case causal:
		if a.causal {
			return "two causal masks"
		}
		a.causal = true
		return ""
	case a.mask != nil || a.newMask != nil:
		return "two masks"
	}
	if t.Type != quant.F32 {
		var err error
		if t, err = ir.Convert(t, quant.F32); err != nil {
			return err.Error()
		}
	}
	a.newMask = t
	return ""
}

// boolMask turns a constant condition into an additive mask: -inf where
// the condition is maskWhere, 0 elsewhere.
func boolMask(cond *ir.Tensor, maskWhere bool) (*ir.Tensor, error) {
	if cond.Type != quant.Bool {
		return nil, fmt.Errorf("the mask condition is %v", cond.Type)
	}
	b, err := cond.Bytes()
	if err != nil {
		return nil, err
	}
	v := make([]float32, len(b))
	for i, c := range b {
		if (c != 0) == maskWhere {
			v[i] = float32(math.Inf(-1))
		}
	}
	return ir.FromF32(cond.Name+".mask", cond.Shape, v)
}

// softcapOf matches Mul(Tanh(Div(x, c)), c): cap·tanh(x/cap).
func softcapOf(d *ir.Node, single func(*ir.Value) bool) (float64, *ir.Value, bool) {
	if d.Op != "Mul" {
		return 0, nil, false
	}
	th, c := d.Inputs[0], d.Inputs[1]
	if th.Def == nil || th.Def.Op != "Tanh" {
		th, c = c, th
	}
	cap, ok := constScalar(c)
	if !ok || th.Def == nil || th.Def.Op != "Tanh" || !single(th) {
		return 0, nil, false
	}
	div := th.Def.Inputs[0]
	if div.Def == nil || div.Def.Op != "Div" || !single(div) {
		return 0, nil, false
	}
	if c2, ok := constScalar(div.Def.Inputs[1]); !ok || c2 != cap || cap <= 0 {
		return 0, nil, false
	}
	return cap, th, true
}

// repeatedKV sees through grouped-query attention's repeat_interleave of
// k or v, [B,Hkv,S,d] → Unsqueeze(2) → Expand [B,Hkv,g,S,d] → Reshape
// [B,Hkv·g,S,d], and returns the unrepeated value and g (1 when v is not
// repeated).
func repeatedKV(v *ir.Value) (*ir.Value, int64) {
	re := v.Def
	if re == nil || re.Op != "Reshape" {
		return v, 1
	}
	ex := re.Inputs[0].Def
	if ex == nil || ex.Op != "Expand" {
		return v, 1
	}
	un := ex.Inputs[0].Def
	if un == nil || un.Op != "Reshape" {
		return v, 1
	}
	base := un.Inputs[0]
	bs, us, es, rs := base.Shape(), un.Outputs[0].Shape(), ex.Outputs[0].Shape(), v.Shape()
	r := len(bs)
	if r < 3 || len(us) != r+1 || len(es) != r+1 || len(rs) != r {
		return v, 1
	}
	// [.., Hkv, S, d] → [.., Hkv, 1, S, d] → [.., Hkv, g, S, d] → [.., Hkv·g, S, d]
	h := r - 3
	for i := range r + 1 {
		var want ir.Dim
		switch {
		case i < h+1:
			want = bs[i]
		case i == h+1:
			want = ir.D(1)
		default:
			want = bs[i-1]
		}
		if us[i] != want || i != h+1 && es[i] != us[i] {
			return v, 1
		}
	}
	g := es[h+1]
	if !g.Known() || !bs[h].Known() || rs[h] != ir.D(bs[h].Size*g.Size) {
		return v, 1
	}
	for i := range r {
		if i != h && rs[i] != bs[i] {
			return v, 1
		}
	}
	return base, g.Size
}

// tiled reports whether v's heads were repeated by Tile.
func tiled(v *ir.Value) bool { return v.Def != nil && v.Def.Op == "Tile" }

// swapsLastTwo reports whether perm swaps the last two axes only.
func swapsLastTwo(perm []int64) bool {
	n := len(perm)
	if n < 2 || perm[n-1] != int64(n-2) || perm[n-2] != int64(n-1) {
		return false
	}
	for i := range n - 2 {
		if perm[i] != int64(i) {
			return false
		}
	}
	return true
}

// matchAttentionOp takes an ONNX Attention node whose only used output is
// y, without past keys, values or padding lengths.
func matchAttentionOp(n *ir.Node, users map[*ir.Value][]*ir.Node, outputs map[*ir.Value]bool) (*attention, string) {
	for i, o := range n.Outputs[1:] {
		if len(users[o]) > 0 || outputs[o] {
			return nil, fmt.Sprintf("its output %d (%s) is used", i+1, []string{"present_key", "present_value", "qk_matmul_output"}[i])
		}
	}
	if n.Attrs.Bool("has_past") || n.Attrs.Bool("has_nonpad") {
		return nil, "past keys and values or padding lengths"
	}
	q, k, v := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	qs := q.Shape()
	if len(qs) != 4 {
		return nil, "3-D inputs (heads folded into the hidden axis)"
	}
	a := &attention{q: q, k: k, v: v, out: n.Outputs[0], region: []*ir.Node{n},
		causal: n.Attrs.Int("is_causal") != 0, softcap: n.Attrs.Float("softcap")}
	if !qs[3].Known() {
		return nil, "the head size is not known"
	}
	a.scale = 1 / math.Sqrt(float64(qs[3].Size))
	if n.Attrs.Has("scale") {
		a.scale = n.Attrs.Float("scale")
	}
	a.heads, a.kvHeads = qs[1].Size, k.Shape()[1].Size
	if !qs[1].Known() || !k.Shape()[1].Known() {
		return nil, "the number of heads is not known"
	}
	if q.Type() != quant.F32 || k.Type() != quant.F32 || v.Type() != quant.F32 {
		return nil, "q, k and v are not all float32"
	}
	scores := ir.Shape{qs[0], qs[1], qs[2], k.Shape()[2]}
	if n.Attrs.Bool("has_mask") {
		m := n.Inputs[3]
		if m.Type() == quant.Bool {
			if m.Weight == nil {
				return nil, "a boolean mask computed at run time"
			}
			// ONNX's boolean mask keeps where true: mask the others.
			t, err := boolMask(m.Weight, false)
			if err != nil {
				return nil, err.Error()
			}
			if why := a.addConstMask(t, scores); why != "" {
				return nil, why
			}
		} else if why := a.addMask(m, scores); why != "" {
			return nil, why
		}
	}
	// The op's causal mask is aligned at the top left (query t sees keys
	// up to t), the fused op's at the bottom right: the same when there
	// are as many keys as queries, else it becomes a mask.
	if T, S := qs[2].Size, k.Shape()[2].Size; a.causal && T != S {
		a.causal = false
		f := make([]float32, T*S)
		for t := range T {
			for s := t + 1; s < S; s++ {
				f[t*S+s] = float32(math.Inf(-1))
			}
		}
		c, err := ir.FromF32(n.Outputs[0].Ref()+".causal", []int64{T, S}, f)
		if err != nil {
			return nil, err.Error()
		}
		if a.mask != nil || a.newMask != nil {
			return nil, "a causal mask over more keys than queries, and another mask"
		}
		a.newMask = c
	}
	return a, ""
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
