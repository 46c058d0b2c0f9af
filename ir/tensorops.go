package ir

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant"
)

// The general tensor ops: what imported graphs (ONNX) are made of beyond
// the transformer ops above. Elementwise ops broadcast as numpy does and
// take any element type their semantics allow; attributes carry what
// ONNX passes as constant inputs, which the importer folds into them.

func init() {
	unaryFloat := "elementwise on floats"
	for _, op := range []string{"Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Erf", "Sigmoid", "Cos", "Sin",
		"Ceil", "Floor", "Round", "Softplus"} {
		ops[op] = opDef{unaryFloat + " (" + op + ")", inferUnaryGeneric(floatsOnly)}
	}
	for _, op := range []string{"Neg", "Abs", "Relu", "Sign"} {
		ops[op] = opDef{"elementwise on numbers (" + op + ")", inferUnaryGeneric(numbersOnly)}
	}
	ops["Not"] = opDef{"logical not of a bool tensor", inferUnaryGeneric(boolsOnly)}
	for _, op := range []string{"Sub", "Div", "Pow", "Max", "Min", "Mod"} {
		ops[op] = opDef{"elementwise, numpy broadcasting (" + op + "; Mod: attr fmod)", inferBroadcast(false)}
	}
	for _, op := range []string{"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"} {
		ops[op] = opDef{"comparison, numpy broadcasting -> bool (" + op + ")", inferBroadcast(true)}
	}
	for _, op := range []string{"And", "Or", "Xor"} {
		ops[op] = opDef{"logical, numpy broadcasting, bools (" + op + ")", inferBroadcast(false)}
	}
	ops["Where"] = opDef{"cond ? a : b, numpy broadcasting over the three", inferWhere}
	ops["Cast"] = opDef{"values converted to element type attr to (a quant.Type)", inferCast}
	ops["Clip"] = opDef{"x clamped to [min, max]: scalar inputs present as attrs has_min, has_max say", inferClip}
	for _, op := range []string{"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"} {
		ops[op] = opDef{"reduction over attr axes (all when empty), attr keepdims", inferReduce}
	}
	ops["Concat"] = opDef{"inputs joined along attr axis", inferConcat}
	ops["StridedSlice"] = opDef{"x[start:end:step] on each axis (attrs starts, ends, steps, one per axis, normalized)", inferStridedSlice}
	ops["Gather"] = opDef{"data taken along attr axis at integer indices (negative count from the end)", inferGather}
	ops["Expand"] = opDef{"x broadcast to attr shape (numpy rules)", inferExpand}
	ops["Tile"] = opDef{"x repeated attr repeats times along each axis", inferTile}
	ops["Trilu"] = opDef{"lower (attr upper 0) or upper triangle of the last two axes, attr k diagonal offset", inferSame}
	ops["CumSum"] = opDef{"cumulative sum along attr axis (attrs exclusive, reverse)", inferSame}
	ops["Pad"] = opDef{"x padded by attr pads (begin…, end…), attr mode constant|reflect|edge, optional scalar value input", inferPad}
	ops["LayerNormalization"] = opDef{"ONNX LayerNormalization over axes attr axis.. (scale, optional bias), outputs y[, mean, inv_std_dev]", inferLayerNormalization}
	ops["RMSNormalization"] = opDef{"ONNX RMSNormalization over axes attr axis.. with scale", inferRMSNormalization}
	ops["RotaryEmbedding"] = opDef{"ONNX RotaryEmbedding of x with cos/sin caches and position ids (attrs interleaved, num_heads, rotary_embedding_dim)", inferRotaryEmbedding}
	ops["Attention"] = opDef{"ONNX Attention (opset 23) on 4-D q, k, v[, additive mask][, past_key, past_value][, nonpad_kv_seqlen] (attrs has_mask, has_past, has_nonpad) → y, present_key, present_value, qk_matmul_output", inferAttention}
	ops["QuantizeLinear"] = opDef{"round(x / scale) + zero_point, saturated to the zero point's type (attrs axis, block_size, output_dtype; saturate for small floats)", inferQuantizeLinear}
	ops["DequantizeLinear"] = opDef{"(x - zero_point) · scale (attr axis for per-axis scales)", inferDequantizeLinear}
	ops["DynamicQuantizeLinear"] = opDef{"x quantized to uint8 with a computed scale and zero point: y, scale, zero_point", inferDynamicQuantizeLinear}
	ops["MatMulInteger"] = opDef{"(a - a_zero) · (b - b_zero) in int32, numpy matmul broadcasting", inferMatMulInteger}
	ops["QLinearMatMul"] = opDef{"a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero: the integer product rescaled and requantized", inferQLinearMatMul}
	ops["GatherElements"] = opDef{"data[…, indices[i], …] along attr axis, elementwise (output shaped as indices)", inferGatherElements}
	ops["GatherND"] = opDef{"slices of data addressed by the last axis of indices (attr batch_dims)", inferGatherND}
	ops["Einsum"] = opDef{"sum of products over the labels of attr equation (ParseEinsum)", inferEinsum}
}

