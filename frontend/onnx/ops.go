package onnx

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

type handler func(im *importer, n *Node) ([]*val, error)

// handlers translate each supported ONNX op into IR ops. Unsupported
// ops are an error naming the op, node and opset.
var handlers map[string]handler

func init() {
	handlers = map[string]handler{
		"Identity": func(im *importer, n *Node) ([]*val, error) { return []*val{im.in(n, 0)}, nil },
		"Constant": constant,
		"Shape":    shapeOp,
		"Size": func(im *importer, n *Node) ([]*val, error) {
			s, err := knownShape(im.in(n, 0))
			if err != nil {
				return nil, err
			}
			return []*val{{c: scalarInt(n.Outputs[0], prod64(s))}}, nil
		},
		"ConstantOfShape": constantOfShape,
		"Range":           rangeOp,
		"Cast":            cast,
		"CastLike": func(im *importer, n *Node) ([]*val, error) {
			return im.castTo(n, im.in(n, 0), im.in(n, 1).typ())
		},
		"Gelu": func(im *importer, n *Node) ([]*val, error) {
			return im.one("GELU", ir.Attrs{"approximate": attrString(n, "approximate", "none")}, im.in(n, 0))
		},
		"Swish": func(im *importer, n *Node) ([]*val, error) { // x·sigmoid(alpha·x)
			x := im.in(n, 0)
			ax, err := im.mulScalar(x, attrFloat(n, "alpha", 1))
			if err != nil {
				return nil, err
			}
			s, err := im.one("Sigmoid", nil, ax)
			if err != nil {
				return nil, err
			}
			return im.one("Mul", nil, x, s[0])
		},
		"Mish": func(im *importer, n *Node) ([]*val, error) { // x·tanh(softplus(x))
			x := im.in(n, 0)
			sp, err := im.one("Softplus", nil, x)
			if err != nil {
				return nil, err
			}
			th, err := im.one("Tanh", nil, sp[0])
			if err != nil {
				return nil, err
			}
			return im.one("Mul", nil, x, th[0])
		},
		"Where": func(im *importer, n *Node) ([]*val, error) {
			return im.one("Where", nil, im.in(n, 0), im.in(n, 1), im.in(n, 2))
		},
		"Mod": func(im *importer, n *Node) ([]*val, error) {
			return im.one("Mod", ir.Attrs{"fmod": attrInt(n, "fmod", 0)}, im.in(n, 0), im.in(n, 1))
		},
		"Sum":  variadic("Add"),
		"Max":  variadic("Max"),
		"Min":  variadic("Min"),
		"Mean": mean,
		"MatMul": func(im *importer, n *Node) ([]*val, error) {
			return im.one("MatMul", nil, im.in(n, 0), im.in(n, 1))
		},
		"Gemm":               gemm,
		"Softmax":            softmax,
		"LayerNormalization": layerNorm,
		"RMSNormalization":   rmsNorm,
		"ReduceMean":         reduceOp("ReduceMean", 18),
		"ReduceSum":          reduceOp("ReduceSum", 13),
		"ReduceMax":          reduceOp("ReduceMax", 18),
		"ReduceMin":          reduceOp("ReduceMin", 18),
		"Reshape":            reshape,
		"Flatten":            flatten,
		"Transpose":          transpose,
		"Unsqueeze":          unsqueeze,
		"Squeeze":            squeeze,
		"Concat": func(im *importer, n *Node) ([]*val, error) {
			var ins []*val
			for i := range n.Inputs {
				if x := im.in(n, i); x != nil {
					ins = append(ins, x)
				}
			}
			return im.one("Concat", ir.Attrs{"axis": attrInt(n, "axis", 0)}, ins...)
		},
		"Slice":           sliceOp,
		"Split":           split,
		"Gather":          gather,
		"Expand":          expand,
		"Tile":            tile,
		"Trilu":           trilu,
		"CumSum":          cumsum,
		"Pad":             pad,
		"Clip":            clip,
		"RotaryEmbedding": rotary,
		"Attention":       attention,
		"QuantizeLinear": func(im *importer, n *Node) ([]*val, error) {
			attrs := ir.Attrs{"axis": attrInt(n, "axis", 1), "block_size": attrInt(n, "block_size", 0),
				"saturate": attrInt(n, "saturate", 1)}
			if dt := attrInt(n, "output_dtype", 0); dt != 0 {
				t, err := ElemType(int32(dt))
				if err != nil {
					return nil, err
				}
				attrs["output_dtype"] = int64(t)
			}
			return im.one("QuantizeLinear", attrs, present(im, n)...)
		},
		"DequantizeLinear": func(im *importer, n *Node) ([]*val, error) {
			attrs := ir.Attrs{"axis": attrInt(n, "axis", 1), "block_size": attrInt(n, "block_size", 0)}
			return im.one("DequantizeLinear", attrs, present(im, n)...)
		},
		"DynamicQuantizeLinear": func(im *importer, n *Node) ([]*val, error) {
			return im.emit("DynamicQuantizeLinear", nil, im.in(n, 0))
		},
		"QLinearMatMul": func(im *importer, n *Node) ([]*val, error) {
			return im.one("QLinearMatMul", nil, present(im, n)...)
		},
		"GatherElements": func(im *importer, n *Node) ([]*val, error) {
			return im.one("GatherElements", ir.Attrs{"axis": attrInt(n, "axis", 0)}, im.in(n, 0), im.in(n, 1))
		},
		"GatherND": func(im *importer, n *Node) ([]*val, error) {
			return im.one("GatherND", ir.Attrs{"batch_dims": attrInt(n, "batch_dims", 0)}, im.in(n, 0), im.in(n, 1))
		},
		"Einsum": func(im *importer, n *Node) ([]*val, error) {
			return im.one("Einsum", ir.Attrs{"equation": attrString(n, "equation", "")}, present(im, n)...)
		},
		"MatMulInteger": func(im *importer, n *Node) ([]*val, error) {
			ins := []*val{im.in(n, 0), im.in(n, 1)}
			az, bz := im.in(n, 2), im.in(n, 3)
			if az == nil && bz != nil {
				az = &val{c: zeros("a_zero_point", ins[0].typ(), nil)}
			}
			if az != nil {
				ins = append(ins, az)
			}
			if bz != nil {
				ins = append(ins, bz)
			}
			return im.one("MatMulInteger", nil, ins...)
		},
	}
	for _, op := range []string{"Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Erf", "Sigmoid", "Cos", "Sin",
		"Ceil", "Floor", "Round", "Softplus", "Neg", "Abs", "Relu", "Sign", "Not"} {
		handlers[op] = unary(op)
	}
	for _, op := range []string{"Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater",
		"LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor"} {
		handlers[op] = binaryOp(op)
	}
}

