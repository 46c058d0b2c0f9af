//go:build amd64

package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/quant"
)

// The AVX-512 kernels sum two blocks per step with fused multiply-adds,
// so they agree with the portable kernels to rounding, not bit for bit.
func TestWideKernels(t *testing.T) {
	if wideDot == nil {
		t.Skip("no AVX-512 VNNI on this CPU")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0, quant.IQ4_NL} {
		for _, n := range []int{64, 2048, 5632} {
			nb := n / 32
			w := make([]byte, typ.RowSize(int64(n)))
			typ.Encode(w, randRow(rng, n))
			xq := make([]q8Block, 5*nb)
			for k := range 5 {
				quantizeQ8(xq[k*nb:(k+1)*nb], randRow(rng, n))
			}
			wa := toWide(xq, 5, nb, wideZero[typ])
			var four [4]float32
			wideDot(typ, w, &wa, 1, 0, nb/2, four[:])
			for k := range 5 {
				want := dotQ8For(typ)(w, xq[k*nb:(k+1)*nb])
				var one [1]float32
				wideDot(typ, w, &wa, k, 0, nb/2, one[:])
				tol := 1e-5 * (1 + math.Abs(float64(want)))
				if math.Abs(float64(one[0]-want)) > tol {
					t.Errorf("%v n=%d token %d: one-token kernel %v, portable %v", typ, n, k, one[0], want)
				}
				if k >= 1 && k <= 4 && math.Abs(float64(four[k-1]-want)) > tol {
					t.Errorf("%v n=%d token %d: four-token kernel %v, portable %v", typ, n, k, four[k-1], want)
				}
			}
		}
	}
}

func BenchmarkWide(b *testing.B) {
	if wideDot == nil {
		b.Skip("no AVX-512 VNNI")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 2048
	nb := n / 32
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q8_0, quant.IQ4_NL} {
		w := make([]byte, typ.RowSize(n))
		typ.Encode(w, randRow(rng, n))
		xq := make([]q8Block, 4*nb)
		for k := range 4 {
			quantizeQ8(xq[k*nb:(k+1)*nb], randRow(rng, n))
		}
		wa := toWide(xq, 4, nb, wideZero[typ])
		var four [4]float32
		b.Run(typ.String()+"/wide4", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				wideDot(typ, w, &wa, 0, 0, nb/2, four[:])
			}
		})
		b.Run(typ.String()+"/wide1", func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				wideDot(typ, w, &wa, 0, 0, nb/2, four[:1])
			}
		})
		b.Run(typ.String()+"/avx2x4", func(b *testing.B) {
			b.SetBytes(4 * n)
			for b.Loop() {
				dot4For(typ)(w, xq, nb, &four)
			}
		})
		b.Run(typ.String()+"/avx2x1", func(b *testing.B) {
			b.SetBytes(n)
			for b.Loop() {
				dotQ8For(typ)(w, xq[:nb])
			}
		})
	}
}
