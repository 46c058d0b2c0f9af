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
				checkProduct(t, "Linear", y, T, c.out, c.in, func(tok, i int) float32 { return x[tok*c.in+i] },
					func(i, o int) float32 { return deq[o*c.in+i] })
				dy := randRow(rng, T*c.out)
				dx := randRow(rng, T*c.in) // overwritten
				if err := be.linearT(dx, dy, w); err != nil {
					t.Fatal(err)
				}
				checkProduct(t, "LinearT", dx, T, c.in, c.out, func(tok, o int) float32 { return dy[tok*c.out+o] },
					func(o, i int) float32 { return deq[o*c.in+i] })
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
		checkProduct(t, fmt.Sprintf("LinearGradW %+v", c), dw, c.nout, c.in, c.T, func(o, tok int) float32 { return dy[tok*c.nout+o] },
			func(tok, i int) float32 { return x[tok*c.in+i] })
	}
}

// checkProduct holds got (m × n) to the float32 rounding of Σ_k a(i, k)·b(k, j).
func checkProduct(t *testing.T, what string, got []float32, m, n, k int, a, b func(int, int) float32) {
	t.Helper()
	for i := range m {
		for j := range n {
			exact, mag := 0.0, 0.0
			for kk := range k {
				p := float64(a(i, kk)) * float64(b(kk, j))
				exact, mag = exact+p, mag+math.Abs(p)
			}
			if g := got[i*n+j]; !within(g, exact, mag, k) {
				t.Fatalf("%s: [%d, %d] = %v, exact %v", what, i, j, g, exact)
			}
		}
	}
}

// The SIMD decoders of 16-bit floats give the codec's bits, subnormals
// and infinities included; a NaN stays a NaN (F16C quiets a signaling
// one).
func TestDecodeHalf(t *testing.T) {
	if len(decodeHalf) == 0 {
		t.Skip("no SIMD decoders on this CPU")
	}
	src := make([]byte, 2*(1<<16+5)) // every 16-bit pattern, and a tail
	for i := range 1<<16 + 5 {
		src[2*i], src[2*i+1] = byte(i), byte(i>>8)
	}
	for typ, k := range decodeHalf {
		want, got := make([]float32, len(src)/2), make([]float32, len(src)/2)
		typ.Decode(want, src)
		k(got, src)
		for i := range want {
			nan := math.IsNaN(float64(want[i])) && math.IsNaN(float64(got[i]))
			if math.Float32bits(want[i]) != math.Float32bits(got[i]) && !nan {
				t.Fatalf("%v %#04x: SIMD %#08x, codec %#08x", typ, i&0xFFFF, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
	}
}

// The vectorized exp is within two ulps of math.Exp's, flushes what
// would be subnormal to zero (and SiLU's results below 1e-36), and keeps
// infinities and NaNs.
func TestExpShift(t *testing.T) {
	var x []float32
	for v := -100.0; v <= 100; v += 0.0137 {
		x = append(x, float32(v))
	}
	x = append(x, 0, float32(math.Inf(-1)), float32(math.Inf(1)), float32(math.NaN()), -87.3, 88.7, 1e-8, -1e-8)
	for _, shift := range []float32{0, 3.5} {
		got := make([]float32, len(x))
		expShift(got, x, shift)
		sig := make([]float32, len(x))
		silu(sig, x)
		for i, v := range x {
			want := math.Exp(float64(v - shift))
			checkClose(t, "exp", v-shift, got[i], want, 0x1p-126)
			if shift == 0 {
				checkClose(t, "silu", v, sig[i], float64(v)/(1+math.Exp(-float64(v))), 1e-36)
			}
		}
	}
}

func checkClose(t *testing.T, what string, x, got float32, want, abs float64) {
	t.Helper()
	switch {
	case math.IsNaN(want):
		if !math.IsNaN(float64(got)) {
			t.Errorf("%s(%v) = %v, want NaN", what, x, got)
		}
	case math.IsInf(want, 0) || math.Abs(want) > math.MaxFloat32:
		if !math.IsInf(float64(got), int(math.Copysign(1, want))) {
			t.Errorf("%s(%v) = %v, want %v", what, x, got, want)
		}
	case math.Abs(float64(got)-want) > 2.5e-7*math.Abs(want)+abs:
		t.Errorf("%s(%v) = %v, want %v (%.2g relative)", what, x, got, want, (float64(got)-want)/want)
	}
}
