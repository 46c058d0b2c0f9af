package runtime_test

import (
	"math"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

type promptRef struct {
	PromptIDs []int32
	logits    []float32
}

func readRef(t *testing.T, dir, name string) promptRef {
	t.Helper()
	ids, logits := testmodels.PromptReference(t, dir, name)
	return promptRef{ids, logits}
}

func load(t *testing.T, path string, threads int, ps ...passes.Pass) *runtime.Model {
	t.Helper()
	b := cpu.New(threads)
	t.Cleanup(func() { b.Close() })
	return loadOn(t, path, b, ps...)
}

// poisoning is the CPU backend with every released activation
// overwritten with NaNs first, whatever its size (the backend itself keeps
// only large ones for reuse): a buffer released while something still
// reads it shows up in the results.
type poisoning struct{ *cpu.Backend }

func (p poisoning) Release(t *runtime.Tensor) {
	if d, ok := t.Data.([]float32); ok {
		for i := range d {
			d[i] = float32(math.NaN())
		}
	}
	p.Backend.Release(t)
}

func loadOn(t *testing.T, path string, b runtime.Backend, ps ...passes.Pass) *runtime.Model {
	t.Helper()
	m, err := frontend.Load(path, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&passes.Manager{Passes: ps}).Run(m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rm, err := runtime.Load(m, b)
	if err != nil {
		t.Fatal(err)
	}
	return rm
}

func maxAbs(a []float32) float64 {
	var m float64
	for _, x := range a {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// TestReferenceLogits runs the reference prompts through lqc's runtime in
// float32, from every source format, in one batch and token by token with
// the KV cache, and compares every logit with the PyTorch reference.
func TestReferenceLogits(t *testing.T) {
	cases := []struct {
		name, model, refDir, ref string
	}{
		{"stories260K hf", "models/stories260K/hf", "models/stories260K/reference", "prompt64"},
		{"stories260K llama2c", "models/stories260K/llama2c/stories260K.bin", "models/stories260K/reference", "prompt64"},
		{"stories260K gguf", "golden/real/stories260K-f32.gguf", "models/stories260K/reference", "prompt64"},
		{"gpt2-tiny hf", "models/gpt2-tiny/hf", "models/gpt2-tiny/reference", "prompt32"},
		{"qwen2-tiny hf", "models/qwen2-tiny/hf", "models/qwen2-tiny/reference", "prompt32"},
		{"mistral-tiny hf", "models/mistral-tiny/hf", "models/mistral-tiny/reference", "prompt32"},
		{"llama3-tiny hf", "models/llama3-tiny/hf", "models/llama3-tiny/reference", "prompt32"},
		{"gemma-tiny hf", "models/gemma-tiny/hf", "models/gemma-tiny/reference", "prompt32"},
		{"phi3-tiny hf", "models/phi3-tiny/hf", "models/phi3-tiny/reference", "prompt32"},
		{"gemma2-tiny hf", "models/gemma2-tiny/hf", "models/gemma2-tiny/reference", "prompt32"},
		{"gemma3-tiny hf", "models/gemma3-tiny/hf", "models/gemma3-tiny/reference", "prompt32"},
		{"opt-tiny hf", "models/opt-tiny/hf", "models/opt-tiny/reference", "prompt32"},
		{"opt-proj-tiny hf", "models/opt-proj-tiny/hf", "models/opt-proj-tiny/reference", "prompt32"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref := readRef(t, c.refDir, c.ref)
			m := load(t, testmodels.Shared(t, c.model), 2)
			s, err := m.NewSession(len(ref.PromptIDs))
			if err != nil {
				t.Fatal(err)
			}
			batch, err := s.Forward(ref.PromptIDs, true)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(batch, ref.logits); d > 1e-4 {
				t.Errorf("batched: max |logit - reference| = %.3g", d)
			}
			s.Reset()
			var inc []float32
			for _, id := range ref.PromptIDs {
				l, err := s.Forward([]int32{id}, false)
				if err != nil {
					t.Fatal(err)
				}
				inc = append(inc, l...)
			}
			if d := maxDiff(inc, ref.logits); d > 1e-4 {
				t.Errorf("token by token: max |logit - reference| = %.3g", d)
			}
			t.Logf("max |Δlogit| batched %.2g, incremental %.2g", maxDiff(batch, ref.logits), maxDiff(inc, ref.logits))

			// The same with attention fused: it must not change the result.
			fm := load(t, testmodels.Shared(t, c.model), 2, passes.FlashAttention{})
			fs, _ := fm.NewSession(len(ref.PromptIDs))
			fused, err := fs.Forward(ref.PromptIDs, true)
			if err != nil {
				t.Fatal(err)
			}
			// Within 1e-5 of the logits' scale: the attention outputs agree to
			// 1e-5 (runtime/cpu's test), and five layers carry the rounding on.
			tol := 1e-5 * maxAbs(batch)
			if d := maxDiff(fused, batch); d > tol {
				t.Errorf("fused attention: max |logit - unfused| = %.3g > %.3g", d, tol)
			}
			fs.Reset()
			for i, id := range ref.PromptIDs {
				l, err := fs.Forward([]int32{id}, false)
				if err != nil {
					t.Fatal(err)
				}
				V := fm.VocabSize()
				if d := maxDiff(l, inc[i*V:(i+1)*V]); d > tol {
					t.Fatalf("fused attention, token %d by token: max |logit - unfused| = %.3g", i, d)
				}
			}
		})
	}
}

// TestEveryType runs stories260K converted to every type lqc writes, and
// checks that the next-token predictions on the reference prompt mostly
// agree with the reference: every kernel path gives sane results.
func TestEveryType(t *testing.T) {
	ref := readRef(t, "models/stories260K/reference", "prompt64")
	src, err := frontend.Load(testmodels.Shared(t, "models/stories260K/hf"), frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := map[quant.FileType]float64{ // minimum top-1 agreement with the reference
		quant.FileAllF32: 1, quant.FileMostlyF16: 1, quant.FileMostlyBF16: 0.9, quant.FileMostlyQ8_0: 0.95,
		quant.FileMostlyQ6_K: 0.9, quant.FileMostlyQ5_1: 0.85, quant.FileMostlyQ5_0: 0.85,
		quant.FileMostlyQ4_1: 0.7, quant.FileMostlyQ4_0: 0.7,
	}
	for ft, min := range want {
		m, err := frontend.Load(testmodels.Shared(t, "models/stories260K/hf"), frontend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := (&passes.Manager{Passes: []passes.Pass{passes.Quantize{FileType: ft}}}).Run(m); err != nil {
			t.Fatal(err)
		}
		b := cpu.New(2)
		rm, err := runtime.Load(m, b)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := rm.NewSession(len(ref.PromptIDs))
		logits, err := s.Forward(ref.PromptIDs, true)
		if err != nil {
			t.Fatal(err)
		}
		V := rm.VocabSize()
		agree := 0
		for i := range ref.PromptIDs {
			if runtime.Argmax(logits[i*V:(i+1)*V]) == runtime.Argmax(ref.logits[i*V:(i+1)*V]) {
				agree++
			}
		}
		frac := float64(agree) / float64(len(ref.PromptIDs))
		if frac < min {
			t.Errorf("%v: top-1 agrees with the reference at %.2f of positions, want at least %.2f", ft, frac, min)
		}
		t.Logf("%-5v top-1 agreement %.3f, max |Δlogit| %.3g", ft, frac, maxDiff(logits, ref.logits))
		b.Close()
		m.Close()
	}
}
