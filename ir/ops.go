package ir

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/quant"
)

// OutSig is the type and shape of one output, as an op's inference rule
// derives it.
type OutSig struct {
	Type  quant.Type
	Shape Shape
}

type opDef struct {
	doc   string
	infer func(n *Node) ([]OutSig, error)
}

// The op set is the vocabulary shared by the architecture builders, the
// passes and the runtime. Activations are F32 (token ids and positions
// I32); weights may be stored in any GGML type and are consumed directly.
var ops = map[string]opDef{
	"Embedding": {"rows of table[V,D] picked by ids[T] -> f32[T,D]", inferEmbedding},
	"Linear": {"x[...,in] · w[out,in]ᵀ (+ bias[out]) -> f32[...,out]; attr exact keeps the activations in float32 " +
		"(weights decoded row by row) where inference quantizes them to 8 bits as ggml does", inferLinear},
	"LowRank":   {"a LoRA update scale·(x[...,in]·A[r,in]ᵀ)·B[out,r]ᵀ -> f32[...,out] (attr scale); A and B are float32", inferLowRank},
	"RMSNorm":   {"x / sqrt(mean(x²)+eps) · w, over the last axis (attr eps)", inferNorm(2)},
	"LayerNorm": {"(x-mean)/sqrt(var+eps) · w + b, over the last axis (attr eps)", inferNorm(3)},
	"Add":       {"a + b, numpy broadcasting (the transformer graphs: b over a's leading axes, weights of any float type)", inferBinary},
	"Mul":       {"a · b, numpy broadcasting (as Add)", inferBinary},
	"SiLU":      {"x · sigmoid(x)", inferUnary},
	"GELU":      {"GELU: the tanh approximation, or exact (erf) with attr approximate \"none\"", inferUnary},
	"Scale":     {"x · scale (attr scale)", inferUnary},
	"Softcap":   {"cap · tanh(x / cap) (attr cap): Gemma 2's soft-capping of attention scores and logits", inferUnary},
	"Softmax":   {"softmax over attr axis (-1 when absent)", inferUnaryGeneric(floatsOnly)},
	"CausalMask": {"x[...,T,S] with -inf (0 with attr zero) where key position > query position " +
		"(queries are the last T of S positions), and with attr window w > 0 also where " +
		"query position − key position ≥ w (sliding-window attention)", inferCausalMask},
	"RoPE": {"rotary embedding of x[T,H,d] at positions pos[T] " +
		"(attrs n_dims, freq_base, freq_scale: positions multiplied by it, 1 when absent (linear scaling), " +
		"mode: \"normal\" rotates adjacent pairs, \"neox\" halves; " +
		"inverse rotates by the opposite angles); an optional third input f32[n_dims/2] divides each " +
		"frequency (Llama 3's rope_freqs, llama.cpp's freq_factors)", inferRoPE},
	"MatMul": {"a[B,M,K] · b[Bk,K,N] (or bᵀ with transpose_b); when Bk divides B, " +
		"batch i of a uses batch i/(B/Bk) of b (grouped-query attention); other shapes multiply as numpy's matmul", inferMatMul},
	"Reshape": {"same values, new shape (attr shape; -1 takes the remaining size)", inferReshape},
	"Permute": {"axes reordered (attr perm)", inferPermute},
	"Slice":   {"x[..., start:end] along one axis (attrs axis, start, end)", inferSlice},
	"FlashAttention": {"softmax(softcap(q·kᵀ·scale) (+ mask) (causal)) · v over q[B,H,T,d], k[B,Hkv,S,d], " +
		"v[B,Hkv,S,dv] (B optional), an optional additive mask broadcasting to [B,H,T,S], without the T×S " +
		"scores (attrs scale, causal, n_head, n_head_kv, softcap: 0 for none, else cap·tanh(x/cap) before " +
		"the mask); query head h uses key/value head h/(H/Hkv); causal aligns the last query with the last key; " +
		"attr window w > 0 (with causal) hides keys w or more positions before the query; " +
		"with attr lse a second output, f32[B,H,T], holds each query row's log-sum-exp of its scores (what the " +
		"backward pass recomputes the probabilities from)", inferFlashAttention},
	"KVCache": {"appends x[T,Hkv,d] at the current positions to the cache of (attrs) layer and " +
		"slot (\"k\" or \"v\"), and returns every cached position, [Hkv,kv,d]; kv counts the " +
		"positions cached so far, these T included. The runtime owns the cache", inferKVCache},
	"CrossEntropy": {"Σ over rows t with targets[t] ≥ 0 of −log softmax(logits[t])[targets[t]], " +
		"logits f32[T,V], targets i32[T] -> f32[1] (a sum: the trainer divides by the tokens of the batch)", inferCrossEntropy},
	"KLDiv": {"Σ over rows t of KL(softmax(teacher[t]) ‖ softmax(logits[t])), natural log, " +
		"logits and teacher f32[T,V] -> f32[1] (a sum, as CrossEntropy)", inferKLDiv},
}

