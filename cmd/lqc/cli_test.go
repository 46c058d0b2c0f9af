package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
)

// lqc runs the CLI in-process and returns its exit code and output.
func lqc(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// copyDir copies a fixture folder so that a test can damage it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ = json.Marshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBadInput checks that damaged models and impossible outputs end
// with a one-line error naming the file and the problem, exit code 1, and
// no output file left behind.
func TestBadInput(t *testing.T) {
	hf := testmodels.Shared(t, "models/stories260K/hf")
	l2c := testmodels.Shared(t, "models/stories260K/llama2c/stories260K.bin")
	st := func(dir string) string { return filepath.Join(dir, "model.safetensors") }
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string) string // returns the source to convert
		want   []string
	}{
		{"truncated safetensors", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(st(dir))
			os.WriteFile(st(dir), b[:len(b)/2], 0o644)
			return dir
		}, []string{"model.safetensors", "out of range"}},
		{"header length past the end", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(st(dir))
			binary.LittleEndian.PutUint64(b, uint64(len(b)))
			os.WriteFile(st(dir), b, 0o644)
			return dir
		}, []string{"model.safetensors", "runs past the end"}},
		{"overlapping offsets", func(t *testing.T, dir string) string {
			editHeader(t, st(dir), func(h map[string]any) {
				// Move model.norm.weight onto the start of another tensor.
				e := h["model.norm.weight"].(map[string]any)
				off := e["data_offsets"].([]any)
				e["data_offsets"] = []any{0, off[1].(float64) - off[0].(float64)}
			})
			return dir
		}, []string{"model.safetensors", "overlap"}},
		{"dtype does not match bytes", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(st(dir))
			n := binary.LittleEndian.Uint64(b)
			h := strings.Replace(string(b[8:8+n]), `"F32"`, `"F16"`, 1)
			copy(b[8:], h)
			os.WriteFile(st(dir), b, 0o644)
			return dir
		}, []string{"model.safetensors", "needs"}},
		{"config.json missing a key", func(t *testing.T, dir string) string {
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { delete(m, "num_hidden_layers") })
			return dir
		}, []string{"config.json", "missing key num_hidden_layers"}},
		{"unknown architecture", func(t *testing.T, dir string) string {
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { m["model_type"] = "mamba" })
			return dir
		}, []string{"config.json", `unknown architecture model_type "mamba"`}},
		{"config.json not JSON", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o644)
			return dir
		}, []string{"config.json", "invalid JSON"}},
		{"shape disagrees with config", func(t *testing.T, dir string) string {
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { m["intermediate_size"] = 180 })
			return dir
		}, []string{"blk.0.ffn_gate.weight", "needs [180 64]"}},
		{"no tokenizer", func(t *testing.T, dir string) string {
			os.Remove(filepath.Join(dir, "tokenizer.model"))
			return dir
		}, []string{"no tokenizer"}},
		{"truncated llama2.c checkpoint", func(t *testing.T, dir string) string {
			b, _ := os.ReadFile(l2c)
			p := filepath.Join(dir, "stories260K.bin")
			os.WriteFile(p, b[:len(b)-100], 0o644)
			return p
		}, []string{"stories260K.bin", "not a model lqc can read"}},
		// An ONNX export beside the folder's tokenizer and config.json.
		{"truncated ONNX file", func(t *testing.T, dir string) string {
			return putONNX(t, dir, func(b []byte) []byte { return b[:len(b)/3] })
		}, []string{"model.onnx", "truncated"}},
		{"config.json disagrees with the ONNX graph", func(t *testing.T, dir string) string {
			editJSON(t, filepath.Join(dir, "config.json"), func(m map[string]any) { m["num_key_value_heads"] = 2 })
			return putONNX(t, dir, nil)
		}, []string{"config.json does not describe this graph", "key/value heads is 2, the graph says 4"}},
		{"ONNX file without a tokenizer", func(t *testing.T, dir string) string {
			os.Remove(filepath.Join(dir, "tokenizer.model"))
			return putONNX(t, dir, nil)
		}, []string{"model.onnx", "carries no tokenizer"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.damage(t, copyDir(t, hf))
			failsCleanly(t, []string{"convert", src, "--quant", "q8_0"}, 1, c.want...)
		})
	}
}

