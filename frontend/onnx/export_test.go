package onnx_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend/onnx"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/testmodels"
)

// reference64 returns the prompt ids and the [64, 512] logits PyTorch
// gave for them.
func reference64(t *testing.T) ([]int64, []float32) {
	dir := testmodels.Shared(t, "models", "stories260K", "reference")
	var meta struct {
		PromptIDs []int64 `json:"prompt_ids"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "prompt64.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "prompt64_logits.f32.bin"))
	if err != nil {
		t.Fatal(err)
	}
	logits := make([]float32, len(raw)/4)
	for i := range logits {
		logits[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return meta.PromptIDs, logits
}

func ids(ids []int64) *ir.Tensor {
	b := make([]byte, 8*len(ids))
	for i, v := range ids {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	t, _ := ir.FromBytes("input_ids", quant.I64, []int64{1, int64(len(ids))}, b)
	return t
}

// TestExportGraph runs the real PyTorch export of stories260K as the
// graph it is (every Shape/Gather/Concat chain folded at import) and
// compares its logits with PyTorch's.
func TestExportGraph(t *testing.T) {
	prompt, want := reference64(t)
	for _, variant := range []string{"model.onnx", "external/model.onnx"} {
		t.Run(variant, func(t *testing.T) {
			f, err := onnx.Open(testmodels.Shared(t, "models", "stories260K", "onnx", variant))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			g, err := onnx.Import(f, onnx.Options{InputShapes: map[string][]int64{"input_ids": {1, 64}}, Backend: backend})
			if err != nil {
				t.Fatal(err)
			}
			counts := func() map[string]int {
				c := map[string]int{}
				for _, n := range g.Nodes {
					c[n.Op]++
				}
				return c
			}
			t.Logf("%d nodes after import: %v", len(g.Nodes), counts())
			// The flash-attention pass fuses PyTorch's spelled-out
			// attention: Transpose of k, Div by √d, Where on the causal
			// mask, Softmax, GQA's Unsqueeze/Expand/Reshape of k and v.
			model := &ir.Model{Graph: g}
			var notes []string
			pm := &passes.Manager{Passes: []passes.Pass{passes.FlashAttention{}}, OnNote: func(_, n string) { notes = append(notes, n) }}
			if err := pm.Run(model); err != nil {
				t.Fatal(err)
			}
			if c := counts(); c["FlashAttention"] != 5 || c["Softmax"] != 0 || c["Expand"] != 0 {
				t.Errorf("after the flash-attention pass: %v\n%s", c, strings.Join(notes, "\n"))
			} else {
				t.Logf("%d nodes after flash-attn: %v; %s", len(g.Nodes), c, notes[0])
			}
			m, err := runtime.Load(model, backend)
			if err != nil {
				t.Fatal(err)
			}
			out, err := m.Run(map[string]*ir.Tensor{"input_ids": ids(prompt)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := out[0].Float32s()
			if err != nil {
				t.Fatal(err)
			}
			closeToPyTorch(t, "the graph", got, want)
		})
	}
}

// TestLoadExport recognises the export as llama: the same model as the
// Hugging Face folder it came from.
func TestLoadExport(t *testing.T) {
	hfDir := testmodels.Shared(t, "models", "stories260K", "hf")
	for _, variant := range []string{"model.onnx", "external/model.onnx"} {
		t.Run(variant, func(t *testing.T) {
			m, err := onnx.Load(testmodels.Shared(t, "models", "stories260K", "onnx", variant), onnx.LoadOptions{Backend: backend, Tokenizer: hfDir})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			want := ir.HParams{ContextLength: 512, EmbeddingLength: 64, BlockCount: 5, FeedForwardLength: 172, HeadCount: 8,
				HeadCountKV: 4, RopeDimensionCount: 8, RopeFreqBase: 10000, NormEpsilon: 1e-5, VocabSize: 512,
				KeyLength: 8} // the folder's config.json states head_dim, which the GGUF records as key_length
			if m.Arch != "llama" || m.Params != want {
				t.Fatalf("recognised %s %+v, want llama %+v", m.Arch, m.Params, want)
			}
			checkLogits(t, m)
		})
	}
	// Without config.json the graph alone gives every hyper-parameter but
	// the context length.
	tok := t.TempDir()
	for _, f := range []string{"tokenizer.model", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(hfDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tok, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := onnx.Load(testmodels.Shared(t, "models", "stories260K", "onnx", "model.onnx"), onnx.LoadOptions{Backend: backend, Tokenizer: filepath.Join(tok, "tokenizer.model")})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if p := m.Params; p.ContextLength != 2048 || p.HeadCount != 8 || p.HeadCountKV != 4 || p.NormEpsilon != 1e-5 || p.RopeFreqBase != 10000 || p.FeedForwardLength != 172 {
		t.Errorf("hyper-parameters from the graph alone: %+v", p)
	}
	checkLogits(t, m)
}

// checkLogits runs the recognised model on the reference prompt: PyTorch's
// logits within 1e-4.
func checkLogits(t *testing.T, m *ir.Model) {
	t.Helper()
	prompt, want := reference64(t)
	rm, err := runtime.Load(m, backend)
	if err != nil {
		t.Fatal(err)
	}
	s, err := rm.NewSession(len(prompt))
	if err != nil {
		t.Fatal(err)
	}
	toks := make([]int32, len(prompt))
	for i, v := range prompt {
		toks[i] = int32(v)
	}
	got, err := s.Forward(toks, true)
	if err != nil {
		t.Fatal(err)
	}
	closeToPyTorch(t, "the recognised model", got, want)
}

// closeToPyTorch fails unless got is within 1e-4 of PyTorch's logits.
func closeToPyTorch(t *testing.T, what string, got, want []float32) {
	t.Helper()
	var worst float64
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	t.Logf("%s: max |logit - PyTorch| = %.3g", what, worst)
	if worst > 1e-4 {
		t.Errorf("%s: logits differ from PyTorch's by %.3g (> 1e-4)", what, worst)
	}
}

// BenchmarkLoadExport: open, import, recognise and check the stories260K
// export (the probe runs the graph once through the generic kernels).
func BenchmarkLoadExport(b *testing.B) {
	path := testmodels.Shared(b, "models", "stories260K", "onnx", "model.onnx")
	tok := testmodels.Shared(b, "models", "stories260K", "hf")
	for range b.N {
		m, err := onnx.Load(path, onnx.LoadOptions{Backend: backend, Tokenizer: tok})
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}