// OpNames lists the known ops.
func OpNames() []string {
	names := make([]string, 0, len(ops))
	for n := range ops {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// OpDoc describes op's semantics.
func OpDoc(op string) string { return ops[op].doc }

// IsOp reports whether op is in the op set.
func IsOp(op string) bool { _, ok := ops[op]; return ok }

func wantInputs(n *Node, counts ...int) error {
	for _, c := range counts {
		if len(n.Inputs) == c {
			return nil
		}
	}
	want := make([]string, len(counts))
	for i, c := range counts {
		want[i] = fmt.Sprint(c)
	}
	return fmt.Errorf("takes %s inputs, has %d", strings.Join(want, " or "), len(n.Inputs))
}

func wantF32(vs ...*Value) error {
	for _, v := range vs {
		if v.Type() != quant.F32 {
			return fmt.Errorf("%s is %v, want F32", v.Ref(), v.Type())
		}
	}
	return nil
}

func inferEmbedding(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	table, ids := n.Inputs[0], n.Inputs[1]
	ts, is := table.Shape(), ids.Shape()
	if len(ts) != 2 || len(is) != 1 || ids.Type() != quant.I32 {
		return nil, fmt.Errorf("want table[V,D] and i32 ids[T], have %v%v and %v%v", table.Type(), ts, ids.Type(), is)
	}
	return []OutSig{{quant.F32, Shape{is[0], ts[1]}}}, nil
}

func inferLinear(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3); err != nil {
		return nil, err
	}
	x, w := n.Inputs[0], n.Inputs[1]
	if err := wantF32(x); err != nil {
		return nil, err
	}
	xs, ws := x.Shape(), w.Shape()
	if len(ws) != 2 || len(xs) == 0 || xs[len(xs)-1] != ws[1] {
		return nil, fmt.Errorf("x%v does not match weight %s%v ([out,in])", xs, w.Ref(), ws)
	}
	if len(n.Inputs) == 3 {
		if bs := n.Inputs[2].Shape(); len(bs) != 1 || bs[0] != ws[0] {
			return nil, fmt.Errorf("bias %v does not match %d outputs", bs, ws[0].Size)
		}
	}
	out := append(append(Shape{}, xs[:len(xs)-1]...), ws[0])
	return []OutSig{{quant.F32, out}}, nil
}

func inferNorm(inputs int) func(*Node) ([]OutSig, error) {
	return func(n *Node) ([]OutSig, error) {
		if err := wantInputs(n, inputs); err != nil {
			return nil, err
		}
		x := n.Inputs[0]
		if err := wantF32(x); err != nil {
			return nil, err
		}
		xs := x.Shape()
		for _, p := range n.Inputs[1:] {
			if ps := p.Shape(); len(ps) != 1 || len(xs) == 0 || ps[0] != xs[len(xs)-1] {
				return nil, fmt.Errorf("parameter %s%v does not match x%v", p.Ref(), ps, xs)
			}
		}
		if !n.Attrs.Has("eps") {
			return nil, fmt.Errorf("missing attr eps")
		}
		return []OutSig{{quant.F32, xs}}, nil
	}
}

func inferUnary(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs[0]); err != nil {
		return nil, err
	}
	return []OutSig{{quant.F32, n.Inputs[0].Shape()}}, nil
}

