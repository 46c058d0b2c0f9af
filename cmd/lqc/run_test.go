package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
)

// TestRunGreedy: greedy generation from BOS reproduces the reference text
// byte for byte, from lqc's F32 GGUF, from the Hugging Face folder and from
// the llama2.c checkpoint; the gpt2 model reproduces its own reference.
func TestRunGreedy(t *testing.T) {
	gguf := filepath.Join(t.TempDir(), "f32.gguf")
	convert(t, testmodels.Shared(t, "models/stories260K/hf"), "-o", gguf, "--quant", "f32")
	want, err := os.ReadFile(testmodels.Shared(t, "models/stories260K/reference/expected_greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	onnxArgs := []string{testmodels.Shared(t, "models/stories260K/onnx/external/model.onnx"), "--tokenizer", testmodels.Shared(t, "models/stories260K/hf")}
	for _, src := range [][]string{{gguf}, {testmodels.Shared(t, "models/stories260K/hf")}, {testmodels.Shared(t, "models/stories260K/llama2c/stories260K.bin")}, onnxArgs} {
		code, stdout, stderr := lqc(append([]string{"run", "--temp", "0", "-n", "200"}, src...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", src, code, stderr)
		}
		if stdout != string(want) {
			t.Errorf("%s: greedy text differs from the reference:\n%q\n%q", src, stdout, want)
		}
		if !strings.Contains(stderr, "generation: 200 tokens") {
			t.Errorf("%s: no speed report on stderr: %q", src, stderr)
		}
	}
	wantGPT, err := os.ReadFile(testmodels.Shared(t, "models/gpt2-tiny/reference/expected_greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := lqc("run", testmodels.Shared(t, "models/gpt2-tiny/hf"), "--temp", "0", "-n", "100"); code != 0 || stdout != string(wantGPT) {
		t.Errorf("gpt2-tiny: exit %d, %s\n%q\n%q", code, stderr, stdout, wantGPT)
	}
	// Sampling with a seed repeats itself.
	_, a, _ := lqc("run", gguf, "--seed", "7", "-n", "40", "-p", "Once upon a time")
	_, b, _ := lqc("run", gguf, "--seed", "7", "-n", "40", "-p", "Once upon a time")
	if a != b || a == "" {
		t.Errorf("seeded sampling is not repeatable: %q vs %q", a, b)
	}
}

func TestEvalGate(t *testing.T) {
	ref := testmodels.Shared(t, "models/stories260K/hf")
	data := testmodels.Shared(t, "golden/real/eval.txt")
	q4 := filepath.Join(t.TempDir(), "q4_0.gguf")
	convert(t, ref, "-o", q4, "--quant", "q4_0")
	code, stdout, stderr := lqc("eval", q4, "--ref", ref, "--data", data, "--ctx", "128", "--json",
		"--max-kld", "0.085", "--min-top1", "0.85", "--max-ppl-ratio", "1.08")
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	var res struct {
		Result struct {
			Chunks int     `json:"chunks"`
			Tokens int     `json:"tokens"`
			PPL    float64 `json:"ppl"`
			Ref    struct {
				KLDMean  float64 `json:"kld_mean"`
				Top1     float64 `json:"top1"`
				PPLRatio float64 `json:"ppl_ratio"`
				PPL      float64 `json:"ppl"`
			} `json:"ref"`
		} `json:"result"`
		Pass bool `json:"pass"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	r := res.Result
	// llama-perplexity on the same text and context: 10 chunks, 630
	// scored tokens, F32 perplexity 3.9105, Q4_0 4.1684, KLD 0.0730.
	if !res.Pass || r.Chunks != 10 || r.Tokens != 630 || r.Ref.PPL < 3.90 || r.Ref.PPL > 3.92 ||
		r.PPL < 4.10 || r.PPL > 4.25 || r.Ref.KLDMean < 0.06 || r.Ref.KLDMean > 0.085 {
		t.Errorf("eval --json: %+v", res)
	}
	// --chunks 3 scores the first 3 chunks only: 3 × 63 tokens.
	code, stdout, stderr = lqc("eval", q4, "--ref", ref, "--data", data, "--ctx", "128", "--chunks", "3", "--json")
	if code != 0 {
		t.Fatalf("--chunks 3: exit %d: %s", code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Result.Chunks != 3 || res.Result.Tokens != 189 {
		t.Errorf("--chunks 3: %d chunks, %d tokens scored; want 3 and 189", res.Result.Chunks, res.Result.Tokens)
	}
	code, stdout, stderr = lqc("eval", q4, "--ref", ref, "--data", data, "--ctx", "128", "--max-kld", "0.01")
	if code != 1 || !strings.Contains(stdout, "FAIL: 0.07") || !strings.Contains(stderr, "accuracy gate failed: mean KLD") {
		t.Errorf("a failing gate: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// The ONNX export is the reference model itself.
	onnx := testmodels.Shared(t, "models/stories260K/onnx/model.onnx")
	if code, stdout, stderr := lqc("eval", onnx, "--tokenizer", ref, "--ref", ref, "--data", data, "--ctx", "128",
		"--max-kld", "1e-6", "--min-top1", "1", "--max-ppl-ratio", "1.000001"); code != 0 {
		t.Errorf("eval of the ONNX export against its folder: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if code, _, stderr := lqc("eval", q4, "--data", data, "--max-kld", "1"); code != 2 {
		t.Errorf("thresholds without --ref: exit %d %s", code, stderr)
	}
	if code, _, stderr := lqc("eval", q4, "--ref", testmodels.Shared(t, "models/gpt2-tiny/hf"), "--data", data, "--ctx", "128"); code != 1 || !strings.Contains(stderr, "different vocabularies") {
		t.Errorf("mismatched reference: exit %d %s", code, stderr)
	}
}

func TestTokenizeCommand(t *testing.T) {
	vocab := testmodels.Shared(t, "golden/tokenizer/ggml-vocab-llama-spm.gguf")
	code, stdout, stderr := lqc("tokenize", vocab, "Hello world", "--ids")
	if code != 0 || stdout != "1 15043 3186\n" {
		t.Errorf("exit %d, %q %s", code, stdout, stderr)
	}
	code, stdout, _ = lqc("tokenize", vocab, "Hello world", "--ids", "--no-bos")
	if code != 0 || stdout != "15043 3186\n" {
		t.Errorf("--no-bos: %q", stdout)
	}
	code, stdout, _ = lqc("tokenize", vocab, "Hello", "--json")
	if code != 0 || !strings.Contains(stdout, `{"id":15043,"piece":"▁Hello"}`) {
		t.Errorf("--json: %q", stdout)
	}
	f := filepath.Join(t.TempDir(), "t.txt")
	os.WriteFile(f, []byte("Hello world"), 0o644)
	if code, stdout, _ = lqc("tokenize", vocab, "--file", f); code != 0 || !strings.Contains(stdout, " 15043 -> ' Hello'") {
		t.Errorf("--file: %q", stdout)
	}
}
