package cuda

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
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

func reference(t *testing.T, dir, name string) (ids []int32, logits []float32) {
	t.Helper()
	var r struct {
		PromptIDs []int32 `json:"prompt_ids"`
	}
	b, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, name+"_logits.f32.bin"))
	if err != nil {
		t.Fatal(err)
	}
	logits = make([]float32, len(raw)/4)
	for i := range logits {
		logits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return r.PromptIDs, logits
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
			ids, want := reference(t, testmodels.Shared(t, c.ref), c.prompt)
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
				d := maxDiff(got, want)
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

	// llama.cpp's quantized files: as the CPU backend runs them (which
	// quantizes activations to 8 bits for the products, as ggml does;
	// the GPU multiplies float32 activations).
	host := cpu.New(2)
	defer host.Close()
	ids, _ := reference(t, testmodels.Shared(t, "models/stories260K/reference"), "prompt64")
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
		if d := maxDiff(logits[1], logits[0]); d > 0.02*scale {
			t.Errorf("%s: max |GPU − CPU| = %.3g of logits up to %.3g", file, d, scale)
		} else {
			t.Logf("%s: max |GPU − CPU| = %.3g of logits up to %.3g", file, d, scale)
		}
	}
}
