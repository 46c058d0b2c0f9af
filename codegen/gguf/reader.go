// Package gguf reads and writes GGUF v3, the file format of llama.cpp and
// ollama. The reader maps the file and hands out tensors as lazy ir
// tensors over the mapping; the writer streams tensors one at a time into
// a temporary file beside the target and renames it on success.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/mmap"
	"github.com/lqc-dev/lqc/quant"
)

// Magic is "GGUF" read as a little-endian uint32.
const Magic = 0x46554747

// Version is the GGUF version lqc writes.
const Version = 3

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// maxDims is GGML_MAX_DIMS; maxNameLen is GGML_MAX_NAME less its NUL.
const (
	maxDims    = 4
	maxNameLen = 63
)

// GGUF metadata value types.
const (
	typeUint8   = 0
	typeInt8    = 1
	typeUint16  = 2
	typeInt16   = 3
	typeUint32  = 4
	typeInt32   = 5
	typeFloat32 = 6
	typeBool    = 7
	typeString  = 8
	typeArray   = 9
	typeUint64  = 10
	typeInt64   = 11
	typeFloat64 = 12
)

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name   string
	Type   quant.Type
	Ne     []uint64 // GGML order: Ne[0] is the row length
	Offset uint64   // from the start of the data section
}

// Shape is the row-major shape (Ne reversed).
func (ti TensorInfo) Shape() []int64 {
	s := make([]int64, len(ti.Ne))
	for i, n := range ti.Ne {
		s[len(ti.Ne)-1-i] = int64(n)
	}
	return s
}

// NumElements is the number of values.
func (ti TensorInfo) NumElements() uint64 {
	n := uint64(1)
	for _, d := range ti.Ne {
		n *= d
	}
	return n
}

// NumBytes is the size of the tensor's data.
func (ti TensorInfo) NumBytes() uint64 {
	return ti.NumElements() / uint64(ti.Type.BlockSize()) * uint64(ti.Type.TypeSize())
}

// File is a parsed GGUF file.
type File struct {
	Path       string
	Version    uint32
	Metadata   ir.Metadata
	Tensors    []TensorInfo
	Alignment  uint64
	DataOffset uint64
	data       []byte // the whole file
	unmap      func() error
}

// Open maps and parses a GGUF file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, unmap, err := mmap.Map(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gf, err := Parse(data)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	gf.Path, gf.unmap = path, unmap
	return gf, nil
}

// Close unmaps the file. Tensors handed out must not be read afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap, f.data = nil, nil
	return err
}

// Tensor returns tensor i as a lazy tensor over the mapped file.
func (f *File) Tensor(i int) (*ir.Tensor, error) {
	ti := f.Tensors[i]
	start := f.DataOffset + ti.Offset
	b := f.data[start : start+ti.NumBytes()]
	t, err := ir.FromBytes(ti.Name, ti.Type, ti.Shape(), b)
	if err != nil {
		return nil, err
	}
	if f.unmap != nil { // only mapped pages may be dropped; heap memory must not be
		t.Source().(*ir.BytesSource).OnRelease = func() { mmap.Release(b) }
	}
	return t, nil
}

// TensorData returns the bytes of tensor i.
func (f *File) TensorData(i int) []byte {
	ti := f.Tensors[i]
	start := f.DataOffset + ti.Offset
	return f.data[start : start+ti.NumBytes()]
}