func inferBinary(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	a, b := n.Inputs[0], n.Inputs[1]
	as, bs := a.Shape(), b.Shape()
	// The transformer graphs' form: b (a weight of any float type, or
	// F32) repeats over a's leading axes.
	if a.Type() == quant.F32 && (b.Type() == quant.F32 || b.Weight != nil && b.Type().IsFloat()) &&
		len(bs) <= len(as) && as[len(as)-len(bs):].Equal(bs) {
		return []OutSig{{quant.F32, as}}, nil
	}
	return inferBroadcast(false)(n)
}

func inferCausalMask(n *Node) ([]OutSig, error) {
	out, err := inferUnary(n)
	if err == nil && len(out[0].Shape) < 2 {
		err = fmt.Errorf("needs at least 2 axes, has %v", out[0].Shape)
	}
	return out, err
}

func inferRoPE(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3); err != nil {
		return nil, err
	}
	x, pos := n.Inputs[0], n.Inputs[1]
	xs, ps := x.Shape(), pos.Shape()
	if err := wantF32(x); err != nil {
		return nil, err
	}
	if len(xs) != 3 || len(ps) != 1 || ps[0] != xs[0] || pos.Type() != quant.I32 {
		return nil, fmt.Errorf("want x[T,H,d] and i32 pos[T], have x%v and pos %v%v", xs, pos.Type(), ps)
	}
	nd := n.Attrs.Int("n_dims")
	if nd <= 0 || nd%2 != 0 || !xs[2].Known() || nd > xs[2].Size {
		return nil, fmt.Errorf("n_dims %d must be even and at most the head size %v", nd, xs[2])
	}
	if m := n.Attrs.Str("mode"); m != "normal" && m != "neox" {
		return nil, fmt.Errorf("mode %q must be normal or neox", m)
	}
	if len(n.Inputs) == 3 {
		f := n.Inputs[2]
		if fs := f.Shape(); f.Type() != quant.F32 || len(fs) != 1 || !fs[0].Known() || fs[0].Size != nd/2 {
			return nil, fmt.Errorf("frequency factors %v%v: want f32[%d]", f.Type(), fs, nd/2)
		}
	}
	return []OutSig{{quant.F32, xs}}, nil
}

func inferMatMul(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	a, b := n.Inputs[0], n.Inputs[1]
	as, bs := a.Shape(), b.Shape()
	grouped := len(as) == 3 && len(bs) == 3 && as[0].Known() && bs[0].Known() && bs[0].Size > 0 &&
		as[0].Size%bs[0].Size == 0 && as[0] != bs[0] && bs[0].Size != 1
	if n.Attrs.Bool("transpose_b") || grouped {
		if err := wantF32(a, b); err != nil {
			return nil, err
		}
		if len(as) != 3 || len(bs) != 3 {
			return nil, fmt.Errorf("transpose_b takes 3-D operands, have %v and %v", as, bs)
		}
		k, nn := bs[1], bs[2]
		if n.Attrs.Bool("transpose_b") {
			k, nn = bs[2], bs[1]
		}
		if as[2] != k {
			return nil, fmt.Errorf("inner sizes differ: %v and %v", as, bs)
		}
		if !as[0].Known() || !bs[0].Known() || bs[0].Size == 0 || as[0].Size%bs[0].Size != 0 {
			return nil, fmt.Errorf("batch %v is not a multiple of %v", as[0], bs[0])
		}
		return []OutSig{{quant.F32, Shape{as[0], as[1], nn}}}, nil
	}
	if a.Type() != b.Type() && !(a.Type() == quant.F32 && b.Weight != nil && b.Type().IsFloat()) {
		return nil, fmt.Errorf("%s is %v, %s is %v", a.Ref(), a.Type(), b.Ref(), b.Type())
	}
	s, err := MatMulShape(as, bs)
	if err != nil {
		return nil, err
	}
	return []OutSig{{a.Type(), s}}, nil
}

