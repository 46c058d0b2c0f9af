package cuda

import (
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// loadOn loads a model as lqc run does (dead code removed, attention
// fused) onto a backend.
func loadOn(t *testing.T, path string, b lqrt.Backend) *lqrt.Model {
	return loadWith(t, path, b, passes.DeadCode{}, passes.FlashAttention{})
}

// loadWith loads a model through the given passes onto a backend.
func loadWith(t *testing.T, path string, b lqrt.Backend, ps ...passes.Pass) *lqrt.Model {
	t.Helper()
	m, err := frontend.Load(path, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := (&passes.Manager{Passes: ps}).Run(m); err != nil {
		t.Fatal(err)
	}
	rm, err := lqrt.Load(m, b)
	if err != nil {
		t.Fatal(err)
	}
	return rm
}

// forwardSplit is the logits of every position of ids: the first split
// tokens in one call, the rest one by one through the KV cache.
func forwardSplit(t *testing.T, s *lqrt.Session, ids []int32, split int) []float32 {
	t.Helper()
	got, err := s.Forward(ids[:split], true)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[split:] {
		l, err := s.Forward([]int32{id}, false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l...)
	}
	return got
}

func maxDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// TestReferenceModels runs the real models through the CUDA backend on
// the simulator: the PyTorch reference logits of stories260K and
// gpt2-tiny (the whole prompt at once, and token by token through the KV
// cache) within 1e-3, the greedy continuation of the reference, and
// llama.cpp's Q4_0 and Q8_0 files of stories260K as the CPU backend runs
// them.
func TestReferenceModels(t *testing.T) {
	for _, c := range []struct {
		name, model, ref, prompt string
		// split: the prompt's first tokens in one call, the rest one
		// by one through the KV cache. gpt2-tiny's 50257-word output
		// layer is slow to interpret, so it runs the prompt once, split;
		// stories260K also runs it whole and wholly token by token.
		split int
		// spelled: attention left as the model builds it (MatMul,
		// CausalMask, Softmax), as with --flash-attn off.
		spelled bool
	}{
		{"stories260K", "models/stories260K/hf", "models/stories260K/reference", "prompt64", 0, false},
		{"stories260K spelled-out attention", "models/stories260K/hf", "models/stories260K/reference", "prompt64", 48, true},
		{"gpt2-tiny", "models/gpt2-tiny/hf", "models/gpt2-tiny/reference", "prompt32", 28, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ids, want := testmodels.PromptReference(t, c.ref, c.prompt)
			ps := []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}
			if c.spelled {
				ps = ps[:1]
			}
			m := loadWith(t, testmodels.Shared(t, c.model), testBackend(t), ps...)
			s, err := m.NewSession(len(ids))
			if err != nil {
				t.Fatal(err)
			}
			splits := []int{c.split}
			if c.split == 0 {
				splits = []int{len(ids), 1}
			}
			for _, split := range splits {
				s.Reset()
				d := maxDiff(forwardSplit(t, s, ids, split), want)
				if d > 1e-3 {
					t.Errorf("%d tokens at once, %d one by one: max |logit − PyTorch| = %.3g", split, len(ids)-split, d)
				}
				t.Logf("%d tokens at once, %d one by one: max |Δlogit| against PyTorch %.2g", split, len(ids)-split, d)
			}
		})
	}

	// Greedy decoding from BOS: the reference text's tokens.
	path := testmodels.Shared(t, "models/stories260K/reference/expected_greedy_ids.txt")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var greedy []int32
	for _, f := range strings.Fields(string(raw))[:48] {
		id, _ := strconv.Atoi(f)
		greedy = append(greedy, int32(id))
	}
	m := loadOn(t, testmodels.Shared(t, "models/stories260K/hf"), testBackend(t))
	s, _ := m.NewSession(len(greedy) + 1)
	tok := m.IR.Vocab.BOS
	for i, want := range greedy {
		l, err := s.Forward([]int32{tok}, false)
		if err != nil {
			t.Fatal(err)
		}
		if tok = lqrt.Argmax(l); tok != want {
			t.Fatalf("greedy token %d: %d, the reference has %d", i, tok, want)
		}
	}

	// llama.cpp's quantized files: as the CPU backend runs them, both
	// quantizing activations to 8 bits for the products, as ggml does.
	// Float rounding that differs in the last bit can move an activation
	// across a rounding boundary and so change one quantized level: rows
	// agree to float32 rounding but for such rare flips (1 in 32 allowed),
	// and every row within 1% of the logits' range.
	host := cpu.New(2)
	defer host.Close()
	ids, _ := testmodels.PromptReference(t, "models/stories260K/reference", "prompt64")
	for _, file := range []string{"stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf"} {
		path := testmodels.Shared(t, "golden/real", file)
		var logits [2][]float32
		for i, be := range []lqrt.Backend{host, testBackend(t)} {
			m := loadOn(t, path, be)
			s, _ := m.NewSession(len(ids))
			if logits[i], err = s.Forward(ids, true); err != nil {
				t.Fatal(err)
			}
		}
		var scale float64
		for _, v := range logits[0] {
			scale = max(scale, math.Abs(float64(v)))
		}
		V := len(logits[0]) / len(ids)
		flips, worst := 0, 0.0
		for r := range ids {
			d := maxDiff(logits[1][r*V:(r+1)*V], logits[0][r*V:(r+1)*V])
			worst = max(worst, d)
			if d > 1e-4*scale {
				flips++
			}
		}
		if flips > len(ids)/32 || worst > 0.01*scale {
			t.Errorf("%s: %d of %d rows differ beyond rounding, by up to %.3g of logits up to %.3g", file, flips, len(ids), worst, scale)
		} else {
			t.Logf("%s: %d of %d rows differ beyond rounding, by up to %.3g of logits up to %.3g", file, flips, len(ids), worst, scale)
		}
	}
}

