//go:build arm64

package cpu

import (
	"os"

	xcpu "golang.org/x/sys/cpu"

	"github.com/lqc-dev/lqc/quant"
)

// useNEON reports whether the NEON kernels (dot_arm64.s) run: Advanced
// SIMD is part of every arm64 CPU, so only LQC_NOSIMD=1 turns them off.
// Where the CPU has the dot-product extension (FEAT_DotProd: Cortex-A55/
// A76 and later, Apple M1, Graviton 2 and later) the integer kernels use
// SDOT; otherwise their ARMv8.0 twins (Cortex-A53/A72: Raspberry Pi 3
// and 4).
var (
	useNEON = os.Getenv("LQC_NOSIMD") != "1"
	useSDOT = useNEON && xcpu.ARM64.HasASIMDDP && os.Getenv("LQC_NOSDOT") != "1"
)

// neonKernels are the integer kernels of one instruction set.
type neonKernels struct {
	q4_0, q4_0x4, q8_0, q8_0x4, iq4nl, iq4nlx4 simdKernel
	q4KSums, q6KSums                           func(w, x *byte, nb int, sums *int32)
}

func init() {
	if !useNEON {
		return
	}
	k := neonKernels{dotQ4_0x1NEON, dotQ4_0x4NEON, dotQ8_0x1NEON, dotQ8_0x4NEON, dotIQ4_NLx1NEON, dotIQ4_NLx4NEON, q4KSumsNEON, q6KSumsNEON}
	simd = "NEON"
	if useSDOT {
		k = neonKernels{dotQ4_0x1SDOT, dotQ4_0x4SDOT, dotQ8_0x1SDOT, dotQ8_0x4SDOT, dotIQ4_NLx1SDOT, dotIQ4_NLx4SDOT, q4KSumsSDOT, q6KSumsSDOT}
		simd = "NEON+dotprod"
	}
	dotQ4_0, dotQ4_0x4 = fast1[q8Block](k.q4_0, 18), fast4[q8Block](k.q4_0x4, 18)
	dotQ8_0, dotQ8_0x4 = fast1[q8Block](k.q8_0, 34), fast4[q8Block](k.q8_0x4, 34)
	dotIQ4_NL, dotIQ4_NLx4 = fast1[q8Block](k.iq4nl, 18), fast4[q8Block](k.iq4nlx4, 18)
	dotQ4_K = kSums(k.q4KSums, 144, 8, addQ4_K)
	dotQ6_K = kSums(k.q6KSums, 210, 16, addQ6_K)
	dotF32 = f32Fast(dotF32NEON)
	dotF16, dotBF16 = halfFast(dotF16NEON, quant.F16), halfFast(dotBF16NEON, quant.BF16)
	decodeHalf[quant.F16], decodeHalf[quant.BF16] = decodeFast(decodeF16NEON, quant.F16), decodeFast(decodeBF16NEON, quant.BF16)
}

// kSums makes a K-quant dot product of a kernel that writes per blocks of
// size bytes the integer sums (per of them) of their sub-blocks, and of
// the Go code that scales them (shared with the portable twin).
func kSums(k func(w, x *byte, nb int, sums *int32), size, per int, add func(float32, []byte, *q8KBlock, []int32) float32) func([]byte, []q8KBlock) float32 {
	const chunk = 16 // super-blocks per call: 4096 values, sums on the stack
	return func(w []byte, x []q8KBlock) float32 {
		var sums [chunk * 16]int32
		var sum float32
		for b0 := 0; b0 < len(x); b0 += chunk {
			n := min(chunk, len(x)-b0)
			_ = w[size*(b0+n)-1]
			k(&w[size*b0], actPtr(x[b0:]), n, &sums[0])
			for b := range n {
				sum = add(sum, w[size*(b0+b):], &x[b0+b], sums[per*b:per*(b+1)])
			}
		}
		return sum
	}
}
