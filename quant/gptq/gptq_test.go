package gptq

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/quant"
)

func TestInverseCholesky(t *testing.T) {
	const n = 48
	rng := rand.New(rand.NewPCG(1, 1))
	h := gram(rng, 200, n)
	perm := rng.Perm(n)
	u, err := inverseCholesky(h, n, perm, 0.01)
	if err != nil {
		t.Fatal(err)
	}
	var mean float64
	for j := range n {
		mean += h[j*n+j] / n
	}
	// (UᵀU)(PHPᵀ + λI) must be the identity.
	for i := range n {
		for j := range n {
			var s float64
			for k := range n {
				var uu float64
				for l := range n {
					uu += float64(u[l*n+i]) * float64(u[l*n+k])
				}
				hk := h[perm[k]*n+perm[j]]
				if k == j {
					hk += 0.01 * mean
				}
				s += uu * hk
			}
			want := 0.0
			if i == j {
				want = 1
			}
			if math.Abs(s-want) > 1e-3 {
				t.Fatalf("(UᵀU·H)[%d,%d] = %g, want %g", i, j, s, want)
			}
		}
	}
}

// gram returns XᵀX for T samples of n correlated inputs with a few
// outlier channels, as transformer activations have.
func gram(rng *rand.Rand, T, n int) []float64 {
	mix := make([]float64, n*n)
	for i := range mix {
		mix[i] = rng.NormFloat64() / math.Sqrt(float64(n))
	}
	for i := range n {
		mix[i*n+i] += 1
	}
	gain := make([]float64, n)
	for j := range gain {
		gain[j] = math.Exp(0.5 * rng.NormFloat64())
	}
	gain[3], gain[n/2] = 12, 8
	h := make([]float64, n*n)
	z, x := make([]float64, n), make([]float64, n)
	for range T {
		for j := range z {
			z[j] = rng.NormFloat64()
		}
		for j := range x {
			var s float64
			for k := range n {
				s += z[k] * mix[k*n+j]
			}
			x[j] = s * gain[j]
		}
		for i := range n {
			for j := range n {
				h[i*n+j] += x[i] * x[j]
			}
		}
	}
	return h
}

// outputError is tr(ΔHΔᵀ) with Δ the dequantized minus the original
// weights: the squared error of the layer's outputs on the calibration
// inputs.
func outputError(t *testing.T, typ quant.Type, enc []byte, w []float32, rows, cols int, h []float64) float64 {
	t.Helper()
	y := make([]float32, len(w))
	if err := typ.Decode(y, enc); err != nil {
		t.Fatal(err)
	}
	var total float64
	d := make([]float64, cols)
	for r := range rows {
		for j := range cols {
			d[j] = float64(y[r*cols+j] - w[r*cols+j])
		}
		for i := range cols {
			var s float64
			for j := range cols {
				s += h[i*cols+j] * d[j]
			}
			total += d[i] * s
		}
	}
	return total
}

// TestLowersOutputError: on correlated inputs GPTQ's output error must be
// well below both plain rounding and llama.cpp's importance-weighted
// quantizer (which sees only H's diagonal).
func TestLowersOutputError(t *testing.T) {
	const rows, cols = 32, 512
	rng := rand.New(rand.NewPCG(2, 2))
	h := gram(rng, 2000, cols)
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(0.02 * rng.NormFloat64())
	}
	diag := make([]float32, cols)
	for j := range diag {
		diag[j] = float32(h[j*cols+j])
	}
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q8_0, quant.IQ4_NL, quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_XS} {
		rtn := make([]byte, typ.RowSize(rows*cols))
		if err := typ.Encode(rtn, w); err != nil {
			t.Fatal(err)
		}
		weighted := make([]byte, len(rtn))
		if err := typ.EncodeWeighted(weighted, w, cols, diag); err != nil {
			t.Fatal(err)
		}
		eRTN := outputError(t, typ, rtn, w, rows, cols, h)
		eW := outputError(t, typ, weighted, w, rows, cols, h)
		for _, act := range []bool{false, true} {
			g, err := Quantize(w, rows, cols, typ, h, Options{ActOrder: act})
			if err != nil {
				t.Fatal(err)
			}
			eG := outputError(t, typ, g, w, rows, cols, h)
			t.Logf("%-7v act-order %-5v output error / RTN: imatrix %.3f, GPTQ %.3f", typ, act, eW/eRTN, eG/eRTN)
			if eG > 0.8*min(eW, eRTN) {
				t.Errorf("%v (act-order %v): GPTQ's output error %.4g is not 20%% below RTN's %.4g and the weighted quantizer's %.4g", typ, act, eG, eRTN, eW)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	h := make([]float64, 64*64)
	if _, err := Quantize(make([]float32, 64), 1, 64, quant.F16, h, Options{}); err == nil {
		t.Error("F16 accepted")
	}
	if _, err := Quantize(make([]float32, 48), 1, 48, quant.Q4_0, make([]float64, 48*48), Options{}); err == nil {
		t.Error("rows of 48 accepted for Q4_0")
	}
	for i := range 64 {
		h[i*64+i] = math.NaN()
	}
	if _, err := Quantize(make([]float32, 64), 1, 64, quant.Q4_0, h, Options{}); err == nil {
		t.Error("NaN Gram matrix accepted")
	}
}