// minInputs is how many leading inputs op requires at opset v (ONNX's
// schemas); the rest are optional.
func minInputs(op string, v int64) int {
	switch op {
	case "Constant":
		return 0
	case "Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
		"And", "Or", "Xor", "Mod", "MatMul", "Gemm", "Reshape", "Expand", "Tile", "Gather", "GatherElements",
		"GatherND", "CastLike", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "CumSum",
		"LayerNormalization", "RMSNormalization":
		return 2
	case "Where", "Range", "RotaryEmbedding", "Attention":
		return 3
	case "QLinearMatMul":
		return 8
	case "Slice":
		if v >= 10 {
			return 3
		}
	case "Pad":
		if v >= 11 {
			return 2
		}
	case "Unsqueeze":
		if v >= 13 {
			return 2
		}
	}
	return 1
}

// axisIn normalizes a possibly negative axis of a rank-r value; with
// upTo, r itself is allowed (Flatten's and old Softmax's split point).
func axisIn(ax int64, r int, upTo bool) (int64, error) {
	if ax < 0 {
		ax += int64(r)
	}
	if ax < 0 || ax > int64(r) || ax == int64(r) && !upTo {
		return 0, fmt.Errorf("axis %d out of range for rank %d", ax, r)
	}
	return ax, nil
}

func unary(op string) handler {
	return func(im *importer, n *Node) ([]*val, error) { return im.one(op, nil, im.in(n, 0)) }
}

func binaryOp(op string) handler {
	return func(im *importer, n *Node) ([]*val, error) { return im.one(op, nil, im.in(n, 0), im.in(n, 1)) }
}

func variadic(op string) handler {
	return func(im *importer, n *Node) ([]*val, error) {
		acc := im.in(n, 0)
		for i := 1; i < len(n.Inputs); i++ {
			out, err := im.one(op, nil, acc, im.in(n, i))
			if err != nil {
				return nil, err
			}
			acc = out[0]
		}
		return []*val{acc}, nil
	}
}

func mean(im *importer, n *Node) ([]*val, error) {
	sum, err := variadic("Add")(im, n)
	if err != nil {
		return nil, err
	}
	return im.divScalar(sum[0], float64(len(n.Inputs)))
}

// present lists n's inputs up to the last one given.
func present(im *importer, n *Node) []*val {
	var ins []*val
	for i := range n.Inputs {
		if x := im.in(n, i); x != nil {
			ins = append(ins, x)
		}
	}
	return ins
}

