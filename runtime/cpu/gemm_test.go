package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// within reports whether got is exact's float32 rounding up to the
// error a float32 sum of terms of total magnitude mag may carry.
func within(got float32, exact, mag float64, terms int) bool {
	return math.Abs(float64(got)-exact) <= 4*float64(terms+1)*0x1p-24*(mag+math.Abs(exact))
}

// TestGemm: every micro-kernel this CPU runs (AVX2, AVX-512) and the
// portable twin compute C + A·B to float32 rounding, over shapes with and
// without whole tiles and padded strides.
func TestGemm(t *testing.T) {
	inUse := gemmMicro
	t.Cleanup(func() { gemmMicro = inUse })
	kernels := gemmKernels()
	kernels["portable"] = nil
	for name, k := range kernels {
		gemmMicro = k
		t.Run(name, testGemm)
	}
}

func testGemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, m := range []int{1, 5, 6, 7, 8, 9, 13, 17} {
		for _, n := range []int{1, 15, 16, 17, 24, 32, 33, 56, 69} {
			for _, k := range []int{1, 3, 256} {
				lda, ldb, ldc := k+3, n+5, n+7
				a, b := randRow(rng, m*lda), randRow(rng, k*ldb)
				c0 := randRow(rng, m*ldc)
				{
					c := append([]float32(nil), c0...)
					gemm(c, ldc, a, lda, b, ldb, m, n, k)
					for i := range m {
						for j := range ldc {
							got := c[i*ldc+j]
							if j >= n {
								if got != c0[i*ldc+j] {
									t.Fatalf("%dx%dx%d: wrote C[%d, %d] beyond the %d columns", m, n, k, i, j, n)
								}
								continue
							}
							exact, mag := float64(c0[i*ldc+j]), math.Abs(float64(c0[i*ldc+j]))
							for kk := range k {
								p := float64(a[i*lda+kk]) * float64(b[kk*ldb+j])
								exact += p
								mag += math.Abs(p)
							}
							if !within(got, exact, mag, k) {
								t.Fatalf("%dx%dx%d: C[%d, %d] = %v, exact %v", m, n, k, i, j, got, exact)
							}
						}
					}
				}
			}
		}
	}
}

// TestLinearF32: the exact Linear (training's forward, and prompts on
// float weights) and LinearT, as blocked GEMMs over decoded panels, are
// the float32 rounding of the products with the decoded weight, for
// every token count (tiles and the edges beside them), panel edges and
// block types.
func TestLinearF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		typ     quant.Type
		in, out int
	}{{quant.F32, 300, 77}, {quant.F16, 96, 130}, {quant.BF16, 96, 70}, {quant.Q4_0, 800, 77}, {quant.Q8_0, 96, 65},
		{quant.Q6_K, 768, 77}, {quant.Q4_K, 512, 40}, {quant.IQ4_NL, 544, 70}} {
		wf := randRow(rng, c.in*c.out)
		wt, _ := ir.FromF32("w", []int64{int64(c.out), int64(c.in)}, wf)
		q, err := ir.Convert(wt, c.typ)
		if err != nil {
			t.Fatal(err)
		}
		deq, err := q.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		be := New(2)
		w, err := be.Weight(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, T := range []int{1, 6, 8, 11, 33} {
			t.Run(fmt.Sprintf("%v/%dx%dx%d", c.typ, T, c.in, c.out), func(t *testing.T) {
				x := randRow(rng, T*c.in)
				y := make([]float32, T*c.out)
				if err := be.linear(y, x, w, nil, true); err != nil {
					t.Fatal(err)
				}
				for tok := range T {
					for o := range c.out {
						exact, mag := 0.0, 0.0
						for i := range c.in {
							p := float64(x[tok*c.in+i]) * float64(deq[o*c.in+i])
							exact, mag = exact+p, mag+math.Abs(p)
						}
						if got := y[tok*c.out+o]; !within(got, exact, mag, c.in) {
							t.Fatalf("Linear: out[%d, %d] = %v, exact %v", tok, o, got, exact)
						}
					}
				}
				dy := randRow(rng, T*c.out)
				dx := randRow(rng, T*c.in) // overwritten
				if err := be.linearT(dx, dy, w); err != nil {
					t.Fatal(err)
				}
				for tok := range T {
					for i := range c.in {
						exact, mag := 0.0, 0.0
						for o := range c.out {
							p := float64(dy[tok*c.out+o]) * float64(deq[o*c.in+i])
							exact, mag = exact+p, mag+math.Abs(p)
						}
						if got := dx[tok*c.in+i]; !within(got, exact, mag, c.out) {
							t.Fatalf("LinearT: dx[%d, %d] = %v, exact %v", tok, i, got, exact)
						}
					}
				}
			})
		}
		be.Close()
	}
}

// TestLinearGradW: a trained matrix's gradient Σ_t dyᵀ·x, for a LoRA's
// short wide A, its tall narrow B and a square one, to float32 rounding.
func TestLinearGradW(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	be := New(2)
	defer be.Close()
	for _, c := range []struct{ nout, in, T int }{{16, 300, 33}, {300, 16, 9}, {70, 70, 256}, {8, 2048, 5}} {
		dy, x := randRow(rng, c.T*c.nout), randRow(rng, c.T*c.in)
		dw := randRow(rng, c.nout*c.in) // overwritten
		be.linearGradW(dw, dy, x, c.nout, c.in)
		for o := range c.nout {
			for i := range c.in {
				exact, mag := 0.0, 0.0
				for tok := range c.T {
					p := float64(dy[tok*c.nout+o]) * float64(x[tok*c.in+i])
					exact, mag = exact+p, mag+math.Abs(p)
				}
				if got := dw[o*c.in+i]; !within(got, exact, mag, c.T) {
					t.Fatalf("%+v: dW[%d, %d] = %v, exact %v", c, o, i, got, exact)
				}
			}
		}
	}
}
