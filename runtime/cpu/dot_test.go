package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/quant"
)

func randRow(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	x[3] = 7 // an outlier
	return x
}

// TestKernelsAgree checks every dot kernel in use (SIMD where the CPU has
// it) against the portable one, and both against a float64 dot product of
// the dequantized weights with the dequantized activations.
func TestKernelsAgree(t *testing.T) {
	t.Logf("kernels: %s", simdName())
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1024
	portable8 := map[quant.Type]func([]byte, []q8Block) float32{
		quant.Q4_0: dotQ4_0Go, quant.Q4_1: dotQ4_1Go, quant.Q5_0: dotQ5_0Go, quant.Q5_1: dotQ5_1Go, quant.Q8_0: dotQ8_0Go, quant.IQ4_NL: dotIQ4_NLGo}
	portable8K := map[quant.Type]func([]byte, []q8KBlock) float32{
		quant.Q2_K: dotQ2_KGo, quant.Q3_K: dotQ3_KGo, quant.Q4_K: dotQ4_KGo, quant.Q5_K: dotQ5_KGo, quant.Q6_K: dotQ6_KGo, quant.IQ4_XS: dotIQ4_XSGo}
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.IQ4_NL,
		quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_XS} {
		if f := activationFormat(typ); f != actQ8 && f != actQ8K {
			t.Fatalf("%v multiplies float activations", typ)
		}
		for trial := range 20 {
			wf := randRow(rng, n)
			w := make([]byte, typ.RowSize(n))
			if err := typ.Encode(w, wf); err != nil {
				t.Fatal(err)
			}
			wd := make([]float32, n)
			typ.Decode(wd, w)
			x := randRow(rng, n)
			var got, want float32
			var exact float64
			if activationFormat(typ) == actQ8K {
				xq := make([]q8KBlock, n/256)
				quantizeQ8K(xq, x)
				for i, v := range x {
					blk := &xq[i/256]
					if e := math.Abs(float64(v - blk.d*float32(blk.qs[i%256]))); e > math.Abs(float64(blk.d))*0.5001 {
						t.Fatalf("q8_K: %v came back as %v", v, blk.d*float32(blk.qs[i%256]))
					}
				}
				got, want = dotQ8KFor(typ)(w, xq), portable8K[typ](w, xq)
				checkFourTokens(t, typ, w, n/256, rng, quantizeQ8K, dot4KFor(typ), portable8K[typ])
				for i := range n {
					exact += float64(wd[i]) * float64(xq[i/256].qs[i%256]) * float64(xq[i/256].d)
				}
			} else {
				xq := make([]q8Block, n/32)
				quantizeQ8(xq, x)
				got, want = dotQ8For(typ)(w, xq), portable8[typ](w, xq)
				for i := range n {
					exact += float64(wd[i]) * float64(xq[i/32].qs[i%32]) * float64(xq[i/32].d)
				}
			}
			if got != want {
				t.Errorf("%v trial %d: kernel %v, portable %v (%s)", typ, trial, got, want, simdName())
			}
			if activationFormat(typ) == actQ8 {
				checkFourTokens(t, typ, w, n/32, rng, quantizeQ8, dot4For(typ), portable8[typ])
			}
			if math.Abs(float64(want)-exact) > 1e-4*math.Max(1, math.Abs(exact)) {
				t.Errorf("%v trial %d: portable %v, exact %v", typ, trial, want, exact)
			}
		}
	}
	for _, n := range []int{1, 7, 8, 33, 64, 1000} {
		a, b := randRow(rng, n+8)[:n], randRow(rng, n+8)[:n]
		var exact float64
		for i := range a {
			exact += float64(a[i]) * float64(b[i])
		}
		if g, w := dotF32(a, b), dotF32Go(a, b); math.Abs(float64(g)-exact) > 1e-5*(1+math.Abs(exact)) || math.Abs(float64(w)-exact) > 1e-5*(1+math.Abs(exact)) {
			t.Errorf("dotF32 n=%d: kernel %v, portable %v, exact %v", n, g, w, exact)
		}
		// Four tokens at once, rows apart by n+3 values.
		x := randRow(rng, 4*(n+3))
		var got, want [4]float32
		dotF32x4(a, x, n+3, &got)
		dotF32x4Go(a, x, n+3, &want)
		for k := range got {
			if math.Abs(float64(got[k]-want[k])) > 1e-5*(1+math.Abs(float64(want[k]))) {
				t.Errorf("dotF32x4 n=%d token %d: kernel %v, portable %v", n, k, got[k], want[k])
			}
		}
	}
}

// checkFourTokens holds a type's four-token kernel, if it has one, to its
// portable one-token twin on four random tokens of nb blocks each.
func checkFourTokens[B actBlock](t *testing.T, typ quant.Type, w []byte, nb int, rng *rand.Rand,
	quantize func([]B, []float32), k4 func([]byte, []B, int, *[4]float32), portable func([]byte, []B) float32) {
	t.Helper()
	if k4 == nil {
		return
	}
	n := len(w) / typ.TypeSize() * typ.BlockSize()
	xs := make([]B, 4*nb)
	for k := range 4 {
		quantize(xs[k*nb:(k+1)*nb], randRow(rng, n))
	}
	var four [4]float32
	k4(w, xs, nb, &four)
	for k := range 4 {
		if one := portable(w, xs[k*nb:(k+1)*nb]); four[k] != one {
			t.Errorf("%v: four-token kernel gives %v for token %d, portable %v", typ, four[k], k, one)
		}
	}
}

