package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/testmodels"
)

type planJSON struct {
	Weights     int64            `json:"weights_bytes"`
	ByType      map[string]int64 `json:"weights_by_type"`
	Total       int64            `json:"total_bytes"`
	Fits        bool             `json:"fits"`
	Recompute   bool             `json:"recompute"`
	Activations int64            `json:"activations_bytes"`
	MaxCtx      int              `json:"max_ctx"`
}

func planOf(t *testing.T, args ...string) (planJSON, int, string) {
	t.Helper()
	code, stdout, stderr := lqc(append([]string{"plan", "--json"}, args...)...)
	var p planJSON
	if err := json.Unmarshal([]byte(stdout), &p); err != nil && code != 2 {
		t.Fatalf("lqc plan %v: not JSON (%v): %q %s", args, err, stdout, stderr)
	}
	return p, code, stderr
}

// dataBytes is the size of a GGUF's tensor data.
func dataBytes(t *testing.T, path string) int64 {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size() - int64(f.DataOffset)
}

// TestPlanWeightsMatchConvert: lqc plan's weights_bytes for a K-quant mix
// (per-tensor rules, Q6_K for the classifier) is the tensor data of the
// GGUF lqc convert writes, from the model folder and from a folder with
// only its config.json; the types add up to it.
func TestPlanWeightsMatchConvert(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "hf")
	shape := testmodels.LlamaShape{Layers: 2, Hidden: 256, FFN: 512, Heads: 4, KVHeads: 2, Vocab: 320, Context: 512}
	if err := testmodels.WriteLlamaHF(model, shape, quant.BF16, 3); err != nil {
		t.Fatal(err)
	}
	configOnly := filepath.Join(dir, "config-only")
	os.Mkdir(configOnly, 0o755)
	cfg, _ := os.ReadFile(filepath.Join(model, "config.json"))
	os.WriteFile(filepath.Join(configOnly, "config.json"), cfg, 0o644)
	for _, q := range []string{"q4_k_m", "q3_k_s", "iq4_xs", "q8_0"} {
		out := filepath.Join(dir, q+".gguf")
		if code, _, stderr := lqc("convert", model, "--quant", q, "-o", out, "--quiet"); code != 0 {
			t.Fatalf("convert %s: %s", q, stderr)
		}
		want := dataBytes(t, out)
		for _, from := range []string{model, configOnly} {
			p, code, stderr := planOf(t, from, "--quant", q, "--mode", "infer", "--ctx", "64")
			if code != 0 {
				t.Fatalf("plan %s: exit %d: %s", from, code, stderr)
			}
			sum := int64(0)
			for _, n := range p.ByType {
				sum += n
			}
			if p.Weights != want || sum != want {
				t.Errorf("%s from %s: plan %d bytes of weights (types adding up to %d), convert wrote %d", q, from, p.Weights, sum, want)
			}
		}
	}
}

// TestPlanBudget: --mem decides fits and the exit status, the text
// output says what to change, and bad flags are usage errors.
func TestPlanBudget(t *testing.T) {
	model := testmodels.Shared(t, "golden/real/stories260K-Q4_0.gguf")
	p, code, _ := planOf(t, model, "--ctx", "256", "--rank", "4")
	if code != 0 || p.Total <= 0 || p.Recompute {
		t.Fatalf("plan without --mem: exit %d, %+v", code, p)
	}
	// Just under the plan: recomputation makes it fit.
	q, code, _ := planOf(t, model, "--ctx", "256", "--rank", "4", "--mem", strconv.FormatInt(p.Total-1, 10))
	if code != 0 || !q.Fits || !q.Recompute || q.Activations >= p.Activations {
		t.Errorf("a byte under the plan: exit %d, %+v", code, q)
	}
	code, stdout, stderr := lqc("plan", model, "--ctx", "256", "--mem", "1MiB")
	if code != 1 || !strings.Contains(stdout, "does not fit in 1.0 MiB") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "needed") {
		t.Errorf("a budget too small: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, args := range [][]string{{"--mode", "pretrain"}, {"--mem", "lots"}, {"--precision", "bf16"}, {"--device", "tpu"}} {
		if code, _, stderr := lqc(append([]string{"plan", model}, args...)...); code != 2 || !strings.Contains(stderr, strings.TrimPrefix(args[1], "-")) {
			t.Errorf("plan %v: exit %d, %q", args, code, stderr)
		}
	}
}
