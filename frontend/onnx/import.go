package onnx

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
)

// Options configure Import.
type Options struct {
	// InputShapes fixes the shapes of graph inputs by name; the others
	// keep their declared shapes, named dimensions becoming symbols.
	InputShapes map[string][]int64
	// Consts binds graph inputs to values, which fold into the graph.
	Consts map[string]*ir.Tensor
	// Backend evaluates the nodes whose inputs are all constants: how the
	// arithmetic of shapes folds away (the CPU backend).
	Backend runtime.Backend
	// MaxConstBytes bounds each constant folding makes (0: 1 GiB), so
	// that a hostile graph cannot exhaust memory at import.
	MaxConstBytes int64
}

// maxConst is the bound on a folded constant's size in bytes.
func (im *importer) maxConst() int64 {
	if im.opt.MaxConstBytes > 0 {
		return im.opt.MaxConstBytes
	}
	return 1 << 30
}

// prodChecked multiplies dimensions, failing on overflow.
func prodChecked(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 || d > 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("shape %v overflows", shape)
		}
		n *= d
	}
	return n, nil
}

// constElements checks a constant's shape (no negative dimension, within
// maxConst at size bytes an element) and returns its element count.
func (im *importer) constElements(shape []int64, size int) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		if d > 0 && n > im.maxConst()/d {
			return 0, fmt.Errorf("a constant of shape %v is larger than %d bytes", shape, im.maxConst())
		}
		n *= d
	}
	if n*int64(max(size, 1)) > im.maxConst() {
		return 0, fmt.Errorf("a constant of shape %v is larger than %d bytes", shape, im.maxConst())
	}
	return n, nil
}

// NeedConstError says that an op needs a value computed from a graph
// input (a shape, axes, bounds): bind that input with Options.Consts.
type NeedConstError struct{ Input string }

func (e *NeedConstError) Error() string {
	return fmt.Sprintf("input %s determines a shape: its value must be known when importing", e.Input)
}

// UnsupportedOpError names an op lqc cannot import.
type UnsupportedOpError struct {
	Op     string
	Domain string
	Opset  int64
}

func (e *UnsupportedOpError) Error() string {
	if e.Domain != "" {
		return fmt.Sprintf("op %s of domain %q is not supported", e.Op, e.Domain)
	}
	return fmt.Sprintf("op %s (opset %d) is not supported", e.Op, e.Opset)
}

// val is an ONNX value during import: a constant, or a value of the IR
// graph being built.
type val struct {
	c *ir.Tensor
	v *ir.Value
	// input is a graph input this value is computed from (for
	// NeedConstError: binding it folds the value).
	input string
}

func (x *val) typ() quant.Type {
	if x.c != nil {
		return x.c.Type
	}
	return x.v.Type()
}

func (x *val) shape() ir.Shape {
	if x.c != nil {
		s := make(ir.Shape, len(x.c.Shape))
		for i, d := range x.c.Shape {
			s[i] = ir.D(d)
		}
		return s
	}
	return x.v.Shape()
}

type importer struct {
	f      *File
	opt    Options
	opset  int64
	g      *ir.Graph
	vals   map[string]*val
	consts map[*ir.Tensor]*ir.Value // constants already added as weights
	node   *Node                    // the node being imported, for errors
}

// Import turns the model's graph into an lqc IR graph: every node whose
// inputs are constants is evaluated (Options.Eval) so that the shape
// arithmetic exporters emit folds away, and the rest becomes IR ops.
func Import(f *File, opt Options) (*ir.Graph, error) {
	if opt.Backend == nil {
		return nil, errors.New("onnx: Import needs a backend for constant folding")
	}
	if f.Model.Functions > 0 {
		return nil, fmt.Errorf("%s: model-local functions are not supported", f.Path)
	}
	if f.Model.Graph.Sparse > 0 {
		return nil, fmt.Errorf("%s: sparse initializers are not supported", f.Path)
	}
	im, err := importGraph(f, opt)
	if err != nil {
		return nil, err
	}
	return im.g, nil
}

