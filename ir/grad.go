package ir

import (
	"fmt"
	"slices"

	"github.com/lqc-dev/lqc/quant"
)

// Gradients live beside the op table: for every op a training graph can
// hold, a vector-Jacobian rule that appends to the graph the ops computing
// the gradients of its inputs from the gradients of its outputs (Backward
// in autodiff.go walks the graph and calls them), and the backward ops
// those rules use, with their shape inference. An op without a rule is an
// error naming it.

func init() {
	for name, def := range backwardOps {
		ops[name] = def
	}
}

var backwardOps = map[string]opDef{
	"LinearT": {"dy[...,out] · w[out,in] -> f32[...,in]: the transposed product, on a weight of any type read in place", inferLinearT},
	"LinearGradW": {"Σ over the leading positions of dy[...,out]ᵀ·x[...,in] -> f32[out,in]: " +
		"a weight's gradient", inferLinearGradW},
	"EmbeddingGrad": {"dy[T,D] added into the rows ids[T] of a zero table f32[rows,D] (attr rows)", inferEmbeddingGrad},
	"RMSNormGrad": {"the gradient of RMSNorm(x, w) (attr eps) with respect to attr wrt, \"x\" or \"w\", " +
		"given dy: inputs x, w, dy", inferNormGrad},
	"LayerNormGrad": {"the gradient of LayerNorm(x, w, ·) (attr eps) with respect to attr wrt, \"x\" or \"w\", " +
		"given dy: inputs x, w, dy", inferNormGrad},
	"SiLUGrad":    {"dy · d/dx SiLU(x): inputs x, dy", inferElementGrad},
	"GELUGrad":    {"dy · d/dx GELU(x) (attr approximate as GELU's): inputs x, dy", inferElementGrad},
	"ReluGrad":    {"dy where x > 0, else 0: inputs x, dy", inferElementGrad},
	"SoftcapGrad": {"dy · d/dx Softcap(x) = dy · (1 − tanh²(x/cap)) (attr cap): inputs x, dy", inferElementGrad},
	"SoftmaxGrad": {"y · (dy − Σ y·dy) over the last axis, y the softmax's output: inputs y, dy", inferElementGrad},
	"FlashAttentionGrad": {"dq, dk, dv of FlashAttention (same attrs) from q, k, v, its output o, its " +
		"log-sum-exp lse, do (and its mask last): the probabilities are recomputed tile by tile from lse, " +
		"never stored", inferFlashAttentionGrad},
	"CrossEntropyGrad": {"dl · (softmax(logits) − onehot(targets)) on rows with a target, 0 elsewhere: " +
		"inputs logits, targets, dl[1]", inferLossGrad},
	"KLDivGrad": {"dl · (softmax(logits) − softmax(teacher)): inputs logits, teacher, dl[1]", inferLossGrad},
	"SliceGrad": {"dy placed at [start, start+len) of a zero tensor whose attr axis has attr size", inferSliceGrad},
}

func inferLinearT(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	dy, w := n.Inputs[0], n.Inputs[1]
	if err := wantF32(dy); err != nil {
		return nil, err
	}
	ds, ws := dy.Shape(), w.Shape()
	if len(ws) != 2 || len(ds) == 0 || ds[len(ds)-1] != ws[0] {
		return nil, fmt.Errorf("dy%v does not match weight %s%v ([out,in])", ds, w.Ref(), ws)
	}
	return []OutSig{{quant.F32, append(append(Shape{}, ds[:len(ds)-1]...), ws[1])}}, nil
}

func inferLinearGradW(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs...); err != nil {
		return nil, err
	}
	ds, xs := n.Inputs[0].Shape(), n.Inputs[1].Shape()
	if len(ds) == 0 || len(ds) != len(xs) || !ds[:len(ds)-1].Equal(xs[:len(xs)-1]) {
		return nil, fmt.Errorf("dy%v and x%v differ in their leading axes", ds, xs)
	}
	return []OutSig{{quant.F32, Shape{ds[len(ds)-1], xs[len(xs)-1]}}}, nil
}

func inferEmbeddingGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	dy, ids := n.Inputs[0], n.Inputs[1]
	ds, is := dy.Shape(), ids.Shape()
	if len(ds) != 2 || len(is) != 1 || ds[0] != is[0] || ids.Type() != quant.I32 {
		return nil, fmt.Errorf("want dy[T,D] and i32 ids[T], have %v and %v%v", ds, ids.Type(), is)
	}
	rows := n.Attrs.Int("rows")
	if rows <= 0 {
		return nil, fmt.Errorf("attr rows %d", rows)
	}
	return []OutSig{{quant.F32, Shape{D(rows), ds[1]}}}, nil
}

func inferNormGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3); err != nil {
		return nil, err
	}
	x, w, dy := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	if err := wantF32(x, dy); err != nil {
		return nil, err
	}
	xs := x.Shape()
	if !xs.Equal(dy.Shape()) || len(xs) == 0 || len(w.Shape()) != 1 || w.Shape()[0] != xs[len(xs)-1] {
		return nil, fmt.Errorf("x%v, w%v and dy%v do not match", xs, w.Shape(), dy.Shape())
	}
	switch n.Attrs.Str("wrt") {
	case "x":
		return []OutSig{{quant.F32, xs}}, nil
	case "w":
		return []OutSig{{quant.F32, w.Shape()}}, nil
	}
	return nil, fmt.Errorf("attr wrt %q must be x or w", n.Attrs.Str("wrt"))
}

func inferElementGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs...); err != nil {
		return nil, err
	}
	if !n.Inputs[0].Shape().Equal(n.Inputs[1].Shape()) {
		return nil, fmt.Errorf("shapes %v and %v differ", n.Inputs[0].Shape(), n.Inputs[1].Shape())
	}
	return []OutSig{{quant.F32, n.Inputs[0].Shape()}}, nil
}

func inferFlashAttentionGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 6, 7); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs...); err != nil {
		return nil, err
	}
	// The forward op's own inference checks q, k, v and the mask.
	fwd := &Node{Op: "FlashAttention", Inputs: n.Inputs[:3], Attrs: Attrs{}}
	if len(n.Inputs) == 7 {
		fwd.Inputs = []*Value{n.Inputs[0], n.Inputs[1], n.Inputs[2], n.Inputs[6]}
	}
	for k, v := range n.Attrs {
		fwd.Attrs[k] = v
	}
	fwd.Attrs["lse"] = true
	sigs, err := inferFlashAttention(fwd)
	if err != nil {
		return nil, err
	}
	o, lse, do := n.Inputs[3], n.Inputs[4], n.Inputs[5]
	if !o.Shape().Equal(sigs[0].Shape) || !do.Shape().Equal(sigs[0].Shape) || !lse.Shape().Equal(sigs[1].Shape) {
		return nil, fmt.Errorf("o%v, lse%v and do%v do not match the attention's %v and %v",
			o.Shape(), lse.Shape(), do.Shape(), sigs[0].Shape, sigs[1].Shape)
	}
	return []OutSig{{quant.F32, n.Inputs[0].Shape()}, {quant.F32, n.Inputs[1].Shape()}, {quant.F32, n.Inputs[2].Shape()}}, nil
}

func inferLossGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3); err != nil {
		return nil, err
	}
	fwd := &Node{Op: "CrossEntropy", Inputs: n.Inputs[:2]}
	infer := inferCrossEntropy
	if n.Op == "KLDivGrad" {
		infer = inferKLDiv
	}
	if _, err := infer(fwd); err != nil {
		return nil, err
	}
	if dl := n.Inputs[2]; dl.Type() != quant.F32 || !dl.Shape().Equal(Dims(1)) {
		return nil, fmt.Errorf("dl is %v%v, want F32[1]", dl.Type(), dl.Shape())
	}
	return []OutSig{{quant.F32, n.Inputs[0].Shape()}}, nil
}

