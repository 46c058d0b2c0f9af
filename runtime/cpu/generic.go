package cpu

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// The generic kernels: every element type and shape the general tensor
// ops (ir/tensorops.go) take, for imported graphs. They favour clarity
// over speed; the transformer ops keep their fast kernels.
//
// Storage: F32, and F16/BF16 (as float32 values rounded to their type
// after every op), are []float32; F64 []float64; the integers their Go
// slices; Bool []bool.

type number interface {
	~float32 | ~float64 | ~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64
}

// allocData returns zeroed storage for n elements of t.
func allocData(t quant.Type, n int) any {
	switch t {
	case quant.F64:
		return make([]float64, n)
	case quant.I8, quant.I4, quant.I2:
		return make([]int8, n)
	case quant.I16:
		return make([]int16, n)
	case quant.I32:
		return make([]int32, n)
	case quant.I64:
		return make([]int64, n)
	case quant.U8, quant.U4, quant.U2:
		return make([]uint8, n)
	case quant.U16:
		return make([]uint16, n)
	case quant.U32:
		return make([]uint32, n)
	case quant.U64:
		return make([]uint64, n)
	case quant.Bool:
		return make([]bool, n)
	}
	return make([]float32, n)
}

// dense returns a tensor's elements as its storage slice; weights are
// decoded (F16/BF16 matrices to float32).
func dense(t *lqrt.Tensor) (any, error) {
	w, ok := t.Data.(*weight)
	if !ok {
		if t.Stride0 != 0 {
			return nil, fmt.Errorf("cpu: a strided view reached a generic kernel")
		}
		return t.Data, nil
	}
	if w.typ == quant.F32 {
		return bytesF32(w.data), nil
	}
	v := make([]float32, w.rows*w.rowLen)
	if err := w.typ.Decode(v, w.data); err != nil {
		return nil, err
	}
	return v, nil
}

