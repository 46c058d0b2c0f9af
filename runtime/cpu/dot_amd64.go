//go:build amd64

package cpu

import (
	"os"

	xcpu "golang.org/x/sys/cpu"

	"github.com/lqc-dev/lqc/quant"
)

// useAVX2 reports whether the AVX2 kernels run; LQC_NOSIMD=1 turns them
// off (to compare, or to rule them out).
var useAVX2 = xcpu.X86.HasAVX2 && xcpu.X86.HasFMA && xcpu.X86.HasF16C && os.Getenv("LQC_NOSIMD") != "1"

func init() {
	if !useAVX2 {
		return
	}
	dotF32, dotF32x4 = f32Fast(dotF32AVX2), dotF32x4Fast
	dotQ4_0, dotQ8_0 = fast1[q8Block](dotQ4_0x1AVX2, 18), fast1[q8Block](dotQ8_0x1AVX2, 34)
	dotQ4_0x4, dotQ8_0x4 = fast4[q8Block](dotQ4_0x4AVX2, 18), fast4[q8Block](dotQ8_0x4AVX2, 34)
	dotIQ4_NL, dotQ5_0 = fast1[q8Block](dotIQ4_NLx1AVX2, 18), fast1[q8Block](dotQ5_0x1AVX2, 22)
	dotIQ4_NLx4, dotQ5_0x4 = fast4[q8Block](dotIQ4_NLx4AVX2, 18), fast4[q8Block](dotQ5_0x4AVX2, 22)
	dotQ4_1, dotQ5_1 = fast1[q8Block](dotQ4_1x1AVX2, 20), fast1[q8Block](dotQ5_1x1AVX2, 24)
	dotQ4_1x4, dotQ5_1x4 = fast4[q8Block](dotQ4_1x4AVX2, 20), fast4[q8Block](dotQ5_1x4AVX2, 24)
	dotQ4_K, dotQ5_K = fast1[q8KBlock](dotQ4_Kx1AVX2, 144), fast1[q8KBlock](dotQ5_Kx1AVX2, 176)
	dotQ4_Kx4, dotQ5_Kx4 = fast4[q8KBlock](dotQ4_Kx4AVX2, 144), fast4[q8KBlock](dotQ5_Kx4AVX2, 176)
	dotIQ4_XS, dotIQ4_XSx4 = fast1[q8KBlock](dotIQ4_XSx1AVX2, 136), fast4[q8KBlock](dotIQ4_XSx4AVX2, 136)
	dotQ6_K, dotQ6_Kx4 = fast1[q8KBlock](dotQ6_Kx1AVX2, 210), fast4[q8KBlock](dotQ6_Kx4AVX2, 210)
	dotQ2_K, dotQ2_Kx4 = fast1[q8KBlock](dotQ2_Kx1AVX2, 84), fast4[q8KBlock](dotQ2_Kx4AVX2, 84)
	dotQ3_K, dotQ3_Kx4 = fast1[q8KBlock](dotQ3_Kx1AVX2, 110), fast4[q8KBlock](dotQ3_Kx4AVX2, 110)
	axpy = axpyFast
	dotF16, dotBF16 = halfFast(dotF16AVX2, quant.F16), halfFast(dotBF16AVX2, quant.BF16)
	silu, expShift = siluFast, expShiftFast
	decodeHalf[quant.F16], decodeHalf[quant.BF16] = decodeFast(decodeF16AVX2, quant.F16), decodeFast(decodeBF16AVX2, quant.BF16)
	simd = "AVX2"
}

// dotF32x4Fast is dotF32x4Go with the kernel over whole groups of eight
// values and the Go loop over the rest.
func dotF32x4Fast(w, x []float32, stride int, out *[4]float32) {
	n := len(w) &^ 7
	*out = [4]float32{}
	if n > 0 {
		_ = x[3*stride+len(w)-1]
		dotF32x4AVX2(&w[0], &x[0], 4*stride, n, &out[0])
	}
	for t := range out {
		xt := x[t*stride:]
		for i := n; i < len(w); i++ {
			out[t] += w[i] * xt[i]
		}
	}
}

// siluFast runs the kernel over whole groups of eight values and over the
// rest padded to eight, so every value gets the same exp.
func siluFast(out, x []float32) {
	n := len(x) &^ 7
	if n > 0 {
		_ = out[n-1]
		siluAVX2(&out[0], &x[0], n)
	}
	if n < len(x) {
		var in, res [8]float32
		copy(in[:], x[n:])
		siluAVX2(&res[0], &in[0], 8)
		copy(out[n:len(x)], res[:])
	}
}

// expShiftFast is siluFast's counterpart for dst = e^(src−shift).
func expShiftFast(dst, src []float32, shift float32) {
	n := len(src) &^ 7
	if n > 0 {
		_ = dst[n-1]
		expShiftAVX2(&dst[0], &src[0], shift, n)
	}
	if n < len(src) {
		var in, res [8]float32
		copy(in[:], src[n:])
		expShiftAVX2(&res[0], &in[0], shift, 8)
		copy(dst[n:len(src)], res[:])
	}
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

// gemmKernels are the micro-kernels this CPU can run, best first.
func gemmKernels() map[string]*gemmKernel {
	k := map[string]*gemmKernel{}
	if useAVX2 {
		k["AVX2"] = &gemmKernel{mr: 6, nr: 16, fn: gemmF32x6x16AVX2,
			narrow: &gemmKernel{mr: 6, nr: 8, fn: gemmF32x6x8AVX2}}
	}
	if useAVX512 {
		k["AVX-512"] = &gemmKernel{mr: 8, nr: 32, fn: gemmF32x8x32AVX512,
			narrow: &gemmKernel{mr: 8, nr: 16, fn: gemmF32x8x16AVX512, narrow: k["AVX2"].narrow}}
	}
	return k
}

func init() {
	k := gemmKernels()
	gemmMicro = k["AVX2"]
	if k["AVX-512"] != nil {
		gemmMicro = k["AVX-512"]
	}
}
