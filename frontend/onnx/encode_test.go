package onnx

import (
	"encoding/binary"
	"math"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// A minimal ONNX writer for tests: enough of ModelProto to build the
// graphs the bad-input tests and the fuzz seeds need.

type pb []byte

func (b pb) str(num protowire.Number, s string) pb {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func (b pb) msg(num protowire.Number, m pb) pb {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

func (b pb) varint(num protowire.Number, v int64) pb {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// valueInfo is a ValueInfoProto of a tensor; dims < 0 are symbolic.
func valueInfo(name string, elem int32, dims ...int64) pb {
	var shape pb
	for _, d := range dims {
		if d < 0 {
			shape = shape.msg(1, pb(nil).str(2, "n"))
		} else {
			shape = shape.msg(1, pb(nil).varint(1, d))
		}
	}
	tensorType := pb(nil).varint(1, int64(elem)).msg(2, shape)
	return pb(nil).str(1, name).msg(2, pb(nil).msg(1, tensorType))
}

// floatTensor is a TensorProto with raw float32 data.
func floatTensor(name string, dims []int64, v ...float32) pb {
	t := pb(nil)
	for _, d := range dims {
		t = t.varint(1, d)
	}
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return t.varint(2, 1).str(8, name).msg(9, raw)
}

// externalTensor is a float32 TensorProto whose data lives in location.
func externalTensor(name string, dims []int64, location string, offset, length int64) pb {
	t := pb(nil)
	for _, d := range dims {
		t = t.varint(1, d)
	}
	t = t.varint(2, 1).str(8, name)
	t = t.msg(13, pb(nil).str(1, "location").str(2, location))
	if offset >= 0 {
		t = t.msg(13, pb(nil).str(1, "offset").str(2, strconv.FormatInt(offset, 10)))
	}
	if length >= 0 {
		t = t.msg(13, pb(nil).str(1, "length").str(2, strconv.FormatInt(length, 10)))
	}
	return t.varint(14, 1)
}

// node is a NodeProto.
func node(op, name string, inputs, outputs []string, attrs ...pb) pb {
	n := pb(nil)
	for _, in := range inputs {
		n = n.str(1, in)
	}
	for _, out := range outputs {
		n = n.str(2, out)
	}
	n = n.str(3, name).str(4, op)
	for _, a := range attrs {
		n = n.msg(5, a)
	}
	return n
}

// intsAttr is an AttributeProto of type INTS.
func intsAttr(name string, v ...int64) pb {
	a := pb(nil).str(1, name)
	for _, x := range v {
		a = a.varint(8, x)
	}
	return a.varint(20, AttrInts)
}

// model wraps graph parts (nodes, initializers, inputs, outputs) into a
// ModelProto at opset 21.
func model(nodes, inits, inputs, outputs []pb) []byte {
	g := pb(nil).str(2, "test")
	for _, n := range nodes {
		g = g.msg(1, n)
	}
	for _, t := range inits {
		g = g.msg(5, t)
	}
	for _, in := range inputs {
		g = g.msg(11, in)
	}
	for _, out := range outputs {
		g = g.msg(12, out)
	}
	m := pb(nil).varint(1, 10).msg(8, pb(nil).str(1, "").varint(2, 21)).msg(7, g)
	return m
}
