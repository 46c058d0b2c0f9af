package testmodels

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// PEFTPattern is one entry of PEFT's rank_pattern or alpha_pattern: a
// regular expression matched against the end of a module's name, first
// match in file order.
type PEFTPattern struct {
	Key   string
	Value float64
}

// PEFTAdapter describes a LoRA adapter as Hugging Face PEFT saves one
// (adapter_config.json + adapter_model.safetensors) for a base model.
type PEFTAdapter struct {
	Targets       []string // module names as PEFT's target_modules lists them: "q_proj", "c_attn"
	R             int
	Alpha         float64
	RSLoRA        bool
	DoRA          bool
	RankPattern   []PEFTPattern
	AlphaPattern  []PEFTPattern
	ModulesToSave []string // whole modules trained and saved: "lm_head", "embed_tokens"
	Seed          uint64
	BaseModel     string // base_model_name_or_path (default: the base folder)
}

// WritePEFT writes adapter a for the Hugging Face model in baseDir into
// dir, with PEFT's exact key names and config fields: for every module of
// the base whose name ends in a target, lora_A [r, in] and lora_B
// [out, r] with seeded values (B is not zero, as after training), DoRA's
// lora_magnitude_vector [out] near the norms of the adapted rows, and a
// perturbed copy of each module to save. gpt2's Conv1D modules get
// fan_in_fan_out, as PEFT sets it.
func WritePEFT(dir, baseDir string, a PEFTAdapter) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base, err := safetensors.OpenDir(baseDir)
	if err != nil {
		return err
	}
	defer base.Close()
	conv1D := false
	type module struct {
		name    string
		in, out int64
		r       int
		scale   float64
		weight  *ir.Tensor
	}
	var mods []module
	for _, key := range base.Names() {
		name, ok := strings.CutSuffix(key, ".weight")
		if !ok || !targeted(name, a.Targets) {
			continue
		}
		w, err := base.Tensor(key)
		if err != nil {
			return err
		}
		if len(w.Shape) != 2 {
			continue
		}
		m := module{name: name, out: w.Shape[0], in: w.Shape[1], r: a.R, weight: w}
		if strings.HasPrefix(name, "transformer.h.") { // gpt2's Conv1D stores [in, out]
			m.in, m.out, conv1D = w.Shape[0], w.Shape[1], true
		}
		alpha := a.Alpha
		if v, ok := matchPattern(a.RankPattern, name); ok {
			m.r = int(v)
		}
		if v, ok := matchPattern(a.AlphaPattern, name); ok {
			alpha = v
		}
		m.scale = alpha / float64(m.r)
		if a.RSLoRA {
			m.scale = alpha / math.Sqrt(float64(m.r))
		}
		mods = append(mods, m)
	}
	if len(mods) == 0 {
		return fmt.Errorf("%s: no module matches %v", baseDir, a.Targets)
	}
	var ts []*ir.Tensor
	for _, m := range mods {
		p := "base_model.model." + m.name
		A := seededScaled(p+".lora_A.weight", []int64{int64(m.r), m.in}, a.Seed, 0.1)
		B := seededScaled(p+".lora_B.weight", []int64{m.out, int64(m.r)}, a.Seed, 0.1)
		ts = append(ts, A, B)
		if a.DoRA {
			mag, err := magnitude(m.weight, A, B, m.scale, conv1D && strings.HasPrefix(m.name, "transformer.h."), a.Seed)
			if err != nil {
				return err
			}
			ts = append(ts, mag.WithName(p+".lora_magnitude_vector"))
		}
	}
	for _, name := range a.ModulesToSave {
		for _, key := range base.Names() {
			if key != name+".weight" && !strings.HasSuffix(key, "."+name+".weight") {
				continue
			}
			w, err := base.Tensor(key)
			if err != nil {
				return err
			}
			noise := seededScaled(key, w.Shape, a.Seed, 0.01)
			ts = append(ts, ir.Computed("base_model.model."+key, quant.F32, w.Shape, func(dst []float32, first, n int64) error {
				if err := w.ReadRowsF32(dst, first, n); err != nil {
					return err
				}
				add := make([]float32, len(dst))
				if err := noise.ReadRowsF32(add, first, n); err != nil {
					return err
				}
				for i := range dst {
					dst[i] += add[i]
				}
				return nil
			}))
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	if err := safetensors.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	pattern := func(ps []PEFTPattern) orderedJSON {
		o := orderedJSON{}
		for _, p := range ps {
			o = append(o, kv{p.Key, p.Value})
		}
		return o
	}
	var save any
	if len(a.ModulesToSave) > 0 {
		save = a.ModulesToSave
	}
	baseName := a.BaseModel
	if baseName == "" {
		baseName = baseDir
	}
	cfg := orderedJSON{
		{"alpha_pattern", pattern(a.AlphaPattern)},
		{"base_model_name_or_path", baseName},
		{"bias", "none"},
		{"fan_in_fan_out", conv1D},
		{"inference_mode", true},
		{"init_lora_weights", true},
		{"layers_to_transform", nil},
		{"lora_alpha", a.Alpha},
		{"lora_dropout", 0.0},
		{"modules_to_save", save},
		{"peft_type", "LORA"},
		{"r", a.R},
		{"rank_pattern", pattern(a.RankPattern)},
		{"target_modules", a.Targets},
		{"task_type", "CAUSAL_LM"},
		{"use_dora", a.DoRA},
		{"use_rslora", a.RSLoRA},
	}
	return writeJSON(filepath.Join(dir, "adapter_config.json"), cfg)
}

// targeted is PEFT's check for a list of target modules: the name, or
// its last dotted parts, equals a target.
func targeted(name string, targets []string) bool {
	for _, t := range targets {
		if name == t || strings.HasSuffix(name, "."+t) {
			return true
		}
	}
	return false
}

func matchPattern(ps []PEFTPattern, name string) (float64, bool) {
	for _, p := range ps {
		if regexp.MustCompile(`^(.*\.)?(` + p.Key + `)$`).MatchString(name) {
			return p.Value, true
		}
	}
	return 0, false
}

// magnitude is DoRA's magnitude vector after training: the L2 norm of
// each output row of W + scale·B·A, varied by a few percent.
func magnitude(w, A, B *ir.Tensor, scale float64, conv1D bool, seed uint64) (*ir.Tensor, error) {
	wf, err := w.Float32s()
	if err != nil {
		return nil, err
	}
	af, err := A.Float32s()
	if err != nil {
		return nil, err
	}
	bf, err := B.Float32s()
	if err != nil {
		return nil, err
	}
	r, in := A.Shape[0], A.Shape[1]
	out := B.Shape[0]
	noise, err := seededScaled("magnitude", []int64{1, out}, seed, 0.05).Float32s()
	if err != nil {
		return nil, err
	}
	m := make([]float32, out)
	for o := range out {
		var ss float64
		for i := range in {
			v := float64(wf[o*in+i])
			if conv1D {
				v = float64(wf[i*out+o])
			}
			var d float64
			for k := range r {
				d += float64(bf[o*r+k]) * float64(af[k*in+i])
			}
			v += scale * d
			ss += v * v
		}
		m[o] = float32(math.Sqrt(ss) * (1 + float64(noise[o])))
	}
	return ir.FromF32("magnitude", []int64{out}, m)
}

// seededScaled is seeded with standard deviation sd.
func seededScaled(name string, shape []int64, seed uint64, sd float64) *ir.Tensor {
	t := seeded(name, quant.F32, shape, seed, false)
	return ir.Computed(name, quant.F32, shape, func(dst []float32, first, n int64) error {
		if err := t.ReadRowsF32(dst, first, n); err != nil {
			return err
		}
		for i := range dst {
			dst[i] = float32(float64(dst[i]) / 0.02 * sd)
		}
		return nil
	})
}

// orderedJSON is a JSON object that keeps its keys in order: PEFT's
// patterns match first-to-last.
type orderedJSON []kv

type kv struct {
	k string
	v any
}

func (o orderedJSON) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, e := range o {
		if i > 0 {
			b = append(b, ',')
		}
		k, err := json.Marshal(e.k)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}
