package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/ir/atomicfile"
)

// PEFTModule is the PEFT module path of a canonical weight
// ("model.layers.0.self_attn.q_proj" for blk.0.attn_q.weight).
func PEFTModule(a arch.Arch, canonical string) (string, error) {
	hf, ok := a.HFName(canonical)
	if !ok || !strings.HasSuffix(hf, ".weight") {
		return "", fmt.Errorf("%s has no Hugging Face module name in %s", canonical, a.Name())
	}
	return strings.TrimSuffix(hf, ".weight"), nil
}

// PEFTKeys are the safetensors keys PEFT gives the A and B of a module.
func PEFTKeys(module string) (a, b string) {
	return "base_model.model." + module + ".lora_A.weight", "base_model.model." + module + ".lora_B.weight"
}

// HFRows returns, for each canonical row of weight canonical, the
// Hugging Face row it came from (the inverse of the import's row fix, as
// llama's q/k un-permutation), or nil when rows are not permuted. It is
// found by running the architecture's own fix over row indices.
func HFRows(a arch.Arch, canonical string, p ir.HParams, rows int64) ([]int64, error) {
	fix := a.RowFix(canonical, p)
	if fix == nil {
		return nil, nil
	}
	idx := make([]float32, rows)
	for i := range idx {
		idx[i] = float32(i)
	}
	t, err := ir.FromF32(canonical, []int64{rows, 1}, idx)
	if err != nil {
		return nil, err
	}
	if t, err = fix(t, p); err != nil {
		return nil, err
	}
	v, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	perm := make([]int64, rows)
	for r, f := range v {
		perm[r] = int64(f)
	}
	return perm, nil
}

// AdapterTensors is a trained adapter as values: per adapted weight, A
// [r, in] and B [out, r] in canonical row order, and the scale.
type AdapterTensors struct {
	Arch   string
	Params ir.HParams
	LoRA   map[string]*LoRAValues
	Rank   int
	Alpha  float64
}

// LoRAValues are one weight's trained factors.
type LoRAValues struct {
	A, B        []float32
	Rank, In    int64
	Out         int64
	Scale       float64
	HFRowsOfOut []int64 // nil: identity
}

// WritePEFT writes the adapter as Hugging Face PEFT saves one: the folder
// dir with adapter_config.json and adapter_model.safetensors (float32),
// module names and B's rows in Hugging Face's order, so PEFT's
// PeftModel.from_pretrained loads it over the original model. The folder
// appears complete or not at all.
func WritePEFT(dir string, at *AdapterTensors, baseName string) error {
	a, err := arch.Lookup(at.Arch)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(at.LoRA))
	for n := range at.LoRA {
		names = append(names, n)
	}
	sort.Strings(names)
	var ts []*ir.Tensor
	targets := map[string]bool{}
	for _, name := range names {
		l := at.LoRA[name]
		module, err := PEFTModule(a, name)
		if err != nil {
			return err
		}
		targets[module[strings.LastIndex(module, ".")+1:]] = true
		ak, bk := PEFTKeys(module)
		A, err := ir.FromF32(ak, []int64{l.Rank, l.In}, l.A)
		if err != nil {
			return err
		}
		bv := l.B
		if l.HFRowsOfOut != nil {
			bv = make([]float32, len(l.B))
			r := int(l.Rank)
			for row, hf := range l.HFRowsOfOut {
				copy(bv[int(hf)*r:(int(hf)+1)*r], l.B[row*r:(row+1)*r])
			}
		}
		B, err := ir.FromF32(bk, []int64{l.Out, l.Rank}, bv)
		if err != nil {
			return err
		}
		ts = append(ts, A, B)
	}
	var tl []string
	for t := range targets {
		tl = append(tl, t)
	}
	sort.Strings(tl)
	cfg := map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": baseName,
		"r": at.Rank, "lora_alpha": at.Alpha, "lora_dropout": 0.0, "target_modules": tl,
		"bias": "none", "fan_in_fan_out": false, "use_rslora": false, "use_dora": false,
		"init_lora_weights": true, "modules_to_save": nil, "rank_pattern": map[string]any{},
		"alpha_pattern": map[string]any{}, "inference_mode": true, "revision": nil,
	}
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	// Written into a fresh folder beside dir, then renamed over it.
	parent := filepath.Dir(filepath.Clean(dir))
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "adapter_config.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(tmp, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return atomicfile.ReplaceDir(tmp, dir)
}
