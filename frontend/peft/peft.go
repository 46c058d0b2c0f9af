// Package peft imports LoRA adapters saved by Hugging Face PEFT: a folder
// with adapter_config.json and adapter_model.safetensors. Keys are PEFT's
// (base_model.model.<module>.lora_A.weight [r, in], .lora_B.weight
// [out, r], .lora_magnitude_vector [out] for DoRA, and whole weights for
// modules_to_save); modules are mapped onto the base model's canonical
// weights through its architecture, so the result is an ir.Adapter in
// GGUF naming with B's rows permuted as the weight's were on import.
package peft

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
)

// Pattern is one entry of rank_pattern or alpha_pattern.
type Pattern struct {
	Key   string
	Value float64
	re    *regexp.Regexp
}

// Patterns keep the file's order: PEFT takes the first that matches.
type Patterns []Pattern

func (ps *Patterns) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("want an object")
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key := t.(string)
		var v float64
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("pattern %q: %w", key, err)
		}
		// PEFT: re.match(rf"(.*\.)?({key})$", module name).
		re, err := regexp.Compile(`^(.*\.)?(` + key + `)$`)
		if err != nil {
			return fmt.Errorf("pattern %q: %w", key, err)
		}
		*ps = append(*ps, Pattern{Key: key, Value: v, re: re})
	}
	return nil
}

func (ps Patterns) match(module string) (float64, bool) {
	for _, p := range ps {
		if p.re.MatchString(module) {
			return p.Value, true
		}
	}
	return 0, false
}

// Targets is target_modules: a list of names, or one regular expression
// (PEFT's re.fullmatch), or "all-linear".
type Targets struct {
	Names []string
	Regex *regexp.Regexp
	All   bool
}

func (t *Targets) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s == "all-linear" {
			t.All = true
			return nil
		}
		re, err := regexp.Compile(`^(?:` + s + `)$`)
		if err != nil {
			return fmt.Errorf("target_modules %q: %w", s, err)
		}
		t.Regex = re
		return nil
	}
	return json.Unmarshal(b, &t.Names)
}

// Match reports whether PEFT would adapt module (its full name in the
// model, e.g. model.layers.0.self_attn.q_proj).
func (t Targets) Match(module string) bool {
	switch {
	case t.All:
		return !strings.HasSuffix(module, "lm_head")
	case t.Regex != nil:
		return t.Regex.MatchString(module)
	}
	for _, n := range t.Names {
		if module == n || strings.HasSuffix(module, "."+n) {
			return true
		}
	}
	return false
}

// Config is adapter_config.json, the fields that change the weights.
type Config struct {
	PeftType      string   `json:"peft_type"`
	R             int      `json:"r"`
	Alpha         float64  `json:"lora_alpha"`
	RSLoRA        bool     `json:"use_rslora"`
	DoRA          bool     `json:"use_dora"`
	FanInFanOut   bool     `json:"fan_in_fan_out"`
	Bias          string   `json:"bias"`
	LoRABias      bool     `json:"lora_bias"`
	Targets       Targets  `json:"target_modules"`
	RankPattern   Patterns `json:"rank_pattern"`
	AlphaPattern  Patterns `json:"alpha_pattern"`
	ModulesToSave []string `json:"modules_to_save"`
	BaseModel     string   `json:"base_model_name_or_path"`
}

// IsAdapter reports whether path is a PEFT adapter folder.
func IsAdapter(path string) bool {
	st, err := os.Stat(filepath.Join(path, "adapter_config.json"))
	return err == nil && !st.IsDir()
}

// ReadConfig reads and checks adapter_config.json.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "adapter_config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case c.PeftType != "LORA":
		return nil, fmt.Errorf("%s: peft_type %q: lqc reads LoRA adapters", path, c.PeftType)
	case c.R <= 0:
		return nil, fmt.Errorf("%s: r is %d", path, c.R)
	case c.LoRABias:
		return nil, fmt.Errorf("%s: lora_bias (a trained bias on lora_B) is not supported", path)
	case c.Bias != "" && c.Bias != "none":
		return nil, fmt.Errorf("%s: bias %q (trained base biases) is not supported; retrain with bias=\"none\"", path, c.Bias)
	}
	return &c, nil
}