func prod64(s []int64) int64 {
	n := int64(1)
	for _, d := range s {
		n *= d
	}
	return n
}

// tensorInts reads an integer (or bool) constant.
func tensorInts(t *ir.Tensor) ([]int64, error) {
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	n := int(t.NumElements())
	out := make([]int64, n)
	for i := range out {
		switch t.Type {
		case quant.I64:
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		case quant.I32:
			out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		case quant.U32:
			out[i] = int64(binary.LittleEndian.Uint32(b[4*i:]))
		case quant.I16:
			out[i] = int64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		case quant.U16:
			out[i] = int64(binary.LittleEndian.Uint16(b[2*i:]))
		case quant.I8:
			out[i] = int64(int8(b[i]))
		case quant.U8, quant.Bool:
			out[i] = int64(b[i])
		case quant.U64:
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		default:
			return nil, fmt.Errorf("tensor %s is %v, want integers", t.Name, t.Type)
		}
	}
	return out, nil
}

func int64s(name string, shape []int64, v []int64) *ir.Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	t, _ := ir.FromBytes(name, quant.I64, shape, b)
	return t
}

func scalarInt(name string, v int64) *ir.Tensor { return int64s(name, nil, []int64{v}) }

// zeros is a constant of zeros.
func zeros(name string, t quant.Type, shape []int64) *ir.Tensor {
	z, _ := ir.FromBytes(name, t, shape, make([]byte, prod64(shape)*int64(t.TypeSize())))
	return z
}

// scalarOf is a scalar constant of float value v in type t.
func scalarOf(name string, t quant.Type, v float64) (*ir.Tensor, error) {
	size := t.TypeSize()
	b := make([]byte, size)
	switch t {
	case quant.F32:
		binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v)))
	case quant.F16:
		binary.LittleEndian.PutUint16(b, quant.FP32ToFP16(float32(v)))
	case quant.BF16:
		binary.LittleEndian.PutUint16(b, quant.FP32ToBF16(float32(v)))
	case quant.F64:
		binary.LittleEndian.PutUint64(b, math.Float64bits(v))
	default:
		if t.IsMiniFloat() {
			if err := t.Encode(b, []float32{float32(v)}); err != nil {
				return nil, err
			}
			break
		}
		iv := int64(v)
		for i := range size {
			b[i] = byte(iv >> (8 * i))
		}
	}
	return ir.FromBytes(name, t, nil, b)
}

func (im *importer) mulScalar(x *val, s float64) (*val, error) {
	if s == 1 {
		return x, nil
	}
	c, err := scalarOf(im.node.Outputs[0]+":scale", x.typ(), s)
	if err != nil {
		return nil, err
	}
	out, err := im.one("Mul", nil, x, &val{c: c})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

func (im *importer) divScalar(x *val, s float64) ([]*val, error) {
	c, err := scalarOf(im.node.Outputs[0]+":div", x.typ(), s)
	if err != nil {
		return nil, err
	}
	return im.one("Div", nil, x, &val{c: c})
}

func constant(im *importer, n *Node) ([]*val, error) {
	name := n.Outputs[0]
	for _, a := range n.Attrs {
		switch a.Name {
		case "value":
			t, err := im.f.Values(a.T)
			if err != nil {
				return nil, err
			}
			return []*val{{c: t.WithName(name)}}, nil
		case "value_float":
			c, _ := scalarOf(name, quant.F32, float64(a.F))
			return []*val{{c: c}}, nil
		case "value_floats":
			b := make([]byte, 4*len(a.Floats))
			for i, f := range a.Floats {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
			}
			c, err := ir.FromBytes(name, quant.F32, []int64{int64(len(a.Floats))}, b)
			return []*val{{c: c}}, err
		case "value_int":
			return []*val{{c: scalarInt(name, a.I)}}, nil
		case "value_ints":
			return []*val{{c: int64s(name, []int64{int64(len(a.Ints))}, a.Ints)}}, nil
		}
	}
	return nil, fmt.Errorf("no supported value attribute")
}

func shapeOp(im *importer, n *Node) ([]*val, error) {
	s, err := knownShape(im.in(n, 0))
	if err != nil {
		return nil, err
	}
	r := int64(len(s))
	clampDim := func(v int64) int64 {
		if v < 0 {
			v += r
		}
		return max(0, min(r, v))
	}
	start, end := clampDim(attrInt(n, "start", 0)), clampDim(attrInt(n, "end", r))
	if end < start {
		end = start
	}
	part := s[start:end]
	return []*val{{c: int64s(n.Outputs[0], []int64{int64(len(part))}, part)}}, nil
}

func constantOfShape(im *importer, n *Node) ([]*val, error) {
	shape, err := im.ints(im.in(n, 0), "the shape")
	if err != nil {
		return nil, err
	}
	fill, typ := []byte{0, 0, 0, 0}, quant.F32
	if a := attr(n, "value"); a != nil {
		if a.T == nil {
			return nil, fmt.Errorf("attribute value is not a tensor")
		}
		t, err := im.f.Values(a.T)
		if err != nil {
			return nil, err
		}
		if fill, err = t.Bytes(); err != nil {
			return nil, err
		}
		typ = t.Type
	}
	total, err := im.constElements(shape, len(fill))
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, total*int64(len(fill)))
	for range total {
		b = append(b, fill...)
	}
	c, err := ir.FromBytes(n.Outputs[0], typ, shape, b)
	return []*val{{c: c}}, err
}