func inferFlashAttention(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3, 4); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs...); err != nil {
		return nil, err
	}
	q, k, v := n.Inputs[0].Shape(), n.Inputs[1].Shape(), n.Inputs[2].Shape()
	r := len(q)
	if r < 3 || r > 4 || len(k) != r || len(v) != r || k[r-2] != v[r-2] || q[r-1] != k[r-1] || k[r-3] != v[r-3] ||
		r == 4 && (q[0] != k[0] || q[0] != v[0]) {
		return nil, fmt.Errorf("want q[B,H,T,d], k[B,Hkv,S,d], v[B,Hkv,S,dv] (B optional), have %v %v %v", q, k, v)
	}
	h, hkv := n.Attrs.Int("n_head"), n.Attrs.Int("n_head_kv")
	if !q[r-3].Known() || !k[r-3].Known() || q[r-3].Size != h || k[r-3].Size != hkv || hkv <= 0 || h%hkv != 0 {
		return nil, fmt.Errorf("heads %v and %v do not match n_head %d, n_head_kv %d", q[r-3], k[r-3], h, hkv)
	}
	out := append(append(Shape{}, q[:r-1]...), v[r-1])
	if len(n.Inputs) == 4 {
		scores := append(append(Shape{}, q[:r-1]...), k[r-2])
		m := n.Inputs[3].Shape()
		if b, err := BroadcastShapes(m, scores); err != nil || len(m) > r || !b.Equal(scores) {
			return nil, fmt.Errorf("mask %v does not broadcast to the scores %v", m, scores)
		}
	}
	if !n.Attrs.Has("scale") {
		return nil, fmt.Errorf("missing attr scale")
	}
	if n.Attrs.Bool("lse") {
		return []OutSig{{quant.F32, out}, {quant.F32, q[:r-1]}}, nil
	}
	return []OutSig{{quant.F32, out}}, nil
}

func inferLowRank(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3); err != nil {
		return nil, err
	}
	x, a, b := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	if err := wantF32(x, a, b); err != nil {
		return nil, err
	}
	xs, as, bs := x.Shape(), a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 || len(xs) == 0 || xs[len(xs)-1] != as[1] || bs[1] != as[0] {
		return nil, fmt.Errorf("x%v, A%v and B%v do not make a low-rank product ([..,in], [r,in], [out,r])", xs, as, bs)
	}
	if !n.Attrs.Has("scale") {
		return nil, fmt.Errorf("missing attr scale")
	}
	return []OutSig{{quant.F32, append(append(Shape{}, xs[:len(xs)-1]...), bs[0])}}, nil
}

func inferCrossEntropy(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	logits, targets := n.Inputs[0], n.Inputs[1]
	ls, ts := logits.Shape(), targets.Shape()
	if err := wantF32(logits); err != nil {
		return nil, err
	}
	if len(ls) != 2 || len(ts) != 1 || ts[0] != ls[0] || targets.Type() != quant.I32 {
		return nil, fmt.Errorf("want logits[T,V] and i32 targets[T], have %v and %v%v", ls, targets.Type(), ts)
	}
	return []OutSig{{quant.F32, Dims(1)}}, nil
}

