package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

// familyManifest is reference/llamacpp-manifest-f32.json of a family
// fixture: the tensors and metadata of the GGUF llama.cpp's own converter
// writes from hf/ (arrays summarised by length, head and tail).
type familyManifest struct {
	KV      map[string]json.RawMessage `json:"kv"`
	Tensors []struct {
		Name   string  `json:"name"`
		Type   string  `json:"type"`
		Shape  []int64 `json:"shape"`
		SHA256 string  `json:"sha256"`
	} `json:"tensors"`
}

// arraySummary is how the manifest records an array value.
type arraySummary struct {
	Len  int   `json:"array_len"`
	Head []any `json:"head"`
	Tail []any `json:"tail"`
}

// families are the fixtures whose folders lqc converts as llama.cpp's
// converter does; bos is the id the references start from. extraKV are
// the keys lqc writes beyond the converter's, and llamaCppDiffers says
// llama.cpp computes something else on purpose: it ignores Mistral's
// sliding window (on mistral-tiny, whose window is shorter than the
// greedy run, it agrees with transformers for 24 of 64 tokens).
// noLlamaCpp: llama.cpp has no such architecture (OPT), so lqc's own GGUF
// is checked by lqc running it. logitsDiffer: llama.cpp's greedy ids agree
// but its logits do not (gemma2's query scale), so adapters are not
// compared through it.
type family struct {
	name            string
	bos             int
	extraKV         []string
	llamaCppDiffers bool
	noLlamaCpp      bool
	logitsDiffer    bool
}

var families = []family{
	{name: "qwen2-tiny", bos: 1013},
	{name: "mistral-tiny", bos: 1, extraKV: []string{"llama.attention.sliding_window"}, llamaCppDiffers: true},
	{name: "llama3-tiny", bos: 1014},
	{name: "gemma-tiny", bos: 2},
	{name: "phi3-tiny", bos: 1},
	{name: "gemma2-tiny", bos: 2, extraKV: []string{"gemma2.attention.query_pre_attn_scalar"}, logitsDiffer: true},
	{name: "gemma3-tiny", bos: 2},
	{name: "opt-tiny", bos: 2, noLlamaCpp: true},
	{name: "opt-proj-tiny", bos: 2, noLlamaCpp: true},
}

// TestFamilyConvert converts each family fixture to F32 and holds the
// file to the one llama.cpp's converter writes: every tensor's name,
// type, shape and bytes, every metadata key's value (arrays by length,
// first and last entries), and no tensor or key more.
func TestFamilyConvert(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			dir := testmodels.Shared(t, "models", fam.name)
			if fam.noLlamaCpp {
				// lqc's own GGUF: it must run as the folder does.
				out := filepath.Join(t.TempDir(), "f32.gguf")
				convert(t, filepath.Join(dir, "hf"), "-o", out, "--quant", "f32")
				text, err := os.ReadFile(filepath.Join(dir, "reference", "expected_greedy.txt"))
				if err != nil {
					t.Fatal(err)
				}
				code, stdout, stderr := lqc("run", out, "-n", "64", "--temp", "0")
				if code != 0 || stdout != string(text) {
					t.Errorf("lqc run on its GGUF: exit %d %s\n got %q\nwant %q", code, stderr, stdout, text)
				}
				return
			}
			var m familyManifest
			data, err := os.ReadFile(filepath.Join(dir, "reference", "llamacpp-manifest-f32.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "f32.gguf")
			convert(t, filepath.Join(dir, "hf"), "-o", out, "--quant", "f32")
			f, err := gguf.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want, got := map[string]string{}, map[string]string{}
			for _, ti := range m.Tensors {
				want[ti.Name] = fmt.Sprintf("%s %v %s", ti.Type, ti.Shape, ti.SHA256)
			}
			digests := tensorDigests(t, out)
			for _, ti := range f.Tensors {
				typ, sum, _ := strings.Cut(digests[ti.Name], " ")
				got[ti.Name] = fmt.Sprintf("%s %v %s", typ, ti.Ne, sum)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tensors differ from llama.cpp's converter (-llama.cpp +lqc):\n%s", diff)
			}
			wantKV, gotKV := map[string]string{}, map[string]string{}
			for k, raw := range m.KV {
				var sum arraySummary
				if json.Unmarshal(raw, &sum) == nil && sum.Len > 0 {
					wantKV[k] = fmt.Sprint(sum.Len, sum.Head, sum.Tail)
				} else {
					var v any
					json.Unmarshal(raw, &v)
					wantKV[k] = fmt.Sprint(v)
				}
			}
			for _, kv := range f.Metadata {
				if _, ok := wantKV[kv.Key]; !ok && (strings.HasPrefix(kv.Key, "general.") || slices.Contains(fam.extraKV, kv.Key)) {
					continue // lqc's own general.* keys (name, file type) are checked elsewhere
				}
				gotKV[kv.Key] = summarizeKV(kv.Value)
			}
			for _, k := range []string{"general.name", "general.size_label", "general.type"} {
				delete(wantKV, k) // the converter derives these from the folder's name
				delete(gotKV, k)
			}
			if diff := cmp.Diff(wantKV, gotKV); diff != "" {
				t.Errorf("metadata differs from llama.cpp's converter (-llama.cpp +lqc):\n%s", diff)
			}
		})
	}
}