// Load reads the adapter in dir for base, whose architecture maps PEFT's
// module names onto weights. Every adapted module must exist in the base
// with matching shapes.
func Load(dir string, base *ir.Model) (*ir.Adapter, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "adapter_model.safetensors")
	if _, err := os.Stat(file); err != nil {
		if _, binErr := os.Stat(filepath.Join(dir, "adapter_model.bin")); binErr == nil {
			return nil, fmt.Errorf("%s: only adapter_model.bin (a PyTorch pickle) is there; lqc reads adapter_model.safetensors (PEFT's default since 0.6: save_pretrained(..., safe_serialization=True))", dir)
		}
		return nil, fmt.Errorf("%s: no adapter_model.safetensors", dir)
	}
	a, err := arch.Lookup(base.Arch)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenFiles(file)
	if err != nil {
		return nil, err
	}
	ad := &ir.Adapter{Name: dir, Arch: base.Arch, LoRA: map[string]*ir.LoRA{}, Replace: map[string]*ir.Tensor{}}
	ad.OnClose(set.Close)
	if err := load(ad, cfg, set, a, base); err != nil {
		ad.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return ad, nil
}

type parts struct{ a, b, mag string }

func load(ad *ir.Adapter, cfg *Config, set *safetensors.Set, a arch.Arch, base *ir.Model) error {
	mods := map[string]*parts{}
	var replace []string
	for _, key := range set.Names() {
		name, ok := strings.CutPrefix(key, "base_model.model.")
		if !ok {
			return fmt.Errorf("tensor %s: not a PEFT key (base_model.model.…)", key)
		}
		part := func(module string) *parts {
			if mods[module] == nil {
				mods[module] = &parts{}
			}
			return mods[module]
		}
		switch {
		case strings.HasSuffix(name, ".lora_A.weight"):
			part(strings.TrimSuffix(name, ".lora_A.weight")).a = key
		case strings.HasSuffix(name, ".lora_B.weight"):
			part(strings.TrimSuffix(name, ".lora_B.weight")).b = key
		case strings.HasSuffix(name, ".lora_magnitude_vector"):
			part(strings.TrimSuffix(name, ".lora_magnitude_vector")).mag = key
		case strings.HasSuffix(name, ".lora_magnitude_vector.weight"): // PEFT before the DoRA refactor
			part(strings.TrimSuffix(name, ".lora_magnitude_vector.weight")).mag = key
		case strings.Contains(name, ".lora_embedding_"):
			return fmt.Errorf("tensor %s: LoRA on embedding layers is not supported", key)
		case strings.Contains(name, ".lora_"):
			return fmt.Errorf("tensor %s: unexpected LoRA parameter", key)
		default:
			replace = append(replace, key)
		}
	}
	if len(mods) == 0 && len(replace) == 0 {
		return errors.New("adapter_model.safetensors holds no LoRA weights")
	}
	modules := make([]string, 0, len(mods))
	for m := range mods {
		modules = append(modules, m)
	}
	sort.Strings(modules)
	for _, module := range modules {
		p := mods[module]
		switch {
		case p.a == "" || p.b == "":
			return fmt.Errorf("module %s has only one of lora_A and lora_B", module)
		case cfg.DoRA && p.mag == "":
			return fmt.Errorf("use_dora is set but module %s has no lora_magnitude_vector", module)
		case !cfg.DoRA && p.mag != "":
			return fmt.Errorf("module %s has a DoRA magnitude but use_dora is false", module)
		case !cfg.Targets.Match(module):
			return fmt.Errorf("module %s has LoRA weights but target_modules does not select it", module)
		}
		canonical, err := mapModule(a, module, base)
		if err != nil {
			return err
		}
		w := base.Weight(canonical)
		r, alpha := float64(cfg.R), cfg.Alpha
		if v, ok := cfg.RankPattern.match(module); ok {
			r = v
		}
		if v, ok := cfg.AlphaPattern.match(module); ok {
			alpha = v
		}
		A, err := set.Tensor(p.a)
		if err != nil {
			return err
		}
		B, err := set.Tensor(p.b)
		if err != nil {
			return err
		}
		if len(A.Shape) != 2 || A.Shape[0] != int64(r) {
			return fmt.Errorf("module %s: lora_A is %v, want rank %v rows (r, rank_pattern)", module, A.Shape, r)
		}
		if len(B.Shape) != 2 || B.Shape[0] != w.Rows() || B.Shape[1] != int64(r) {
			return fmt.Errorf("module %s: lora_B is %v, want [%d %v] for %s %v", module, B.Shape, w.Rows(), r, canonical, w.Shape)
		}
		if A.Shape[1] != w.RowLen() {
			return fmt.Errorf("module %s: lora_A is %v, want [%v %d] for %s %v", module, A.Shape, r, w.RowLen(), canonical, w.Shape)
		}
		l := &ir.LoRA{A: A, B: B, Scale: alpha / r}
		if cfg.RSLoRA {
			l.Scale = alpha / math.Sqrt(r)
		}
		if p.mag != "" {
			m, err := set.Tensor(p.mag)
			if err != nil {
				return err
			}
			if m.NumElements() != w.Rows() {
				return fmt.Errorf("module %s: DoRA magnitude has %d values for %d output rows", module, m.NumElements(), w.Rows())
			}
			v, err := m.Float32s()
			if err != nil {
				return err
			}
			if l.Magnitude, err = ir.FromF32(p.mag, []int64{w.Rows(), 1}, v); err != nil {
				return err
			}
		}
		// B's rows and the magnitudes are the weight's output rows: they
		// take the permutation the weight took on import.
		if fix := a.RowFix(canonical, base.Params); fix != nil {
			if l.B, err = fix(l.B, base.Params); err != nil {
				return err
			}
			if l.Magnitude != nil {
				if l.Magnitude, err = fix(l.Magnitude, base.Params); err != nil {
					return err
				}
			}
		}
		ad.LoRA[canonical] = l
	}
	for _, key := range replace {
		name := strings.TrimPrefix(key, "base_model.model.")
		// Older PEFT kept the wrapper's path in the key.
		name = strings.Replace(name, ".modules_to_save.default.", ".", 1)
		name = strings.Replace(name, ".modules_to_save.", ".", 1)
		module := name[:strings.LastIndex(name, ".")]
		if !saved(cfg.ModulesToSave, module) {
			return fmt.Errorf("tensor %s is neither a LoRA weight nor in modules_to_save", key)
		}
		canonical, fix, ok, err := a.MapHF(name, base.Params)
		if err != nil || !ok {
			return fmt.Errorf("modules_to_save tensor %s: %v", key, err)
		}
		if base.Weight(canonical) == nil {
			return fmt.Errorf("modules_to_save replaces %s, which this base model does not have (a tied embedding?)", canonical)
		}
		t, err := set.Tensor(key)
		if err != nil {
			return err
		}
		if fix != nil {
			if t, err = fix(t, base.Params); err != nil {
				return err
			}
		}
		ad.Replace[canonical] = t.WithName(canonical)
	}
	return ad.Check(base)
}

// mapModule maps a PEFT module path onto the base's weight, saying so
// clearly when the module belongs to another architecture.
func mapModule(a arch.Arch, module string, base *ir.Model) (string, error) {
	canonical, _, ok, err := a.MapHF(module+".weight", base.Params)
	if err == nil && ok && base.Weight(canonical) != nil {
		return canonical, nil
	}
	for _, other := range arch.Names() {
		if other == a.Name() {
			continue
		}
		o, _ := arch.Lookup(other)
		if _, _, ok, err := o.MapHF(module+".weight", base.Params); err == nil && ok {
			return "", fmt.Errorf("module %s is a %s module, but the base model is %s", module, other, a.Name())
		}
	}
	if err == nil && ok {
		return "", fmt.Errorf("module %s maps to %s, which the base model does not have", module, canonical)
	}
	return "", fmt.Errorf("module %s is not a weight of a %s model", module, a.Name())
}

func saved(modules []string, module string) bool {
	for _, m := range modules {
		if module == m || strings.HasSuffix(module, "."+m) {
			return true
		}
	}
	return false
}
