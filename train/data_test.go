package train

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestTeacherSamples: the teacher's own windows start at BOS, fit the
// window, repeat for a seed and change with it, and are text the teacher
// finds likely: its mean negative log-likelihood of them (about its
// entropy) is far below that of uniformly random tokens (ln 512).
func TestTeacherSamples(t *testing.T) {
	teacher, err := frontend.Load(testmodels.Shared(t, "models", "stories260K", "hf"), frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer teacher.Close()
	b := cpu.New(2)
	defer b.Close()
	const n, window = 6, 48
	calls := 0
	a, err := TeacherSamples(context.Background(), teacher, b, n, window, 7, func(done int) { calls = done })
	if err != nil {
		t.Fatal(err)
	}
	again, err := TeacherSamples(context.Background(), teacher, b, n, window, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := TeacherSamples(context.Background(), teacher, b, n, window, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != n || calls != n {
		t.Fatalf("%d windows, %d progress calls; want %d", len(a), calls, n)
	}
	m, err := runtime.Load(teacher, b)
	if err != nil {
		t.Fatal(err)
	}
	var nll float64
	scored := 0
	for i, ex := range a {
		if ex.Tokens[0] != teacher.Vocab.BOS || len(ex.Tokens) > window || len(ex.Tokens) < 2 {
			t.Fatalf("window %d: %d tokens from %d", i, len(ex.Tokens), ex.Tokens[0])
		}
		if !slices.Equal(ex.Tokens, again[i].Tokens) {
			t.Fatalf("window %d differs for the same seed", i)
		}
		if slices.Equal(ex.Tokens, other[i].Tokens) {
			t.Fatalf("window %d is the same for another seed", i)
		}
		s, err := m.NewSession(window)
		if err != nil {
			t.Fatal(err)
		}
		logits, err := s.Forward(ex.Tokens, true)
		if err != nil {
			t.Fatal(err)
		}
		V := teacher.Params.VocabSize
		for p := 0; p+1 < len(ex.Tokens); p++ {
			row := logits[p*V : (p+1)*V]
			mx := slices.Max(row)
			var z float64
			for _, v := range row {
				z += math.Exp(float64(v - mx))
			}
			nll += math.Log(z) - float64(row[ex.Tokens[p+1]]-mx)
			scored++
		}
	}
	nll /= float64(scored)
	t.Logf("teacher NLL of its own samples: %.3f nats a token (uniform: %.3f)", nll, math.Log(512))
	if nll > 0.5*math.Log(512) {
		t.Errorf("teacher NLL of its own samples %.3f: not text the teacher writes", nll)
	}
}