// TestGoldenQuantFiles runs llama.cpp's own files of the golden synthetic
// model (256-wide rows, so every block type appears, in llama-quantize's
// mixes) on the GPU and on the CPU multiplying decoded weights by float32
// activations, as the GPU does: the logits of a prompt agree to float32
// rounding for every type.
func TestGoldenQuantFiles(t *testing.T) {
	host := cpu.New(2)
	defer host.Close()
	prompt := []int32{1, 200, 17, 305, 44}
	for _, name := range []string{"BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_0", "Q4_K_M", "Q4_1", "Q4_0",
		"IQ4_NL", "IQ4_XS", "Q3_K_M", "Q2_K"} {
		t.Run(name, func(t *testing.T) {
			path := testmodels.Shared(t, "golden/quant", name+".gguf")
			var logits [2][]float32
			for i, be := range []lqrt.Backend{host, testBackend(t)} {
				m, err := frontend.Load(path, frontend.Options{})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				if err := (&passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}).Run(m); err != nil {
					t.Fatal(err)
				}
				for _, n := range m.Graph.Nodes {
					if n.Op == "Linear" {
						if n.Attrs == nil {
							n.Attrs = ir.Attrs{}
						}
						n.Attrs["exact"] = true
					}
				}
				rm, err := lqrt.Load(m, be)
				if err != nil {
					t.Fatal(err)
				}
				s, err := rm.NewSession(len(prompt))
				if err != nil {
					t.Fatal(err)
				}
				if logits[i], err = s.Forward(prompt, true); err != nil {
					t.Fatal(err)
				}
			}
			var scale float64
			for _, v := range logits[0] {
				scale = max(scale, math.Abs(float64(v)))
			}
			if d := maxDiff(logits[1], logits[0]); d > 1e-4*max(scale, 1) {
				t.Errorf("max |GPU − CPU| = %.3g of logits up to %.3g", d, scale)
			}
		})
	}
}

// TestStepWithAdapters: batched decoding on the GPU — sessions at
// different positions, each with its own LoRA adapters (two PEFT
// adapters, alone, mixed, scaled, none), stepped together through
// Model.Step — gives each session what the CPU gives it alone.
func TestStepWithAdapters(t *testing.T) {
	dir := testmodels.Shared(t, "models/stories260K/hf")
	host := cpu.New(2)
	defer host.Close()
	models := [2]*lqrt.Model{loadOn(t, dir, host), loadOn(t, dir, testBackend(t))}
	var ads [2][2]*lqrt.Adapter
	for j, targets := range [][]string{{"q_proj", "v_proj"}, {"o_proj", "down_proj"}} {
		peft := t.TempDir()
		if err := testmodels.WritePEFT(peft, dir, testmodels.PEFTAdapter{Targets: targets, R: 8, Alpha: 16, Seed: uint64(j + 1)}); err != nil {
			t.Fatal(err)
		}
		for i, m := range models {
			a, err := frontend.LoadAdapter(peft, m.IR)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			if ads[i][j], err = m.LoadAdapter(a); err != nil {
				t.Fatal(err)
			}
		}
	}
	mix := func(i int) [][]lqrt.Applied {
		a, b := ads[i][0], ads[i][1]
		return [][]lqrt.Applied{{{Adapter: a, Scale: 1}}, nil, {{Adapter: b, Scale: 1}}, {{Adapter: a, Scale: 0.5}, {Adapter: b, Scale: 1}}}
	}
	prompt := []int32{1, 403, 407, 261, 378, 432, 383, 286, 261}
	var sessions [2][]*lqrt.Session
	next := make([]int32, len(mix(0)))
	for i, m := range models {
		for k, as := range mix(i) {
			s, err := m.NewSession(32)
			if err != nil {
				t.Fatal(err)
			}
			s.SetAdapters(as...)
			if _, err := s.Forward(prompt[:4+k], false); err != nil { // different positions
				t.Fatal(err)
			}
			sessions[i] = append(sessions[i], s)
			next[k] = prompt[4+k]
		}
	}
	for step := range 3 {
		got, err := models[1].Step(sessions[1], next)
		if err != nil {
			t.Fatal(err)
		}
		for k, s := range sessions[0] {
			want, err := s.Forward([]int32{next[k]}, false)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(got[k], want); d > 1e-4 {
				t.Errorf("step %d, session %d: max |GPU − CPU| = %.3g", step, k, d)
			}
			next[k] = lqrt.Argmax(want)
		}
	}
}

// TestFamilies runs every architecture family's fixture on the GPU: the
// prompt's logits against transformers' within 1e-4 (as the CPU backend
// is held), the first 24 tokens at once and the rest one by one through
// the device's KV cache — sliding windows, two RoPE bases, q/k norms,
// soft-capping, GeGLU, ReLU, biases and fused projections among them.
func TestFamilies(t *testing.T) {
	for _, name := range []string{"mistral-tiny", "llama3-tiny", "gemma-tiny", "phi3-tiny", "gemma2-tiny", "gemma3-tiny",
		"qwen2-tiny", "opt-tiny", "opt-proj-tiny"} {
		t.Run(name, func(t *testing.T) {
			ids, want := testmodels.PromptReference(t, "models/"+name+"/reference", "prompt32")
			m := loadOn(t, testmodels.Shared(t, "models", name, "hf"), testBackend(t))
			s, err := m.NewSession(len(ids))
			if err != nil {
				t.Fatal(err)
			}
			if d := maxDiff(forwardSplit(t, s, ids, min(24, len(ids))), want); d > 1e-4 {
				t.Errorf("max |logit − transformers| = %.3g", d)
			}
		})
	}
}
