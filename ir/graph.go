package ir

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/quant"
)

// Dim is one dimension of a shape: a known size, or a symbol such as
// "seq" for sizes fixed only at run time.
type Dim struct {
	Size int64
	Sym  string
}

// D makes a known dimension; Sym makes a symbolic one.
func D(n int64) Dim       { return Dim{Size: n} }
func Sym(s string) Dim    { return Dim{Sym: s} }
func (d Dim) Known() bool { return d.Sym == "" }

func (d Dim) String() string {
	if d.Sym != "" {
		return d.Sym
	}
	return strconv.FormatInt(d.Size, 10)
}

// Shape is a row-major list of dimensions.
type Shape []Dim

// Dims makes a shape of known sizes.
func Dims(ns ...int64) Shape {
	s := make(Shape, len(ns))
	for i, n := range ns {
		s[i] = D(n)
	}
	return s
}

func (s Shape) Equal(o Shape) bool {
	if len(s) != len(o) {
		return false
	}
	for i := range s {
		if s[i] != o[i] {
			return false
		}
	}
	return true
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Value is an SSA value of the graph: a graph input, a weight, or the
// output of a node.
type Value struct {
	ID     int
	Name   string
	Weight *Tensor // non-nil for weights; their type and shape are the tensor's
	Def    *Node   // the node producing the value; nil for inputs and weights
	typ    quant.Type
	shape  Shape
}

// Type is the value's element type: F32 or I32 for activations, the
// storage type for weights.
func (v *Value) Type() quant.Type {
	if v.Weight != nil {
		return v.Weight.Type
	}
	return v.typ
}

// Shape is the value's shape.
func (v *Value) Shape() Shape {
	if v.Weight != nil {
		return Dims(v.Weight.Shape...)
	}
	return v.shape
}

// Ref is how the printer and error messages name the value.
func (v *Value) Ref() string {
	if v.Weight != nil {
		return "@" + v.Weight.Name
	}
	if v.Name != "" {
		return "%" + v.Name
	}
	return "%" + strconv.Itoa(v.ID)
}

// Attrs are a node's static parameters. Values are int64, float64, bool,
// string or []int64.
type Attrs map[string]any

func (a Attrs) Int(k string) int64     { v, _ := a[k].(int64); return v }
func (a Attrs) Float(k string) float64 { v, _ := a[k].(float64); return v }
func (a Attrs) Bool(k string) bool     { v, _ := a[k].(bool); return v }
func (a Attrs) Str(k string) string    { v, _ := a[k].(string); return v }
func (a Attrs) Ints(k string) []int64  { v, _ := a[k].([]int64); return v }
func (a Attrs) Has(k string) bool      { _, ok := a[k]; return ok }

// Node applies an operation to input values, defining output values.
type Node struct {
	Op      string
	Inputs  []*Value
	Outputs []*Value
	Attrs   Attrs
}

// Graph is a dataflow graph in SSA form, with nodes in topological order.
type Graph struct {
	Name    string
	Inputs  []*Value
	Outputs []*Value
	Weights []*Value
	Nodes   []*Node
	nextID  int
}

// NewGraph makes an empty graph.
func NewGraph(name string) *Graph { return &Graph{Name: name} }

func (g *Graph) newValue() *Value {
	v := &Value{ID: g.nextID}
	g.nextID++
	return v
}

// Input adds a graph input.
func (g *Graph) Input(name string, t quant.Type, s Shape) *Value {
	v := g.newValue()
	v.Name, v.typ, v.shape = name, t, s
	g.Inputs = append(g.Inputs, v)
	return v
}

// AddWeight adds a weight value for t.
func (g *Graph) AddWeight(t *Tensor) *Value {
	v := g.newValue()
	v.Weight = t
	g.Weights = append(g.Weights, v)
	return v
}

// WeightValue returns the weight value named name, or nil.
func (g *Graph) WeightValue(name string) *Value {
	for _, w := range g.Weights {
		if w.Weight.Name == name {
			return w
		}
	}
	return nil
}

// Apply appends a node running op on the inputs and returns its outputs,
// whose types and shapes the op's inference rule derives.
func (g *Graph) Apply(op string, attrs Attrs, inputs ...*Value) ([]*Value, error) {
	def, ok := ops[op]
	if !ok {
		return nil, fmt.Errorf("unknown op %q", op)
	}
	n := &Node{Op: op, Inputs: inputs, Attrs: attrs}
	outs, err := def.infer(n)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	for _, o := range outs {
		v := g.newValue()
		v.typ, v.shape, v.Def = o.Type, o.Shape, n
		n.Outputs = append(n.Outputs, v)
	}
	g.Nodes = append(g.Nodes, n)
	return n.Outputs, nil
}

// Users returns, for every value, the nodes that read it.
func (g *Graph) Users() map[*Value][]*Node {
	u := map[*Value][]*Node{}
	for _, n := range g.Nodes {
		for _, in := range n.Inputs {
			u[in] = append(u[in], n)
		}
	}
	return u
}

// Fuse replaces the nodes in dead by one node running op on inputs, whose
// single output is out, the value the fused region produced (so its users
// need no change). The new node takes out's producer's place in the
// order; the inputs must be defined before it.
func (g *Graph) Fuse(dead []*Node, op string, attrs Attrs, inputs []*Value, out *Value) *Node {
	n := &Node{Op: op, Inputs: inputs, Outputs: []*Value{out}, Attrs: attrs}
	gone := map[*Node]bool{}
	for _, d := range dead {
		gone[d] = true
	}
	nodes := g.Nodes[:0]
	for _, old := range g.Nodes {
		switch {
		case old == out.Def:
			nodes = append(nodes, n)
		case !gone[old]:
			nodes = append(nodes, old)
		}
	}
	g.Nodes = nodes
	out.Def = n
	return n
}

// Builder appends nodes to a graph and keeps the first error, so that an
// architecture's graph reads as straight-line code.
type Builder struct {
	G   *Graph
	err error
}

// NewBuilder returns a builder for g.
func NewBuilder(g *Graph) *Builder { return &Builder{G: g} }

// Op applies a single-output op; after an error it returns nil and does
// nothing more.
func (b *Builder) Op(op string, attrs Attrs, inputs ...*Value) *Value {
	if b.err != nil {
		return nil
	}
	for _, in := range inputs {
		if in == nil {
			b.err = fmt.Errorf("%s: missing input", op)
			return nil
		}
	}
	outs, err := b.G.Apply(op, attrs, inputs...)
	if err != nil {
		b.err = err
		return nil
	}
	return outs[0]
}

// Named sets the value's name (for the printer) and returns it.
func (b *Builder) Named(v *Value, name string) *Value {
	if v != nil {
		v.Name = name
	}
	return v
}

// Err is the first error met.
func (b *Builder) Err() error { return b.err }

// InsertAfter is Apply with the new node placed right after node at in
// the order (at nil: first), so that a pass can add an op where its
// inputs are ready without moving the rest of the graph.
func (g *Graph) InsertAfter(at *Node, op string, attrs Attrs, inputs ...*Value) ([]*Value, error) {
	outs, err := g.Apply(op, attrs, inputs...)
	if err != nil {
		return nil, err
	}
	n := g.Nodes[len(g.Nodes)-1]
	nodes := g.Nodes[:len(g.Nodes)-1]
	i := 0
	if at != nil {
		for i < len(nodes) && nodes[i] != at {
			i++
		}
		if i == len(nodes) {
			return nil, fmt.Errorf("%s: node %s is not in graph %s", op, at.Op, g.Name)
		}
		i++
	}
	g.Nodes = append(nodes[:i], append([]*Node{n}, nodes[i:]...)...)
	return outs, nil
}

// ReplaceUses makes every node but those in keep, and the graph's
// outputs, read new where they read old.
func (g *Graph) ReplaceUses(old, new *Value, keep ...*Node) {
	skip := map[*Node]bool{}
	for _, n := range keep {
		skip[n] = true
	}
	for _, n := range g.Nodes {
		if skip[n] {
			continue
		}
		for i, in := range n.Inputs {
			if in == old {
				n.Inputs[i] = new
			}
		}
	}
	for i, o := range g.Outputs {
		if o == old {
			g.Outputs[i] = new
		}
	}
}

// Reinfer recomputes every node's output types and shapes from its
// inputs, in order: after a pass changes what a node computes (a KV cache
// read becoming a plain transpose), the values downstream follow. A node
// whose op now derives a different number of outputs is an error.
func (g *Graph) Reinfer() error {
	for i, n := range g.Nodes {
		def, ok := ops[n.Op]
		if !ok {
			return fmt.Errorf("node %d: unknown op %q", i, n.Op)
		}
		sigs, err := def.infer(n)
		if err != nil {
			return fmt.Errorf("node %d (%s): %w", i, n.Op, err)
		}
		if len(sigs) != len(n.Outputs) {
			return fmt.Errorf("node %d (%s): op derives %d outputs, node has %d", i, n.Op, len(sigs), len(n.Outputs))
		}
		for k, o := range n.Outputs {
			o.typ, o.shape = sigs[k].Type, sigs[k].Shape
		}
	}
	return nil
}

// SetAttr changes one attribute of n and gives n the outputs its op now
// derives: the existing ones keep their identity, new ones are appended
// (FlashAttention's log-sum-exp when the backward pass asks for it).
func (g *Graph) SetAttr(n *Node, key string, value any) error {
	attrs := Attrs{}
	for k, v := range n.Attrs {
		attrs[k] = v
	}
	attrs[key] = value
	old := n.Attrs
	n.Attrs = attrs
	sigs, err := ops[n.Op].infer(n)
	if err != nil || len(sigs) < len(n.Outputs) {
		n.Attrs = old
		if err == nil {
			err = fmt.Errorf("attr %s=%v drops outputs", key, value)
		}
		return fmt.Errorf("%s: %w", n.Op, err)
	}
	for k := len(n.Outputs); k < len(sigs); k++ {
		v := g.newValue()
		v.typ, v.shape, v.Def = sigs[k].Type, sigs[k].Shape, n
		n.Outputs = append(n.Outputs, v)
	}
	return nil
}