func rangeOp(im *importer, n *Node) ([]*val, error) {
	start, limit, delta := im.in(n, 0), im.in(n, 1), im.in(n, 2)
	s, err := im.floatsOf(start, "start")
	if err != nil {
		return nil, err
	}
	l, err := im.floatsOf(limit, "limit")
	if err != nil {
		return nil, err
	}
	d, err := im.floatsOf(delta, "delta")
	if err != nil {
		return nil, err
	}
	if len(s) != 1 || len(l) != 1 || len(d) != 1 {
		return nil, fmt.Errorf("start, limit and delta must be scalars")
	}
	if d[0] == 0 {
		return nil, fmt.Errorf("delta is zero")
	}
	steps := math.Ceil((l[0] - s[0]) / d[0])
	if math.IsNaN(steps) || steps > float64(im.maxConst()) {
		return nil, fmt.Errorf("range [%g, %g) by %g is too long", s[0], l[0], d[0])
	}
	count := int64(max(0, steps))
	if _, err := im.constElements([]int64{count}, start.typ().TypeSize()); err != nil {
		return nil, err
	}
	typ := start.typ()
	size := typ.TypeSize()
	b := make([]byte, count*int64(size))
	for i := range count {
		v := s[0] + float64(i)*d[0]
		c, err := scalarOf("", typ, v)
		if err != nil {
			return nil, err
		}
		cb, _ := c.Bytes()
		copy(b[i*int64(size):], cb)
	}
	c, err := ir.FromBytes(n.Outputs[0], typ, []int64{count}, b)
	return []*val{{c: c}}, err
}

func cast(im *importer, n *Node) ([]*val, error) {
	to, err := ElemType(int32(attrInt(n, "to", 0)))
	if err != nil {
		return nil, err
	}
	return im.castTo(n, im.in(n, 0), to)
}

// castTo casts x to type to; a cast to x's own type is no node at all.
func (im *importer) castTo(n *Node, x *val, to quant.Type) ([]*val, error) {
	if x.typ() == to {
		return []*val{x}, nil
	}
	return im.one("Cast", castAttrs(n, to), x)
}

// castAttrs: saturate (default on) bounds conversions to 8-bit floats;
// round_mode (up, down, nearest) rounds to F8_E8M0.
func castAttrs(n *Node, to quant.Type) ir.Attrs {
	return ir.Attrs{"to": int64(to), "saturate": attrInt(n, "saturate", 1), "round_mode": attrString(n, "round_mode", "up")}
}

