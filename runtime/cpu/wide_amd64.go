//go:build amd64

package cpu

import (
	"os"
	"unsafe"

	xcpu "golang.org/x/sys/cpu"

	"github.com/lqc-dev/lqc/quant"
)

// useAVX512 reports whether the AVX-512 VNNI kernels run (LQC_NOSIMD=1 or
// LQC_NOAVX512=1 turn them off).
var useAVX512 = useAVX2 && xcpu.X86.HasAVX512F && xcpu.X86.HasAVX512BW && xcpu.X86.HasAVX512VNNI &&
	os.Getenv("LQC_NOAVX512") != "1"

func init() {
	if useAVX512 {
		// After dot_amd64.go's init (files init in name order).
		dotQ6_K = fast1[q8KBlock](dotQ6_Kx1AVX512, 210)
		dotQ4_K, dotQ5_K = fast1[q8KBlock](dotQ4_Kx1AVX512, 144), fast1[q8KBlock](dotQ5_Kx1AVX512, 176)
		quantizeQ8Sums = func(dst []q8SumBlock, x []float32) {
			if len(dst) > 0 {
				_ = x[32*len(dst)-1]
				quantizeQ8AVX512(&x[0], (*byte)(unsafe.Pointer(&dst[0])), len(dst))
			}
		}
		quantizeQ8K = func(dst []q8KBlock, x []float32) {
			if len(dst) > 0 {
				_ = x[256*len(dst)-1]
				quantizeQ8KAVX512(&x[0], (*byte)(unsafe.Pointer(&dst[0])), len(dst))
			}
		}
		wideDot = wideDotAVX512
		simd = "AVX2+AVX512-VNNI"
	}
}

// wideKernel is a generated wide kernel: a row's block pairs against one
// or four tokens in the wide layout.
type wideKernel func(w, x, corr, dx *byte, xStride, cStride, pairs int, out *float32)

// wideKernels are the wide kernels of each type and the bytes a pair of
// its blocks takes.
var wideKernels = map[quant.Type]struct {
	pairBytes int
	one, four wideKernel
}{
	quant.Q4_0:   {36, dotQ4_0Widex1, dotQ4_0Widex4},
	quant.IQ4_NL: {36, dotIQ4_NLWidex1, dotIQ4_NLWidex4},
	quant.Q8_0:   {68, dotQ8_0Widex1, dotQ8_0Widex4},
}

// wideDotAVX512 computes out[k] = the dot product of row with token t+k,
// for len(out) (1 or 4) tokens, over block pairs [p0, p0+np).
func wideDotAVX512(typ quant.Type, row []byte, a *wideAct, t, p0, np int, out []float32) {
	nb := 2 * a.pairs
	cStride := a.pairs * 16 * 4
	x := (*byte)(unsafe.Pointer(&a.qs[t*nb*32+p0*64]))
	c := (*byte)(unsafe.Pointer(&a.corr[t*a.pairs*16+p0*16]))
	d := (*byte)(unsafe.Pointer(&a.dv[t*a.pairs*16+p0*16]))
	_ = a.dv[(t+len(out)-1)*a.pairs*16+(p0+np)*16-1]
	k := wideKernels[typ]
	_ = row[k.pairBytes*(p0+np)-1]
	w := &row[k.pairBytes*p0]
	if len(out) == 4 {
		k.four(w, x, c, d, nb*32, cStride, np, &out[0])
	} else {
		k.one(w, x, c, d, 0, 0, np, &out[0])
	}
}
