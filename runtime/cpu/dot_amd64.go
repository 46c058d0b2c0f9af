//go:build amd64

package cpu

import (
	"os"
	"unsafe"

	xcpu "golang.org/x/sys/cpu"
)

// useAVX2 reports whether the AVX2 kernels run; LQC_NOSIMD=1 turns them
// off (to compare, or to rule them out).
var useAVX2 = xcpu.X86.HasAVX2 && xcpu.X86.HasFMA && xcpu.X86.HasF16C && os.Getenv("LQC_NOSIMD") != "1"

func init() {
	if !useAVX2 {
		return
	}
	dotF32, dotQ4_0, dotQ8_0, dotQ6_K = dotF32Fast, dotQ4_0Fast, dotQ8_0Fast, dotQ6_KFast
	dotQ4_0x4, dotQ8_0x4 = dotQ4_0x4Fast, dotQ8_0x4Fast
	axpy = axpyFast
	simd = "AVX2"
}

func q8Ptr(x []q8Block) *byte { return (*byte)(unsafe.Pointer(unsafe.SliceData(x))) }

const q8Stride = int(unsafe.Sizeof(q8Block{}))

func dotQ4_0Fast(w []byte, x []q8Block) float32 {
	var out float32
	if len(x) > 0 {
		_ = w[18*len(x)-1]
		dotQ4_0x1AVX2(&w[0], q8Ptr(x), 0, len(x), &out)
	}
	return out
}

func dotQ8_0Fast(w []byte, x []q8Block) float32 {
	var out float32
	if len(x) > 0 {
		_ = w[34*len(x)-1]
		dotQ8_0x1AVX2(&w[0], q8Ptr(x), 0, len(x), &out)
	}
	return out
}

func dotQ4_0x4Fast(w []byte, x []q8Block, nb int, out *[4]float32) {
	_, _ = w[18*nb-1], x[4*nb-1]
	dotQ4_0x4AVX2(&w[0], q8Ptr(x), nb*q8Stride, nb, &out[0])
}

func dotQ8_0x4Fast(w []byte, x []q8Block, nb int, out *[4]float32) {
	_, _ = w[34*nb-1], x[4*nb-1]
	dotQ8_0x4AVX2(&w[0], q8Ptr(x), nb*q8Stride, nb, &out[0])
}

func dotQ6_KFast(w []byte, x []q8KBlock) float32 {
	if len(x) == 0 {
		return 0
	}
	_ = w[210*len(x)-1]
	return dotQ6_KAVX2(&w[0], (*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
}

func dotF32Fast(a, b []float32) float32 {
	n := len(a) &^ 7
	var s float32
	if n > 0 {
		_ = b[n-1]
		s = dotF32AVX2(&a[0], &b[0], n)
	}
	for i := n; i < len(a); i++ {
		s += a[i] * b[i]
	}
	return s
}

func axpyFast(y []float32, a float32, x []float32) {
	n := len(y) &^ 7
	if n > 0 {
		_ = x[n-1]
		axpyF32AVX2(a, &x[0], &y[0], n)
	}
	for i := n; i < len(y); i++ {
		y[i] += a * x[i]
	}
}