// summarizeKV renders a metadata value as the manifest records it:
// numbers as JSON numbers (float32 widened as Python widens them),
// arrays as length, first eight and last four entries.
func summarizeKV(v any) string {
	list := func(n int, at func(int) any) string {
		head, tail := []any{}, []any{}
		for i := range min(n, 8) {
			head = append(head, at(i))
		}
		for i := max(0, n-4); i < n; i++ {
			tail = append(tail, at(i))
		}
		return fmt.Sprint(n, head, tail)
	}
	switch x := v.(type) {
	case []string:
		return list(len(x), func(i int) any { return x[i] })
	case []int32:
		return list(len(x), func(i int) any { return float64(x[i]) })
	case []float32:
		return list(len(x), func(i int) any { return float64(x[i]) })
	case float32:
		return fmt.Sprint(float64(x))
	case uint32:
		return fmt.Sprint(float64(x))
	case int32:
		return fmt.Sprint(float64(x))
	case uint64:
		return fmt.Sprint(float64(x))
	}
	return fmt.Sprint(v)
}

// TestFamilyRun: lqc's greedy text from BOS is transformers' for each
// family, and real llama.cpp runs lqc's F32 file with transformers' ids;
// the quantized files load and run in llama.cpp (agreement reported).
func TestFamilyRun(t *testing.T) {
	llama := llamacpp.Require(t)
	tmp := t.TempDir()
	var jobs []llamacpp.Job
	refs := map[string][]int{}
	differs := map[string]bool{}
	for _, fam := range families {
		differs[fam.name] = fam.llamaCppDiffers
		dir := testmodels.Shared(t, "models", fam.name)
		ref := readIDs(t, filepath.Join(dir, "reference", "expected_greedy_ids.txt"))
		refs[fam.name] = ref
		text, err := os.ReadFile(filepath.Join(dir, "reference", "expected_greedy.txt"))
		if err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := lqc("run", filepath.Join(dir, "hf"), "-n", fmt.Sprint(len(ref)), "--temp", "0")
		if code != 0 || stdout != string(text) {
			t.Errorf("%s: lqc run: exit %d %s\n got %q\nwant %q", fam.name, code, stderr, stdout, text)
		}
		for _, q := range []string{"f32", "q8_0", "q4_0"} {
			if fam.noLlamaCpp {
				break
			}
			out := filepath.Join(tmp, fam.name+"-"+q+".gguf")
			convert(t, filepath.Join(dir, "hf"), "-o", out, "--quant", q)
			jobs = append(jobs, llamacpp.Job{Model: out, Prompt: []int{fam.bos}, N: len(ref)})
		}
	}
	results, err := llamacpp.Run(llama, jobs)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	for i, job := range jobs {
		name := strings.TrimSuffix(filepath.Base(job.Model), ".gguf")
		fam := name[:strings.LastIndex(name, "-")]
		r := results[i]
		if r.Error != "" {
			t.Errorf("llama.cpp cannot run lqc's %s: %s", name, r.Error)
			continue
		}
		n := agreement(refs[fam], r.Tokens)
		fmt.Fprintf(&table, "  %-20s %3d/%d\n", name, n, len(refs[fam]))
		if strings.HasSuffix(name, "-f32") && n != len(refs[fam]) && !differs[fam] {
			t.Errorf("%s: llama.cpp's greedy ids agree with transformers' for %d of %d tokens", name, n, len(refs[fam]))
		}
	}
	t.Logf("llama.cpp's greedy ids on lqc's files against transformers':\n%s", table.String())
}

