package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestQkxKernelsAgree: the SIMD candidate search computes bit for bit what
// its portable twin computes (both are checked against llama.cpp's bytes
// by the golden tests; this pins the two to each other on random input,
// minima that cut into the data included).
func TestQkxKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := range 200 {
		n := []int{16, 32}[trial%2]
		x, w := make([]float32, n), make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()))
			w[i] = float32(rng.ExpFloat64())
		}
		var isc, sc, mins [qkxBatch]float32
		for c := range isc {
			isc[c] = float32(rng.ExpFloat64() * 8)
			sc[c] = float32(rng.NormFloat64())
			mins[c] = -float32(rng.ExpFloat64())
		}
		mn := float32(rng.NormFloat64())
		var lv1, lv2 qkxLevels
		var s1, s2 [3][qkxBatch]float32
		qkxSumsGo(x, w, mn, &isc, 15, &lv1, &s1)
		qkxSumsFast(x, w, mn, &isc, 15, &lv2, &s2)
		if lv1 != lv2 || s1 != s2 {
			t.Fatalf("trial %d: sums differ: %v vs %v", trial, s1, s2)
		}
		wx := make([]float32, n)
		for i := range wx {
			wx[i] = float32(w[i] * x[i])
		}
		var q1, q2 [2][qkxBatch]float32
		qxSumsGo(x, w, wx, &isc, -8, 7, &q1)
		qxSumsFast(x, w, wx, &isc, -8, 7, &q2)
		if q1 != q2 {
			t.Fatalf("trial %d: qx sums differ: %v vs %v", trial, q1, q2)
		}
		for _, mad := range []bool{false, true} {
			var c1, c2 [qkxBatch]float32
			qkxErrGo(x, w, &lv1, &sc, &mins, mad, &c1)
			qkxErrFast(x, w, &lv1, &sc, &mins, mad, &c2)
			if c1 != c2 {
				t.Fatalf("trial %d mad %v: errors differ: %v vs %v", trial, mad, c1, c2)
			}
		}
	}
}
