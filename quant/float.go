package quant

import (
	"encoding/binary"
	"math"
)

// FP32ToFP16 rounds f to IEEE half precision, to nearest with ties to even,
// keeping subnormals, exactly as ggml's portable conversion does (the one
// llama.cpp's reference quantizers use for block scales). Every NaN becomes
// the quiet NaN 0x7E00.
func FP32ToFP16(f float32) uint16 {
	// Scaling by 2^112 then 2^-110 lets the float32 unit do the rounding
	// of the mantissa to 10 bits, subnormals included.
	const scaleToInf = float32(0x1.0p+112)
	const scaleToZero = float32(0x1.0p-110)
	base := float32(float32(abs32(f)*scaleToInf) * scaleToZero)

	w := math.Float32bits(f)
	shl1w := w + w
	sign := w & 0x80000000
	bias := shl1w & 0xFF000000
	if bias < 0x71000000 {
		bias = 0x71000000
	}
	base = math.Float32frombits((bias>>1)+0x07800000) + base
	bits := math.Float32bits(base)
	expBits := (bits >> 13) & 0x00007C00
	mantBits := bits & 0x00000FFF
	nonsign := expBits + mantBits
	if shl1w > 0xFF000000 {
		return uint16(sign>>16) | 0x7E00
	}
	return uint16(sign>>16) | uint16(nonsign)
}

// fp16Table maps every half-precision bit pattern to its float32 value.
var fp16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = fp16ToFP32Slow(uint16(i))
	}
	return &t
}()

// FP16ToFP32 widens a half-precision value exactly.
func FP16ToFP32(h uint16) float32 { return fp16Table[h] }

func fp16ToFP32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1F
	mant := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F: // inf or NaN
		return math.Float32frombits(sign | 0x7F800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	default: // subnormal: value = mant * 2^-24
		v := float32(mant) * float32(0x1.0p-24)
		if sign != 0 {
			v = -v
		}
		return v
	}
}

// FP32ToBF16 rounds f to bfloat16 to nearest with ties to even, as ggml's
// conversion does; NaNs are kept and made quiet.
func FP32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 64
	}
	return uint16((u + (0x7fff + ((u >> 16) & 1))) >> 16)
}

// BF16ToFP32 widens a bfloat16 value exactly.
func BF16ToFP32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func abs32(f float32) float32 { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }

type f32Codec struct{}

func (f32Codec) encode(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func (f32Codec) decode(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

type f16Codec struct{}

func (f16Codec) encode(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToFP16(v))
	}
}

func (f16Codec) decode(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = fp16Table[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

type bf16Codec struct{}

func (bf16Codec) encode(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint16(dst[2*i:], FP32ToBF16(v))
	}
}

func (bf16Codec) decode(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}