func inferSliceGrad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	ds := n.Inputs[0].Shape()
	axis, start, size := n.Attrs.Int("axis"), n.Attrs.Int("start"), n.Attrs.Int("size")
	if axis < 0 {
		axis += int64(len(ds))
	}
	if axis < 0 || int(axis) >= len(ds) || !ds[axis].Known() || start < 0 || start+ds[axis].Size > size {
		return nil, fmt.Errorf("dy%v does not fit at %d of an axis %d of size %d", ds, start, n.Attrs.Int("axis"), size)
	}
	out := append(Shape{}, ds...)
	out[axis] = D(size)
	return []OutSig{{quant.F32, out}}, nil
}

// gradRule appends the gradients of node n's inputs given the gradients
// dys of its outputs (nil for an output nothing depends on) and returns
// one value per input: nil where need[i] is false or the input has none.
type gradRule func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value

// gradBuilder appends backward nodes and keeps the first error.
type gradBuilder struct {
	*Builder
}

func (b *gradBuilder) fail(format string, args ...any) []*Value {
	if b.err == nil {
		b.err = fmt.Errorf(format, args...)
	}
	return nil
}

// sumTo reduces a gradient of a's shape to b's, b having been broadcast
// over a's leading axes (the transformer graphs' Add and Mul).
func (b *gradBuilder) sumTo(g *Value, to Shape) *Value {
	gs := g.Shape()
	if gs.Equal(to) {
		return g
	}
	lead := len(gs) - len(to)
	if lead < 0 || !gs[lead:].Equal(to) {
		b.fail("cannot reduce a gradient %v to %v: only broadcasting over leading axes has a rule", gs, to)
		return nil
	}
	axes := make([]int64, lead)
	for i := range axes {
		axes[i] = int64(i)
	}
	return b.Op("ReduceSum", Attrs{"axes": axes, "keepdims": int64(0)}, g)
}

// reshapeTo reshapes g to shape s, which may hold one symbolic axis.
func (b *gradBuilder) reshapeTo(g *Value, s Shape) *Value {
	dims := make([]int64, len(s))
	for i, d := range s {
		dims[i] = d.Size
		if !d.Known() {
			dims[i] = -1
		}
	}
	return b.Op("Reshape", Attrs{"shape": dims}, g)
}

// ungroup sums a gradient computed per query head, [B,·,·], over the
// heads that share one key/value head, giving [Bk,·,·].
func (b *gradBuilder) ungroup(g *Value, bk Dim) *Value {
	gs := g.Shape()
	if gs[0] == bk {
		return g
	}
	group := gs[0].Size / bk.Size
	dims := []int64{bk.Size, group, gs[1].Size, gs[2].Size}
	for i, d := range gs[1:] {
		if !d.Known() {
			dims[i+2] = -1
		}
	}
	r := b.Op("Reshape", Attrs{"shape": dims}, g)
	return b.Op("ReduceSum", Attrs{"axes": []int64{1}, "keepdims": int64(0)}, r)
}