func inferKLDiv(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	if err := wantF32(n.Inputs...); err != nil {
		return nil, err
	}
	ls, ts := n.Inputs[0].Shape(), n.Inputs[1].Shape()
	if len(ls) != 2 || !ls.Equal(ts) {
		return nil, fmt.Errorf("want logits[T,V] and teacher logits of the same shape, have %v and %v", ls, ts)
	}
	return []OutSig{{quant.F32, Dims(1)}}, nil
}

// KVDim is the symbolic number of cached positions a KVCache op returns.
const KVDim = "kv"

func inferKVCache(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	x := n.Inputs[0]
	if err := wantF32(x); err != nil {
		return nil, err
	}
	xs := x.Shape()
	if len(xs) != 3 {
		return nil, fmt.Errorf("want x[T,Hkv,d], have %v", xs)
	}
	if s := n.Attrs.Str("slot"); s != "k" && s != "v" {
		return nil, fmt.Errorf("slot %q must be k or v", s)
	}
	if !n.Attrs.Has("layer") {
		return nil, fmt.Errorf("missing attr layer")
	}
	return []OutSig{{quant.F32, Shape{xs[1], Sym(KVDim), xs[2]}}}, nil
}

func inferReshape(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	x := n.Inputs[0]
	xs := x.Shape()
	want := n.Attrs.Ints("shape")
	// Sizes are compared as a known product times at most one symbol.
	known, sym := int64(1), ""
	for _, d := range xs {
		if d.Known() {
			known *= d.Size
		} else if sym == "" {
			sym = d.Sym
		} else {
			return nil, fmt.Errorf("cannot reshape %v: more than one symbolic axis", xs)
		}
	}
	out := make(Shape, len(want))
	if known == 0 { // an empty tensor takes any shape holding a zero
		zero := false
		for i, w := range want {
			if w < -1 {
				return nil, fmt.Errorf("cannot reshape %v to %v", xs, want)
			}
			out[i] = D(max(w, 0)) // -1 is 0 here
			zero = zero || w <= 0
		}
		if !zero {
			return nil, fmt.Errorf("cannot reshape %v to %v", xs, want)
		}
		return []OutSig{{x.Type(), out}}, nil
	}
	rest, infer := known, -1
	for i, w := range want {
		switch {
		case w == -1 && infer < 0:
			infer = i
		case w > 0 && rest%w == 0:
			rest /= w
			out[i] = D(w)
		default:
			return nil, fmt.Errorf("cannot reshape %v to %v", xs, want)
		}
	}
	switch {
	case infer >= 0 && sym != "" && rest == 1:
		out[infer] = Sym(sym)
	case infer >= 0 && sym == "":
		out[infer] = D(rest)
	case infer < 0 && sym == "" && rest == 1:
	default:
		return nil, fmt.Errorf("cannot reshape %v to %v", xs, want)
	}
	return []OutSig{{x.Type(), out}}, nil
}

func inferPermute(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	xs := n.Inputs[0].Shape()
	perm := n.Attrs.Ints("perm")
	if len(perm) != len(xs) {
		return nil, fmt.Errorf("perm %v does not match %v", perm, xs)
	}
	seen := make([]bool, len(xs))
	out := make(Shape, len(xs))
	for i, p := range perm {
		if p < 0 || int(p) >= len(xs) || seen[p] {
			return nil, fmt.Errorf("perm %v is not a permutation", perm)
		}
		seen[p] = true
		out[i] = xs[p]
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func inferSlice(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	xs := n.Inputs[0].Shape()
	axis, start, end := n.Attrs.Int("axis"), n.Attrs.Int("start"), n.Attrs.Int("end")
	if axis < 0 {
		axis += int64(len(xs))
	}
	if axis < 0 || int(axis) >= len(xs) || !xs[axis].Known() || start < 0 || end <= start || end > xs[axis].Size {
		return nil, fmt.Errorf("slice [%d:%d] on axis %d out of range for %v", start, end, n.Attrs.Int("axis"), xs)
	}
	out := append(Shape{}, xs...)
	out[axis] = D(end - start)
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}