// fromBytes decodes little-endian bytes of type t into storage.
func fromBytes(t quant.Type, b []byte) (any, error) {
	size := t.TypeSize()
	if size == 0 || len(b)%size != 0 {
		return nil, fmt.Errorf("cpu: %d bytes of %v", len(b), t)
	}
	n := len(b) / size
	d := allocData(t, n)
	switch v := d.(type) {
	case []float32:
		switch t {
		case quant.F32:
			copy(v, bytesF32(b))
		default: // F16, BF16 and the small floats
			if err := t.Decode(v, b); err != nil {
				return nil, err
			}
		}
	case []float64:
		for i := range v {
			v[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case []int8:
		for i := range v {
			v[i] = int8(b[i])
		}
	case []uint8:
		copy(v, b)
	case []bool:
		for i := range v {
			v[i] = b[i] != 0
		}
	case []int16:
		for i := range v {
			v[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case []uint16:
		for i := range v {
			v[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
	case []int32:
		for i := range v {
			v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case []uint32:
		for i := range v {
			v[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
	case []int64:
		for i := range v {
			v[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case []uint64:
		for i := range v {
			v[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
	}
	return d, nil
}

// toBytes encodes storage of type t as little-endian bytes.
func toBytes(t quant.Type, d any) ([]byte, error) {
	switch v := d.(type) {
	case []float32:
		b := make([]byte, t.TypeSize()*len(v))
		if err := t.Encode(b, v); err != nil {
			return nil, err
		}
		return b, nil
	case []float64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
		}
		return b, nil
	case []int8:
		b := make([]byte, len(v))
		for i, x := range v {
			b[i] = byte(x)
		}
		return b, nil
	case []uint8:
		return append([]byte(nil), v...), nil
	case []bool:
		b := make([]byte, len(v))
		for i, x := range v {
			if x {
				b[i] = 1
			}
		}
		return b, nil
	case []int16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(x))
		}
		return b, nil
	case []uint16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], x)
		}
		return b, nil
	case []int32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
		}
		return b, nil
	case []uint32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], x)
		}
		return b, nil
	case []int64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
		}
		return b, nil
	case []uint64:
		b := make([]byte, 8*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint64(b[8*i:], x)
		}
		return b, nil
	}
	return nil, fmt.Errorf("cpu: cannot encode %T", d)
}

// roundTo rounds float32 storage to t's precision (F16, BF16).
func roundTo(t quant.Type, v []float32) {
	switch t {
	case quant.F16:
		for i, x := range v {
			v[i] = quant.FP16ToFP32(quant.FP32ToFP16(x))
		}
	case quant.BF16:
		for i, x := range v {
			v[i] = quant.BF16ToFP32(quant.FP32ToBF16(x))
		}
	default:
		// Small floats round without saturating: a value already in the
		// format (infinity included) stays; Cast and QuantizeLinear
		// saturate before this when asked to.
		if t.IsMiniFloat() {
			for i, x := range v {
				v[i] = quant.RoundMini(t, x, false)
			}
		}
	}
}

// roundOne rounds one value to the precision of float type t.
func roundOne(t quant.Type, v float64) float64 {
	switch t {
	case quant.F32:
		return float64(float32(v))
	case quant.F16:
		return float64(quant.FP16ToFP32(quant.FP32ToFP16(float32(v))))
	case quant.BF16:
		return float64(quant.BF16ToFP32(quant.FP32ToBF16(float32(v))))
	}
	if t.IsMiniFloat() {
		return float64(quant.RoundMini(t, float32(v), false))
	}
	return v
}

// Write copies little-endian bytes of t's element type into t.
func (b *Backend) Write(t *lqrt.Tensor, src []byte) error {
	d, err := fromBytes(t.Type, src)
	if err != nil {
		return err
	}
	if n := lenOf(d); n != t.Len() {
		return fmt.Errorf("cpu: %d values for %v%v", n, t.Type, t.Shape)
	}
	t.Data = d
	return nil
}

// Read copies t's elements out as little-endian bytes.
func (b *Backend) Read(t *lqrt.Tensor) ([]byte, error) {
	d, err := dense(t)
	if err != nil {
		return nil, err
	}
	return toBytes(t.Type, d)
}

func lenOf(d any) int {
	switch v := d.(type) {
	case []float32:
		return len(v)
	case []float64:
		return len(v)
	case []int8:
		return len(v)
	case []int16:
		return len(v)
	case []int32:
		return len(v)
	case []int64:
		return len(v)
	case []uint8:
		return len(v)
	case []uint16:
		return len(v)
	case []uint32:
		return len(v)
	case []uint64:
		return len(v)
	case []bool:
		return len(v)
	}
	return -1
}

// iter walks the elements of an output shape with, for each input, the
// flat index of the element numpy broadcasting pairs with it.
type iter struct {
	shape   []int
	strides [][]int // per input, per output axis; 0 on broadcast axes
}

func newIter(out []int, ins ...[]int) *iter {
	it := &iter{shape: out}
	for _, s := range ins {
		st := make([]int, len(out))
		stride := 1
		for i := len(s) - 1; i >= 0; i-- {
			o := len(out) - len(s) + i
			if s[i] != 1 {
				st[o] = stride
			}
			stride *= s[i]
		}
		it.strides = append(it.strides, st)
	}
	return it
}

// each calls fn with the output index and each input's index.
func (it *iter) each(fn func(o int, idx []int)) {
	n := 1
	for _, d := range it.shape {
		n *= d
	}
	if n == 0 {
		return
	}
	ctr := make([]int, len(it.shape))
	idx := make([]int, len(it.strides))
	for o := 0; o < n; o++ {
		fn(o, idx)
		for ax := len(it.shape) - 1; ax >= 0; ax-- {
			ctr[ax]++
			for k := range idx {
				idx[k] += it.strides[k][ax]
			}
			if ctr[ax] < it.shape[ax] {
				break
			}
			for k := range idx {
				idx[k] -= it.strides[k][ax] * ctr[ax]
			}
			ctr[ax] = 0
		}
	}
}

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// stridesOf returns row-major strides.
func stridesOf(s []int) []int {
	st := make([]int, len(s))
	n := 1
	for i := len(s) - 1; i >= 0; i-- {
		st[i] = n
		n *= s[i]
	}
	return st
}
