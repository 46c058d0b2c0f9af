package quant

import (
	"encoding/binary"
	"math"
)

// The 32-value block types. Each encoder follows the arithmetic of
// llama.cpp's reference quantizer (quantize_row_*_ref in ggml-quants.c)
// step by step, in float32, with explicit conversions so that no multiply
// and add are fused: the golden files were made without FMA.

const qk = 32

// amaxSigned returns the value of largest magnitude in b (the first one
// on ties) and its magnitude, as ggml's "if (amax < fabsf(v))" loop finds
// them. For floats that are not NaN, magnitudes order like the integers of
// their bits without the sign, so the maximum is found with integer
// compares (no unpredictable branches), then located.
func amaxSigned(b []float32) (amax, max float32) {
	var m uint32
	for _, v := range b {
		m = bitsMax(m, math.Float32bits(v)&0x7FFFFFFF)
	}
	if m == 0 {
		return 0, 0
	}
	if m > 0x7F800000 { // a NaN: ggml's comparisons skip it
		for _, v := range b {
			if a := abs32(v); amax < a {
				amax, max = a, v
			}
		}
		return amax, max
	}
	for _, v := range b {
		if math.Float32bits(v)&0x7FFFFFFF == m {
			return math.Float32frombits(m), v
		}
	}
	return 0, 0 // unreachable
}

// q8Amax is ggml's "amax = MAX(amax, fabsf(v))" over a block, NaNs
// included as that macro treats them.
func q8Amax(b []float32) float32 {
	var m uint32
	for _, v := range b {
		m = bitsMax(m, math.Float32bits(v)&0x7FFFFFFF)
	}
	if m <= 0x7F800000 {
		return math.Float32frombits(m)
	}
	var amax float32
	for _, v := range b {
		if a := abs32(v); !(amax > a) { // MAX(amax, a)
			amax = a
		}
	}
	return amax
}

func bitsMax(a, b uint32) uint32 {
	if b > a {
		return b
	}
	return a
}

func minMax(b []float32) (min, max float32) {
	min, max = math.MaxFloat32, -math.MaxFloat32
	for _, v := range b {
		if v < min {
			min = v
		}
		if v > max {
			max = v
		}
	}
	return min, max
}

func inverse(d float32) float32 {
	if d != 0 {
		return 1 / d
	}
	return 0
}

// truncInt8 converts like C's (int8_t) cast of a float in range.
func truncInt8(f float32) int8 { return int8(int32(f)) }

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, FP32ToFP16(f)) }
func getF16(b []byte) float32    { return fp16Table[binary.LittleEndian.Uint16(b)] }

// q8_0: {f16 d; int8 qs[32]}
type q8_0Codec struct{}

func (q8_0Codec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qk:], dst[34:] {
		b := src[:qk]
		amax := q8Amax(b)
		d := amax / 127
		id := inverse(d)
		putF16(dst, d)
		for j, v := range b {
			dst[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
		}
	}
}

func (q8_0Codec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qk:], src[34:] {
		d := getF16(src)
		for j := range qk {
			dst[j] = float32(int8(src[2+j])) * d
		}
	}
}

// q4_0: {f16 d; uint8 qs[16]}, value = (q - 8) * d
type q4_0Codec struct{}

func (q4_0Codec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qk:], dst[18:] {
		b := src[:qk]
		_, mx := amaxSigned(b)
		d := mx / -8
		id := inverse(d)
		putF16(dst, d)
		for j := range qk / 2 {
			x0 := float32(b[j] * id)
			x1 := float32(b[qk/2+j] * id)
			xi0 := min(15, uint8(truncInt8(x0+8.5)))
			xi1 := min(15, uint8(truncInt8(x1+8.5)))
			dst[2+j] = xi0 | xi1<<4
		}
	}
}

func (q4_0Codec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qk:], src[18:] {
		d := getF16(src)
		for j := range qk / 2 {
			q := src[2+j]
			dst[j] = float32(int(q&0x0F)-8) * d
			dst[j+qk/2] = float32(int(q>>4)-8) * d
		}
	}
}

