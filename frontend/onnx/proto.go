// Package onnx imports ONNX models. This file decodes the ONNX protobuf
// messages lqc needs (ModelProto, GraphProto, NodeProto, AttributeProto,
// TensorProto, ValueInfoProto and the types under them) with protowire,
// field numbers as onnx.proto defines them. Tensor payloads are not
// copied: raw_data stays a slice of the (mapped) file.
package onnx

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Model is a decoded ModelProto.
type Model struct {
	IRVersion int64
	Opsets    map[string]int64 // domain ("" for ai.onnx) → version
	Producer  string
	Graph     *Graph
	Functions int // model-local functions (FunctionProto), not supported
}

// Graph is a decoded GraphProto.
type Graph struct {
	Name         string
	Nodes        []*Node
	Initializers []*Tensor
	Sparse       int // sparse initializers, not supported
	Inputs       []ValueInfo
	Outputs      []ValueInfo
	ValueInfo    []ValueInfo
}

// Node is a decoded NodeProto.
type Node struct {
	Inputs, Outputs []string
	Name, OpType    string
	Domain          string
	Attrs           []*Attr
}

// Attr is a decoded AttributeProto.
type Attr struct {
	Name    string
	Type    int // AttributeProto.AttributeType
	F       float32
	I       int64
	S       []byte
	T       *Tensor
	G       *Graph
	Floats  []float32
	Ints    []int64
	Strings [][]byte
	Tensors []*Tensor
	Graphs  []*Graph
	RefAttr string // ref_attr_name (functions only)
}

// Attribute types.
const (
	AttrFloat   = 1
	AttrInt     = 2
	AttrString  = 3
	AttrTensor  = 4
	AttrGraph   = 5
	AttrFloats  = 6
	AttrInts    = 7
	AttrStrings = 8
	AttrTensors = 9
	AttrGraphs  = 10
)

// Tensor is a decoded TensorProto: its data in whichever field held it.
type Tensor struct {
	Name         string
	Dims         []int64
	DataType     int32
	Raw          []byte
	Floats       []float32
	Int32s       []int32
	Int64s       []int64
	Doubles      []float64
	Uint64s      []uint64
	Strings      [][]byte
	External     map[string]string // external_data key → value
	DataLocation int32
	Segmented    bool
}

// ValueInfo is a decoded ValueInfoProto of a tensor type.
type ValueInfo struct {
	Name      string
	ElemType  int32 // 0 when the type is not a tensor or not given
	Shape     []Dim // nil when no shape is given
	HasShape  bool
	NonTensor bool
}

// Dim is one dimension: a size or a symbolic name.
type Dim struct {
	Value int64
	Param string
	Known bool
}

// maxDepth bounds graph nesting (subgraphs in attributes) so that a
// malicious file cannot exhaust the stack.
const maxDepth = 32

var errTruncated = errors.New("truncated or malformed protobuf")

// field iterates over the fields of a message.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64 // varint / fixed values
	b   []byte // bytes values
}

func fields(b []byte, fn func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.v = uint64(v)
		case protowire.Fixed64Type:
			f.v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) str() string { return string(f.b) }

// varints appends a repeated varint field, packed or not.
func varints(f field, dst []int64) ([]int64, error) {
	if f.typ == protowire.VarintType {
		return append(dst, int64(f.v)), nil
	}
	if f.typ != protowire.BytesType {
		return dst, errTruncated
	}
	for b := f.b; len(b) > 0; {
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, errTruncated
		}
		dst = append(dst, int64(v))
		b = b[n:]
	}
	return dst, nil
}

func fixed32s(f field, dst []uint32) ([]uint32, error) {
	if f.typ == protowire.Fixed32Type {
		return append(dst, uint32(f.v)), nil
	}
	if f.typ != protowire.BytesType || len(f.b)%4 != 0 {
		return dst, errTruncated
	}
	for b := f.b; len(b) > 0; b = b[4:] {
		v, _ := protowire.ConsumeFixed32(b)
		dst = append(dst, v)
	}
	return dst, nil
}

func fixed64s(f field, dst []uint64) ([]uint64, error) {
	if f.typ == protowire.Fixed64Type {
		return append(dst, f.v), nil
	}
	if f.typ != protowire.BytesType || len(f.b)%8 != 0 {
		return dst, errTruncated
	}
	for b := f.b; len(b) > 0; b = b[8:] {
		v, _ := protowire.ConsumeFixed64(b)
		dst = append(dst, v)
	}
	return dst, nil
}