func copyAttrs(a Attrs, extra ...any) Attrs {
	out := Attrs{}
	for k, v := range a {
		out[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		out[extra[i].(string)] = extra[i+1]
	}
	return out
}

var grads map[string]gradRule

func init() {
	grads = map[string]gradRule{
		"Embedding": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			if need[1] {
				return b.fail("token ids have no gradient")
			}
			out := make([]*Value, 2)
			if need[0] {
				rows := n.Inputs[0].Shape()[0].Size
				out[0] = b.Op("EmbeddingGrad", Attrs{"rows": rows}, dys[0], n.Inputs[1])
			}
			return out
		},
		"Linear": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			dy, x, w := dys[0], n.Inputs[0], n.Inputs[1]
			out := make([]*Value, len(n.Inputs))
			if need[0] {
				out[0] = b.Op("LinearT", nil, dy, w)
			}
			if need[1] {
				if w.Type() != quant.F32 {
					return b.fail("weight %s is %v: only float32 weights are trained", w.Ref(), w.Type())
				}
				out[1] = b.Op("LinearGradW", nil, dy, x)
			}
			if len(n.Inputs) == 3 && need[2] {
				out[2] = b.sumTo(dy, n.Inputs[2].Shape())
			}
			return out
		},
		"LowRank": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			// y = s·(x·Aᵀ)·Bᵀ; with u = x·Aᵀ (recomputed: rank r) and
			// g = s·dy·B: dx = g·A, dA = gᵀ·x, dB = s·dyᵀ·u.
			dy, x, a, bw := dys[0], n.Inputs[0], n.Inputs[1], n.Inputs[2]
			s := n.Attrs.Float("scale")
			out := make([]*Value, 3)
			var g *Value
			if need[0] || need[1] {
				g = b.Op("Scale", Attrs{"scale": s}, b.Op("LinearT", nil, dy, bw))
			}
			if need[0] {
				out[0] = b.Op("LinearT", nil, g, a)
			}
			if need[1] {
				out[1] = b.Op("LinearGradW", nil, g, x)
			}
			if need[2] {
				u := b.Op("Linear", Attrs{"exact": true}, x, a)
				out[2] = b.Op("Scale", Attrs{"scale": s}, b.Op("LinearGradW", nil, dy, u))
			}
			return out
		},
		"RMSNorm":   normRule("RMSNormGrad"),
		"LayerNorm": normRule("LayerNormGrad"),
		"Add": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			out := make([]*Value, 2)
			for i := range out {
				if need[i] {
					out[i] = b.sumTo(dys[0], n.Inputs[i].Shape())
				}
			}
			return out
		},
		"Mul": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			out := make([]*Value, 2)
			if need[0] {
				out[0] = b.Op("Mul", nil, dys[0], n.Inputs[1])
			}
			if need[1] {
				out[1] = b.sumTo(b.Op("Mul", nil, dys[0], n.Inputs[0]), n.Inputs[1].Shape())
			}
			return out
		},
		"SiLU":    elementRule("SiLUGrad"),
		"Softcap": elementRule("SoftcapGrad"),
		"Relu":    elementRule("ReluGrad"),
		"GELU":    elementRule("GELUGrad"),
		"Scale": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			return []*Value{b.Op("Scale", n.Attrs, dys[0])}
		},
		"Softmax": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			if n.Attrs.Has("axis") {
				if ax := n.Attrs.Int("axis"); ax != -1 && ax != int64(len(n.Inputs[0].Shape())-1) {
					return b.fail("softmax over axis %d: only the last axis has a rule", ax)
				}
			}
			return []*Value{b.Op("SoftmaxGrad", nil, n.Outputs[0], dys[0])}
		},
		"CausalMask": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			return []*Value{b.Op("CausalMask", copyAttrs(n.Attrs, "zero", true), dys[0])}
		},
		"RoPE": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			if need[1] {
				return b.fail("positions have no gradient")
			}
			if len(need) == 3 && need[2] {
				return b.fail("frequency factors have no gradient")
			}
			// A rotation's transpose is the opposite rotation.
			in := append([]*Value{dys[0]}, n.Inputs[1:]...)
			return append([]*Value{b.Op("RoPE", copyAttrs(n.Attrs, "inverse", !n.Attrs.Bool("inverse")), in...)}, make([]*Value, len(n.Inputs)-1)...)
		},
		"MatMul": matMulRule,
		"Reshape": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			return []*Value{b.reshapeTo(dys[0], n.Inputs[0].Shape())}
		},
		"Permute": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			perm := n.Attrs.Ints("perm")
			inv := make([]int64, len(perm))
			for i, p := range perm {
				inv[p] = int64(i)
			}
			return []*Value{b.Op("Permute", Attrs{"perm": inv}, dys[0])}
		},
		"Slice": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			xs := n.Inputs[0].Shape()
			axis := n.Attrs.Int("axis")
			if axis < 0 {
				axis += int64(len(xs))
			}
			return []*Value{b.Op("SliceGrad", Attrs{"axis": axis, "start": n.Attrs.Int("start"), "size": xs[axis].Size}, dys[0])}
		},
		"FlashAttention": flashAttentionRule,
		"CrossEntropy": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			if need[1] {
				return b.fail("targets have no gradient")
			}
			return []*Value{b.Op("CrossEntropyGrad", nil, n.Inputs[0], n.Inputs[1], dys[0]), nil}
		},
		"KLDiv": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			if need[1] {
				return b.fail("the teacher's logits are a constant of distillation: they have no gradient")
			}
			return []*Value{b.Op("KLDivGrad", nil, n.Inputs[0], n.Inputs[1], dys[0]), nil}
		},
		"KVCache": func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
			return b.fail("a KV cache carries positions between calls; a training graph takes whole windows (passes.TrainingForm replaces the cache)")
		},
	}
}

