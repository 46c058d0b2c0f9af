package runtime_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/peft"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// adapter writes a seeded PEFT adapter for the model in baseDir and
// imports it for base.
func adapter(t *testing.T, baseDir string, base *ir.Model, seed uint64, targets ...string) *ir.Adapter {
	t.Helper()
	dir := t.TempDir()
	if err := testmodels.WritePEFT(dir, baseDir, testmodels.PEFTAdapter{Targets: targets, R: 8, Alpha: 16, Seed: seed}); err != nil {
		t.Fatal(err)
	}
	a, err := peft.Load(dir, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

var prompt = []int32{1, 403, 407, 261, 378, 296, 443, 342, 382, 330, 261, 392, 298, 259, 280, 261, 383, 359, 258, 273}

// TestUnfusedAdapter: a session applying an adapter beside the base
// weights computes the logits of the model with the adapter merged, in
// one batch and token by token, at scale 1 and 0.5; without adapters it
// is the base again.
func TestUnfusedAdapter(t *testing.T) {
	dir := testmodels.Shared(t, "models/stories260K/hf")
	baseIR, err := frontend.Load(dir, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer baseIR.Close()
	a := adapter(t, dir, baseIR, 5, "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
	base := load(t, dir, 2)
	ad, err := base.LoadAdapter(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, scale := range []float64{1, 0.5} {
		fused := load(t, dir, 2, passes.FuseLoRA{Adapters: []passes.WeightedAdapter{{Adapter: a, Weight: scale}}})
		fs, _ := fused.NewSession(64)
		want, err := fs.Forward(prompt, true)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := base.NewSession(64)
		if err := s.SetAdapters(runtime.Applied{Adapter: ad, Scale: scale}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Forward(prompt, true)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(got, want); d > 1e-4*maxAbs(want) {
			t.Errorf("scale %g: unfused logits differ from fused by %.3g", scale, d)
		}
		s.Reset()
		v := base.VocabSize()
		for i, tok := range prompt {
			step, err := s.Forward([]int32{tok}, false)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(step, want[i*v:(i+1)*v]); d > 1e-4*maxAbs(want) {
				t.Fatalf("scale %g, token %d: differs by %.3g", scale, i, d)
			}
		}
	}
	// Two adapters, the second at half weight: merged in order, or both
	// beside the weights.
	b2 := adapter(t, dir, baseIR, 6, "q_proj", "v_proj", "down_proj")
	ad2, err := base.LoadAdapter(b2)
	if err != nil {
		t.Fatal(err)
	}
	fused := load(t, dir, 2, passes.FuseLoRA{Adapters: []passes.WeightedAdapter{{Adapter: a, Weight: 1}, {Adapter: b2, Weight: 0.5}}})
	fs, _ := fused.NewSession(64)
	want, err := fs.Forward(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	both, _ := base.NewSession(64)
	both.SetAdapters(runtime.Applied{Adapter: ad, Scale: 1}, runtime.Applied{Adapter: ad2, Scale: 0.5})
	got, err := both.Forward(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(got, want); d > 1e-4*maxAbs(want) {
		t.Errorf("two adapters: unfused logits differ from fused by %.3g", d)
	}

	plain, _ := base.NewSession(64)
	s, _ := base.NewSession(64)
	s.SetAdapters(runtime.Applied{Adapter: ad, Scale: 1})
	s.SetAdapters()
	want, _ = plain.Forward(prompt, true)
	got, _ = s.Forward(prompt, true)
	if d := maxDiff(got, want); d != 0 {
		t.Errorf("after removing the adapter the logits differ from the base by %.3g", d)
	}
}

// TestStepEqualsForward: decoding four sequences together, with
// different adapters, gives each the logits it gets alone.
// TestStepEqualsForward also runs on a backend that poisons every
// activation it gets back: Step and Forward release buffers after their
// last use, and one released too early would turn the logits to NaN.
func TestStepEqualsForward(t *testing.T) {
	for _, src := range []string{"models/stories260K/hf", "golden/real/stories260K-Q4_0.gguf", "poisoned:golden/real/stories260K-Q4_0.gguf"} {
		t.Run(src, func(t *testing.T) {
			var b runtime.Backend = cpu.New(2)
			if s, ok := strings.CutPrefix(src, "poisoned:"); ok {
				src, b = s, poisoning{b.(*cpu.Backend)}
			}
			defer b.Close()
			dir := testmodels.Shared(t, "models/stories260K/hf")
			path := testmodels.Shared(t, src)
			baseIR, err := frontend.Load(path, frontend.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer baseIR.Close()
			m := loadOn(t, path, b)
			adA, err := m.LoadAdapter(adapter(t, dir, baseIR, 1, "q_proj", "v_proj"))
			if err != nil {
				t.Fatal(err)
			}
			adB, err := m.LoadAdapter(adapter(t, dir, baseIR, 2, "o_proj", "down_proj"))
			if err != nil {
				t.Fatal(err)
			}
			mix := [][]runtime.Applied{{{Adapter: adA, Scale: 1}}, nil, {{Adapter: adB, Scale: 1}}, {{Adapter: adA, Scale: 1}}, {{Adapter: adA, Scale: 0.5}, {Adapter: adB, Scale: 1}}}
			together := make([]*runtime.Session, len(mix))
			alone := make([]*runtime.Session, len(mix))
			var next []int32
			for i, as := range mix {
				together[i], _ = m.NewSession(64)
				alone[i], _ = m.NewSession(64)
				together[i].SetAdapters(as...)
				alone[i].SetAdapters(as...)
				p := prompt[:5+i] // different lengths: different positions
				if _, err := together[i].Forward(p, false); err != nil {
					t.Fatal(err)
				}
				if _, err := alone[i].Forward(p, false); err != nil {
					t.Fatal(err)
				}
				next = append(next, prompt[5+i])
			}
			// agree runs each session alone over its chunk and holds the
			// batched logits and positions to it; it returns the logits of
			// the sessions run alone.
			agree := func(what string, got [][]float32, chunks [][]int32) [][]float32 {
				t.Helper()
				wants := make([][]float32, len(alone))
				for i, s := range alone {
					want, err := s.Forward(chunks[i], false)
					if err != nil {
						t.Fatal(err)
					}
					if d := maxDiff(got[i], want); !(d <= 1e-5*maxAbs(want)) { // a NaN fails too
						t.Errorf("%s, sequence %d (%d tokens): batched logits differ by %.3g", what, i, len(chunks[i]), d)
					}
					if together[i].Pos() != s.Pos() {
						t.Errorf("%s, sequence %d: position %d, alone %d", what, i, together[i].Pos(), s.Pos())
					}
					wants[i] = want
				}
				return wants
			}
			step := func(what string) {
				got, err := m.Step(together, next)
				if err != nil {
					t.Fatal(err)
				}
				chunks := make([][]int32, len(next))
				for i := range next {
					chunks[i] = next[i : i+1]
				}
				for i, want := range agree(what, got, chunks) {
					next[i] = int32(argmax(want))
				}
			}
			for k := range 4 {
				step(fmt.Sprintf("step %d", k))
			}
			// Batch: chunks of several tokens (a prompt being prefilled)
			// beside single decoded tokens, in one pass.
			chunks := make([][]int32, len(mix))
			for i := range chunks {
				chunks[i] = prompt[10 : 10+(i*3)%7+1] // 1, 4, 7, 3 and 6 tokens
			}
			got, err := m.Batch(together, chunks)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range agree("batch", got, chunks) {
				next[i] = int32(argmax(want))
			}
			step("step after a batch") // and decoding goes on from there
		})
	}
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