// failsCleanly runs lqc with args and "-o" into an empty folder: it must
// exit with code, say every want on one line of stderr (for errors, code
// 1; usage errors may print usage), and leave nothing behind.
func failsCleanly(t *testing.T, args []string, code int, want ...string) {
	t.Helper()
	outDir := t.TempDir()
	got, _, stderr := lqc(append(args, "-o", filepath.Join(outDir, "out.gguf"), "--quiet")...)
	if got != code {
		t.Errorf("exit code %d, want %d: %s", got, code, stderr)
	}
	if code == 1 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("error is not one line: %q", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("error %q does not mention %q", stderr, w)
		}
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 0 {
		t.Errorf("output left behind: %v", entries)
	}
}

// putONNX copies the stories260K export into dir as model.onnx, through
// damage when given.
func putONNX(t *testing.T, dir string, damage func([]byte) []byte) string {
	b, err := os.ReadFile(testmodels.Shared(t, "models/stories260K/onnx/model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if damage != nil {
		b = damage(b)
	}
	p := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// editHeader rewrites a safetensors file's JSON header, keeping its data.
func editHeader(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hb, _ := json.Marshal(h)
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(hb)))
	out = append(append(out, hb...), b[8+n:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUnwritableOutput(t *testing.T) {
	src := testmodels.Shared(t, "golden/real/stories260K-f32.gguf")
	dir := t.TempDir()
	for _, out := range []string{filepath.Join(dir, "missing", "out.gguf"), dir} {
		code, _, stderr := lqc("convert", src, "-o", out, "--quiet")
		if code != 1 || !strings.Contains(stderr, out) {
			t.Errorf("-o %s: exit %d, stderr %q", out, code, stderr)
		}
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := t.TempDir()
		os.Chmod(ro, 0o555)
		defer os.Chmod(ro, 0o755)
		if code, _, stderr := lqc("convert", src, "-o", filepath.Join(ro, "out.gguf"), "--quiet"); code != 1 {
			t.Errorf("read-only folder: exit %d, stderr %q", code, stderr)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"convert"}, {"convert", "x"}, {"convert", "x", "-o", "y", "--quant", "q3"}, {"frobnicate"}, {"inspect"},
		{"convert", "x", "-o", "y", "--method", "gptq"}, {"convert", "x", "-o", "y", "--method", "awq", "--imatrix", "i.gguf"},
		{"convert", "x", "-o", "y", "--method", "rtn", "--calib", "c.txt"}, {"convert", "x", "-o", "y", "--method", "imatrix"},
		{"convert", "x", "-o", "y", "--method", "best"}, {"imatrix", "x", "-o", "y"},
	} {
		if code, _, stderr := lqc(args...); code != 2 || stderr == "" {
			t.Errorf("lqc %v: exit %d, stderr %q; want 2 and a message", args, code, stderr)
		}
	}
	if code, stdout, _ := lqc("help"); code != 0 || !strings.Contains(stdout, "convert") {
		t.Errorf("lqc help: %d %q", code, stdout)
	}
}

func TestInspect(t *testing.T) {
	src := testmodels.Shared(t, "golden/real/stories260K-Q4_0.gguf")
	code, stdout, stderr := lqc("inspect", "--json", src)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var in struct {
		Architecture  string         `json:"architecture"`
		Tensors       []tensorRow    `json:"tensors"`
		Parameters    uint64         `json:"parameters"`
		BitsPerWeight float64        `json:"bits_per_weight"`
		TypeCounts    map[string]int `json:"type_counts"`
		Types         []typeShare    `json:"types"`
	}
	if err := json.Unmarshal([]byte(stdout), &in); err != nil {
		t.Fatal(err)
	}
	// Each type's share of the file, largest first: F16 ffn_down 45.1%,
	// Q4_0 at exactly 4.5 bits per weight, the Q8_0 embedding at 8.5.
	var share float64
	for _, ts := range in.Types {
		share += ts.Share
	}
	if len(in.Types) != 4 || in.Types[0].Type != "F16" || in.Types[1].Type != "Q4_0" || in.Types[1].BitsPerWeight != 4.5 ||
		in.Types[2].BitsPerWeight != 8.5 || math.Abs(share-1) > 1e-9 {
		t.Errorf("inspect --json types: %+v", in.Types)
	}
	// stories260K: 47 tensors, 260,032 parameters; Q4_0 with F16 ffn_down and
	// a Q8_0 embedding.
	if in.Architecture != "llama" || len(in.Tensors) != 47 || in.Parameters != 260032 ||
		in.TypeCounts["Q4_0"] != 30 || in.BitsPerWeight < 5 || in.BitsPerWeight > 8 {
		t.Errorf("inspect --json: %+v", in)
	}
	code, stdout, _ = lqc("inspect", "--ir", testmodels.Shared(t, "models/stories260K/hf"))
	if code != 0 || !strings.Contains(stdout, "graph llama(%tokens: I32[seq], %pos: I32[seq])") ||
		!strings.Contains(stdout, "RoPE(") || !strings.Contains(stdout, "@blk.4.ffn_down.weight: F32[64,172]") {
		t.Errorf("inspect --ir:\n%s", stdout)
	}
	// The export as imported, and the pass fusing PyTorch's attention.
	code, stdout, stderr = lqc("inspect", "--ir", "--passes", "--imported", "16", testmodels.Shared(t, "models/stories260K/onnx/model.onnx"))
	if code != 0 || !strings.Contains(stdout, "graph torch_jit(%input_ids: I64[1,16]) -> (%logits)") ||
		strings.Count(stdout, "= FlashAttention(") != 5 || !strings.Contains(stdout, "8 query heads, 4 key/value heads, scale 0.353553, causal true") {
		t.Errorf("inspect --ir --passes --imported: exit %d %s\n%s", code, stderr, stdout)
	}
	code, stdout, _ = lqc("inspect", testmodels.Shared(t, "models/gpt2-tiny/hf"))
	if code != 0 || !strings.Contains(stdout, "blk.1.attn_qkv.weight") {
		t.Errorf("inspect gpt2 folder:\n%s", stdout)
	}
}

// TestConvertSummary: stories260K's rows (64, 172) do not fit Q4_K's
// 256-wide blocks, so --quant q4 falls back for 35 matrices; each reason
// is said once with its count, --verbose lists every tensor, and the
// conversion ends with one line saying what the file holds.
func TestConvertSummary(t *testing.T) {
	src := testmodels.Shared(t, "models/stories260K/hf")
	out := filepath.Join(t.TempDir(), "q4.gguf")
	code, _, stderr := lqc("convert", src, "-o", out, "--quant", "q4")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	const reason = "row length 64 is not a multiple of Q4_K's block size 256: using Q5_0"
	if n := strings.Count(stderr, reason); n != 1 ||
		!strings.Contains(stderr, reason+" (28 tensors: blk.0.attn_q.weight, blk.0.attn_k.weight, blk.0.attn_v.weight and 25 more)") {
		t.Errorf("the Q5_0 fallback is said %d times:\n%s", n, stderr)
	}
	if n := strings.Count(stderr, "quantize: row length"); n != 4 {
		t.Errorf("%d fallback lines, want one per (reason, from → to): 4\n%s", n, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("wrote q4.gguf: %.2f MB, 8.22 bpw, 47 tensors (Q5_0 28, F16 5, Q8_0 3, F32 11), ", float64(st.Size())/1e6)
	if !strings.HasPrefix(last, want) || !strings.HasSuffix(last, " MB/s") {
		t.Errorf("summary line %q, want it to start %q", last, want)
	}
	code, _, stderr = lqc("convert", src, "-o", out, "--quant", "q4", "--verbose")
	if code != 0 || strings.Count(stderr, reason) != 28 {
		t.Errorf("--verbose: exit %d, %d lines of the Q5_0 fallback, want 28", code, strings.Count(stderr, reason))
	}
	if code, _, stderr = lqc("convert", src, "-o", out, "--quant", "q4", "--quiet"); code != 0 || stderr != "" {
		t.Errorf("--quiet: exit %d, stderr %q", code, stderr)
	}
}