func normRule(op string) gradRule {
	return func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
		out := make([]*Value, len(n.Inputs))
		x, w := n.Inputs[0], n.Inputs[1]
		if need[0] {
			out[0] = b.Op(op, Attrs{"eps": n.Attrs.Float("eps"), "wrt": "x"}, x, w, dys[0])
		}
		if need[1] {
			out[1] = b.Op(op, Attrs{"eps": n.Attrs.Float("eps"), "wrt": "w"}, x, w, dys[0])
		}
		if len(n.Inputs) == 3 && need[2] {
			out[2] = b.sumTo(dys[0], n.Inputs[2].Shape())
		}
		return out
	}
}

func elementRule(op string) gradRule {
	return func(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
		return []*Value{b.Op(op, n.Attrs, n.Inputs[0], dys[0])}
	}
}

// matMulRule covers the 3-D products of spelled-out attention, grouped
// (batch i of a with batch i/(B/Bk) of b) and with transpose_b.
func matMulRule(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
	a, w, dy := n.Inputs[0], n.Inputs[1], dys[0]
	as, ws := a.Shape(), w.Shape()
	if len(as) != 3 || len(ws) != 3 {
		return b.fail("MatMul of %v and %v: only 3-D products have a rule", as, ws)
	}
	transB := n.Attrs.Bool("transpose_b")
	swap := Attrs{"perm": []int64{0, 2, 1}}
	out := make([]*Value, 2)
	if need[0] {
		// dA = dC·Bᵀ, or dC·B when the product took Bᵀ.
		out[0] = b.Op("MatMul", Attrs{"transpose_b": !transB}, dy, w)
	}
	if need[1] {
		var g *Value
		if transB {
			g = b.Op("MatMul", nil, b.Op("Permute", swap, dy), a) // dCᵀ·A: [B,N,K]
		} else {
			g = b.Op("MatMul", nil, b.Op("Permute", swap, a), dy) // Aᵀ·dC: [B,K,N]
		}
		out[1] = b.ungroup(g, ws[0])
	}
	return out
}

func flashAttentionRule(b *gradBuilder, n *Node, dys []*Value, need []bool) []*Value {
	if len(n.Inputs) == 4 && need[3] {
		return b.fail("an attention mask has no gradient")
	}
	if len(dys) > 1 && dys[1] != nil {
		return b.fail("the attention's log-sum-exp is not differentiated")
	}
	if !n.Attrs.Bool("lse") {
		if err := b.G.SetAttr(n, "lse", true); err != nil {
			return b.fail("%v", err)
		}
	}
	ins := []*Value{n.Inputs[0], n.Inputs[1], n.Inputs[2], n.Outputs[0], n.Outputs[1], dys[0]}
	if len(n.Inputs) == 4 {
		ins = append(ins, n.Inputs[3])
	}
	attrs := copyAttrs(n.Attrs)
	delete(attrs, "lse")
	outs, err := b.G.Apply("FlashAttentionGrad", attrs, ins...)
	if err != nil {
		return b.fail("%v", err)
	}
	res := make([]*Value, len(n.Inputs))
	for i := range 3 {
		if need[i] {
			res[i] = outs[i]
		}
	}
	return res
}

// HasGrad reports whether op has a gradient rule.
func HasGrad(op string) bool { _, ok := grads[op]; return ok }

// GradOps lists the ops with gradient rules.
func GradOps() []string {
	names := make([]string, 0, len(grads))
	for n := range grads {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
