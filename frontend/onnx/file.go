package onnx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/mmap"
	"github.com/lqc-dev/lqc/quant"
)

// File is an ONNX model mapped into memory, with the external data files
// its tensors name, mapped on first use.
type File struct {
	Path  string
	Model *Model

	dir     string
	unmap   func() error
	extData map[string][]byte
	extFree []func() error
}

// Open maps and decodes an ONNX model.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, unmap, err := mmap.Map(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := DecodeModel(data)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Path: path, Model: m, dir: filepath.Dir(path), unmap: unmap, extData: map[string][]byte{}}, nil
}

// Close unmaps the model and its external data.
func (f *File) Close() error {
	var first error
	for _, free := range f.extFree {
		if err := free(); err != nil && first == nil {
			first = err
		}
	}
	f.extFree, f.extData = nil, nil
	if f.unmap != nil {
		if err := f.unmap(); err != nil && first == nil {
			first = err
		}
		f.unmap = nil
	}
	return first
}

// elemTypes maps ONNX's TensorProto.DataType onto lqc's element types.
var elemTypes = map[int32]quant.Type{
	1: quant.F32, 2: quant.U8, 3: quant.I8, 4: quant.U16, 5: quant.I16, 6: quant.I32, 7: quant.I64,
	9: quant.Bool, 10: quant.F16, 11: quant.F64, 12: quant.U32, 13: quant.U64, 16: quant.BF16,
	17: quant.F8E4M3FN, 18: quant.F8E4M3FNUZ, 19: quant.F8E5M2, 20: quant.F8E5M2FNUZ,
	21: quant.U4, 22: quant.I4, 23: quant.F4E2M1, 24: quant.F8E8M0, 25: quant.U2, 26: quant.I2,
}

var elemTypeNames = map[int32]string{8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128"}

// packedBits is the width of the element types ONNX packs several to a
// byte (low bits first); lqc keeps one per byte.
func packedBits(t quant.Type) int {
	switch t {
	case quant.I4, quant.U4, quant.F4E2M1:
		return 4
	case quant.I2, quant.U2:
		return 2
	}
	return 8
}

// unpack spreads n packed values of bits each into one byte apiece,
// sign-extending the signed integer types.
func unpack(packed []byte, n int64, bits int, t quant.Type) ([]byte, error) {
	if want := (n*int64(bits) + 7) / 8; int64(len(packed)) != want {
		return nil, fmt.Errorf("%d packed %v values need %d bytes, the file gives %d", n, t, want, len(packed))
	}
	out := make([]byte, n)
	mask := byte(1<<bits - 1)
	per := int64(8 / bits)
	for i := range n {
		v := packed[i/per] >> (uint(i%per) * uint(bits)) & mask
		if (t == quant.I4 || t == quant.I2) && v&(1<<(bits-1)) != 0 {
			v |= ^mask // sign-extend
		}
		out[i] = v
	}
	return out, nil
}

// ElemType is the lqc type of an ONNX element type.
func ElemType(dt int32) (quant.Type, error) {
	if t, ok := elemTypes[dt]; ok {
		return t, nil
	}
	if n, ok := elemTypeNames[dt]; ok {
		return 0, fmt.Errorf("element type %s is not supported", n)
	}
	return 0, fmt.Errorf("unknown element type %d", dt)
}

// ONNXType is the ONNX element type of an lqc type (for Cast's "to").
func ONNXType(t quant.Type) int32 {
	for dt, q := range elemTypes {
		if q == t {
			return dt
		}
	}
	return 0
}

// Values decodes a TensorProto into an lqc tensor (its bytes in the
// element type's little-endian layout), reading external data through
// f. Shapes may hold zeros and be empty (a scalar).
func (f *File) Values(t *Tensor) (*ir.Tensor, error) {
	if t == nil {
		return nil, errors.New("a tensor attribute holds no tensor")
	}
	typ, err := ElemType(t.DataType)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if t.Segmented {
		return nil, fmt.Errorf("tensor %s: segmented tensors are not supported", t.Name)
	}
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || (d > 0 && n > math.MaxInt64/d) {
			return nil, fmt.Errorf("tensor %s: bad dimensions %v", t.Name, t.Dims)
		}
		n *= d
	}
	size := int64(typ.TypeSize())
	if n > math.MaxInt64/size {
		return nil, fmt.Errorf("tensor %s: bad dimensions %v", t.Name, t.Dims)
	}
	want := n * size
	bits := packedBits(typ)
	stored := n
	if bits < 8 {
		stored = (n*int64(bits) + 7) / 8
	}
	data, err := f.payload(t, typ, stored)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	if bits < 8 {
		if data, err = unpack(data, n, bits, typ); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
	}
	if int64(len(data)) != want {
		return nil, fmt.Errorf("tensor %s: %v%v needs %d bytes, the file gives %d", t.Name, typ, t.Dims, want, len(data))
	}
	return ir.FromBytes(t.Name, typ, t.Dims, data)
}