// gemm: alpha·A'·B' + beta·C with A', B' optionally transposed.
func gemm(im *importer, n *Node) ([]*val, error) {
	a, b, c := im.in(n, 0), im.in(n, 1), im.in(n, 2)
	var err error
	t := func(x *val, flag string) (*val, error) {
		if attrInt(n, flag, 0) == 0 {
			return x, nil
		}
		out, err := im.one("Permute", ir.Attrs{"perm": []int64{1, 0}}, x)
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	if a, err = t(a, "transA"); err != nil {
		return nil, err
	}
	if b, err = t(b, "transB"); err != nil {
		return nil, err
	}
	y, err := im.one("MatMul", nil, a, b)
	if err != nil {
		return nil, err
	}
	yv, err := im.mulScalar(y[0], attrFloat(n, "alpha", 1))
	if err != nil {
		return nil, err
	}
	if c == nil {
		return []*val{yv}, nil
	}
	cv, err := im.mulScalar(c, attrFloat(n, "beta", 1))
	if err != nil {
		return nil, err
	}
	return im.one("Add", nil, yv, cv)
}

func softmax(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	if im.opset >= 13 {
		return im.one("Softmax", ir.Attrs{"axis": attrInt(n, "axis", -1)}, x)
	}
	// Before opset 13: softmax over the flattened axes from axis on.
	s, err := knownShape(x)
	if err != nil {
		return nil, err
	}
	ax, err := axisIn(attrInt(n, "axis", 1), len(s), true)
	if err != nil {
		return nil, err
	}
	flat, err := im.one("Reshape", ir.Attrs{"shape": []int64{prod64(s[:ax]), prod64(s[ax:])}}, x)
	if err != nil {
		return nil, err
	}
	sm, err := im.one("Softmax", ir.Attrs{"axis": int64(-1)}, flat[0])
	if err != nil {
		return nil, err
	}
	return im.one("Reshape", ir.Attrs{"shape": s}, sm[0])
}

func layerNorm(im *importer, n *Node) ([]*val, error) {
	x, scale, bias := im.in(n, 0), im.in(n, 1), im.in(n, 2)
	ax, eps := attrInt(n, "axis", -1), attrFloat(n, "epsilon", 1e-5)
	s := x.shape()
	if len(s) == 0 {
		return nil, fmt.Errorf("normalizes a scalar")
	}
	last := ax == -1 || int(ax) == len(s)-1
	onlyY := len(n.Outputs) == 1 || (n.Outputs[1] == "" && (len(n.Outputs) < 3 || n.Outputs[2] == ""))
	vec := func(p *val) bool {
		return p != nil && p.typ().IsFloat() && len(p.shape()) == 1 && p.shape()[0] == s[len(s)-1]
	}
	if last && onlyY && x.typ() == quant.F32 && vec(scale) && vec(bias) {
		return im.one("LayerNorm", ir.Attrs{"eps": eps}, x, scale, bias)
	}
	ins := []*val{x, scale}
	if bias != nil {
		ins = append(ins, bias)
	}
	return im.emit("LayerNormalization", ir.Attrs{"axis": ax, "epsilon": eps, "stash_type": attrInt(n, "stash_type", 1)}, ins...)
}

func rmsNorm(im *importer, n *Node) ([]*val, error) {
	x, scale := im.in(n, 0), im.in(n, 1)
	ax, eps := attrInt(n, "axis", -1), attrFloat(n, "epsilon", 1e-5)
	s := x.shape()
	if len(s) == 0 {
		return nil, fmt.Errorf("normalizes a scalar")
	}
	if (ax == -1 || int(ax) == len(s)-1) && x.typ() == quant.F32 && scale.typ().IsFloat() &&
		len(scale.shape()) == 1 && scale.shape()[0] == s[len(s)-1] {
		return im.one("RMSNorm", ir.Attrs{"eps": eps}, x, scale)
	}
	return im.one("RMSNormalization", ir.Attrs{"axis": ax, "epsilon": eps}, x, scale)
}

// reduceOp reads axes from the attribute before opset since, from the
// second input after.
func reduceOp(op string, since int64) handler {
	return func(im *importer, n *Node) ([]*val, error) {
		x := im.in(n, 0)
		var axes []int64
		if im.opset < since {
			axes, _ = attrInts(n, "axes")
		} else if a := im.in(n, 1); a != nil {
			var err error
			if axes, err = im.ints(a, "axes"); err != nil {
				return nil, err
			}
		}
		if len(axes) == 0 && attrInt(n, "noop_with_empty_axes", 0) != 0 {
			return []*val{x}, nil
		}
		return im.one(op, ir.Attrs{"axes": axes, "keepdims": attrInt(n, "keepdims", 1)}, x)
	}
}

func reshape(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	want, err := im.ints(im.in(n, 1), "the target shape")
	if err != nil {
		return nil, err
	}
	s := x.shape()
	allowZero := attrInt(n, "allowzero", 0) != 0
	out := make([]int64, len(want))
	for i, w := range want {
		out[i] = w
		if w == 0 && !allowZero {
			if i >= len(s) || !s[i].Known() {
				return nil, fmt.Errorf("0 in target %v copies axis %d of %v", want, i, s)
			}
			out[i] = s[i].Size
		}
	}
	return im.reshapeTo(x, out)
}

// reshapeTo reshapes x to shape (one -1 allowed).
func (im *importer) reshapeTo(x *val, shape []int64) ([]*val, error) {
	return im.one("Reshape", ir.Attrs{"shape": shape}, x)
}

func flatten(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	s, err := knownShape(x)
	if err != nil {
		return nil, err
	}
	ax, err := axisIn(attrInt(n, "axis", 1), len(s), true)
	if err != nil {
		return nil, err
	}
	return im.reshapeTo(x, []int64{prod64(s[:ax]), prod64(s[ax:])})
}

func transpose(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	perm, ok := attrInts(n, "perm")
	if !ok {
		r := len(x.shape())
		for i := range r {
			perm = append(perm, int64(r-1-i))
		}
	}
	return im.one("Permute", ir.Attrs{"perm": perm}, x)
}

// axesOf reads axes from the attribute (before opset 13) or the second
// input.
func (im *importer) axesOf(n *Node) ([]int64, error) {
	if im.opset < 13 {
		a, _ := attrInts(n, "axes")
		return a, nil
	}
	if x := im.in(n, 1); x != nil {
		return im.ints(x, "axes")
	}
	return nil, nil
}

func unsqueeze(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	axes, err := im.axesOf(n)
	if err != nil {
		return nil, err
	}
	s := x.shape()
	r := len(s) + len(axes)
	ins := make([]bool, r)
	for _, a := range axes {
		if a < 0 {
			a += int64(r)
		}
		if a < 0 || int(a) >= r || ins[a] {
			return nil, fmt.Errorf("axes %v do not fit rank %d", axes, r)
		}
		ins[a] = true
	}
	out := make([]int64, r)
	k := 0
	for i := range out {
		if ins[i] {
			out[i] = 1
			continue
		}
		if !s[k].Known() {
			out[i] = -1
		} else {
			out[i] = s[k].Size
		}
		k++
	}
	return im.reshapeTo(x, out)
}

func squeeze(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	axes, err := im.axesOf(n)
	if err != nil {
		return nil, err
	}
	s := x.shape()
	drop := make([]bool, len(s))
	for _, a := range axes {
		if a, err = axisIn(a, len(s), false); err != nil {
			return nil, err
		}
		drop[a] = true
	}
	var out []int64
	for i, d := range s {
		if len(axes) == 0 && d.Known() && d.Size == 1 || drop[i] {
			continue
		}
		if !d.Known() {
			out = append(out, -1)
		} else {
			out = append(out, d.Size)
		}
	}
	return im.reshapeTo(x, out)
}

// slice normalizes ONNX's Slice to one start, end and step per axis.
func sliceOp(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	var starts, ends, axes, steps []int64
	var err error
	if im.opset < 10 {
		starts, _ = attrInts(n, "starts")
		ends, _ = attrInts(n, "ends")
		axes, _ = attrInts(n, "axes")
	} else {
		if starts, err = im.ints(im.in(n, 1), "starts"); err != nil {
			return nil, err
		}
		if ends, err = im.ints(im.in(n, 2), "ends"); err != nil {
			return nil, err
		}
		if a := im.in(n, 3); a != nil {
			if axes, err = im.ints(a, "axes"); err != nil {
				return nil, err
			}
		}
		if st := im.in(n, 4); st != nil {
			if steps, err = im.ints(st, "steps"); err != nil {
				return nil, err
			}
		}
	}
	s := x.shape()
	r := len(s)
	if axes == nil {
		for i := range starts {
			axes = append(axes, int64(i))
		}
	}
	if steps == nil {
		for range starts {
			steps = append(steps, 1)
		}
	}
	if len(starts) != len(axes) || len(ends) != len(axes) || len(steps) != len(axes) {
		return nil, fmt.Errorf("starts, ends, axes and steps differ in length")
	}
	st, en, sp := make([]int64, r), make([]int64, r), make([]int64, r)
	for i := range r {
		st[i], en[i], sp[i] = 0, -1, 1 // the whole axis
	}
	for k, a := range axes {
		if a < 0 {
			a += int64(r)
		}
		if a < 0 || int(a) >= r {
			return nil, fmt.Errorf("axis %d out of range", axes[k])
		}
		if !s[a].Known() {
			return nil, fmt.Errorf("cannot slice symbolic axis %s", s[a].Sym)
		}
		dim, step := s[a].Size, steps[k]
		if step == 0 {
			return nil, fmt.Errorf("step 0")
		}
		b, e := starts[k], ends[k]
		if b < 0 {
			b += dim
		}
		if e < 0 {
			e += dim
		}
		if step > 0 {
			b, e = max(0, min(dim, b)), max(0, min(dim, e))
		} else {
			b, e = max(-1, min(dim-1, b)), max(-1, min(dim-1, e))
		}
		st[a], en[a], sp[a] = b, e, step
	}
	return im.one("StridedSlice", ir.Attrs{"starts": st, "ends": en, "steps": sp}, x)
}

func split(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	s, err := knownShape(x)
	if err != nil {
		return nil, err
	}
	ax, err := axisIn(attrInt(n, "axis", 0), len(s), false)
	if err != nil {
		return nil, err
	}
	outs := len(n.Outputs)
	var sizes []int64
	if im.opset < 13 {
		sizes, _ = attrInts(n, "split")
	} else if sp := im.in(n, 1); sp != nil {
		if sizes, err = im.ints(sp, "split"); err != nil {
			return nil, err
		}
	}
	if sizes == nil {
		k := int64(outs)
		if num := attrInt(n, "num_outputs", 0); num > 0 {
			k = num
		}
		chunk := (s[ax] + k - 1) / k
		for left := s[ax]; left > 0; left -= chunk {
			sizes = append(sizes, min(chunk, left))
		}
		for int64(len(sizes)) < k {
			sizes = append(sizes, 0)
		}
	}
	var res []*val
	var at int64
	for _, sz := range sizes {
		if sz == 0 {
			shape := append([]int64{}, s...)
			shape[ax] = 0
			res = append(res, &val{c: zeros(n.Outputs[len(res)], x.typ(), shape)})
			continue
		}
		out, err := im.one("Slice", ir.Attrs{"axis": ax, "start": at, "end": at + sz}, x)
		if err != nil {
			return nil, err
		}
		res = append(res, out[0])
		at += sz
	}
	return res, nil
}

func gather(im *importer, n *Node) ([]*val, error) {
	return im.one("Gather", ir.Attrs{"axis": attrInt(n, "axis", 0)}, im.in(n, 0), im.in(n, 1))
}

func expand(im *importer, n *Node) ([]*val, error) {
	shape, err := im.ints(im.in(n, 1), "the shape")
	if err != nil {
		return nil, err
	}
	return im.one("Expand", ir.Attrs{"shape": shape}, im.in(n, 0))
}

func tile(im *importer, n *Node) ([]*val, error) {
	reps, err := im.ints(im.in(n, 1), "repeats")
	if err != nil {
		return nil, err
	}
	return im.one("Tile", ir.Attrs{"repeats": reps}, im.in(n, 0))
}

func trilu(im *importer, n *Node) ([]*val, error) {
	var k int64
	if kv := im.in(n, 1); kv != nil {
		ks, err := im.ints(kv, "k")
		if err != nil {
			return nil, err
		}
		k = ks[0]
	}
	return im.one("Trilu", ir.Attrs{"upper": attrInt(n, "upper", 1), "k": k}, im.in(n, 0))
}

func cumsum(im *importer, n *Node) ([]*val, error) {
	ax, err := im.ints(im.in(n, 1), "axis")
	if err != nil {
		return nil, err
	}
	return im.one("CumSum", ir.Attrs{"axis": ax[0], "exclusive": attrInt(n, "exclusive", 0), "reverse": attrInt(n, "reverse", 0)}, im.in(n, 0))
}

func pad(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	r := len(x.shape())
	var pads []int64
	var err error
	if im.opset < 11 {
		pads, _ = attrInts(n, "pads")
	} else if pads, err = im.ints(im.in(n, 1), "pads"); err != nil {
		return nil, err
	}
	if a := im.in(n, 3); a != nil { // axes: pads for these axes only
		axes, err := im.ints(a, "axes")
		if err != nil {
			return nil, err
		}
		if len(pads) != 2*len(axes) {
			return nil, fmt.Errorf("%d pads for %d axes", len(pads), len(axes))
		}
		full := make([]int64, 2*r)
		for k, ax := range axes {
			if ax, err = axisIn(ax, r, false); err != nil {
				return nil, err
			}
			full[ax], full[int64(r)+ax] = pads[k], pads[len(axes)+k]
		}
		pads = full
	}
	ins := []*val{x}
	if v := im.in(n, 2); v != nil && im.opset >= 11 {
		ins = append(ins, v)
	}
	return im.one("Pad", ir.Attrs{"pads": pads, "mode": attrString(n, "mode", "constant")}, ins...)
}

func clip(im *importer, n *Node) ([]*val, error) {
	x := im.in(n, 0)
	if im.opset < 11 {
		lo, err := scalarOf(n.Outputs[0]+":min", x.typ(), attrFloat(n, "min", math.Inf(-1)))
		if err != nil {
			return nil, err
		}
		hi, err := scalarOf(n.Outputs[0]+":max", x.typ(), attrFloat(n, "max", math.Inf(1)))
		if err != nil {
			return nil, err
		}
		return im.one("Clip", ir.Attrs{"has_min": true, "has_max": true}, x, &val{c: lo}, &val{c: hi})
	}
	ins := []*val{x}
	attrs := ir.Attrs{}
	if lo := im.in(n, 1); lo != nil {
		ins, attrs["has_min"] = append(ins, lo), true
	}
	if hi := im.in(n, 2); hi != nil {
		ins, attrs["has_max"] = append(ins, hi), true
	}
	return im.one("Clip", attrs, ins...)
}

func rotary(im *importer, n *Node) ([]*val, error) {
	attrs := ir.Attrs{
		"interleaved":          attrInt(n, "interleaved", 0),
		"num_heads":            attrInt(n, "num_heads", 0),
		"rotary_embedding_dim": attrInt(n, "rotary_embedding_dim", 0),
	}
	ins := []*val{im.in(n, 0), im.in(n, 1), im.in(n, 2)}
	if p := im.in(n, 3); p != nil {
		ins = append(ins, p)
	}
	return im.one("RotaryEmbedding", attrs, ins...)
}

// attention imports the Attention op (opset 23) as the 4-D IR op: 3-D
// inputs [B, S, H·d] are split into heads first and the output merged
// back, and a boolean mask (true: attend) becomes the additive one.
func attention(im *importer, n *Node) ([]*val, error) {
	q, k, v := im.in(n, 0), im.in(n, 1), im.in(n, 2)
	attrs := ir.Attrs{
		"is_causal":             attrInt(n, "is_causal", 0),
		"qk_matmul_output_mode": attrInt(n, "qk_matmul_output_mode", 0),
		"softcap":               attrFloat(n, "softcap", 0),
	}
	if a := attr(n, "scale"); a != nil {
		attrs["scale"] = float64(a.F)
	}
	threeD := len(q.shape()) == 3
	if threeD {
		hq, hkv := attrInt(n, "q_num_heads", 0), attrInt(n, "kv_num_heads", 0)
		if hq <= 0 || hkv <= 0 {
			return nil, fmt.Errorf("3-D inputs need attributes q_num_heads and kv_num_heads")
		}
		var err error
		if q, err = im.splitHeads(q, hq); err != nil {
			return nil, err
		}
		if k, err = im.splitHeads(k, hkv); err != nil {
			return nil, err
		}
		if v, err = im.splitHeads(v, hkv); err != nil {
			return nil, err
		}
	}
	ins := []*val{q, k, v}
	if m := im.in(n, 3); m != nil {
		if m.typ() == quant.Bool {
			zero, err := scalarOf("", q.typ(), 0)
			if err != nil {
				return nil, err
			}
			inf, err := scalarOf("", q.typ(), math.Inf(-1))
			if err != nil {
				return nil, err
			}
			add, err := im.one("Where", nil, m, &val{c: zero}, &val{c: inf})
			if err != nil {
				return nil, err
			}
			m = add[0]
		}
		ins, attrs["has_mask"] = append(ins, m), true
	}
	if pk, pv := im.in(n, 4), im.in(n, 5); pk != nil && pv != nil {
		ins, attrs["has_past"] = append(ins, pk, pv), true
	}
	if np := im.in(n, 6); np != nil {
		ins, attrs["has_nonpad"] = append(ins, np), true
	}
	outs, err := im.emit("Attention", attrs, ins...)
	if err != nil || !threeD {
		return outs, err
	}
	y, err := im.one("Permute", ir.Attrs{"perm": []int64{0, 2, 1, 3}}, outs[0])
	if err != nil {
		return nil, err
	}
	ys, err := knownShape(y[0])
	if err != nil {
		return nil, err
	}
	merged, err := im.one("Reshape", ir.Attrs{"shape": []int64{ys[0], ys[1], ys[2] * ys[3]}}, y[0])
	if err != nil {
		return nil, err
	}
	outs[0] = merged[0]
	return outs, nil
}

// splitHeads turns x[B, S, H·d] into [B, H, S, d].
func (im *importer) splitHeads(x *val, heads int64) (*val, error) {
	s, err := knownShape(x)
	if err != nil {
		return nil, err
	}
	if len(s) != 3 || s[2]%heads != 0 {
		return nil, fmt.Errorf("%v does not split into %d heads", s, heads)
	}
	r, err := im.one("Reshape", ir.Attrs{"shape": []int64{s[0], s[1], heads, s[2] / heads}}, x)
	if err != nil {
		return nil, err
	}
	p, err := im.one("Permute", ir.Attrs{"perm": []int64{0, 2, 1, 3}}, r[0])
	if err != nil {
		return nil, err
	}
	return p[0], nil
}
