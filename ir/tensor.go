package ir

import (
	"fmt"
	"sync"

	"github.com/lqc-dev/lqc/quant"
)

// Tensor is a lazy weight: its name, storage type and shape are known up
// front, its bytes are produced only when a consumer reads rows. Passes
// transform a tensor by wrapping its source (permute, transpose, convert,
// quantize), so a whole model can be rewritten without holding it in
// memory; the bytes are computed once, at the end, by whoever streams them
// out (the GGUF writer, the runtime).
//
// Shape is row-major (PyTorch order): the last dimension is the row
// length, GGML's ne[0]. A "row" is one run of Shape[len-1] values, and
// block-quantized types pack every row separately, so rows are the unit of
// streaming for every type.
type Tensor struct {
	Name  string
	Type  quant.Type
	Shape []int64
	src   Source
}

// Source produces a tensor's encoded bytes. ReadRows fills dst, exactly
// n·RowBytes long, with rows [first, first+n). Implementations must be safe
// for concurrent calls on disjoint or overlapping ranges.
type Source interface {
	ReadRows(dst []byte, first, n int64) error
}

// Mapped is implemented by sources whose bytes already lie in memory (an
// mmapped file); consumers may read them without copying.
type Mapped interface {
	Bytes() []byte
}

// Releaser is implemented by sources that can drop resident memory (the
// pages of an mmapped range) once a consumer is done with the tensor.
type Releaser interface {
	Release()
}

// NewTensor makes a tensor over src. It panics on a shape the type cannot
// hold, which is a programming error: frontends validate file contents
// before they build tensors.
func NewTensor(name string, typ quant.Type, shape []int64, src Source) *Tensor {
	t := &Tensor{Name: name, Type: typ, Shape: append([]int64(nil), shape...), src: src}
	if err := t.check(); err != nil {
		panic(err)
	}
	return t
}

func (t *Tensor) check() error {
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %s: bad shape %v", t.Name, t.Shape)
		}
	}
	if !t.Type.Known() {
		return fmt.Errorf("tensor %s: unknown type %v", t.Name, t.Type)
	}
	if !t.Type.Fits(t.RowLen()) {
		return fmt.Errorf("tensor %s: row length %d is not a multiple of %v's block size %d", t.Name, t.RowLen(), t.Type, t.Type.BlockSize())
	}
	return nil
}

// RowLen is the number of values in one row (GGML ne[0]); a scalar
// (no dimensions, as imported graphs have) is one row of one value.
func (t *Tensor) RowLen() int64 {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Rows is the number of rows (the product of all but the last dimension).
func (t *Tensor) Rows() int64 {
	n := int64(1)
	for i := 0; i < len(t.Shape)-1; i++ {
		n *= t.Shape[i]
	}
	return n
}

// NumElements is the number of values.
func (t *Tensor) NumElements() int64 { return t.Rows() * t.RowLen() }

// RowBytes is the encoded size of one row.
func (t *Tensor) RowBytes() int64 { return t.Type.RowSize(t.RowLen()) }

// NumBytes is the encoded size of the whole tensor.
func (t *Tensor) NumBytes() int64 { return t.Rows() * t.RowBytes() }

// ReadRows fills dst with the encoded rows [first, first+n).
func (t *Tensor) ReadRows(dst []byte, first, n int64) error {
	if first < 0 || n < 0 || first+n > t.Rows() {
		return fmt.Errorf("tensor %s: rows [%d, %d) out of range (%d rows)", t.Name, first, first+n, t.Rows())
	}
	if int64(len(dst)) != n*t.RowBytes() {
		return fmt.Errorf("tensor %s: %d rows need %d bytes, buffer has %d", t.Name, n, n*t.RowBytes(), len(dst))
	}
	if err := t.src.ReadRows(dst, first, n); err != nil {
		return fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	return nil
}

// ReadRowsF32 decodes rows [first, first+n) into dst (n·RowLen values).
func (t *Tensor) ReadRowsF32(dst []float32, first, n int64) error {
	if int64(len(dst)) != n*t.RowLen() {
		return fmt.Errorf("tensor %s: %d rows need %d values, buffer has %d", t.Name, n, n*t.RowLen(), len(dst))
	}
	if !t.Type.CanConvert() {
		return fmt.Errorf("tensor %s: lqc cannot decode type %v", t.Name, t.Type)
	}
	if t.Type == quant.F32 {
		return t.ReadRows(F32Bytes(dst), first, n)
	}
	buf := getBytes(int(n * t.RowBytes()))
	defer putBytes(buf)
	if err := t.ReadRows(*buf, first, n); err != nil {
		return err
	}
	return t.Type.Decode(dst, *buf)
}

// Bytes returns the whole encoded tensor: the mapped bytes when the source
// lies in memory, else a fresh copy.
func (t *Tensor) Bytes() ([]byte, error) {
	if m, ok := t.src.(Mapped); ok {
		return m.Bytes(), nil
	}
	b := make([]byte, t.NumBytes())
	return b, t.ReadRows(b, 0, t.Rows())
}

// Float32s decodes the whole tensor.
func (t *Tensor) Float32s() ([]float32, error) {
	v := make([]float32, t.NumElements())
	return v, t.ReadRowsF32(v, 0, t.Rows())
}

// Release lets the source drop resident memory it holds for this tensor.
func (t *Tensor) Release() {
	if r, ok := t.src.(Releaser); ok {
		r.Release()
	}
}

// Source returns the tensor's data source (for wrappers in other packages).
func (t *Tensor) Source() Source { return t.src }

// WithName returns a tensor that shares t's data under another name.
func (t *Tensor) WithName(name string) *Tensor {
	c := *t
	c.Name = name
	return &c
}

func (t *Tensor) String() string {
	return fmt.Sprintf("%s %v%v", t.Name, t.Type, t.Shape)
}

var bytePool sync.Pool

func getBytes(n int) *[]byte {
	if p, ok := bytePool.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

func putBytes(p *[]byte) { bytePool.Put(p) }

var f32Pool sync.Pool

func getF32(n int) *[]float32 {
	if p, ok := f32Pool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]float32, n)
	return &b
}

func putF32(p *[]float32) { f32Pool.Put(p) }