func floatsOnly(t quant.Type) bool  { return t.IsFloat() }
func numbersOnly(t quant.Type) bool { return t.IsFloat() || t.IsInt() }
func boolsOnly(t quant.Type) bool   { return t == quant.Bool }

func inferUnaryGeneric(ok func(quant.Type) bool) func(*Node) ([]OutSig, error) {
	return func(n *Node) ([]OutSig, error) {
		if err := wantInputs(n, 1); err != nil {
			return nil, err
		}
		x := n.Inputs[0]
		if !ok(x.Type()) {
			return nil, fmt.Errorf("%s is %v", x.Ref(), x.Type())
		}
		return []OutSig{{x.Type(), x.Shape()}}, nil
	}
}

func inferSame(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	return []OutSig{{n.Inputs[0].Type(), n.Inputs[0].Shape()}}, nil
}

// BroadcastShapes is numpy's broadcast of shapes: aligned at the right,
// each axis equal or 1.
func BroadcastShapes(shapes ...Shape) (Shape, error) {
	rank := 0
	for _, s := range shapes {
		rank = max(rank, len(s))
	}
	out := make(Shape, rank)
	for i := range out {
		out[i] = D(1)
	}
	for _, s := range shapes {
		off := rank - len(s)
		for i, d := range s {
			o := &out[off+i]
			switch {
			case d.Known() && d.Size == 1:
			case o.Known() && o.Size == 1:
				*o = d
			case *o == d:
			default:
				return nil, fmt.Errorf("shapes %v do not broadcast", shapes)
			}
		}
	}
	return out, nil
}

func inferBroadcast(compare bool) func(*Node) ([]OutSig, error) {
	return func(n *Node) ([]OutSig, error) {
		if err := wantInputs(n, 2); err != nil {
			return nil, err
		}
		a, b := n.Inputs[0], n.Inputs[1]
		// Pow alone takes an exponent of another numeric type.
		if a.Type() != b.Type() && !(n.Op == "Pow" && numbersOnly(a.Type()) && numbersOnly(b.Type())) {
			return nil, fmt.Errorf("%s is %v, %s is %v", a.Ref(), a.Type(), b.Ref(), b.Type())
		}
		s, err := BroadcastShapes(a.Shape(), b.Shape())
		if err != nil {
			return nil, err
		}
		t := a.Type()
		if compare {
			t = quant.Bool
		}
		return []OutSig{{t, s}}, nil
	}
}

func inferWhere(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3); err != nil {
		return nil, err
	}
	c, a, b := n.Inputs[0], n.Inputs[1], n.Inputs[2]
	if c.Type() != quant.Bool || a.Type() != b.Type() {
		return nil, fmt.Errorf("want a bool condition and two values of one type, have %v, %v, %v", c.Type(), a.Type(), b.Type())
	}
	s, err := BroadcastShapes(c.Shape(), a.Shape(), b.Shape())
	if err != nil {
		return nil, err
	}
	return []OutSig{{a.Type(), s}}, nil
}

