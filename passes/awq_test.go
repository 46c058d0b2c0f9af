package passes_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// logits runs m on a fixed prompt and returns every position's logits.
func logits(t *testing.T, m *ir.Model) []float32 {
	t.Helper()
	b := cpu.New(2)
	defer b.Close()
	rm, err := runtime.Load(m, b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rm.NewSession(16)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Forward([]int32{1, 20, 300, 41, 5, 66, 7, 180, 9, 10}, true)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAWQFoldKeepsTheFunction folds random scales into every fold point
// of each architecture: in F32 the model must compute the same logits
// (the scaling is exact but for rounding).
func TestAWQFoldKeepsTheFunction(t *testing.T) {
	for _, src := range []string{"models/stories260K/hf", "golden/quant/input-f32.gguf", "models/gpt2-tiny/hf"} {
		t.Run(src, func(t *testing.T) {
			load := func() *ir.Model {
				m, err := frontend.Load(testmodels.Shared(t, src), frontend.Options{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			}
			want := logits(t, load())
			m := load()
			a, err := arch.Lookup(m.Arch)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(9, 9))
			scales := map[string][]float64{}
			groups := a.ScaleGroups(m.Params)
			for _, g := range groups {
				s := make([]float64, g.Channels)
				for i := range s {
					s[i] = math.Exp(rng.NormFloat64())
				}
				scales[g.Next[0]] = s
			}
			r, err := passes.AWQ{FileType: quant.FileAllF32, Scales: scales}.Run(m)
			if err != nil {
				t.Fatal(err)
			}
			if r.Changed != len(groups) {
				t.Errorf("folded %d of %d groups", r.Changed, len(groups))
			}
			got := logits(t, m)
			var worst float64
			for i := range want {
				worst = max(worst, math.Abs(float64(got[i]-want[i])))
			}
			t.Logf("%d fold points, largest logit change %.2g", len(groups), worst)
			if worst > 1e-3 {
				t.Errorf("folding changed the logits by up to %.3g", worst)
			}
		})
	}
}