// payload returns the tensor's bytes from raw_data, external data or the
// typed fields.
func (f *File) payload(t *Tensor, typ quant.Type, n int64) ([]byte, error) {
	if t.DataLocation == 1 || t.External != nil {
		return f.external(t)
	}
	if t.Raw != nil {
		return t.Raw, nil
	}
	switch {
	case len(t.Strings) > 0:
		return nil, errors.New("string tensors are not supported")
	case t.Floats != nil:
		if typ != quant.F32 || int64(len(t.Floats)) != n {
			return nil, fmt.Errorf("float_data holds %d values for %v of %d", len(t.Floats), typ, n)
		}
		b := make([]byte, 4*n)
		for i, v := range t.Floats {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b, nil
	case t.Int32s != nil:
		if int64(len(t.Int32s)) != n {
			return nil, fmt.Errorf("int32_data holds %d values for %d", len(t.Int32s), n)
		}
		size := typ.TypeSize()
		b := make([]byte, int64(size)*n)
		for i, v := range t.Int32s {
			switch size {
			case 1:
				b[i] = byte(v)
			case 2: // int16, uint16, float16, bfloat16: the low 16 bits
				binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
			case 4:
				binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
			default:
				return nil, fmt.Errorf("int32_data for %v", typ)
			}
		}
		return b, nil
	case t.Int64s != nil:
		if typ != quant.I64 || int64(len(t.Int64s)) != n {
			return nil, fmt.Errorf("int64_data holds %d values for %v of %d", len(t.Int64s), typ, n)
		}
		b := make([]byte, 8*n)
		for i, v := range t.Int64s {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
		}
		return b, nil
	case t.Doubles != nil:
		if typ != quant.F64 || int64(len(t.Doubles)) != n {
			return nil, fmt.Errorf("double_data holds %d values for %v of %d", len(t.Doubles), typ, n)
		}
		b := make([]byte, 8*n)
		for i, v := range t.Doubles {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(v))
		}
		return b, nil
	case t.Uint64s != nil:
		if (typ != quant.U32 && typ != quant.U64) || int64(len(t.Uint64s)) != n {
			return nil, fmt.Errorf("uint64_data holds %d values for %v of %d", len(t.Uint64s), typ, n)
		}
		size := typ.TypeSize()
		b := make([]byte, int64(size)*n)
		for i, v := range t.Uint64s {
			if size == 4 {
				binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
			} else {
				binary.LittleEndian.PutUint64(b[8*i:], v)
			}
		}
		return b, nil
	}
	if n == 0 {
		return []byte{}, nil
	}
	return nil, errors.New("no data")
}

// external reads external_data: location (relative to the model's
// folder, never outside it), offset and length, from the mapped file.
func (f *File) external(t *Tensor) ([]byte, error) {
	loc := t.External["location"]
	if loc == "" {
		return nil, errors.New("external data without a location")
	}
	if filepath.IsAbs(loc) || strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, `\`) {
		return nil, fmt.Errorf("external data location %q is absolute: only files beside the model are read", loc)
	}
	clean := filepath.Clean(filepath.FromSlash(loc))
	if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("external data location %q leaves the model's folder", loc)
	}
	data, ok := f.extData[clean]
	if !ok {
		path := filepath.Join(f.dir, clean)
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return nil, fmt.Errorf("external data %q: %w", loc, err)
		}
		dir, err := filepath.EvalSymlinks(f.dir)
		if err != nil {
			return nil, err
		}
		if rel, err := filepath.Rel(dir, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil, fmt.Errorf("external data location %q leads outside the model's folder (a symbolic link)", loc)
		}
		fh, err := os.Open(real)
		if err != nil {
			return nil, err
		}
		data, unmap, err := mmap.Map(fh)
		fh.Close()
		if err != nil {
			return nil, fmt.Errorf("external data %q: %w", loc, err)
		}
		f.extData[clean] = data
		f.extFree = append(f.extFree, unmap)
		return slice(data, t, loc)
	}
	return slice(data, t, loc)
}

func slice(data []byte, t *Tensor, loc string) ([]byte, error) {
	off, length := int64(0), int64(len(data))
	if s, ok := t.External["offset"]; ok {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || v > int64(len(data)) {
			return nil, fmt.Errorf("external data %q: offset %q outside the file (%d bytes)", loc, s, len(data))
		}
		off = v
		length = int64(len(data)) - off
	}
	if s, ok := t.External["length"]; ok {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 || v > int64(len(data))-off {
			return nil, fmt.Errorf("external data %q: length %q runs past the file (%d bytes)", loc, s, len(data))
		}
		length = v
	}
	return data[off : off+length], nil
}

// ReadTensor reads a serialized TensorProto (the .pb files of ONNX test
// data sets), external data resolved beside it.
func ReadTensor(path string) (*ir.Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := decodeTensor(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := &File{Path: path, dir: filepath.Dir(path), extData: map[string][]byte{}}
	defer f.Close()
	v, err := f.Values(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// External data is mapped only until Close: keep a copy.
	data, err := v.Bytes()
	if err != nil {
		return nil, err
	}
	return ir.FromBytes(v.Name, v.Type, v.Shape, append([]byte(nil), data...))
}
