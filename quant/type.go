// Package quant holds GGML's tensor data types: their block layouts, and
// encoders and decoders that reproduce llama.cpp's reference quantizers
// byte for byte.
//
// A Type is a GGML type id (the value stored in GGUF tensor infos). Every
// id GGML defines has traits (name, block size, bytes per block) so that
// files holding types lqc cannot encode still load and inspect; only the
// types with a registered codec can be encoded or decoded.
package quant

import (
	"fmt"
	"sort"
	"strings"
)

// Type is a GGML tensor type id, as stored in GGUF.
type Type uint32

// GGML type ids (ggml.h, enum ggml_type). The numbering is part of the GGUF
// format and must not change.
const (
	F32     Type = 0
	F16     Type = 1
	Q4_0    Type = 2
	Q4_1    Type = 3
	Q5_0    Type = 6
	Q5_1    Type = 7
	Q8_0    Type = 8
	Q8_1    Type = 9
	Q2_K    Type = 10
	Q3_K    Type = 11
	Q4_K    Type = 12
	Q5_K    Type = 13
	Q6_K    Type = 14
	Q8_K    Type = 15
	IQ2_XXS Type = 16
	IQ2_XS  Type = 17
	IQ3_XXS Type = 18
	IQ1_S   Type = 19
	IQ4_NL  Type = 20
	IQ3_S   Type = 21
	IQ2_S   Type = 22
	IQ4_XS  Type = 23
	I8      Type = 24
	I16     Type = 25
	I32     Type = 26
	I64     Type = 27
	F64     Type = 28
	IQ1_M   Type = 29
	BF16    Type = 30
	TQ1_0   Type = 34
	TQ2_0   Type = 35
	MXFP4   Type = 39
)

// Element types GGML has no id for, which lqc's runtime uses for the
// activations of imported graphs (ONNX's unsigned integers and booleans).
// Their ids lie far above GGML's; they never appear in a GGUF file.
const (
	U8   Type = 1000
	U16  Type = 1001
	U32  Type = 1002
	U64  Type = 1003
	Bool Type = 1004
)

// InGGML reports whether t is a GGML type id that GGUF files may hold.
func (t Type) InGGML() bool { return t.Known() && t < U8 }

// IsInt reports whether t is an integer element type (bool excluded).
func (t Type) IsInt() bool {
	switch t {
	case I8, I16, I32, I64, U8, U16, U32, U64, I4, U4, I2, U2:
		return true
	}
	return false
}

// IsFloat reports whether t is an unquantized floating-point type.
func (t Type) IsFloat() bool {
	return t == F32 || t == F16 || t == BF16 || t == F64 || t.IsMiniFloat()
}

// qkK is the super-block size of the K-quants (QK_K in ggml).
const qkK = 256

// codec converts between float32 values and a type's encoded blocks. Both
// directions work on whole blocks: len(src) and len(dst) are multiples of
// the block size (or of the block's byte size).
type codec interface {
	encode(dst []byte, src []float32)
	decode(dst []float32, src []byte)
}

type traits struct {
	name      string
	blockSize int // values per block
	typeSize  int // bytes per block
	quantized bool
	codec     codec // nil: lqc can read the bytes but not convert them
}