// Parse parses a whole GGUF file held in data. It checks every count,
// length and offset against the size of data, so that a truncated or
// corrupted file yields an error, never a panic or a huge allocation.
func Parse(data []byte) (*File, error) {
	r := &reader{b: data}
	magic := r.u32()
	if r.err == nil && magic != Magic {
		return nil, fmt.Errorf("not a GGUF file (magic %q)", string(data[:4]))
	}
	f := &File{Version: r.u32()}
	if r.err == nil && (f.Version < 2 || f.Version > 3) {
		return nil, fmt.Errorf("unsupported GGUF version %d (lqc reads 2 and 3)", f.Version)
	}
	nTensors, nKV := r.u64(), r.u64()
	if r.err != nil {
		return nil, fmt.Errorf("truncated header: %w", r.err)
	}
	// Each key/value takes at least 13 bytes, each tensor info 28.
	if nKV > uint64(r.left())/13 {
		return nil, fmt.Errorf("header claims %d metadata entries, more than the file can hold", nKV)
	}
	for i := uint64(0); i < nKV && r.err == nil; i++ {
		key := r.str()
		vt := r.u32()
		v := r.value(vt, 0)
		if r.err != nil {
			return nil, fmt.Errorf("metadata entry %d (%q): %w", i, key, r.err)
		}
		if _, dup := f.Metadata.Get(key); dup {
			return nil, fmt.Errorf("metadata key %q appears twice", key)
		}
		f.Metadata = append(f.Metadata, ir.KV{Key: key, Value: v})
	}
	if nTensors > uint64(r.left())/28 {
		return nil, fmt.Errorf("header claims %d tensors, more than the file can hold", nTensors)
	}
	names := map[string]bool{}
	for i := uint64(0); i < nTensors; i++ {
		ti, err := r.tensorInfo()
		if err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, err)
		}
		if names[ti.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", ti.Name)
		}
		names[ti.Name] = true
		f.Tensors = append(f.Tensors, ti)
	}

	f.Alignment = DefaultAlignment
	if v, ok := f.Metadata.Get("general.alignment"); ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("general.alignment %v is not a power of two", v)
		}
		f.Alignment = uint64(a)
	}
	f.DataOffset = alignUp(uint64(r.off), f.Alignment)
	if f.DataOffset > uint64(len(data)) && len(f.Tensors) > 0 {
		return nil, fmt.Errorf("truncated: data section starts at %d, file has %d bytes", f.DataOffset, len(data))
	}
	if err := checkTensorRanges(f, uint64(len(data))); err != nil {
		return nil, err
	}
	f.data = data
	return f, nil
}

func checkTensorRanges(f *File, size uint64) error {
	idx := make([]int, len(f.Tensors))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return f.Tensors[idx[a]].Offset < f.Tensors[idx[b]].Offset })
	var end uint64
	for _, i := range idx {
		ti := f.Tensors[i]
		if ti.Offset%f.Alignment != 0 {
			return fmt.Errorf("tensor %s: offset %d is not aligned to %d", ti.Name, ti.Offset, f.Alignment)
		}
		if ti.Offset < end {
			return fmt.Errorf("tensor %s overlaps the previous tensor", ti.Name)
		}
		n := ti.NumBytes()
		start, over := bits.Add64(f.DataOffset, ti.Offset, 0)
		stop, over2 := bits.Add64(start, n, 0)
		if over != 0 || over2 != 0 || stop > size {
			return fmt.Errorf("truncated: tensor %s needs bytes up to %d, file has %d", ti.Name, stop, size)
		}
		end = ti.Offset + n
	}
	return nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

var errShort = errors.New("unexpected end of file")

// reader decodes little-endian values from a byte slice, remembering the
// first error so that callers can check once.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(r.left()) {
		r.err = errShort
		return nil
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p
}

func (r *reader) u8() uint8 {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if p := r.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if p := r.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if p := r.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *reader) str() string {
	n := r.u64()
	return string(r.take(n))
}

// elemSize is the smallest encoding of one array element of type vt.
func elemSize(vt uint32) uint64 {
	switch vt {
	case typeUint8, typeInt8, typeBool:
		return 1
	case typeUint16, typeInt16:
		return 2
	case typeUint32, typeInt32, typeFloat32:
		return 4
	case typeUint64, typeInt64, typeFloat64, typeString:
		return 8
	case typeArray:
		return 12
	}
	return 0
}

const maxArrayDepth = 4