// TestHalfKernels checks the F16 and BF16 kernels (SIMD where the CPU has
// it) against a float64 dot product of the decoded row, on lengths with
// and without a tail.
func TestHalfKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		typ          quant.Type
		kernel, twin func([]byte, []float32) float32
	}{{quant.F16, dotF16, dotF16Go}, {quant.BF16, dotBF16, dotBF16Go}} {
		for _, n := range []int{1, 7, 8, 33, 64, 1000, 2048} {
			w := make([]byte, c.typ.RowSize(int64(n)))
			if err := c.typ.Encode(w, randRow(rng, n+8)[:n]); err != nil {
				t.Fatal(err)
			}
			wd := make([]float32, n)
			c.typ.Decode(wd, w)
			x := randRow(rng, n+8)[:n]
			var exact float64
			for i := range x {
				exact += float64(wd[i]) * float64(x[i])
			}
			tol := 1e-5 * (1 + math.Abs(exact)) * math.Sqrt(float64(n))
			if g, p := c.kernel(w, x), c.twin(w, x); math.Abs(float64(g)-exact) > tol || math.Abs(float64(p)-exact) > tol {
				t.Errorf("%v n=%d: kernel %v, portable %v, exact %v (%s)", c.typ, n, g, p, exact, simdName())
			}
		}
	}
}

func TestAxpy(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for _, n := range []int{1, 8, 13, 64, 128, 1000} {
		x, y := randRow(rng, n+8)[:n], randRow(rng, n+8)[:n]
		want := append([]float32(nil), y...)
		axpyGo(want, 0.37, x)
		axpy(y, 0.37, x)
		for i := range y {
			if math.Abs(float64(y[i]-want[i])) > 1e-6*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("n=%d: axpy[%d] = %v, portable %v", n, i, y[i], want[i])
			}
		}
	}
}

func BenchmarkDot(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4096
	x := randRow(rng, n)
	xq := make([]q8Block, n/32)
	quantizeQ8(xq, x)
	for _, c := range []struct {
		name string
		typ  quant.Type
		fn   func([]byte, []q8Block) float32
	}{
		{"Q4_0/go", quant.Q4_0, dotQ4_0Go}, {"Q4_0/kernel", quant.Q4_0, dotQ4_0},
		{"Q8_0/go", quant.Q8_0, dotQ8_0Go}, {"Q8_0/kernel", quant.Q8_0, dotQ8_0},
		{"Q4_1/go", quant.Q4_1, dotQ4_1Go}, {"Q4_1/kernel", quant.Q4_1, dotQ8For(quant.Q4_1)},
		{"Q5_0/go", quant.Q5_0, dotQ5_0Go}, {"Q5_0/kernel", quant.Q5_0, dotQ8For(quant.Q5_0)},
		{"Q5_1/go", quant.Q5_1, dotQ5_1Go}, {"Q5_1/kernel", quant.Q5_1, dotQ8For(quant.Q5_1)},
		{"IQ4_NL/go", quant.IQ4_NL, dotIQ4_NLGo}, {"IQ4_NL/kernel", quant.IQ4_NL, dotQ8For(quant.IQ4_NL)},
	} {
		w := make([]byte, c.typ.RowSize(n))
		c.typ.Encode(w, randRow(rng, n))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(w)))
			for b.Loop() {
				c.fn(w, xq)
			}
		})
	}
}

func BenchmarkDotK(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4096
	x := randRow(rng, n)
	xq := make([]q8KBlock, n/256)
	quantizeQ8K(xq, x)
	for _, c := range []struct {
		name string
		typ  quant.Type
		fn   func([]byte, []q8KBlock) float32
	}{
		{"Q2_K/go", quant.Q2_K, dotQ2_KGo}, {"Q2_K/kernel", quant.Q2_K, dotQ8KFor(quant.Q2_K)},
		{"Q3_K/go", quant.Q3_K, dotQ3_KGo}, {"Q3_K/kernel", quant.Q3_K, dotQ8KFor(quant.Q3_K)},
		{"Q4_K/go", quant.Q4_K, dotQ4_KGo}, {"Q4_K/kernel", quant.Q4_K, dotQ8KFor(quant.Q4_K)},
		{"Q5_K/go", quant.Q5_K, dotQ5_KGo}, {"Q5_K/kernel", quant.Q5_K, dotQ8KFor(quant.Q5_K)},
		{"Q6_K/go", quant.Q6_K, dotQ6_KGo}, {"Q6_K/kernel", quant.Q6_K, dotQ8KFor(quant.Q6_K)},
		{"IQ4_XS/go", quant.IQ4_XS, dotIQ4_XSGo}, {"IQ4_XS/kernel", quant.IQ4_XS, dotQ8KFor(quant.IQ4_XS)},
	} {
		w := make([]byte, c.typ.RowSize(n))
		c.typ.Encode(w, randRow(rng, n))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(w)))
			for b.Loop() {
				c.fn(w, xq)
			}
		})
	}
}