// DecodeModel decodes a ModelProto.
func DecodeModel(b []byte) (*Model, error) {
	m := &Model{Opsets: map[string]int64{}}
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			m.IRVersion = int64(f.v)
		case 2:
			m.Producer = f.str()
		case 7:
			g, err := decodeGraph(f.b, 0)
			if err != nil {
				return fmt.Errorf("graph: %w", err)
			}
			m.Graph = g
		case 8:
			var domain string
			var version int64
			err := fields(f.b, func(f field) error {
				switch f.num {
				case 1:
					domain = f.str()
				case 2:
					version = int64(f.v)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if domain == "ai.onnx" {
				domain = ""
			}
			m.Opsets[domain] = version
		case 25:
			m.Functions++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if m.Graph == nil {
		return nil, errors.New("no graph (not an ONNX model?)")
	}
	return m, nil
}

func decodeGraph(b []byte, depth int) (*Graph, error) {
	if depth > maxDepth {
		return nil, errors.New("subgraphs nested too deeply")
	}
	g := &Graph{}
	err := fields(b, func(f field) error {
		var err error
		switch f.num {
		case 1:
			var n *Node
			if n, err = decodeNode(f.b, depth); err == nil {
				g.Nodes = append(g.Nodes, n)
			}
		case 2:
			g.Name = f.str()
		case 5:
			var t *Tensor
			if t, err = decodeTensor(f.b); err == nil {
				g.Initializers = append(g.Initializers, t)
			}
		case 15:
			g.Sparse++
		case 11, 12, 13:
			var vi ValueInfo
			if vi, err = decodeValueInfo(f.b); err == nil {
				switch f.num {
				case 11:
					g.Inputs = append(g.Inputs, vi)
				case 12:
					g.Outputs = append(g.Outputs, vi)
				default:
					g.ValueInfo = append(g.ValueInfo, vi)
				}
			}
		}
		return err
	})
	return g, err
}

func decodeNode(b []byte, depth int) (*Node, error) {
	n := &Node{}
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			n.Inputs = append(n.Inputs, f.str())
		case 2:
			n.Outputs = append(n.Outputs, f.str())
		case 3:
			n.Name = f.str()
		case 4:
			n.OpType = f.str()
		case 7:
			n.Domain = f.str()
		case 5:
			a, err := decodeAttr(f.b, depth)
			if err != nil {
				return err
			}
			n.Attrs = append(n.Attrs, a)
		}
		return nil
	})
	if n.Domain == "ai.onnx" {
		n.Domain = ""
	}
	return n, err
}

func decodeAttr(b []byte, depth int) (*Attr, error) {
	a := &Attr{}
	err := fields(b, func(f field) error {
		var err error
		switch f.num {
		case 1:
			a.Name = f.str()
		case 20:
			a.Type = int(f.v)
		case 21:
			a.RefAttr = f.str()
		case 2:
			a.F = math.Float32frombits(uint32(f.v))
		case 3:
			a.I = int64(f.v)
		case 4:
			a.S = f.b
		case 5:
			a.T, err = decodeTensor(f.b)
		case 6:
			a.G, err = decodeGraph(f.b, depth+1)
		case 7:
			var v []uint32
			if v, err = fixed32s(f, nil); err == nil {
				for _, x := range v {
					a.Floats = append(a.Floats, math.Float32frombits(x))
				}
			}
		case 8:
			a.Ints, err = varints(f, a.Ints)
		case 9:
			a.Strings = append(a.Strings, f.b)
		case 10:
			var t *Tensor
			if t, err = decodeTensor(f.b); err == nil {
				a.Tensors = append(a.Tensors, t)
			}
		case 11:
			var g *Graph
			if g, err = decodeGraph(f.b, depth+1); err == nil {
				a.Graphs = append(a.Graphs, g)
			}
		}
		return err
	})
	return a, err
}

func decodeTensor(b []byte) (*Tensor, error) {
	t := &Tensor{}
	err := fields(b, func(f field) error {
		var err error
		switch f.num {
		case 1:
			t.Dims, err = varints(f, t.Dims)
		case 2:
			t.DataType = int32(f.v)
		case 3:
			t.Segmented = true
		case 4:
			var v []uint32
			if v, err = fixed32s(f, nil); err == nil {
				for _, x := range v {
					t.Floats = append(t.Floats, math.Float32frombits(x))
				}
			}
		case 5:
			var v []int64
			if v, err = varints(f, nil); err == nil {
				for _, x := range v {
					t.Int32s = append(t.Int32s, int32(x))
				}
			}
		case 6:
			t.Strings = append(t.Strings, f.b)
		case 7:
			t.Int64s, err = varints(f, t.Int64s)
		case 8:
			t.Name = f.str()
		case 9:
			t.Raw = f.b
		case 10:
			var v []uint64
			if v, err = fixed64s(f, nil); err == nil {
				for _, x := range v {
					t.Doubles = append(t.Doubles, math.Float64frombits(x))
				}
			}
		case 11:
			var v []int64
			if v, err = varints(f, nil); err == nil {
				for _, x := range v {
					t.Uint64s = append(t.Uint64s, uint64(x))
				}
			}
		case 13:
			var k, v string
			if err = fields(f.b, func(f field) error {
				switch f.num {
				case 1:
					k = f.str()
				case 2:
					v = f.str()
				}
				return nil
			}); err == nil {
				if t.External == nil {
					t.External = map[string]string{}
				}
				t.External[k] = v
			}
		case 14:
			t.DataLocation = int32(f.v)
		}
		return err
	})
	return t, err
}

func decodeValueInfo(b []byte) (ValueInfo, error) {
	var vi ValueInfo
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			vi.Name = f.str()
		case 2:
			return fields(f.b, func(f field) error { // TypeProto
				if f.num != 1 {
					vi.NonTensor = true
					return nil
				}
				return fields(f.b, func(f field) error { // TypeProto.Tensor
					switch f.num {
					case 1:
						vi.ElemType = int32(f.v)
					case 2:
						vi.HasShape = true
						vi.Shape = []Dim{}
						return fields(f.b, func(f field) error { // TensorShapeProto
							if f.num != 1 {
								return nil
							}
							var d Dim
							err := fields(f.b, func(f field) error {
								switch f.num {
								case 1:
									d.Value, d.Known = int64(f.v), true
								case 2:
									d.Param = f.str()
								}
								return nil
							})
							vi.Shape = append(vi.Shape, d)
							return err
						})
					}
					return nil
				})
			})
		}
		return nil
	})
	return vi, err
}
