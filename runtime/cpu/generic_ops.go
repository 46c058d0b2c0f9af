package cpu

import (
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// genericOps are dispatched to runGeneric.
var genericOps = map[string]bool{
	"Sqrt": true, "Reciprocal": true, "Exp": true, "Log": true, "Tanh": true, "Erf": true, "Sigmoid": true,
	"Cos": true, "Sin": true, "Ceil": true, "Floor": true, "Round": true, "Softplus": true,
	"Neg": true, "Abs": true, "Relu": true, "Sign": true, "Not": true,
	"Sub": true, "Div": true, "Pow": true, "Max": true, "Min": true, "Mod": true,
	"Equal": true, "Less": true, "Greater": true, "LessOrEqual": true, "GreaterOrEqual": true,
	"And": true, "Or": true, "Xor": true, "Where": true, "Cast": true, "Clip": true,
	"ReduceMean": true, "ReduceSum": true, "ReduceMax": true, "ReduceMin": true,
	"Concat": true, "StridedSlice": true, "Gather": true, "Expand": true, "Tile": true, "Trilu": true,
	"CumSum": true, "Pad": true, "LayerNormalization": true, "RMSNormalization": true,
	"RotaryEmbedding": true, "Attention": true, "QuantizeLinear": true, "DequantizeLinear": true,
	"DynamicQuantizeLinear": true, "MatMulInteger": true, "QLinearMatMul": true,
	"GatherElements": true, "GatherND": true, "Einsum": true,
}

// runGeneric runs a general tensor op; outs are allocated by the caller.
func (b *Backend) runGeneric(op string, attrs ir.Attrs, outs, in []*lqrt.Tensor) error {
	ds := make([]any, len(in))
	shapes := make([][]int, len(in))
	for i, t := range in {
		d, err := dense(t)
		if err != nil {
			return err
		}
		ds[i], shapes[i] = d, t.Shape
	}
	out := outs[0]
	var err error
	switch op {
	case "Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Erf", "Sigmoid", "Cos", "Sin", "Ceil", "Floor", "Round", "Softplus":
		err = unaryFloat(op, out, ds[0])
	case "Neg", "Abs", "Relu", "Sign":
		err = unaryNumber(op, out.Data, ds[0])
	case "Not":
		x, o := ds[0].([]bool), out.Data.([]bool)
		for i, v := range x {
			o[i] = !v
		}
	case "Add", "Mul", "Sub", "Div", "Pow", "Max", "Min", "Mod":
		err = binaryOp(op, attrs.Int("fmod") != 0, out, ds[0], ds[1], shapes[0], shapes[1])
	case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual":
		err = compare(op, out, ds[0], ds[1], shapes[0], shapes[1])
	case "And", "Or", "Xor":
		a, bb, o := ds[0].([]bool), ds[1].([]bool), out.Data.([]bool)
		newIter(out.Shape, shapes[0], shapes[1]).each(func(i int, idx []int) {
			x, y := a[idx[0]], bb[idx[1]]
			switch op {
			case "And":
				o[i] = x && y
			case "Or":
				o[i] = x || y
			default:
				o[i] = x != y
			}
		})
	case "Where":
		err = where(out, ds[0].([]bool), ds[1], ds[2], shapes)
	case "Cast":
		err = castInto(out, ds[0], attrs)
	case "Clip":
		err = clip(out, ds, attrs)
	case "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin":
		err = reduce(op, out, ds[0], shapes[0], attrs)
	case "Concat":
		err = concat(out, ds, shapes, attrs.Int("axis"))
	case "StridedSlice", "Slice":
		err = stridedSlice(out, ds[0], shapes[0], attrs)
	case "Gather":
		err = gather(out, ds[0], ds[1], shapes[0], shapes[1], attrs.Int("axis"))
	case "Expand":
		err = expand(out, ds[0], shapes[0])
	case "Tile":
		err = tile(out, ds[0], shapes[0])
	case "Permute":
		err = transpose(out, ds[0], shapes[0], attrs.Ints("perm"))
	case "Trilu":
		err = trilu(out, ds[0], attrs.Int("upper") != 0, attrs.Int("k"))
	case "CumSum":
		err = cumsum(out, ds[0], attrs)
	case "Pad":
		err = pad(out, ds, shapes[0], attrs)
	case "Softmax":
		err = softmaxAxis(out, ds[0], attrs)
	case "MatMul":
		err = matmulN(out, ds[0], ds[1], shapes[0], shapes[1])
	case "LayerNormalization":
		err = layerNormalization(outs, ds, shapes, attrs)
	case "RMSNormalization":
		err = rmsNormalization(out, ds, shapes, attrs)
	case "RotaryEmbedding":
		err = rotaryEmbedding(out, ds, shapes, attrs)
	case "Attention":
		err = attention(outs, ds, shapes, attrs)
	case "QuantizeLinear":
		err = quantizeLinear(out, in, ds, shapes, attrs)
	case "DequantizeLinear":
		err = dequantizeLinear(out, ds, shapes, attrs)
	case "DynamicQuantizeLinear":
		err = dynamicQuantizeLinear(outs, ds[0])
	case "MatMulInteger":
		err = matmulInteger(out, ds, shapes)
	case "QLinearMatMul":
		err = qlinearMatMul(out, ds, shapes)
	case "GatherElements":
		err = gatherElements(out, ds[0], ds[1], shapes[0], shapes[1], attrs.Int("axis"))
	case "GatherND":
		err = gatherND(out, ds[0], ds[1], shapes[0], shapes[1], int(attrs.Int("batch_dims")))
	case "Einsum":
		err = einsum(out, ds, shapes, attrs.Str("equation"))
	default:
		return fmt.Errorf("cpu: no generic kernel for %s", op)
	}
	if err != nil {
		return fmt.Errorf("cpu: %s: %w", op, err)
	}
	for _, o := range outs {
		if v, ok := o.Data.([]float32); ok {
			roundTo(o.Type, v)
		}
	}
	return nil
}

// floats converts float storage to float64 values (a copy).
func floats(d any) ([]float64, error) {
	switch v := d.(type) {
	case []float32:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, nil
	case []float64:
		return v, nil
	}
	return nil, fmt.Errorf("want floats, have %T", d)
}

// numbers widens integer or float storage to float64.
func numbers(d any) []float64 {
	if is, ok := intsOf(d); ok {
		out := make([]float64, len(is))
		for i, v := range is {
			out[i] = float64(v)
		}
		return out
	}
	f, _ := floats(d)
	return f
}

// setFloats stores float64 values into float storage.
func setFloats(dst any, v []float64) {
	switch o := dst.(type) {
	case []float32:
		for i, x := range v {
			o[i] = float32(x)
		}
	case []float64:
		copy(o, v)
	}
}

func unaryFloat(op string, out *lqrt.Tensor, x any) error {
	v, err := floats(x)
	if err != nil {
		return err
	}
	r := make([]float64, len(v))
	for i, a := range v {
		switch op {
		case "Sqrt":
			r[i] = math.Sqrt(a)
		case "Reciprocal":
			r[i] = 1 / a
		case "Exp":
			r[i] = math.Exp(a)
		case "Log":
			r[i] = math.Log(a)
		case "Tanh":
			r[i] = math.Tanh(a)
		case "Erf":
			r[i] = math.Erf(a)
		case "Sigmoid":
			r[i] = 1 / (1 + math.Exp(-a))
		case "Cos":
			r[i] = math.Cos(a)
		case "Sin":
			r[i] = math.Sin(a)
		case "Ceil":
			r[i] = math.Ceil(a)
		case "Floor":
			r[i] = math.Floor(a)
		case "Round":
			r[i] = math.RoundToEven(a)
		case "Softplus":
			if a > 30 {
				r[i] = a
			} else {
				r[i] = math.Log1p(math.Exp(a))
			}
		}
	}
	setFloats(out.Data, r)
	return nil
}

func unaryNumber(op string, out, x any) error {
	switch v := x.(type) {
	case []float32:
		unaryT(op, out.([]float32), v)
	case []float64:
		unaryT(op, out.([]float64), v)
	case []int8:
		unaryT(op, out.([]int8), v)
	case []int16:
		unaryT(op, out.([]int16), v)
	case []int32:
		unaryT(op, out.([]int32), v)
	case []int64:
		unaryT(op, out.([]int64), v)
	case []uint8:
		unaryT(op, out.([]uint8), v)
	case []uint16:
		unaryT(op, out.([]uint16), v)
	case []uint32:
		unaryT(op, out.([]uint32), v)
	case []uint64:
		unaryT(op, out.([]uint64), v)
	default:
		return fmt.Errorf("%T", x)
	}
	return nil
}

func unaryT[T number](op string, out, x []T) {
	var zero T
	for i, a := range x {
		switch op {
		case "Neg":
			out[i] = -a
		case "Abs":
			if a < zero {
				out[i] = -a
			} else {
				out[i] = a
			}
		case "Relu":
			out[i] = max(a, zero)
		case "Sign":
			switch {
			case a > zero:
				out[i] = 1
			case a < zero:
				out[i] = zero - 1
			default:
				out[i] = zero
			}
		}
	}
}

func binaryOp(op string, fmod bool, out *lqrt.Tensor, a, b any, as, bs []int) error {
	it := newIter(out.Shape, as, bs)
	if op == "Pow" && fmt.Sprintf("%T", a) != fmt.Sprintf("%T", b) {
		// Pow's exponent may have another type than its base: computed in
		// float64, stored in the base's type (truncated for integers).
		x, y := numbers(a), numbers(b)
		r := make([]float64, out.Len())
		binaryF(op, fmod, r, x, y, it)
		if _, isInt := intsOf(out.Data); isInt {
			is := make([]int64, len(r))
			for i, v := range r {
				is[i] = int64(v)
			}
			return setInts(out.Data, is)
		}
		setFloats(out.Data, r)
		return nil
	}
	switch x := a.(type) {
	case []float32:
		return binaryT(op, fmod, out.Data.([]float32), x, b.([]float32), it)
	case []float64:
		y, err := floats(b)
		if err != nil {
			return err
		}
		return binaryT(op, fmod, out.Data.([]float64), x, y, it)
	case []int8:
		return binaryT(op, fmod, out.Data.([]int8), x, b.([]int8), it)
	case []int16:
		return binaryT(op, fmod, out.Data.([]int16), x, b.([]int16), it)
	case []int32:
		return binaryT(op, fmod, out.Data.([]int32), x, b.([]int32), it)
	case []int64:
		return binaryT(op, fmod, out.Data.([]int64), x, b.([]int64), it)
	case []uint8:
		return binaryT(op, fmod, out.Data.([]uint8), x, b.([]uint8), it)
	case []uint16:
		return binaryT(op, fmod, out.Data.([]uint16), x, b.([]uint16), it)
	case []uint32:
		return binaryT(op, fmod, out.Data.([]uint32), x, b.([]uint32), it)
	case []uint64:
		return binaryT(op, fmod, out.Data.([]uint64), x, b.([]uint64), it)
	}
	return fmt.Errorf("%T", a)
}

func binaryF(op string, fmod bool, out, a, b []float64, it *iter) {
	it.each(func(o int, idx []int) { out[o] = applyF(op, fmod, a[idx[0]], b[idx[1]]) })
}

func applyF(op string, fmod bool, x, y float64) float64 {
	switch op {
	case "Add":
		return x + y
	case "Sub":
		return x - y
	case "Mul":
		return x * y
	case "Div":
		return x / y
	case "Pow":
		return math.Pow(x, y)
	case "Max":
		if math.IsNaN(x) || math.IsNaN(y) {
			return math.NaN()
		}
		return max(x, y)
	case "Min":
		if math.IsNaN(x) || math.IsNaN(y) {
			return math.NaN()
		}
		return min(x, y)
	case "Mod":
		return math.Mod(x, y)
	}
	return 0
}

func isFloat[T number]() bool {
	var z T
	switch any(z).(type) {
	case float32, float64:
		return true
	}
	return false
}

func binaryT[T number](op string, fmod bool, out, a, b []T, it *iter) error {
	if isFloat[T]() {
		it.each(func(o int, idx []int) { out[o] = T(applyF(op, fmod, float64(a[idx[0]]), float64(b[idx[1]]))) })
		return nil
	}
	var err error
	it.each(func(o int, idx []int) {
		x, y := a[idx[0]], b[idx[1]]
		switch op {
		case "Add":
			out[o] = x + y
		case "Sub":
			out[o] = x - y
		case "Mul":
			out[o] = x * y
		case "Div":
			if y == 0 {
				err = fmt.Errorf("integer division by zero")
				return
			}
			out[o] = x / y // truncates toward zero, as C and ONNX Runtime
		case "Pow":
			out[o] = T(math.Pow(float64(x), float64(y)))
		case "Max":
			out[o] = max(x, y)
		case "Min":
			out[o] = min(x, y)
		case "Mod":
			if y == 0 {
				err = fmt.Errorf("integer modulo by zero")
				return
			}
			var zero T
			if zero-1 > zero { // unsigned
				out[o] = T(uint64(x) % uint64(y))
				return
			}
			r := int64(x) % int64(y)
			if !fmod && r != 0 && (r < 0) != (y < 0) { // Python's: the divisor's sign
				r += int64(y)
			}
			out[o] = T(r)
		}
	})
	return err
}

func compare(op string, out *lqrt.Tensor, a, b any, as, bs []int) error {
	it := newIter(out.Shape, as, bs)
	o := out.Data.([]bool)
	switch x := a.(type) {
	case []float32:
		compareT(op, o, x, b.([]float32), it)
	case []float64:
		compareT(op, o, x, b.([]float64), it)
	case []int8:
		compareT(op, o, x, b.([]int8), it)
	case []int16:
		compareT(op, o, x, b.([]int16), it)
	case []int32:
		compareT(op, o, x, b.([]int32), it)
	case []int64:
		compareT(op, o, x, b.([]int64), it)
	case []uint8:
		compareT(op, o, x, b.([]uint8), it)
	case []uint16:
		compareT(op, o, x, b.([]uint16), it)
	case []uint32:
		compareT(op, o, x, b.([]uint32), it)
	case []uint64:
		compareT(op, o, x, b.([]uint64), it)
	case []bool:
		y := b.([]bool)
		it.each(func(i int, idx []int) { o[i] = x[idx[0]] == y[idx[1]] })
	default:
		return fmt.Errorf("%T", a)
	}
	return nil
}

func compareT[T number](op string, o []bool, a, b []T, it *iter) {
	it.each(func(i int, idx []int) {
		x, y := a[idx[0]], b[idx[1]]
		switch op {
		case "Equal":
			o[i] = x == y
		case "Less":
			o[i] = x < y
		case "Greater":
			o[i] = x > y
		case "LessOrEqual":
			o[i] = x <= y
		case "GreaterOrEqual":
			o[i] = x >= y
		}
	})
}

func where(out *lqrt.Tensor, c []bool, a, b any, shapes [][]int) error {
	it := newIter(out.Shape, shapes...)
	return pick(out.Data, a, b, func(set func(o, i int, first bool)) {
		it.each(func(o int, idx []int) {
			if c[idx[0]] {
				set(o, idx[1], true)
			} else {
				set(o, idx[2], false)
			}
		})
	})
}

// pick runs walk with a setter that copies element i of a (first) or b
// into element o of out, whatever the element type.
func pick(out, a, b any, walk func(set func(o, i int, first bool))) error {
	switch o := out.(type) {
	case []float32:
		return pickT(o, a.([]float32), b.([]float32), walk)
	case []float64:
		return pickT(o, a.([]float64), b.([]float64), walk)
	case []int8:
		return pickT(o, a.([]int8), b.([]int8), walk)
	case []int16:
		return pickT(o, a.([]int16), b.([]int16), walk)
	case []int32:
		return pickT(o, a.([]int32), b.([]int32), walk)
	case []int64:
		return pickT(o, a.([]int64), b.([]int64), walk)
	case []uint8:
		return pickT(o, a.([]uint8), b.([]uint8), walk)
	case []uint16:
		return pickT(o, a.([]uint16), b.([]uint16), walk)
	case []uint32:
		return pickT(o, a.([]uint32), b.([]uint32), walk)
	case []uint64:
		return pickT(o, a.([]uint64), b.([]uint64), walk)
	case []bool:
		return pickT(o, a.([]bool), b.([]bool), walk)
	}
	return fmt.Errorf("%T", out)
}

func pickT[T any](out, a, b []T, walk func(set func(o, i int, first bool))) error {
	walk(func(o, i int, first bool) {
		if first {
			out[o] = a[i]
		} else {
			out[o] = b[i]
		}
	})
	return nil
}

// copyFrom runs walk with a setter copying element i of src into o of out.
func copyFrom(out, src any, walk func(set func(o, i int))) error {
	return pick(out, src, src, func(set func(o, i int, first bool)) {
		walk(func(o, i int) { set(o, i, true) })
	})
}

// castInto converts x (of type from) into out's element type.
func castInto(out *lqrt.Tensor, x any, attrs ir.Attrs) error {
	n := out.Len()
	switch {
	case out.Type == quant.Bool:
		o := out.Data.([]bool)
		return forEachFloat(x, n, func(i int, v float64) { o[i] = v != 0 })
	case out.Type == quant.F8E8M0:
		o := out.Data.([]float32)
		return forEachFloat(x, n, func(i int, v float64) { o[i] = quant.RoundE8M0(float32(v), attrs.Str("round_mode")) })
	case out.Type.IsFloat():
		r := make([]float64, n)
		if err := forEachFloat(x, n, func(i int, v float64) { r[i] = v }); err != nil {
			return err
		}
		if out.Type.IsMiniFloat() && (!attrs.Has("saturate") || attrs.Int("saturate") != 0) {
			m := float64(quant.MaxFinite(out.Type))
			for i, v := range r {
				if !math.IsNaN(v) {
					r[i] = max(-m, min(m, v))
				}
			}
		}
		setFloats(out.Data, r) // rounded to the format by roundTo
		return nil
	}
	// To an integer type: from integers exactly, from floats by
	// truncation toward zero, then wrapped to the width as C does (the
	// sub-byte types too: 9 cast to INT4 is -7).
	r, ok := intsOf(x)
	if !ok {
		r = make([]int64, n)
		if err := forEachFloat(x, n, func(i int, v float64) { r[i] = int64(v) }); err != nil {
			return err
		}
	}
	if bits := map[quant.Type]uint{quant.I4: 4, quant.U4: 4, quant.I2: 2, quant.U2: 2}[out.Type]; bits > 0 {
		signed := out.Type == quant.I4 || out.Type == quant.I2
		for i, v := range r {
			v &= 1<<bits - 1
			if signed && v >= 1<<(bits-1) {
				v -= 1 << bits
			}
			r[i] = v
		}
	}
	return setInts(out.Data, r)
}

// forEachFloat calls fn with each element of x as float64.
func forEachFloat(x any, n int, fn func(i int, v float64)) error {
	switch v := x.(type) {
	case []bool:
		for i, b := range v {
			if b {
				fn(i, 1)
			} else {
				fn(i, 0)
			}
		}
		return nil
	case []uint64:
		for i, a := range v {
			fn(i, float64(a))
		}
		return nil
	}
	if xi, ok := intsOf(x); ok {
		for i, a := range xi {
			fn(i, float64(a))
		}
		return nil
	}
	f, err := floats(x)
	if err != nil {
		return err
	}
	for i, a := range f[:n] {
		fn(i, a)
	}
	return nil
}

// intsOf widens integer storage to int64 (uint64 wraps).
func intsOf(x any) ([]int64, bool) {
	switch v := x.(type) {
	case []int8:
		return widen(v), true
	case []int16:
		return widen(v), true
	case []int32:
		return widen(v), true
	case []int64:
		return v, true
	case []uint8:
		return widen(v), true
	case []uint16:
		return widen(v), true
	case []uint32:
		return widen(v), true
	case []uint64:
		return widen(v), true
	case []bool:
		out := make([]int64, len(v))
		for i, b := range v {
			if b {
				out[i] = 1
			}
		}
		return out, true
	}
	return nil, false
}

func widen[T number](v []T) []int64 {
	out := make([]int64, len(v))
	for i, a := range v {
		out[i] = int64(a)
	}
	return out
}

func setInts(dst any, v []int64) error {
	switch o := dst.(type) {
	case []int8:
		narrow(o, v)
	case []int16:
		narrow(o, v)
	case []int32:
		narrow(o, v)
	case []int64:
		copy(o, v)
	case []uint8:
		narrow(o, v)
	case []uint16:
		narrow(o, v)
	case []uint32:
		narrow(o, v)
	case []uint64:
		narrow(o, v)
	default:
		return fmt.Errorf("%T", dst)
	}
	return nil
}

func narrow[T number](o []T, v []int64) {
	for i, a := range v {
		o[i] = T(a)
	}
}

func clip(out *lqrt.Tensor, ds []any, attrs ir.Attrs) error {
	n := out.Len()
	var lo, hi any
	k := 1
	if attrs.Bool("has_min") {
		lo, k = ds[k], k+1
	}
	if attrs.Bool("has_max") {
		hi = ds[k]
	}
	if xi, ok := intsOf(ds[0]); ok {
		r := append([]int64(nil), xi...)
		if lo != nil {
			l, _ := intsOf(lo)
			for i := range r {
				r[i] = max(r[i], l[0])
			}
		}
		if hi != nil {
			h, _ := intsOf(hi)
			for i := range r {
				r[i] = min(r[i], h[0])
			}
		}
		return setInts(out.Data, r)
	}
	x, err := floats(ds[0])
	if err != nil {
		return err
	}
	r := append([]float64(nil), x[:n]...)
	if lo != nil {
		l, _ := floats(lo)
		for i := range r {
			r[i] = max(r[i], l[0])
		}
	}
	if hi != nil {
		h, _ := floats(hi)
		for i := range r {
			r[i] = min(r[i], h[0])
		}
	}
	setFloats(out.Data, r)
	return nil
}

// reduce: the output's elements iterate over the kept axes; each sums
// (or maxes) its reduced elements.
func reduce(op string, out *lqrt.Tensor, x any, xs []int, attrs ir.Attrs) error {
	red := make([]bool, len(xs))
	axes := attrs.Ints("axes")
	for i := range red {
		red[i] = len(axes) == 0
	}
	for _, a := range axes {
		if a < 0 {
			a += int64(len(xs))
		}
		red[a] = true
	}
	// The output in keepdims form: reduced axes of size 1.
	ks := make([]int, len(xs))
	for i, d := range xs {
		ks[i] = d
		if red[i] {
			ks[i] = 1
		}
	}
	it := newIter(xs, ks) // walk x, index the kept-shape output
	cnt := 1
	for i, d := range xs {
		if red[i] {
			cnt *= d
		}
	}
	if xi, ok := intsOf(x); ok && out.Type.IsInt() {
		acc := make([]int64, out.Len())
		seen := make([]bool, out.Len())
		it.each(func(i int, idx []int) {
			o, v := idx[0], xi[i]
			switch {
			case !seen[o]:
				acc[o], seen[o] = v, true
			case op == "ReduceMax":
				acc[o] = max(acc[o], v)
			case op == "ReduceMin":
				acc[o] = min(acc[o], v)
			default:
				acc[o] += v
			}
		})
		if op == "ReduceMean" && cnt > 0 {
			for i := range acc {
				acc[i] /= int64(cnt)
			}
		}
		return setInts(out.Data, acc)
	}
	xf, err := floats(x)
	if err != nil {
		return err
	}
	acc := make([]float64, out.Len())
	seen := make([]bool, out.Len())
	it.each(func(i int, idx []int) {
		o, v := idx[0], xf[i]
		switch {
		case !seen[o]:
			acc[o], seen[o] = v, true
		case op == "ReduceMax":
			acc[o] = max(acc[o], v)
		case op == "ReduceMin":
			acc[o] = min(acc[o], v)
		default:
			acc[o] += v
		}
	})
	for o := range acc {
		switch {
		case !seen[o] && op == "ReduceMax":
			acc[o] = math.Inf(-1)
		case !seen[o] && op == "ReduceMin":
			acc[o] = math.Inf(1)
		case op == "ReduceMean":
			acc[o] /= float64(cnt)
		}
	}
	setFloats(out.Data, acc)
	return nil
}

func concat(out *lqrt.Tensor, ds []any, shapes [][]int, axis int64) error {
	if axis < 0 {
		axis += int64(len(out.Shape))
	}
	outer := prod(out.Shape[:axis])
	inner := prod(out.Shape[axis+1:])
	off := 0
	for k, d := range ds {
		n := shapes[k][axis] * inner
		total := out.Shape[axis] * inner
		base := off
		err := copyFrom(out.Data, d, func(set func(o, i int)) {
			for r := range outer {
				for j := range n {
					set(r*total+base+j, r*n+j)
				}
			}
		})
		if err != nil {
			return err
		}
		off += n
	}
	return nil
}

func stridedSlice(out *lqrt.Tensor, x any, xs []int, attrs ir.Attrs) error {
	rank := len(xs)
	starts, steps := make([]int, rank), make([]int, rank)
	if st := attrs.Ints("starts"); len(st) == rank {
		for i := range rank {
			starts[i], steps[i] = int(st[i]), int(attrs.Ints("steps")[i])
		}
	} else { // Slice: one axis
		for i := range steps {
			steps[i] = 1
		}
		ax := int(attrs.Int("axis"))
		if ax < 0 {
			ax += rank
		}
		starts[ax] = int(attrs.Int("start"))
	}
	xst := stridesOf(xs)
	return copyFrom(out.Data, x, func(set func(o, i int)) {
		newIter(out.Shape).eachIndex(func(o int, ctr []int) {
			i := 0
			for ax, c := range ctr {
				i += (starts[ax] + c*steps[ax]) * xst[ax]
			}
			set(o, i)
		})
	})
}

// eachIndex walks a shape, passing each element's multi-index.
func (it *iter) eachIndex(fn func(o int, ctr []int)) {
	n := prod(it.shape)
	ctr := make([]int, len(it.shape))
	for o := 0; o < n; o++ {
		fn(o, ctr)
		for ax := len(ctr) - 1; ax >= 0; ax-- {
			if ctr[ax]++; ctr[ax] < it.shape[ax] {
				break
			}
			ctr[ax] = 0
		}
	}
}

func gather(out *lqrt.Tensor, data, indices any, ds, is []int, axis int64) error {
	if axis < 0 {
		axis += int64(len(ds))
	}
	idx, ok := intsOf(indices)
	if !ok {
		return fmt.Errorf("indices %T", indices)
	}
	outer, inner := prod(ds[:axis]), prod(ds[axis+1:])
	n := ds[axis]
	at := make([]int, len(idx))
	for i, v := range idx {
		var err error
		if at[i], err = wrapIndex(v, n); err != nil {
			return err
		}
	}
	return copyFrom(out.Data, data, func(set func(o, i int)) {
		o := 0
		for r := range outer {
			for _, v := range at {
				for j := range inner {
					set(o, (r*n+v)*inner+j)
					o++
				}
			}
		}
	})
}

// expand broadcasts x (shape xs) into out.
func expand(out *lqrt.Tensor, x any, xs []int) error {
	it := newIter(out.Shape, xs)
	return copyFrom(out.Data, x, func(set func(o, i int)) {
		it.each(func(o int, idx []int) { set(o, idx[0]) })
	})
}

func tile(out *lqrt.Tensor, x any, xs []int) error {
	xst := stridesOf(xs)
	return copyFrom(out.Data, x, func(set func(o, i int)) {
		newIter(out.Shape).eachIndex(func(o int, ctr []int) {
			i := 0
			for ax, c := range ctr {
				i += (c % xs[ax]) * xst[ax]
			}
			set(o, i)
		})
	})
}

func transpose(out *lqrt.Tensor, x any, xs []int, perm []int64) error {
	xst := stridesOf(xs)
	return copyFrom(out.Data, x, func(set func(o, i int)) {
		newIter(out.Shape).eachIndex(func(o int, ctr []int) {
			i := 0
			for ax, c := range ctr {
				i += c * xst[perm[ax]]
			}
			set(o, i)
		})
	})
}

func trilu(out *lqrt.Tensor, x any, upper bool, k int64) error {
	s := out.Shape
	if len(s) < 2 {
		return fmt.Errorf("needs 2 axes, has %v", s)
	}
	R, C := s[len(s)-2], s[len(s)-1]
	return pick(out.Data, x, broadcastZero(out.Data, out.Len()), func(set func(o, i int, first bool)) {
		for o := range out.Len() {
			r, c := (o/C)%R, o%C
			keep := int64(c-r) <= k
			if upper {
				keep = int64(c-r) >= k
			}
			set(o, o, keep)
		}
	})
}

// broadcastZero returns zero storage of n elements of z's type.
func broadcastZero(z any, n int) any {
	switch z.(type) {
	case []float32:
		return make([]float32, n)
	case []float64:
		return make([]float64, n)
	case []int8:
		return make([]int8, n)
	case []int16:
		return make([]int16, n)
	case []int32:
		return make([]int32, n)
	case []int64:
		return make([]int64, n)
	case []uint8:
		return make([]uint8, n)
	case []uint16:
		return make([]uint16, n)
	case []uint32:
		return make([]uint32, n)
	case []uint64:
		return make([]uint64, n)
	}
	return make([]bool, n)
}

func cumsum(out *lqrt.Tensor, x any, attrs ir.Attrs) error {
	s := out.Shape
	ax := int(attrs.Int("axis"))
	if ax < 0 {
		ax += len(s)
	}
	outer, n, inner := prod(s[:ax]), s[ax], prod(s[ax+1:])
	excl, rev := attrs.Int("exclusive") != 0, attrs.Int("reverse") != 0
	if xi, ok := intsOf(x); ok && out.Type.IsInt() {
		r := make([]int64, len(xi))
		scanOver(outer, n, inner, rev, func(o int, first bool) {
			if first {
				r[o] = 0
			}
		}, func(prev, o int) {
			acc := int64(0)
			if prev >= 0 {
				acc = r[prev]
				if excl {
					acc += xi[prev]
				}
			}
			if excl {
				r[o] = acc
			} else {
				r[o] = acc + xi[o]
			}
		})
		return setInts(out.Data, r)
	}
	xf, err := floats(x)
	if err != nil {
		return err
	}
	r := make([]float64, len(xf))
	scanF(outer, n, inner, rev, excl, xf, r)
	setFloats(out.Data, r)
	return nil
}

// scanOver visits each line along the axis in order (reversed with rev),
// calling step with the previous element's index (-1 at the start).
func scanOver(outer, n, inner int, rev bool, _ func(o int, first bool), step func(prev, o int)) {
	for r := range outer {
		for j := range inner {
			prev := -1
			for t := range n {
				k := t
				if rev {
					k = n - 1 - t
				}
				o := (r*n+k)*inner + j
				step(prev, o)
				prev = o
			}
		}
	}
}

func scanF(outer, n, inner int, rev, excl bool, x, out []float64) {
	for r := range outer {
		for j := range inner {
			var acc float64
			for t := range n {
				k := t
				if rev {
					k = n - 1 - t
				}
				o := (r*n+k)*inner + j
				if excl {
					out[o] = acc
					acc += x[o]
				} else {
					acc += x[o]
					out[o] = acc
				}
			}
		}
	}
}

func pad(out *lqrt.Tensor, ds []any, xs []int, attrs ir.Attrs) error {
	pads := attrs.Ints("pads")
	mode := attrs.Str("mode")
	if mode == "" {
		mode = "constant"
	}
	xst := stridesOf(xs)
	fill := broadcastZero(ds[0], out.Len())
	if len(ds) > 1 { // the constant value
		if err := copyFrom(fill, ds[1], func(set func(o, i int)) {
			for o := range out.Len() {
				set(o, 0)
			}
		}); err != nil {
			return err
		}
	}
	return pick(out.Data, ds[0], fill, func(set func(o, i int, first bool)) {
		newIter(out.Shape).eachIndex(func(o int, ctr []int) {
			i, inside := 0, true
			for ax, c := range ctr {
				p := c - int(pads[ax])
				n := xs[ax]
				if p < 0 || p >= n {
					switch mode {
					case "edge":
						p = max(0, min(n-1, p))
					case "reflect":
						for p < 0 || p >= n {
							if p < 0 {
								p = -p
							}
							if p >= n {
								p = 2*(n-1) - p
							}
						}
					default:
						inside = false
					}
				}
				i += p * xst[ax]
			}
			if inside {
				set(o, i, true)
			} else {
				set(o, o, false)
			}
		})
	})
}