func inferCast(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	to := quant.Type(n.Attrs.Int("to"))
	if !to.Known() || to.Quantized() {
		return nil, fmt.Errorf("cannot cast to %v", to)
	}
	return []OutSig{{to, n.Inputs[0].Shape()}}, nil
}

func inferClip(n *Node) ([]OutSig, error) {
	if len(n.Inputs) < 1 || len(n.Inputs) > 3 {
		return nil, fmt.Errorf("takes 1 to 3 inputs, has %d", len(n.Inputs))
	}
	x := n.Inputs[0]
	for _, b := range n.Inputs[1:] {
		if b.Type() != x.Type() {
			return nil, fmt.Errorf("bound %s is %v, x is %v", b.Ref(), b.Type(), x.Type())
		}
	}
	return []OutSig{{x.Type(), x.Shape()}}, nil
}

// axis normalizes a possibly negative axis for rank.
func axis(a int64, rank int) (int, error) {
	if a < 0 {
		a += int64(rank)
	}
	if a < 0 || int(a) >= max(rank, 1) {
		return 0, fmt.Errorf("axis %d out of range for rank %d", a, rank)
	}
	return int(a), nil
}

func inferReduce(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	x := n.Inputs[0]
	xs := x.Shape()
	reduce := make([]bool, len(xs))
	axes := n.Attrs.Ints("axes")
	if len(axes) == 0 {
		for i := range reduce {
			reduce[i] = true
		}
	}
	for _, a := range axes {
		i, err := axis(a, len(xs))
		if err != nil {
			return nil, err
		}
		reduce[i] = true
	}
	keep := !n.Attrs.Has("keepdims") || n.Attrs.Int("keepdims") != 0
	var out Shape
	for i, d := range xs {
		switch {
		case !reduce[i]:
			out = append(out, d)
		case keep:
			out = append(out, D(1))
		}
	}
	return []OutSig{{x.Type(), out}}, nil
}