// q4_1: {f16 d; f16 m; uint8 qs[16]}, value = q * d + m
type q4_1Codec struct{}

func (q4_1Codec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qk:], dst[20:] {
		b := src[:qk]
		mn, mx := minMax(b)
		d := (mx - mn) / 15
		id := inverse(d)
		putF16(dst, d)
		putF16(dst[2:], mn)
		for j := range qk / 2 {
			x0 := float32(float32(b[j]-mn) * id)
			x1 := float32(float32(b[qk/2+j]-mn) * id)
			xi0 := min(15, uint8(truncInt8(x0+0.5)))
			xi1 := min(15, uint8(truncInt8(x1+0.5)))
			dst[4+j] = xi0 | xi1<<4
		}
	}
}

func (q4_1Codec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qk:], src[20:] {
		d, m := getF16(src), getF16(src[2:])
		for j := range qk / 2 {
			q := src[4+j]
			dst[j] = float32(float32(q&0x0F)*d) + m
			dst[j+qk/2] = float32(float32(q>>4)*d) + m
		}
	}
}

// q5_0: {f16 d; uint32 qh; uint8 qs[16]}, value = (q - 16) * d
type q5_0Codec struct{}

func (q5_0Codec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qk:], dst[22:] {
		b := src[:qk]
		_, mx := amaxSigned(b)
		d := mx / -16
		id := inverse(d)
		putF16(dst, d)
		var qh uint32
		for j := range qk / 2 {
			x0 := float32(b[j] * id)
			x1 := float32(b[qk/2+j] * id)
			xi0 := min(31, uint8(truncInt8(x0+16.5)))
			xi1 := min(31, uint8(truncInt8(x1+16.5)))
			dst[6+j] = xi0&0x0F | (xi1&0x0F)<<4
			qh |= uint32(xi0&0x10) >> 4 << j
			qh |= uint32(xi1&0x10) >> 4 << (j + qk/2)
		}
		binary.LittleEndian.PutUint32(dst[2:], qh)
	}
}

func (q5_0Codec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qk:], src[22:] {
		d := getF16(src)
		qh := binary.LittleEndian.Uint32(src[2:])
		for j := range qk / 2 {
			q := src[6+j]
			h0 := byte(qh>>j<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			dst[j] = float32(int(q&0x0F|h0)-16) * d
			dst[j+qk/2] = float32(int(q>>4|h1)-16) * d
		}
	}
}

// q5_1: {f16 d; f16 m; uint32 qh; uint8 qs[16]}, value = q * d + m
type q5_1Codec struct{}

func (q5_1Codec) encode(dst []byte, src []float32) {
	for ; len(src) > 0; src, dst = src[qk:], dst[24:] {
		b := src[:qk]
		mn, mx := minMax(b)
		d := (mx - mn) / 31
		id := inverse(d)
		putF16(dst, d)
		putF16(dst[2:], mn)
		var qh uint32
		for j := range qk / 2 {
			x0 := float32(float32(b[j]-mn) * id)
			x1 := float32(float32(b[qk/2+j]-mn) * id)
			// C's (uint8_t) cast of a non-negative float truncates.
			xi0 := uint8(int32(x0 + 0.5))
			xi1 := uint8(int32(x1 + 0.5))
			dst[8+j] = xi0&0x0F | (xi1&0x0F)<<4
			qh |= uint32(xi0&0x10) >> 4 << j
			qh |= uint32(xi1&0x10) >> 4 << (j + qk/2)
		}
		binary.LittleEndian.PutUint32(dst[4:], qh)
	}
}

func (q5_1Codec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qk:], src[24:] {
		d, m := getF16(src), getF16(src[2:])
		qh := binary.LittleEndian.Uint32(src[4:])
		for j := range qk / 2 {
			q := src[8+j]
			h0 := byte(qh>>j<<4) & 0x10
			h1 := byte(qh>>(j+12)) & 0x10
			dst[j] = float32(float32(q&0x0F|h0)*d) + m
			dst[j+qk/2] = float32(float32(q>>4|h1)*d) + m
		}
	}
}
