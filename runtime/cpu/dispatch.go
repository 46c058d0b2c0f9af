package cpu

// The kernels the CPU backend calls. They start as the portable Go
// versions; dot_amd64.go and dot_arm64.go swap in SIMD versions where the
// CPU has them.
var (
	dotF32    = dotF32Go
	dotF32x4  = dotF32x4Go
	dotF16    = dotF16Go
	dotBF16   = dotBF16Go
	axpy      = axpyGo
	dotQ4_0   = dotQ4_0Go
	dotQ4_1   = dotQ4_1Go
	dotQ5_0   = dotQ5_0Go
	dotQ5_1   = dotQ5_1Go
	dotQ8_0   = dotQ8_0Go
	dotQ6_K   = dotQ6_KGo
	dotQ4_K   = dotQ4_KGo
	dotIQ4_NL = dotIQ4_NLGo
	dotIQ4_XS = dotIQ4_XSGo
	dotQ2_K   = dotQ2_KGo
	dotQ3_K   = dotQ3_KGo
	dotQ5_K   = dotQ5_KGo
	simd      = "portable Go"

	// dot4 kernels take the activations of four tokens at once (nb blocks
	// each, one after the other), unpacking each weight block once.
	dotQ4_0x4   = dot4Of(&dotQ4_0)
	dotQ8_0x4   = dot4Of(&dotQ8_0)
	dotIQ4_NLx4 = dot4Of(&dotIQ4_NL)
	dotQ5_0x4   = dot4Of(&dotQ5_0)
	dotQ4_1x4   = dot4Of(&dotQ4_1)
	dotQ5_1x4   = dot4Of(&dotQ5_1)
	dotQ4_Kx4   = dot4Of(&dotQ4_K)
	dotQ5_Kx4   = dot4Of(&dotQ5_K)
	dotIQ4_XSx4 = dot4Of(&dotIQ4_XS)
	dotQ2_Kx4   = dot4Of(&dotQ2_K)
	dotQ3_Kx4   = dot4Of(&dotQ3_K)
	dotQ6_Kx4   = dot4Of(&dotQ6_K)
)

// actBlock is a block of quantized activations: 32 values (q8Block) or
// 256 (q8KBlock).
type actBlock interface{ q8Block | q8KBlock }

// dot4Of makes a four-token kernel of four calls to a one-token kernel.
func dot4Of[B actBlock](dot *func([]byte, []B) float32) func(w []byte, x []B, nb int, out *[4]float32) {
	return func(w []byte, x []B, nb int, out *[4]float32) {
		for t := range 4 {
			out[t] = (*dot)(w, x[t*nb:(t+1)*nb])
		}
	}
}

func simdName() string { return simd }
