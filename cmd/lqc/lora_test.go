package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

// TestLoRAInterop: real llama.cpp running a base model with the adapter
// GGUF lqc writes computes what lqc's fused model computes: logits on the
// evaluation text within 1e-3 and the same greedy tokens, for llama (q/k
// permutation, GQA), gpt2, qwen2 (biases, NeoX RoPE), Llama 3 (scaled
// RoPE frequencies), Gemma (head size apart from hidden/heads; GELU, where
// ggml's float16 GELU table moves logits by ~1e-3) and Phi-3 (fused
// qkv_proj and gate_up_proj), for an adapter with one rank and scale
// (written with alpha) and one with rsLoRA and rank/alpha patterns
// (scales folded into B), at adapter scale 1 and 0.5.
func TestLoRAInterop(t *testing.T) {
	dir := llamacpp.Require(t)
	text, err := os.ReadFile(testmodels.Shared(t, "golden/real/eval.txt"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		base  string
		a     testmodels.PEFTAdapter
		scale float64
		T     int // tokens evaluated: GPT-2's 50257-token rows make long runs heavy for the harness
		// lqcTol bounds lqc's runtime against llama.cpp: ggml computes
		// GELU from a float16 table, which moves gpt2's logits by ~1e-3.
		lqcTol float64
	}{
		{"llama", "models/stories260K/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, R: 8, Alpha: 16, Seed: 7}, 1, 128, 1e-3},
		{"llama patterns rsLoRA half", "models/stories260K/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, R: 8, Alpha: 16, RSLoRA: true, Seed: 8,
			RankPattern:  []testmodels.PEFTPattern{{Key: "k_proj", Value: 4}},
			AlphaPattern: []testmodels.PEFTPattern{{Key: `layers\.[0-2]\.self_attn\.o_proj`, Value: 4}}}, 0.5, 128, 1e-3},
		{"gpt2", "models/gpt2-tiny/hf", testmodels.PEFTAdapter{Targets: []string{"c_attn", "c_proj", "c_fc"}, R: 8, Alpha: 16, Seed: 9}, 1, 16, 5e-3},
		{"qwen2", "models/qwen2-tiny/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, R: 8, Alpha: 16, Seed: 10}, 1, 64, 1e-3},
		{"llama3", "models/llama3-tiny/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "v_proj", "down_proj"}, R: 4, Alpha: 8, Seed: 11}, 1, 64, 1e-3},
		{"gemma", "models/gemma-tiny/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "k_proj", "o_proj", "gate_proj", "up_proj"}, R: 4, Alpha: 8, Seed: 12}, 1, 64, 5e-3},
		{"gemma3", "models/gemma3-tiny/hf", testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "v_proj", "o_proj", "down_proj"}, R: 4, Alpha: 8, Seed: 14}, 1, 64, 5e-3},
		{"phi3", "models/phi3-tiny/hf", testmodels.PEFTAdapter{
			Targets: []string{"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}, R: 4, Alpha: 8, Seed: 13}, 1, 64, 1e-3},
	}
	tmp := t.TempDir()
	type files struct{ base, adapter, fused string }
	var all []files
	var jobs []llamacpp.Job
	const n = 64
	for i, c := range cases {
		src := testmodels.Shared(t, c.base)
		ad := filepath.Join(tmp, fmt.Sprint("peft", i))
		if err := testmodels.WritePEFT(ad, src, c.a); err != nil {
			t.Fatal(err)
		}
		f := files{filepath.Join(tmp, fmt.Sprint("base", i, ".gguf")), filepath.Join(tmp, fmt.Sprint("adapter", i, ".gguf")), filepath.Join(tmp, fmt.Sprint("fused", i, ".gguf"))}
		convert(t, src, "-o", f.base, "--quant", "f32")
		convert(t, ad, "--base", src, "-o", f.adapter)
		convert(t, src, "-o", f.fused, "--quant", "f32", "--fuse-lora", fmt.Sprintf("%s:%g", ad, c.scale))
		l, err := loadForRun(f.fused, &runOptions{threads: 2, flashAttn: "auto"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		ids := l.tok.Encode(string(text), true)[:c.T]
		l.close()
		prompt := make([]int, len(ids))
		for k, id := range ids {
			prompt[k] = int(id)
		}
		lora := []llamacpp.LoRA{{Path: f.adapter, Scale: c.scale}}
		jobs = append(jobs,
			llamacpp.Job{Model: f.base, LoRA: lora, Prompt: prompt, Logits: true, F32: true},
			llamacpp.Job{Model: f.fused, Prompt: prompt, Logits: true, F32: true},
			llamacpp.Job{Model: f.base, LoRA: lora, Prompt: prompt[:1], N: n},
			llamacpp.Job{Model: f.fused, Prompt: prompt[:1], N: n})
		all = append(all, f)
	}
	results, err := llamacpp.Run(dir, jobs)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		r := results[4*i : 4*i+4]
		for _, x := range r {
			if x.Error != "" {
				t.Fatalf("%s: llama.cpp: %s", c.name, x.Error)
			}
		}
		var worst, size float64
		for p := range r[0].Logits {
			for v := range r[0].Logits[p] {
				worst = max(worst, math.Abs(float64(r[0].Logits[p][v]-r[1].Logits[p][v])))
				size = max(size, math.Abs(float64(r[1].Logits[p][v])))
			}
		}
		// lqc's own runtime on the fused file, against llama.cpp with the
		// adapter.
		l, err := loadForRun(all[i].fused, &runOptions{threads: 2, flashAttn: "auto"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		sess, _ := l.model.NewSession(c.T)
		ours, err := sess.Forward(l.tok.Encode(string(text), true)[:c.T], true)
		l.close()
		if err != nil {
			t.Fatal(err)
		}
		var worstLQC float64
		vocab := len(ours) / c.T
		for p := range r[0].Logits {
			for v := range vocab {
				worstLQC = max(worstLQC, math.Abs(float64(r[0].Logits[p][v]-ours[p*vocab+v])))
			}
		}
		t.Logf("%s: llama.cpp base+adapter vs fused: max |Δlogit| %.2g (logits up to %.1f); vs lqc's runtime on the fused file %.2g; greedy %d/%d",
			c.name, worst, size, worstLQC, agreement(r[2].Tokens, r[3].Tokens), n)
		if worst > max(1e-3, c.lqcTol) || worstLQC > c.lqcTol { // GELU models: llama.cpp with and without the adapter differ by its table too
			t.Errorf("%s: logits differ by %.3g (llama.cpp fused, want ≤ %g) and %.3g (lqc fused, want ≤ %g)", c.name, worst, max(1e-3, c.lqcTol), worstLQC, c.lqcTol)
		}
		if strings.Join(strings.Fields(fmt.Sprint(r[2].Tokens)), " ") != strings.Join(strings.Fields(fmt.Sprint(r[3].Tokens)), " ") {
			t.Errorf("%s: greedy tokens differ:\nadapter %v\nfused   %v", c.name, r[2].Tokens, r[3].Tokens)
		}
	}
}

// TestAdapterBadInput: an adapter for another model, one the GGUF adapter
// format cannot hold, and a missing --base each end with a one-line
// error and no output file.
func TestAdapterBadInput(t *testing.T) {
	stories := testmodels.Shared(t, "models/stories260K/hf")
	gpt2 := testmodels.Shared(t, "models/gpt2-tiny/hf")
	tmp := t.TempDir()
	write := func(name, base string, a testmodels.PEFTAdapter) string {
		dir := filepath.Join(tmp, name)
		if err := testmodels.WritePEFT(dir, base, a); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	gpt2Adapter := write("gpt2", gpt2, testmodels.PEFTAdapter{Targets: []string{"c_attn"}, R: 4, Alpha: 8, Seed: 1})
	dora := write("dora", stories, testmodels.PEFTAdapter{Targets: []string{"q_proj"}, R: 4, Alpha: 8, DoRA: true, Seed: 1})
	saved := write("saved", gpt2, testmodels.PEFTAdapter{Targets: []string{"c_attn"}, R: 4, Alpha: 8, ModulesToSave: []string{"c_fc"}, Seed: 1})
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"adapter of another architecture", []string{"convert", stories, "--fuse-lora", gpt2Adapter}, 1, "is a gpt2 module, but the base model is llama"},
		{"DoRA as a GGUF adapter", []string{"convert", dora, "--base", stories}, 1, "DoRA adapters cannot be written"},
		{"modules_to_save as a GGUF adapter", []string{"convert", saved, "--base", gpt2}, 1, "modules_to_save"},
		{"adapter without --base", []string{"convert", dora}, 2, "--base MODEL"},
		{"--base with a model", []string{"convert", stories, "--base", stories}, 2, "--fuse-lora"},
		{"a model as adapter", []string{"convert", stories, "--fuse-lora", stories}, 1, "not a LoRA adapter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			failsCleanly(t, c.args, c.code, c.want)
		})
	}
}

// TestRunLoRA: lqc run with an adapter applied beside the weights (from
// its GGUF or its PEFT folder) generates what the merged model generates,
// and eval measures the same.
func TestRunLoRA(t *testing.T) {
	base := testmodels.Shared(t, "models/stories260K/hf")
	peftDir := filepath.Join(repoRootTestdata(), "stories260K-lora")
	adapter := filepath.Join(t.TempDir(), "adapter.gguf")
	convert(t, peftDir, "--base", base, "-o", adapter)
	var texts []string
	for _, flags := range [][]string{{"--lora", adapter}, {"--lora", peftDir + ":1"}, {"--fuse-lora", peftDir}} {
		code, stdout, stderr := lqc(append([]string{"run", base, "--temp", "0", "-n", "40"}, flags...)...)
		if code != 0 {
			t.Fatalf("%v: %s", flags, stderr)
		}
		texts = append(texts, stdout)
	}
	_, plain, _ := lqc("run", base, "--temp", "0", "-n", "40")
	if texts[0] != texts[2] || texts[1] != texts[2] || texts[0] == plain {
		t.Errorf("unfused and fused generations differ, or equal the base's:\n%q\n%q\n%q\nbase %q", texts[0], texts[1], texts[2], plain)
	}
	data := testmodels.Shared(t, "golden/real/eval.txt")
	var ppl []string
	for _, flags := range [][]string{{"--lora", adapter}, {"--fuse-lora", peftDir}} {
		code, stdout, stderr := lqc(append([]string{"eval", base, "--data", data, "-c", "128"}, flags...)...)
		if code != 0 {
			t.Fatalf("%v: %s", flags, stderr)
		}
		ppl = append(ppl, strings.Fields(strings.SplitN(stdout, "perplexity", 2)[1])[0])
	}
	if ppl[0] != ppl[1] {
		t.Errorf("perplexity with the adapter unfused %s, fused %s", ppl[0], ppl[1])
	}
}

func repoRootTestdata() string { return filepath.Join(testmodels.RepoRoot(), "testmodels", "testdata") }

// TestLoRAQuantized measures what merging an adapter before quantizing
// costs against keeping it unmerged beside a quantized base: both are
// compared with the adapter merged in float32, on the evaluation text.
// Either way the loss must stay that of quantizing the base itself
// (within 1.5×); the figures are logged for the closing note.
func TestLoRAQuantized(t *testing.T) {
	base := testmodels.Shared(t, "models/stories260K/hf")
	data := testmodels.Shared(t, "golden/real/eval.txt")
	peftDir := filepath.Join(repoRootTestdata(), "stories260K-lora")
	tmp := t.TempDir()
	ref, adapter := filepath.Join(tmp, "ref.gguf"), filepath.Join(tmp, "adapter.gguf")
	convert(t, base, "--fuse-lora", peftDir, "--quant", "f32", "-o", ref)
	convert(t, peftDir, "--base", base, "-o", adapter)
	kld := func(args ...string) float64 {
		t.Helper()
		code, stdout, stderr := lqc(append([]string{"eval", "--data", data, "-c", "128", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("eval %v: %s", args, stderr)
		}
		var res struct {
			Result struct {
				Ref struct {
					KLD float64 `json:"kld_mean"`
				} `json:"ref"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatal(err)
		}
		return res.Result.Ref.KLD
	}
	for _, q := range []string{"q8_0", "q4_0"} {
		fusedQ, baseQ := filepath.Join(tmp, "fused-"+q+".gguf"), filepath.Join(tmp, "base-"+q+".gguf")
		convert(t, base, "--fuse-lora", peftDir, "--quant", q, "-o", fusedQ)
		convert(t, base, "--quant", q, "-o", baseQ)
		fused := kld(fusedQ, "--ref", ref)
		unfused := kld(baseQ, "--lora", adapter, "--ref", ref)
		plain := kld(baseQ, "--ref", base)
		t.Logf("%s: mean KLD from the float32 merge: merged then quantized %.6f, unmerged beside the quantized base %.6f (the base quantized, from the base: %.6f)", q, fused, unfused, plain)
		if fused > 1.5*plain || unfused > 1.5*plain {
			t.Errorf("%s: adapter quantization loss %.4g (merged) / %.4g (unmerged) exceeds 1.5× the base's %.4g", q, fused, unfused, plain)
		}
	}
}
