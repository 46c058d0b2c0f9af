package quant

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestGrid: a fitted grid reproduces the quantizer's own block, and its
// Nearest is the nearest of all levels.
func TestGrid(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, typ := range ConvertibleTypes() {
		if !typ.Quantized() {
			continue
		}
		if !typ.HasGrid() {
			t.Errorf("%v has no grid", typ)
			continue
		}
		bs := typ.BlockSize()
		for trial := range 20 {
			x, qw := make([]float32, bs), make([]float32, bs)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * math.Exp(rng.NormFloat64()))
				qw[i] = float32(rng.ExpFloat64())
			}
			if trial%5 == 0 {
				qw = nil
			}
			if trial == 1 {
				clear(x[:bs/2]) // zero sub-blocks
			}
			g, err := typ.FitGrid(x, qw)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, typ.TypeSize())
			if err := typ.EncodeWeighted(want, x, bs, qw); err != nil {
				t.Fatal(err)
			}
			got, wantV := make([]float32, bs), make([]float32, bs)
			typ.Decode(got, g.Bytes())
			typ.Decode(wantV, want)
			if !slices.Equal(got, wantV) {
				t.Fatalf("%v trial %d: grid levels do not reproduce the quantizer's block", typ, trial)
			}
			for i := range bs {
				v := float32(rng.NormFloat64() * 3)
				q, got := g.Nearest(i, v)
				best := float32(math.Inf(1))
				for l := range g.levels {
					best = min(best, abs32(g.values[l*bs+i]-v))
				}
				if abs32(got-v) != best || g.values[int(q)*bs+i] != got {
					t.Fatalf("%v: value %d: Nearest(%g) = level %d (%g), but the nearest level is %g away", typ, i, v, q, got, best)
				}
			}
		}
	}
}