// importGraph imports f's graph and returns the importer, whose vals map
// every ONNX value name to what it became.
func importGraph(f *File, opt Options) (*importer, error) {
	im := &importer{f: f, opt: opt, opset: f.Model.Opsets[""], g: ir.NewGraph(f.Model.Graph.Name), vals: map[string]*val{}, consts: map[*ir.Tensor]*ir.Value{}}
	if err := im.run(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	return im, nil
}

func (im *importer) run() error {
	g := im.f.Model.Graph
	for _, t := range g.Initializers {
		c, err := im.f.Values(t)
		if err != nil {
			return err
		}
		im.vals[t.Name] = &val{c: c}
	}
	for _, in := range g.Inputs {
		if _, isInit := im.vals[in.Name]; isInit {
			continue // an initializer listed as an input (IR version < 4)
		}
		if c := im.opt.Consts[in.Name]; c != nil {
			im.vals[in.Name] = &val{c: c.WithName(in.Name)}
			continue
		}
		if in.NonTensor {
			return fmt.Errorf("input %s is not a tensor", in.Name)
		}
		t, err := ElemType(in.ElemType)
		if err != nil {
			return fmt.Errorf("input %s: %w", in.Name, err)
		}
		var shape ir.Shape
		if fixed, ok := im.opt.InputShapes[in.Name]; ok {
			for _, d := range fixed {
				shape = append(shape, ir.D(d))
			}
		} else if !in.HasShape {
			return fmt.Errorf("input %s has no shape: give one", in.Name)
		} else {
			for i, d := range in.Shape {
				switch {
				case d.Known:
					shape = append(shape, ir.D(d.Value))
				case d.Param != "":
					shape = append(shape, ir.Sym(d.Param))
				default:
					shape = append(shape, ir.Sym(fmt.Sprintf("%s_%d", in.Name, i)))
				}
			}
		}
		im.vals[in.Name] = &val{v: im.g.Input(in.Name, t, shape), input: in.Name}
	}
	for _, n := range g.Nodes {
		im.node = n
		h, ok := handlers[n.OpType]
		if !ok || n.Domain != "" {
			return im.wrap(&UnsupportedOpError{Op: n.OpType, Domain: n.Domain, Opset: im.opset})
		}
		for _, name := range n.Inputs {
			if name != "" && im.vals[name] == nil {
				return im.errorf("input %s is not defined before use (a dangling input, or a cycle)", name)
			}
		}
		if len(n.Outputs) == 0 {
			return im.errorf("has no outputs")
		}
		if need := minInputs(n.OpType, im.opset); len(n.Inputs) < need || slices.Contains(n.Inputs[:need], "") {
			return im.errorf("needs %d inputs, has %d", need, len(n.Inputs))
		}
		before := len(im.g.Nodes)
		outs, err := h(im, n)
		if err != nil {
			return im.wrap(err)
		}
		// Values this node made carry its output names (for inspect, and
		// for finding them again).
		for i, o := range outs {
			if i < len(n.Outputs) && n.Outputs[i] != "" && o != nil && o.v != nil && o.v.Def != nil &&
				slices.Contains(im.g.Nodes[before:], o.v.Def) {
				o.v.Name = n.Outputs[i]
			}
		}
		// A computed value remembers a graph input it derives from.
		from := ""
		for _, name := range n.Inputs {
			if x := im.vals[name]; name != "" && x.c == nil && x.input != "" {
				from = x.input
				break
			}
		}
		for _, o := range outs {
			if o != nil && o.c == nil && o.input == "" {
				o.input = from
			}
		}
		for i, name := range n.Outputs {
			if name == "" || i >= len(outs) {
				continue
			}
			if im.vals[name] != nil {
				return im.errorf("value %s is defined twice", name)
			}
			im.vals[name] = outs[i]
		}
	}
	for _, o := range g.Outputs {
		x := im.vals[o.Name]
		if x == nil {
			return fmt.Errorf("output %s is never computed", o.Name)
		}
		v := x.v
		switch {
		case x.c != nil:
			v = im.weight(x.c.WithName(o.Name))
		case v.Def != nil && !slices.Contains(im.g.Outputs, v):
			v.Name = o.Name // a graph input, or a value output twice, keeps its name
		}
		im.g.Outputs = append(im.g.Outputs, v)
	}
	return im.g.Verify()
}

// wrap names the node being imported in err (keeping it for errors.As).
func (im *importer) wrap(err error) error {
	n := im.node
	name := n.Name
	if name == "" {
		name = strings.Join(n.Outputs, ",")
	}
	return fmt.Errorf("node %s (%s): %w", name, n.OpType, err)
}

func (im *importer) errorf(format string, args ...any) error {
	return im.wrap(fmt.Errorf(format, args...))
}

// weight adds a constant to the graph (once).
func (im *importer) weight(c *ir.Tensor) *ir.Value {
	if v := im.consts[c]; v != nil {
		return v
	}
	if im.g.WeightValue(c.Name) != nil {
		c = c.WithName(fmt.Sprintf("%s#%d", c.Name, len(im.consts)))
	}
	v := im.g.AddWeight(c)
	im.consts[c] = v
	return v
}

// irValue is x as a value of the graph.
func (im *importer) irValue(x *val) *ir.Value {
	if x.v != nil {
		return x.v
	}
	return im.weight(x.c)
}

// emit applies op: folded when every input is a constant, else appended
// to the graph.
func (im *importer) emit(op string, attrs ir.Attrs, inputs ...*val) ([]*val, error) {
	allConst := true
	for _, x := range inputs {
		allConst = allConst && x.c != nil
	}
	if allConst {
		if c, ok, err := im.foldLazily(op, attrs, inputs); ok || err != nil {
			return []*val{{c: c}}, err
		}
		scratch := ir.NewGraph("fold")
		ins := make([]*ir.Value, len(inputs))
		cs := make([]*ir.Tensor, len(inputs))
		for i, x := range inputs {
			ins[i], cs[i] = scratch.AddWeight(x.c), x.c
		}
		outs, err := scratch.Apply(op, attrs, ins...)
		if err != nil {
			return nil, err
		}
		for i, o := range outs {
			o.Name = fmt.Sprintf("%s:%d", strings.Join(im.node.Outputs, ","), i)
			shape, err := knownShape(&val{v: o})
			if err != nil {
				return nil, err
			}
			if _, err := im.constElements(shape, o.Type().TypeSize()); err != nil {
				return nil, err
			}
		}
		res, err := runtime.EvalNode(im.opt.Backend, outs[0].Def, cs)
		if err != nil {
			return nil, err
		}
		vals := make([]*val, len(res))
		for i, c := range res {
			vals[i] = &val{c: c}
		}
		return vals, nil
	}
	ins := make([]*ir.Value, len(inputs))
	for i, x := range inputs {
		ins[i] = im.irValue(x)
	}
	outs, err := im.g.Apply(op, attrs, ins...)
	if err != nil {
		return nil, err
	}
	vals := make([]*val, len(outs))
	for i, o := range outs {
		vals[i] = &val{v: o}
		// A value the runtime would allocate is bounded too (16× a
		// constant), where its shape is known.
		if shape, err := knownShape(vals[i]); err == nil {
			if n, err := prodChecked(shape); err != nil || n > 16*im.maxConst()/int64(max(o.Type().TypeSize(), 1)) {
				return nil, fmt.Errorf("a value of shape %v is larger than %d bytes", shape, 16*im.maxConst())
			}
		}
	}
	return vals, nil
}

// foldLazily folds the ops that only move or convert a constant's values
// (a matrix transpose, a float-to-float cast, a reshape) into lazy
// tensors, so that exports which transpose or cast their weights in the
// graph do not have them copied into memory at import: they stream like
// any initializer.
func (im *importer) foldLazily(op string, attrs ir.Attrs, inputs []*val) (*ir.Tensor, bool, error) {
	if len(inputs) != 1 {
		return nil, false, nil
	}
	c := inputs[0].c
	plainFloat := func(t quant.Type) bool { return t == quant.F32 || t == quant.F16 || t == quant.BF16 }
	var t *ir.Tensor
	var err error
	switch op {
	case "Permute":
		if p := attrs.Ints("perm"); len(c.Shape) != 2 || len(p) != 2 || p[0] != 1 || p[1] != 0 || c.Type.BlockSize() != 1 {
			return nil, false, nil
		}
		t, err = ir.Transpose(c)
	case "Cast":
		to := quant.Type(attrs.Int("to"))
		if !plainFloat(c.Type) || !plainFloat(to) {
			return nil, false, nil
		}
		t, err = ir.Convert(c, to)
	case "Reshape":
		shape := attrs.Ints("shape")
		if slices.Contains(shape, -1) || c.Type.BlockSize() != 1 {
			return nil, false, nil
		}
		t, err = ir.Reshape(c, shape)
	default:
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	return t.WithName(strings.Join(im.node.Outputs, ",")), true, nil
}

// one is emit for single-output ops.
func (im *importer) one(op string, attrs ir.Attrs, inputs ...*val) ([]*val, error) {
	outs, err := im.emit(op, attrs, inputs...)
	if err != nil {
		return nil, err
	}
	return outs[:1], nil
}

// in returns input i of n, or nil when absent.
func (im *importer) in(n *Node, i int) *val {
	if i >= len(n.Inputs) || n.Inputs[i] == "" {
		return nil
	}
	return im.vals[n.Inputs[i]]
}

// ints returns a constant integer input's values; a graph input asks to
// be bound as a constant.
func (im *importer) ints(x *val, what string) ([]int64, error) {
	if x.c == nil {
		if x.input != "" {
			return nil, &NeedConstError{Input: x.input}
		}
		return nil, fmt.Errorf("%s is computed at run time; lqc needs it constant", what)
	}
	return tensorInts(x.c)
}

// floatsOf returns a constant float input's values.
func (im *importer) floatsOf(x *val, what string) ([]float64, error) {
	if x.c == nil {
		if x.input != "" {
			return nil, &NeedConstError{Input: x.input}
		}
		return nil, fmt.Errorf("%s is computed at run time; lqc needs it constant", what)
	}
	f, err := x.c.Float32s()
	if err == nil {
		out := make([]float64, len(f))
		for i, v := range f {
			out[i] = float64(v)
		}
		return out, nil
	}
	is, err := tensorInts(x.c)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(is))
	for i, v := range is {
		out[i] = float64(v)
	}
	return out, nil
}

// knownShape is x's shape as integers, or an error naming the symbol.
func knownShape(x *val) ([]int64, error) {
	s := x.shape()
	out := make([]int64, len(s))
	for i, d := range s {
		if !d.Known() {
			return nil, fmt.Errorf("dimension %s is symbolic here; import with fixed input shapes", d.Sym)
		}
		out[i] = d.Size
	}
	return out, nil
}

// attribute getters.
func attr(n *Node, name string) *Attr {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a
		}
	}
	return nil
}

func attrInt(n *Node, name string, def int64) int64 {
	if a := attr(n, name); a != nil {
		return a.I
	}
	return def
}

func attrFloat(n *Node, name string, def float64) float64 {
	if a := attr(n, name); a != nil {
		return float64(a.F)
	}
	return def
}

func attrInts(n *Node, name string) ([]int64, bool) {
	if a := attr(n, name); a != nil {
		return a.Ints, true
	}
	return nil, false
}

func attrString(n *Node, name, def string) string {
	if a := attr(n, name); a != nil {
		return string(a.S)
	}
	return def
}
