package cpu

// The kernels the CPU backend calls. They start as the portable Go
// versions; dot_amd64.go swaps in SIMD versions where the CPU has them.
var (
	dotF32  = dotF32Go
	dotQ4_0 = dotQ4_0Go
	dotQ4_1 = dotQ4_1Go
	dotQ5_0 = dotQ5_0Go
	dotQ5_1 = dotQ5_1Go
	dotQ8_0 = dotQ8_0Go
	dotQ6_K = dotQ6_KGo
	simd    = "portable Go"
)

func simdName() string { return simd }
