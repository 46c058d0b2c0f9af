package ir

import (
	"fmt"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// F32Bytes views float32s as their little-endian bytes (every platform lqc
// builds for is little-endian).
func F32Bytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// BytesSource serves rows from encoded bytes in memory (a slice of an
// mmapped file, or a buffer). OnRelease, when set, is called by Release.
type BytesSource struct {
	Data      []byte
	RowBytes  int64
	OnRelease func()
}

func (s *BytesSource) ReadRows(dst []byte, first, n int64) error {
	copy(dst, s.Data[first*s.RowBytes:(first+n)*s.RowBytes])
	return nil
}

func (s *BytesSource) Bytes() []byte { return s.Data }

func (s *BytesSource) Release() {
	if s.OnRelease != nil {
		s.OnRelease()
	}
}

// FromBytes makes a tensor over encoded bytes already in memory.
func FromBytes(name string, typ quant.Type, shape []int64, data []byte) (*Tensor, error) {
	t := &Tensor{Name: name, Type: typ, Shape: append([]int64(nil), shape...)}
	if err := t.check(); err != nil {
		return nil, err
	}
	if int64(len(data)) != t.NumBytes() {
		return nil, fmt.Errorf("tensor %s: %v%v needs %d bytes, have %d", name, typ, shape, t.NumBytes(), len(data))
	}
	t.src = &BytesSource{Data: data, RowBytes: t.RowBytes()}
	return t, nil
}

// FromF32 makes an F32 tensor over values in memory.
func FromF32(name string, shape []int64, v []float32) (*Tensor, error) {
	return FromBytes(name, quant.F32, shape, F32Bytes(v))
}

// RowFunc computes float32 rows on demand: fill dst (n rows) with rows
// [first, first+n). It must be safe for concurrent calls.
type RowFunc func(dst []float32, first, n int64) error

type funcSource struct {
	typ    quant.Type
	rowLen int64
	fn     RowFunc
}

func (s *funcSource) ReadRows(dst []byte, first, n int64) error {
	if s.typ == quant.F32 {
		return s.fn(unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/4), first, n)
	}
	buf := getF32(int(n * s.rowLen))
	defer putF32(buf)
	if err := s.fn(*buf, first, n); err != nil {
		return err
	}
	return s.typ.Encode(dst, *buf)
}

// Computed makes a tensor whose rows fn computes when read, stored as typ.
func Computed(name string, typ quant.Type, shape []int64, fn RowFunc) *Tensor {
	return NewTensor(name, typ, shape, &funcSource{typ: typ, rowLen: shape[len(shape)-1], fn: fn})
}

// Convert returns t stored as typ: rows are decoded to float32 and
// re-encoded as they are read. Converting to the tensor's own type returns
// t unchanged, so bytes are copied, not re-quantized.
func Convert(t *Tensor, typ quant.Type) (*Tensor, error) {
	if t.Type == typ {
		return t, nil
	}
	if !t.Type.CanConvert() {
		return nil, fmt.Errorf("tensor %s: lqc cannot decode type %v", t.Name, t.Type)
	}
	if !typ.CanConvert() {
		return nil, fmt.Errorf("tensor %s: lqc cannot encode type %v", t.Name, typ)
	}
	if !typ.Fits(t.RowLen()) {
		return nil, fmt.Errorf("tensor %s: row length %d does not fit %v's %d-value blocks", t.Name, t.RowLen(), typ, typ.BlockSize())
	}
	return &Tensor{Name: t.Name, Type: typ, Shape: t.Shape, src: &convertSource{in: t, typ: typ}}, nil
}

// ConvertWeighted is Convert with importance weights: every row is
// quantized weighting column j by weights[j] (llama.cpp's imatrix path),
// where typ's quantizer takes weights.
func ConvertWeighted(t *Tensor, typ quant.Type, weights []float32) (*Tensor, error) {
	if int64(len(weights)) != t.RowLen() {
		return nil, fmt.Errorf("tensor %s: %d importance weights for rows of %d", t.Name, len(weights), t.RowLen())
	}
	c, err := Convert(t, typ)
	if err != nil || c == t {
		return c, err
	}
	c.src.(*convertSource).weights = weights
	return c, nil
}

type convertSource struct {
	in      *Tensor
	typ     quant.Type
	weights []float32 // importance of each column, or nil
}

