//go:build amd64 || arm64

package cpu

import (
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// Wrappers that give the assembly kernels (dot_amd64.s, dot_arm64.s) the
// signatures of their portable twins.

// simdKernel is the signature of the generated kernels: the dot products of
// one weight row with the activations of one or four tokens, token t's
// at x + t·stride.
type simdKernel func(w, x *byte, stride, nb int, out *float32)

func actPtr[B actBlock](x []B) *byte { return (*byte)(unsafe.Pointer(unsafe.SliceData(x))) }

// fast1 wraps a one-token kernel of a type of size bytes per block.
func fast1[B actBlock](k simdKernel, size int) func([]byte, []B) float32 {
	return func(w []byte, x []B) float32 {
		var out float32
		if len(x) > 0 {
			_ = w[size*len(x)-1]
			k(&w[0], actPtr(x), 0, len(x), &out)
		}
		return out
	}
}

// fast4 wraps a four-token kernel.
func fast4[B actBlock](k simdKernel, size int) func([]byte, []B, int, *[4]float32) {
	var b B
	stride := int(unsafe.Sizeof(b))
	return func(w []byte, x []B, nb int, out *[4]float32) {
		_, _ = w[size*nb-1], x[4*nb-1]
		k(&w[0], actPtr(x), nb*stride, nb, &out[0])
	}
}

// f32Fast wraps a float32 dot kernel over whole groups of eight values;
// the rest is added in Go.
func f32Fast(k func(a, b *float32, n int) float32) func(a, b []float32) float32 {
	return func(a, b []float32) float32 {
		n := len(a) &^ 7
		var s float32
		if n > 0 {
			_ = b[n-1]
			s = k(&a[0], &b[0], n)
		}
		for i := n; i < len(a); i++ {
			s += a[i] * b[i]
		}
		return s
	}
}

// halfFast wraps a 16-bit float kernel; the tail of fewer than eight
// values is the portable twin's.
func halfFast(k func(w *byte, x *float32, n int) float32, typ quant.Type) func([]byte, []float32) float32 {
	tail := dotF16Go
	if typ == quant.BF16 {
		tail = dotBF16Go
	}
	return func(w []byte, x []float32) float32 {
		n := len(x) &^ 7
		var s float32
		if n > 0 {
			_ = w[2*n-1]
			s = k(&w[0], &x[0], n)
		}
		if n < len(x) {
			s += tail(w[2*n:], x[n:])
		}
		return s
	}
}

// decodeFast wraps a 16-bit float decoder; the tail of fewer than eight
// values is the codec's.
func decodeFast(k func(dst *float32, src *byte, n int), typ quant.Type) func([]float32, []byte) {
	return func(dst []float32, src []byte) {
		n := len(dst) &^ 7
		if n > 0 {
			_ = src[2*n-1]
			k(&dst[0], &src[0], n)
		}
		if n < len(dst) {
			typ.Decode(dst[n:], src[2*n:])
		}
	}
}
