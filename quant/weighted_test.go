package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestWeightedLowersWeightedError: with importance weights, every
// weighted quantizer must lose less weighted error Σ w·(x−q)² than the
// plain one on the same rows. (The byte-exact checks against llama.cpp
// are the -imat goldens; they cover Q4_0, Q2_K…Q6_K and IQ4_NL. This also
// covers the types those files do not use: Q4_1, Q5_0, Q5_1, IQ4_XS.)
func TestWeightedLowersWeightedError(t *testing.T) {
	const rowLen, rows = 512, 64
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, rows*rowLen)
	for r := range rows {
		gain := math.Exp(0.3 * rng.NormFloat64())
		for j := range rowLen {
			x[r*rowLen+j] = float32(gain * rng.NormFloat64())
		}
	}
	qw := make([]float32, rowLen)
	for j := range qw {
		qw[j] = float32(math.Exp(2 * rng.NormFloat64())) // heavy-tailed, as activations are
	}
	weightedErr := func(y []float32) float64 {
		var e float64
		for i := range x {
			d := float64(x[i] - y[i])
			e += float64(qw[i%rowLen]) * d * d
		}
		return e
	}
	for _, typ := range ConvertibleTypes() {
		if !typ.TakesWeights() {
			continue
		}
		errs := [2]float64{}
		for i, weighted := range []bool{false, true} {
			buf := make([]byte, typ.RowSize(int64(len(x))))
			var err error
			if weighted {
				err = typ.EncodeWeighted(buf, x, rowLen, qw)
			} else {
				err = typ.Encode(buf, x)
			}
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, len(x))
			if err := typ.Decode(y, buf); err != nil {
				t.Fatal(err)
			}
			errs[i] = weightedErr(y)
		}
		ratio := errs[1] / errs[0]
		t.Logf("%-7v weighted error with importance / without: %.3f", typ, ratio)
		if ratio > 0.95 {
			t.Errorf("%v: importance weights lower the weighted error only to %.3f of the plain quantizer's", typ, ratio)
		}
	}
	if err := Q4_K.EncodeWeighted(make([]byte, Q4_K.RowSize(rowLen)), x[:rowLen], rowLen, qw[:10]); err == nil {
		t.Error("EncodeWeighted took 10 weights for rows of 512")
	}
}