func (s *convertSource) ReadRows(dst []byte, first, n int64) error {
	buf := getF32(int(n * s.in.RowLen()))
	defer putF32(buf)
	if err := s.in.ReadRowsF32(*buf, first, n); err != nil {
		return err
	}
	if s.weights != nil {
		return s.typ.EncodeWeighted(dst, *buf, int(s.in.RowLen()), s.weights)
	}
	return s.typ.Encode(dst, *buf)
}

func (s *convertSource) Release() { s.in.Release() }

// PermuteRows returns a tensor whose row r is row perm(r) of t. perm must
// be a permutation of [0, t.Rows()).
func PermuteRows(t *Tensor, perm func(r int64) int64) *Tensor {
	return &Tensor{Name: t.Name, Type: t.Type, Shape: t.Shape, src: &permuteSource{in: t, perm: perm}}
}

type permuteSource struct {
	in   *Tensor
	perm func(int64) int64
}

func (s *permuteSource) ReadRows(dst []byte, first, n int64) error {
	rb := s.in.RowBytes()
	for i := range n {
		if err := s.in.ReadRows(dst[i*rb:(i+1)*rb], s.perm(first+i), 1); err != nil {
			return err
		}
	}
	return nil
}

func (s *permuteSource) Release() { s.in.Release() }

// Transpose returns the transpose of a 2-D tensor of a plain (one value
// per block) type: shape [a, b] becomes [b, a].
func Transpose(t *Tensor) (*Tensor, error) {
	if len(t.Shape) != 2 || t.Type.BlockSize() != 1 {
		return nil, fmt.Errorf("tensor %s: can only transpose 2-D unquantized tensors, have %v%v", t.Name, t.Type, t.Shape)
	}
	return &Tensor{Name: t.Name, Type: t.Type, Shape: []int64{t.Shape[1], t.Shape[0]}, src: &transposeSource{in: t}}, nil
}

type transposeSource struct{ in *Tensor }

func (s *transposeSource) ReadRows(dst []byte, first, n int64) error {
	in := s.in
	es := int64(in.Type.TypeSize())
	rows, cols := in.Shape[0], in.Shape[1] // output row r is input column r
	// Columns are strided through the whole input: read it in place when
	// it is mapped, else decode it once per call.
	src, err := in.Bytes()
	if err != nil {
		return err
	}
	for r := range n {
		c := first + r
		out := dst[r*rows*es : (r+1)*rows*es]
		for i := range rows {
			copy(out[i*es:(i+1)*es], src[(i*cols+c)*es:(i*cols+c+1)*es])
		}
	}
	return nil
}

func (s *transposeSource) Release() { s.in.Release() }

// Reshape returns t under another shape with the same number of values,
// lazily: for plain (one value per block) types the row-major bytes are
// the same, only cut into rows of another length.
func Reshape(t *Tensor, shape []int64) (*Tensor, error) {
	r := &Tensor{Name: t.Name, Type: t.Type, Shape: append([]int64(nil), shape...)}
	if t.Type.BlockSize() != 1 || r.check() != nil || r.NumElements() != t.NumElements() {
		return nil, fmt.Errorf("tensor %s: cannot reshape %v%v to %v", t.Name, t.Type, t.Shape, shape)
	}
	r.src = &reshapeSource{in: t, rowBytes: r.RowBytes()}
	return r, nil
}

type reshapeSource struct {
	in       *Tensor
	rowBytes int64
}

func (s *reshapeSource) ReadRows(dst []byte, first, n int64) error {
	in := s.in
	if m, ok := in.src.(Mapped); ok {
		copy(dst, m.Bytes()[first*s.rowBytes:(first+n)*s.rowBytes])
		return nil
	}
	// The input rows that cover bytes [first·rowBytes, (first+n)·rowBytes).
	ib := in.RowBytes()
	if ib == 0 {
		return nil
	}
	lo, hi := first*s.rowBytes, (first+n)*s.rowBytes
	r0, r1 := lo/ib, (hi+ib-1)/ib
	buf := make([]byte, (r1-r0)*ib)
	if err := in.ReadRows(buf, r0, r1-r0); err != nil {
		return err
	}
	copy(dst, buf[lo-r0*ib:hi-r0*ib])
	return nil
}

func (s *reshapeSource) Release() { s.in.Release() }