func (r *reader) value(vt uint32, depth int) any {
	switch vt {
	case typeUint8:
		return r.u8()
	case typeInt8:
		return int8(r.u8())
	case typeUint16:
		return r.u16()
	case typeInt16:
		return int16(r.u16())
	case typeUint32:
		return r.u32()
	case typeInt32:
		return int32(r.u32())
	case typeFloat32:
		return math.Float32frombits(r.u32())
	case typeBool:
		b := r.u8()
		if r.err == nil && b > 1 {
			r.err = fmt.Errorf("bool value %d", b)
		}
		return b == 1
	case typeString:
		return r.str()
	case typeUint64:
		return r.u64()
	case typeInt64:
		return int64(r.u64())
	case typeFloat64:
		return math.Float64frombits(r.u64())
	case typeArray:
		if depth >= maxArrayDepth {
			r.err = fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
			return nil
		}
		et, n := r.u32(), r.u64()
		if r.err != nil {
			return nil
		}
		es := elemSize(et)
		if es == 0 {
			r.err = fmt.Errorf("unknown array element type %d", et)
			return nil
		}
		if n > uint64(r.left())/es {
			r.err = fmt.Errorf("array of %d elements runs past the end of the file", n)
			return nil
		}
		return r.array(et, int(n), depth)
	}
	if r.err == nil {
		r.err = fmt.Errorf("unknown value type %d", vt)
	}
	return nil
}

func readArray[T any](r *reader, n int, get func() T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = get()
	}
	return out
}

func (r *reader) array(et uint32, n, depth int) any {
	switch et {
	case typeUint8:
		return readArray(r, n, r.u8)
	case typeInt8:
		return readArray(r, n, func() int8 { return int8(r.u8()) })
	case typeUint16:
		return readArray(r, n, r.u16)
	case typeInt16:
		return readArray(r, n, func() int16 { return int16(r.u16()) })
	case typeUint32:
		return readArray(r, n, r.u32)
	case typeInt32:
		return readArray(r, n, func() int32 { return int32(r.u32()) })
	case typeFloat32:
		return readArray(r, n, func() float32 { return math.Float32frombits(r.u32()) })
	case typeBool:
		return readArray(r, n, func() bool { return r.value(typeBool, depth).(bool) })
	case typeString:
		return readArray(r, n, r.str)
	case typeUint64:
		return readArray(r, n, r.u64)
	case typeInt64:
		return readArray(r, n, func() int64 { return int64(r.u64()) })
	case typeFloat64:
		return readArray(r, n, func() float64 { return math.Float64frombits(r.u64()) })
	default: // typeArray
		out := make([]any, n)
		for i := range out {
			out[i] = r.value(typeArray, depth+1)
			if r.err != nil {
				return nil
			}
		}
		return out
	}
}

func (r *reader) tensorInfo() (TensorInfo, error) {
	var ti TensorInfo
	ti.Name = r.str()
	nd := r.u32()
	if r.err != nil {
		return ti, r.err
	}
	if len(ti.Name) > maxNameLen {
		return ti, fmt.Errorf("tensor name %.70q... is longer than %d bytes", ti.Name, maxNameLen)
	}
	if nd == 0 || nd > maxDims {
		return ti, fmt.Errorf("tensor %s has %d dimensions (1 to %d allowed)", ti.Name, nd, maxDims)
	}
	total := uint64(1)
	for range nd {
		d := r.u64()
		if r.err == nil && (d == 0 || d > math.MaxInt64) {
			return ti, fmt.Errorf("tensor %s has dimension %d", ti.Name, d)
		}
		hi, lo := bits.Mul64(total, d)
		if hi != 0 || lo > math.MaxInt64 {
			return ti, fmt.Errorf("tensor %s: element count overflows", ti.Name)
		}
		total = lo
		ti.Ne = append(ti.Ne, d)
	}
	ti.Type = quant.Type(r.u32())
	ti.Offset = r.u64()
	if r.err != nil {
		return ti, r.err
	}
	if !ti.Type.Known() {
		return ti, fmt.Errorf("tensor %s has unknown type id %d", ti.Name, uint32(ti.Type))
	}
	if ti.Ne[0]%uint64(ti.Type.BlockSize()) != 0 {
		return ti, fmt.Errorf("tensor %s: row length %d is not a multiple of %v's block size %d", ti.Name, ti.Ne[0], ti.Type, ti.Type.BlockSize())
	}
	return ti, nil
}