func inferConcat(n *Node) ([]OutSig, error) {
	if len(n.Inputs) == 0 {
		return nil, fmt.Errorf("no inputs")
	}
	first := n.Inputs[0].Shape()
	ax, err := axis(n.Attrs.Int("axis"), len(first))
	if err != nil {
		return nil, err
	}
	out := append(Shape{}, first...)
	for _, in := range n.Inputs[1:] {
		s := in.Shape()
		if in.Type() != n.Inputs[0].Type() || len(s) != len(first) {
			return nil, fmt.Errorf("cannot join %v%v with %v%v", in.Type(), s, n.Inputs[0].Type(), first)
		}
		for i := range s {
			if i == ax {
				if !s[i].Known() || !out[i].Known() {
					return nil, fmt.Errorf("cannot join along symbolic axis %v", s[i])
				}
				out[i] = D(out[i].Size + s[i].Size)
			} else if s[i] != out[i] {
				return nil, fmt.Errorf("cannot join %v with %v along axis %d", s, first, ax)
			}
		}
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

// SliceLen is the number of elements x[start:end:step] takes from an
// axis of size n, with start and end already clamped as ONNX clamps them.
func SliceLen(start, end, step int64) int64 {
	if step > 0 && end > start {
		return (end - start + step - 1) / step
	}
	if step < 0 && start > end {
		return (start - end - step - 1) / -step
	}
	return 0
}

func inferStridedSlice(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	xs := n.Inputs[0].Shape()
	starts, ends, steps := n.Attrs.Ints("starts"), n.Attrs.Ints("ends"), n.Attrs.Ints("steps")
	if len(starts) != len(xs) || len(ends) != len(xs) || len(steps) != len(xs) {
		return nil, fmt.Errorf("starts, ends and steps need one value per axis of %v", xs)
	}
	out := make(Shape, len(xs))
	for i := range xs {
		if starts[i] == 0 && ends[i] == -1 && steps[i] == 1 { // the whole axis, symbolic or not
			out[i] = xs[i]
			continue
		}
		if !xs[i].Known() || steps[i] == 0 {
			return nil, fmt.Errorf("cannot slice axis %d of %v", i, xs)
		}
		out[i] = D(SliceLen(starts[i], ends[i], steps[i]))
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func inferGather(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	data, idx := n.Inputs[0], n.Inputs[1]
	if idx.Type() != quant.I32 && idx.Type() != quant.I64 {
		return nil, fmt.Errorf("indices are %v", idx.Type())
	}
	ds := data.Shape()
	ax, err := axis(n.Attrs.Int("axis"), len(ds))
	if err != nil {
		return nil, err
	}
	out := append(append(append(Shape{}, ds[:ax]...), idx.Shape()...), ds[ax+1:]...)
	return []OutSig{{data.Type(), out}}, nil
}

func inferExpand(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	var target Shape
	for _, d := range n.Attrs.Ints("shape") {
		target = append(target, D(d))
	}
	s, err := BroadcastShapes(n.Inputs[0].Shape(), target)
	if err != nil {
		return nil, err
	}
	return []OutSig{{n.Inputs[0].Type(), s}}, nil
}

func inferTile(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	xs, reps := n.Inputs[0].Shape(), n.Attrs.Ints("repeats")
	if len(reps) != len(xs) {
		return nil, fmt.Errorf("repeats %v do not match %v", reps, xs)
	}
	out := make(Shape, len(xs))
	for i, d := range xs {
		if reps[i] < 0 || (!d.Known() && reps[i] != 1) {
			return nil, fmt.Errorf("cannot tile %v by %v", xs, reps)
		}
		out[i] = d
		if reps[i] != 1 {
			out[i] = D(d.Size * reps[i])
		}
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func inferPad(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1, 2); err != nil {
		return nil, err
	}
	xs, pads := n.Inputs[0].Shape(), n.Attrs.Ints("pads")
	if len(pads) != 2*len(xs) {
		return nil, fmt.Errorf("pads %v do not match %v", pads, xs)
	}
	out := make(Shape, len(xs))
	for i, d := range xs {
		if !d.Known() {
			return nil, fmt.Errorf("cannot pad symbolic axis %v", d)
		}
		out[i] = D(d.Size + pads[i] + pads[len(xs)+i])
		if out[i].Size < 0 {
			return nil, fmt.Errorf("pads %v empty axis %d of %v", pads, i, xs)
		}
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func normTail(n *Node) (Shape, int, error) {
	xs := n.Inputs[0].Shape()
	ax, err := axis(n.Attrs.Int("axis"), len(xs))
	if err != nil {
		return nil, 0, err
	}
	if !n.Inputs[0].Type().IsFloat() {
		return nil, 0, fmt.Errorf("x is %v", n.Inputs[0].Type())
	}
	for _, p := range n.Inputs[1:] {
		if _, err := BroadcastShapes(xs[ax:], p.Shape()); err != nil || len(p.Shape()) > len(xs)-ax {
			return nil, 0, fmt.Errorf("parameter %s%v does not broadcast over %v", p.Ref(), p.Shape(), xs[ax:])
		}
	}
	return xs, ax, nil
}

func inferLayerNormalization(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3); err != nil {
		return nil, err
	}
	xs, ax, err := normTail(n)
	if err != nil {
		return nil, err
	}
	stat := append(Shape{}, xs...)
	for i := ax; i < len(stat); i++ {
		stat[i] = D(1)
	}
	st := quant.F32
	if t := n.Attrs.Int("stash_type"); n.Attrs.Has("stash_type") && t != 1 {
		st = n.Inputs[0].Type()
	}
	return []OutSig{{n.Inputs[0].Type(), xs}, {st, stat}, {st, stat}}, nil
}

func inferRMSNormalization(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	xs, _, err := normTail(n)
	if err != nil {
		return nil, err
	}
	return []OutSig{{n.Inputs[0].Type(), xs}}, nil
}

func inferRotaryEmbedding(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 3, 4); err != nil {
		return nil, err
	}
	xs := n.Inputs[0].Shape()
	if len(xs) != 3 && len(xs) != 4 {
		return nil, fmt.Errorf("want x[B,S,hidden] or [B,H,S,d], have %v", xs)
	}
	if len(xs) == 3 && n.Attrs.Int("num_heads") <= 0 {
		return nil, fmt.Errorf("3-D input needs attr num_heads")
	}
	return []OutSig{{n.Inputs[0].Type(), xs}}, nil
}

// Attention's optional inputs are present as attrs has_mask and has_past
// say, in the order q, k, v, mask, past_key, past_value.
func inferAttention(n *Node) ([]OutSig, error) {
	want := 3
	if n.Attrs.Bool("has_mask") {
		want++
	}
	if n.Attrs.Bool("has_past") {
		want += 2
	}
	if n.Attrs.Bool("has_nonpad") {
		want++
	}
	if err := wantInputs(n, want); err != nil {
		return nil, err
	}
	q, k, v := n.Inputs[0].Shape(), n.Inputs[1].Shape(), n.Inputs[2].Shape()
	if len(q) != 4 || len(k) != 4 || len(v) != 4 {
		return nil, fmt.Errorf("want 4-D q, k, v, have %v %v %v", q, k, v)
	}
	for _, d := range append(append(append(Shape{}, q...), k...), v...) {
		if !d.Known() {
			return nil, fmt.Errorf("symbolic shapes are not supported: %v %v %v", q, k, v)
		}
	}
	B, Hq, T, dq := q[0].Size, q[1].Size, q[2].Size, q[3].Size
	Hkv, S, dv := k[1].Size, k[2].Size, v[3].Size
	if Hkv == 0 || Hq%Hkv != 0 {
		return nil, fmt.Errorf("%d query heads do not group over %d key/value heads", Hq, Hkv)
	}
	total := S
	if n.Attrs.Bool("has_past") {
		ps := n.Inputs[3].Shape()
		if n.Attrs.Bool("has_mask") {
			ps = n.Inputs[4].Shape()
		}
		if len(ps) != 4 {
			return nil, fmt.Errorf("past_key is %v", ps)
		}
		total += ps[2].Size
	}
	y := Shape{D(B), D(Hq), D(T), D(dv)}
	t := n.Inputs[0].Type()
	return []OutSig{
		{t, y},
		{t, Shape{D(B), D(Hkv), D(total), D(dq)}},
		{t, Shape{D(B), D(Hkv), D(total), D(dv)}},
		{t, Shape{D(B), D(Hq), D(T), D(total)}},
	}, nil
}

func inferQuantizeLinear(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3); err != nil {
		return nil, err
	}
	t := quant.U8
	if len(n.Inputs) == 3 {
		t = n.Inputs[2].Type()
	}
	if n.Attrs.Has("output_dtype") {
		t = quant.Type(n.Attrs.Int("output_dtype"))
	}
	if !t.IsInt() && !t.IsMiniFloat() {
		return nil, fmt.Errorf("quantizes to %v", t)
	}
	return []OutSig{{t, n.Inputs[0].Shape()}}, nil
}

func inferDequantizeLinear(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3); err != nil {
		return nil, err
	}
	return []OutSig{{n.Inputs[1].Type(), n.Inputs[0].Shape()}}, nil
}

func inferDynamicQuantizeLinear(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 1); err != nil {
		return nil, err
	}
	return []OutSig{{quant.U8, n.Inputs[0].Shape()}, {quant.F32, Shape{}}, {quant.U8, Shape{}}}, nil
}

// MatMulShape is numpy matmul's output shape for a[..., M, K] · b[..., K, N]
// (a 1-D operand is promoted as numpy does).
func MatMulShape(as, bs Shape) (Shape, error) {
	a, b := as, bs
	if len(a) == 1 {
		a = Shape{D(1), a[0]}
	}
	if len(b) == 1 {
		b = Shape{b[0], D(1)}
	}
	if len(a) < 2 || len(b) < 2 || a[len(a)-1] != b[len(b)-2] {
		return nil, fmt.Errorf("cannot multiply %v by %v", as, bs)
	}
	batch, err := BroadcastShapes(a[:len(a)-2], b[:len(b)-2])
	if err != nil {
		return nil, err
	}
	out := batch
	if len(as) != 1 {
		out = append(out, a[len(a)-2])
	}
	if len(bs) != 1 {
		out = append(out, b[len(b)-1])
	}
	return out, nil
}

func inferMatMulInteger(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2, 3, 4); err != nil {
		return nil, err
	}
	s, err := MatMulShape(n.Inputs[0].Shape(), n.Inputs[1].Shape())
	if err != nil {
		return nil, err
	}
	return []OutSig{{quant.I32, s}}, nil
}

func inferGatherElements(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	data, idx := n.Inputs[0], n.Inputs[1]
	if !idx.Type().IsInt() {
		return nil, fmt.Errorf("indices are %v", idx.Type())
	}
	if len(data.Shape()) != len(idx.Shape()) {
		return nil, fmt.Errorf("data %v and indices %v differ in rank", data.Shape(), idx.Shape())
	}
	if _, err := axis(n.Attrs.Int("axis"), len(data.Shape())); err != nil {
		return nil, err
	}
	return []OutSig{{data.Type(), idx.Shape()}}, nil
}

func inferGatherND(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 2); err != nil {
		return nil, err
	}
	data, idx := n.Inputs[0].Shape(), n.Inputs[1].Shape()
	if !n.Inputs[1].Type().IsInt() {
		return nil, fmt.Errorf("indices are %v", n.Inputs[1].Type())
	}
	b := int(n.Attrs.Int("batch_dims"))
	if len(idx) == 0 || !idx[len(idx)-1].Known() {
		return nil, fmt.Errorf("indices %v need a known last dimension", idx)
	}
	m := int(idx[len(idx)-1].Size)
	if b < 0 || b >= len(idx) || b+m > len(data) {
		return nil, fmt.Errorf("indices %v with batch_dims %d do not fit data %v", idx, b, data)
	}
	out := append(append(Shape{}, idx[:len(idx)-1]...), data[b+m:]...)
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func inferEinsum(n *Node) ([]OutSig, error) {
	if len(n.Inputs) == 0 {
		return nil, fmt.Errorf("no operands")
	}
	ranks := make([]int, len(n.Inputs))
	shapes := make([]Shape, len(n.Inputs))
	for i, in := range n.Inputs {
		ranks[i], shapes[i] = len(in.Shape()), in.Shape()
		if in.Type() != n.Inputs[0].Type() {
			return nil, fmt.Errorf("%s is %v, %s is %v", in.Ref(), in.Type(), n.Inputs[0].Ref(), n.Inputs[0].Type())
		}
	}
	e, err := ParseEinsum(n.Attrs.Str("equation"), ranks)
	if err != nil {
		return nil, err
	}
	size, err := e.Sizes(shapes)
	if err != nil {
		return nil, err
	}
	out := make(Shape, len(e.Output))
	for i, l := range e.Output {
		out[i] = D(size[l])
	}
	return []OutSig{{n.Inputs[0].Type(), out}}, nil
}

func inferQLinearMatMul(n *Node) ([]OutSig, error) {
	if err := wantInputs(n, 8); err != nil {
		return nil, err
	}
	s, err := MatMulShape(n.Inputs[0].Shape(), n.Inputs[3].Shape())
	if err != nil {
		return nil, err
	}
	return []OutSig{{n.Inputs[7].Type(), s}}, nil
}
