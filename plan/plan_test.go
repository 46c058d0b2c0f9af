package plan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestWeightsMatchLlamaCpp: the weights a plan sizes for stories260K at
// each type are exactly the tensor data of the GGUF llama.cpp's
// converter and llama-quantize wrote for it (the golden files), from
// the Hugging Face folder and from its config.json alone.
func TestWeightsMatchLlamaCpp(t *testing.T) {
	hf := testmodels.Shared(t, "models/stories260K/hf")
	configOnly := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(hf, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(configOnly, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if !ConfigOnly(configOnly) || ConfigOnly(hf) {
		t.Fatalf("ConfigOnly: a folder with only config.json %v, the full folder %v", ConfigOnly(configOnly), ConfigOnly(hf))
	}
	sources := map[string]func() (*ir.Model, error){
		"hf":          func() (*ir.Model, error) { return frontend.Load(hf, frontend.Options{}) },
		"config.json": func() (*ir.Model, error) { return ConfigModel(configOnly) },
	}
	for _, typ := range []string{"F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "f32"} {
		golden := testmodels.Shared(t, "golden/real/stories260K-"+typ+".gguf")
		f, err := gguf.Open(golden)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(golden)
		if err != nil {
			t.Fatal(err)
		}
		want := st.Size() - int64(f.DataOffset)
		f.Close()
		for name, load := range sources {
			p, err := Make(load, Options{Mode: Infer, Device: "cpu", Quant: strings.ToLower(typ), Ctx: 256, Batch: 1})
			if err != nil {
				t.Fatal(err)
			}
			if p.WeightsBytes != want {
				t.Errorf("%s from %s: plan %d bytes of weights, llama.cpp's GGUF %d", typ, name, p.WeightsBytes, want)
			}
		}
	}
}

// storiesConfig is a folder holding only stories260K's config.json.
func storiesConfig(t *testing.T) func() (*ir.Model, error) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(testmodels.Shared(t, "models/stories260K/hf"), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return func() (*ir.Model, error) { return ConfigModel(dir) }
}

// TestPlanParts checks a plan's arithmetic and decisions on stories260K
// (5 layers of width 64, 4 key/value heads of 8, a 512-token vocabulary,
// 512 positions): the KV cache to the byte, the adapter's state from its
// parameter count, the total as the sum of its parts, and what a budget
// just above, just below and far below the plan decides.
func TestPlanParts(t *testing.T) {
	load := storiesConfig(t)
	inf, err := Make(load, Options{Mode: Infer, Device: "cpu", Ctx: 256, Batch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(5 * 2 * 4 * 8 * 256 * 4 * 3); inf.KVCacheBytes != want {
		t.Errorf("KV cache of 3 sessions of 256: %d bytes, want %d", inf.KVCacheBytes, want)
	}
	if def, err := Make(load, Options{Mode: Infer, Device: "cpu", Batch: 1}); err != nil {
		t.Fatal(err)
	} else if def.Ctx != 512 {
		t.Errorf("without a context: context %d, want lqc finetune's default, the model's 512", def.Ctx)
	}
	if inf.TotalBytes != inf.OverheadBytes+inf.WeightsBytes-inf.UnreadBytes+inf.ActivationBytes+inf.KVCacheBytes {
		t.Errorf("inference total %d is not the sum of its parts: %+v", inf.TotalBytes, inf)
	}

	lora := func(mem int64, recompute *bool) *Plan {
		t.Helper()
		p, err := Make(load, Options{Mode: LoRA, Device: "cpu", Rank: 4, Ctx: 256, Batch: 4, Mem: mem, Recompute: recompute})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := lora(0, nil)
	// q, k, v, o, gate, up, down of 5 layers: rank·(rows + columns) each.
	if want := int64(5 * 4 * ((64 + 64) + (32 + 64) + (32 + 64) + (64 + 64) + 3*(172+64))); p.TrainableParams != want {
		t.Errorf("%d trainable parameters, want %d", p.TrainableParams, want)
	}
	if p.ParamBytes != 12*p.TrainableParams || p.GradientBytes != 4*p.TrainableParams || p.OptimizerBytes != 8*p.TrainableParams {
		t.Errorf("adapter state %d + %d + %d bytes for %d parameters", p.ParamBytes, p.GradientBytes, p.OptimizerBytes, p.TrainableParams)
	}
	if !(p.ActivationsRecomputeBytes < p.ActivationsKeptBytes) || p.Recompute || p.ActivationBytes != p.ActivationsKeptBytes {
		t.Errorf("recomputation: %d bytes against %d kept, chosen %v without a budget", p.ActivationsRecomputeBytes, p.ActivationsKeptBytes, p.Recompute)
	}
	heap := p.ParamBytes + p.GradientBytes + p.OptimizerBytes + p.ActivationBytes
	if p.HeadroomBytes != heap/5 || p.TotalBytes != p.OverheadBytes+p.WeightsBytes-p.UnreadBytes+heap+p.HeadroomBytes {
		t.Errorf("training total %d is not the sum of its parts: %+v", p.TotalBytes, p)
	}
	if q := lora(p.TotalBytes, nil); !q.Fits || q.Recompute || q.MaxCtx < 256 {
		t.Errorf("a budget of exactly the plan: fits %v, recompute %v, longest context %d", q.Fits, q.Recompute, q.MaxCtx)
	}
	if q := lora(p.TotalBytes-1, nil); !q.Fits || !q.Recompute || len(q.Advice) != 1 {
		t.Errorf("a byte less: fits %v, recompute %v (want both), advice %q", q.Fits, q.Recompute, q.Advice)
	}
	off := false
	if q := lora(p.TotalBytes-1, &off); q.Fits || q.MaxCtx >= 256 || q.MaxCtx == 0 {
		t.Errorf("a byte less without recomputation: fits %v, longest context %d (want a shorter one)", q.Fits, q.MaxCtx)
	}
	if q := lora(p.OverheadBytes, nil); q.Fits || q.MaxCtx != 0 || !strings.Contains(strings.Join(q.Advice, "\n"), "even one token") {
		t.Errorf("a budget of the runtime alone: fits %v, longest context %d, advice %q", q.Fits, q.MaxCtx, q.Advice)
	}
}

// TestPlanRefuses: options a plan cannot honour fail with an error that
// names them.
func TestPlanRefuses(t *testing.T) {
	load := storiesConfig(t)
	for _, c := range []struct {
		opt  Options
		want string
	}{
		{Options{Mode: "train", Device: "cpu", Ctx: 8, Batch: 1}, `mode "train"`},
		{Options{Mode: LoRA, Device: "tpu", Ctx: 8, Batch: 1, Rank: 4}, `device "tpu"`},
		{Options{Mode: LoRA, Device: "cpu", Precision: "bf16", Ctx: 8, Batch: 1, Rank: 4}, "computes in float32"},
		{Options{Mode: LoRA, Device: "cuda", Precision: "f8", Ctx: 8, Batch: 1, Rank: 4}, `precision "f8"`},
		{Options{Mode: LoRA, Device: "cpu", Ctx: -1, Batch: 1, Rank: 4}, "context -1"},
		{Options{Mode: LoRA, Device: "cpu", Ctx: 8, Batch: 1}, "rank 0"},
		{Options{Mode: LoRA, Device: "cpu", Ctx: 8, Batch: 1, Rank: 4, Quant: "q9_9"}, "q9_9"},
		{Options{Mode: LoRA, Device: "cpu", Ctx: 8, Batch: 1, Rank: 4, Targets: []string{"nonsense"}}, "nonsense"},
	} {
		_, err := Make(load, c.opt)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %q", c.opt, err, c.want)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type": "llama", "hidden_size": 64, "torch_dtype": "float8"}`), 0o644)
	if _, err := ConfigModel(dir); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("a config.json lqc cannot plan from: error %v, want one naming the file", err)
	}
}
