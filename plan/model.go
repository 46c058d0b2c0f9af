package plan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lqc-dev/lqc/frontend/hf"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/train"
)

// errShapeOnly is what reading a planned tensor's data gives: a plan
// never reads weights.
var errShapeOnly = errors.New("a planned tensor has a shape but no data")

type shapeOnly struct{}

func (shapeOnly) ReadRows([]byte, int64, int64) error { return errShapeOnly }

// ConfigOnly reports whether dir is a Hugging Face model folder without
// weights: a config.json to plan from before downloading.
func ConfigOnly(dir string) bool {
	if st, err := os.Stat(filepath.Join(dir, "config.json")); err != nil || !st.Mode().IsRegular() {
		return false
	}
	for _, pattern := range []string{"*.safetensors", "*.bin", "*.pth"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pattern)); len(m) > 0 {
			return false
		}
	}
	return true
}

// ConfigModel is the model config.json in dir describes, its tensors of
// the architecture's canonical set in the checkpoint's dtype (torch_dtype)
// with shapes and no data: enough for a plan.
func ConfigModel(dir string) (*ir.Model, error) {
	path := filepath.Join(dir, "config.json")
	cfg, err := hf.ReadConfig(path)
	if err != nil {
		return nil, err
	}
	m, err := configModel(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Source = dir
	return m, nil
}

func configModel(cfg arch.Config) (*ir.Model, error) {
	mt, err := cfg.ModelType()
	if err != nil {
		return nil, err
	}
	a, err := arch.ForHF(mt)
	if err != nil {
		return nil, err
	}
	p, err := a.ParamsFromHF(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	typ, err := checkpointType(cfg)
	if err != nil {
		return nil, err
	}
	ts := map[string]*ir.Tensor{}
	var output *ir.Tensor
	for _, s := range a.Tensors(p) {
		t := ir.NewTensor(s.Name, typ, s.Shape, shapeOnly{})
		switch {
		case s.Name == "output.weight":
			output = t
		case !s.Optional:
			ts[s.Name] = t
		}
	}
	// The architecture decides the rest from config.json (a classifier
	// that is the embedding, Llama 3's RoPE factors); a checkpoint that
	// keeps its own classifier is one it refuses without.
	if err := a.CompleteHF(cfg, p, ts); err != nil {
		if output == nil {
			return nil, err
		}
		ts[output.Name] = output
		if err := a.CompleteHF(cfg, p, ts); err != nil {
			return nil, err
		}
	}
	return arch.NewModel(a, mt, p, ts, nil)
}

// checkpointType is the dtype the checkpoint's matrices are stored in.
func checkpointType(cfg arch.Config) (quant.Type, error) {
	for _, key := range []string{"torch_dtype", "dtype"} {
		s, ok := cfg[key].(string)
		if !ok {
			continue
		}
		switch strings.TrimPrefix(s, "torch.") {
		case "bfloat16":
			return quant.BF16, nil
		case "float16":
			return quant.F16, nil
		case "float32":
			return quant.F32, nil
		}
		return 0, fmt.Errorf("%s %q: want bfloat16, float16 or float32", key, s)
	}
	return quant.F32, nil // transformers' default
}

// shapeOnlyAdapter is a LoRA adapter of opt.Rank (1 for a full
// fine-tune, whose graph saves the same activations) on opt.Targets,
// without values: the training passes need only its shapes.
func shapeOnlyAdapter(m *ir.Model, opt Options) (*ir.Adapter, error) {
	targets, err := resolveTargets(m, opt.Targets)
	if err != nil {
		return nil, err
	}
	r := int64(max(opt.Rank, 1))
	ad := &ir.Adapter{Name: "plan", Arch: m.Arch, LoRA: map[string]*ir.LoRA{}}
	for _, name := range targets {
		w := m.Weight(name)
		ad.LoRA[name] = &ir.LoRA{
			A:     ir.NewTensor(name+".lora_a", quant.F32, []int64{r, w.RowLen()}, shapeOnly{}),
			B:     ir.NewTensor(name+".lora_b", quant.F32, []int64{w.Rows(), r}, shapeOnly{}),
			Scale: 1,
		}
	}
	return ad, nil
}

// resolveTargets is lqc finetune's --targets (short or PEFT names, empty
// for every projection), or the adapted weights' own names, as an
// adapter to continue lists them.
func resolveTargets(m *ir.Model, spec []string) ([]string, error) {
	for _, name := range spec {
		if w := m.Weight(name); w == nil || len(w.Shape) != 2 {
			return train.ResolveTargets(m, spec)
		}
	}
	if len(spec) == 0 {
		return train.ResolveTargets(m, nil)
	}
	return spec, nil
}