// TestFamilyFinetune: on each family, lqc finetune trains a residual
// adapter that wins back part of what Q4_0 lost (the mean KL divergence
// from the unquantized model on held-out text falls by at least 15%
// in 100 steps), and the adapter it writes runs beside the quantized base.
func TestFamilyFinetune(t *testing.T) {
	data := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	heldOut := testmodels.Shared(t, "golden", "real", "eval.txt")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			hf := testmodels.Shared(t, "models", fam.name, "hf")
			tmp := t.TempDir()
			base := filepath.Join(tmp, "q4_0.gguf")
			convert(t, hf, "-o", base, "--quant", "q4_0")
			adapter := filepath.Join(tmp, "residual.gguf")
			code, stdout, stderr := lqc("finetune", base, "--teacher", hf, "--data", data, "--eval-data", heldOut, "--rank", "4",
				"--batch", "2", "--steps", "100", "--lr", "2e-3", "--ctx", "64", "--json", "-q", "-o", adapter)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			kld := evalKLD(t, stdout)
			if !(kld[100] < 0.85*kld[0]) {
				t.Errorf("held-out KLD went from %.4g to %.4g", kld[0], kld[100])
			}
			if code, _, stderr := lqc("run", base, "--lora", adapter, "-n", "8", "--temp", "0"); code != 0 {
				t.Errorf("lqc run with the adapter: exit %d: %s", code, stderr)
			}
			t.Logf("held-out KLD %.4g → %.4g", kld[0], kld[100])
		})
	}
}