var table = map[Type]traits{
	F32:     {"F32", 1, 4, false, f32Codec{}},
	F16:     {"F16", 1, 2, false, f16Codec{}},
	BF16:    {"BF16", 1, 2, false, bf16Codec{}},
	F64:     {"F64", 1, 8, false, nil},
	I8:      {"I8", 1, 1, false, nil},
	I16:     {"I16", 1, 2, false, nil},
	I32:     {"I32", 1, 4, false, nil},
	I64:     {"I64", 1, 8, false, nil},
	Q4_0:    {"Q4_0", 32, 18, true, q4_0Codec{}},
	Q4_1:    {"Q4_1", 32, 20, true, q4_1Codec{}},
	Q5_0:    {"Q5_0", 32, 22, true, q5_0Codec{}},
	Q5_1:    {"Q5_1", 32, 24, true, q5_1Codec{}},
	Q8_0:    {"Q8_0", 32, 34, true, q8_0Codec{}},
	Q8_1:    {"Q8_1", 32, 36, true, nil},
	Q2_K:    {"Q2_K", qkK, 84, true, q2_KCodec{}},
	Q3_K:    {"Q3_K", qkK, 110, true, q3_KCodec{}},
	Q4_K:    {"Q4_K", qkK, 144, true, q4_KCodec{}},
	Q5_K:    {"Q5_K", qkK, 176, true, q5_KCodec{}},
	Q6_K:    {"Q6_K", qkK, 210, true, q6_KCodec{}},
	Q8_K:    {"Q8_K", qkK, 292, true, nil},
	IQ2_XXS: {"IQ2_XXS", qkK, 66, true, nil},
	IQ2_XS:  {"IQ2_XS", qkK, 74, true, nil},
	IQ3_XXS: {"IQ3_XXS", qkK, 98, true, nil},
	IQ1_S:   {"IQ1_S", qkK, 50, true, nil},
	IQ4_NL:  {"IQ4_NL", 32, 18, true, iq4_NLCodec{}},
	IQ3_S:   {"IQ3_S", qkK, 110, true, nil},
	IQ2_S:   {"IQ2_S", qkK, 82, true, nil},
	IQ4_XS:  {"IQ4_XS", qkK, 136, true, iq4_XSCodec{}},
	IQ1_M:   {"IQ1_M", qkK, 56, true, nil},
	TQ1_0:   {"TQ1_0", qkK, 54, true, nil},
	TQ2_0:   {"TQ2_0", qkK, 66, true, nil},
	MXFP4:   {"MXFP4", 32, 17, true, nil},
	U8:      {"U8", 1, 1, false, nil},
	U16:     {"U16", 1, 2, false, nil},
	U32:     {"U32", 1, 4, false, nil},
	U64:     {"U64", 1, 8, false, nil},
	Bool:    {"BOOL", 1, 1, false, nil},
}

// Known reports whether t is a GGML type id lqc knows the layout of.
func (t Type) Known() bool { _, ok := table[t]; return ok }

func (t Type) String() string {
	if tr, ok := table[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("type(%d)", uint32(t))
}

// BlockSize is the number of values one block holds (1 for plain types).
func (t Type) BlockSize() int { return table[t].blockSize }

// TypeSize is the number of bytes one block takes.
func (t Type) TypeSize() int { return table[t].typeSize }

// Quantized reports whether t is a block-quantized type.
func (t Type) Quantized() bool { return table[t].quantized }

// CanConvert reports whether lqc can encode and decode t.
func (t Type) CanConvert() bool { return table[t].codec != nil }

// Fits reports whether a row of n values can be stored in t (n must be a
// whole number of blocks).
func (t Type) Fits(n int64) bool {
	bs := int64(t.BlockSize())
	return bs > 0 && n%bs == 0
}

// RowSize is the number of bytes a row of n values takes. n must fit (see
// Fits).
func (t Type) RowSize(n int64) int64 {
	return n / int64(t.BlockSize()) * int64(t.TypeSize())
}

// Encode converts src (a whole number of blocks) into dst, which must be
// exactly RowSize(len(src)) bytes.
func (t Type) Encode(dst []byte, src []float32) error {
	c, err := t.checked(int64(len(src)), len(dst))
	if err != nil {
		return err
	}
	c.encode(dst, src)
	return nil
}

// Decode converts src into dst (a whole number of blocks of values).
func (t Type) Decode(dst []float32, src []byte) error {
	c, err := t.checked(int64(len(dst)), len(src))
	if err != nil {
		return err
	}
	c.decode(dst, src)
	return nil
}

func (t Type) checked(values int64, nbytes int) (codec, error) {
	tr, ok := table[t]
	if !ok || tr.codec == nil {
		return nil, fmt.Errorf("quant: %v: lqc cannot convert this type", t)
	}
	if !t.Fits(values) {
		return nil, fmt.Errorf("quant: %v: %d values are not a whole number of %d-value blocks", t, values, tr.blockSize)
	}
	if int64(nbytes) != t.RowSize(values) {
		return nil, fmt.Errorf("quant: %v: %d values need %d bytes, buffer has %d", t, values, t.RowSize(values), nbytes)
	}
	return tr.codec, nil
}

// ParseType looks a type up by its GGML name, case-insensitively ("q4_0",
// "Q8_0", "bf16").
func ParseType(name string) (Type, error) {
	for t, tr := range table {
		if strings.EqualFold(tr.name, name) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown GGML type %q", name)
}

// ConvertibleTypes lists the GGML types lqc can encode, in id order.
func ConvertibleTypes() []Type {
	var ts []Type
	for t, tr := range table {
		if tr.codec != nil && t.InGGML() {
			ts = append(ts, t)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}