// TestFamilyBadConfig: a config.json missing a key its family needs, or
// asking for what lqc does not compute, is a one-line error naming the
// key, never a silently different model.
func TestFamilyBadConfig(t *testing.T) {
	for _, c := range []struct {
		family, name string
		edit         func(map[string]any)
		want         string
	}{
		{"qwen2-tiny", "no rms_norm_eps", func(m map[string]any) { delete(m, "rms_norm_eps") }, "rms_norm_eps"},
		{"qwen2-tiny", "a narrow sliding window in use", func(m map[string]any) {
			m["sliding_window"], m["use_sliding_window"] = 16.0, true
		}, "sliding_window 16"},
		{"llama3-tiny", "dynamic RoPE scaling", func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"rope_type": "dynamic", "factor": 2.0}
		}, `rope_scaling of type "dynamic"`},
		{"gemma3-tiny", "another layer pattern", func(m map[string]any) { m["sliding_window_pattern"] = 4.0 }, "sliding_window_pattern 4"},
		{"gemma3-tiny", "layer_types off the pattern", func(m map[string]any) {
			m["layer_types"] = []any{"full_attention", "sliding_attention"}
		}, "layer_types[0]"},
		{"opt-tiny", "gelu activation", func(m map[string]any) { m["activation_function"] = "gelu" }, "activation_function"},
		{"opt-proj-tiny", "no ffn_dim", func(m map[string]any) { delete(m, "ffn_dim") }, "ffn_dim"},
		{"mistral-tiny", "no rope_theta type", func(m map[string]any) { m["rope_theta"] = "ten thousand" }, "rope_theta"},
		{"mistral-tiny", "head_dim apart from hidden/heads", func(m map[string]any) { m["head_dim"] = 32.0 }, "head_dim 32"},
		{"qwen2-tiny", "yarn RoPE scaling", func(m map[string]any) { m["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4.0} }, "rope_scaling"},
	} {
		t.Run(c.family+"/"+c.name, func(t *testing.T) {
			dir := copyDir(t, testmodels.Shared(t, "models", c.family, "hf"))
			editJSON(t, filepath.Join(dir, "config.json"), c.edit)
			failsCleanly(t, []string{"convert", dir, "--quant", "f32"}, 1, dir, c.want)
		})
	}
}

// evalKLD is the held-out mean KLD of each evaluation in lqc finetune
// --json's output, by step.
func evalKLD(t *testing.T, stdout string) map[int]float64 {
	t.Helper()
	out := map[int]float64{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var l stepLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		if l.Eval != nil {
			out[l.Step] = l.Eval.KLD
		}
	}
	return out
}

// TestFamilyConvertNotes: where llama.cpp will compute something else
// than the model does, convert says so once.
func TestFamilyConvertNotes(t *testing.T) {
	for _, c := range []struct{ family, want string }{
		{"mistral-tiny", "sliding window of 16 positions"},
		{"gemma2-tiny", "query_pre_attn_scalar 16 differs from the head size 32"},
		{"opt-proj-tiny", "llama.cpp and ollama have no OPT architecture"},
	} {
		out := filepath.Join(t.TempDir(), "f32.gguf")
		code, _, stderr := lqc("convert", testmodels.Shared(t, "models", c.family, "hf"), "-o", out, "--quant", "f32")
		if code != 0 || strings.Count(stderr, c.want) != 1 {
			t.Errorf("%s: exit %d, want one note %q:\n%s", c.family, code, c.want, stderr)
		}
	}
}

// TestFamilyPEFTWithoutLlamaCpp: for families llama.cpp cannot run, or
// runs differently on purpose (so TestLoRAInterop cannot compare with it),
// a PEFT adapter on the family's module names converts to a GGUF adapter,
// and lqc running the base with it computes what the fused model does.
func TestFamilyPEFTWithoutLlamaCpp(t *testing.T) {
	for _, fam := range families {
		if !fam.noLlamaCpp && !fam.llamaCppDiffers && !fam.logitsDiffer {
			continue
		}
		targets := []string{"q_proj", "v_proj", "o_proj", "down_proj"}
		if fam.noLlamaCpp { // OPT's module names
			targets = []string{"q_proj", "v_proj", "out_proj", "fc1", "fc2"}
		}
		t.Run(fam.name, func(t *testing.T) {
			hf := testmodels.Shared(t, "models", fam.name, "hf")
			tmp := t.TempDir()
			ad := filepath.Join(tmp, "peft")
			if err := testmodels.WritePEFT(ad, hf, testmodels.PEFTAdapter{
				Targets: targets, R: 4, Alpha: 8, Seed: 15}); err != nil {
				t.Fatal(err)
			}
			base, adapter, fused := filepath.Join(tmp, "base.gguf"), filepath.Join(tmp, "adapter.gguf"), filepath.Join(tmp, "fused.gguf")
			convert(t, hf, "-o", base, "--quant", "f32")
			convert(t, ad, "--base", hf, "-o", adapter)
			convert(t, hf, "-o", fused, "--quant", "f32", "--fuse-lora", ad)
			_, withAdapter, e1 := lqc("run", base, "--lora", adapter, "-n", "32", "--temp", "0")
			_, fusedText, e2 := lqc("run", fused, "-n", "32", "--temp", "0")
			_, plain, _ := lqc("run", base, "-n", "32", "--temp", "0")
			if withAdapter == "" || withAdapter != fusedText {
				t.Errorf("base + adapter %q (%s), fused %q (%s)", withAdapter, e1, fusedText, e2)
			}
			if withAdapter == plain {
				t.Errorf("the adapter changed nothing: %q", plain)
			}
		})
	}
}

// TestFamilyAWQ: each family's AWQ fold points are exact (a wrong one
// changes the model) and useful: Q4_0 with AWQ is closer to the
// unquantized model than plain Q4_0 on held-out text.
func TestFamilyAWQ(t *testing.T) {
	calib := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	heldOut := testmodels.Shared(t, "golden", "real", "eval.txt")
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			hf := testmodels.Shared(t, "models", fam.name, "hf")
			kld := map[string]float64{}
			for _, method := range []string{"rtn", "awq"} {
				out := filepath.Join(t.TempDir(), method+".gguf")
				args := []string{hf, "-o", out, "--quant", "q4_0"}
				if method == "awq" {
					args = append(args, "--method", "awq", "--calib", calib, "--calib-ctx", "64")
				}
				convert(t, args...)
				code, stdout, stderr := lqc("eval", out, "--ref", hf, "--data", heldOut, "--ctx", "64", "--json")
				if code != 0 {
					t.Fatalf("eval %s: exit %d: %s", method, code, stderr)
				}
				var r struct {
					Result struct {
						Ref struct {
							KLD float64 `json:"kld_mean"`
						} `json:"ref"`
					} `json:"result"`
				}
				if err := json.Unmarshal([]byte(stdout), &r); err != nil {
					t.Fatal(err)
				}
				kld[method] = r.Result.Ref.KLD
			}
			if !(kld["awq"] < kld["rtn"]) {
				t.Errorf("mean KLD with AWQ %.4g, plain %.4g", kld["awq"], kld["rtn"])
			}
			t.Logf("Q4_0 mean KLD: plain %.4g, AWQ %.4g", kld["rtn"], kld["awq"])
		})
	}
}
