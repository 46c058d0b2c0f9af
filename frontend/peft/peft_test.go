package peft_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/peft"
	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/testmodels"
)

// mergeHF is PEFT's merge_and_unload done by hand on the Hugging Face
// checkpoint, in float64 from the raw safetensors: for every adapted
// module W += scale·B·A (transposed for gpt2's Conv1D, which stores
// [in, out]), DoRA rescales each output row to its magnitude, saved
// modules replace theirs. It writes the merged model as a new HF folder,
// so that importing it (the path checked against llama.cpp's converter)
// gives what fusing the adapter into the base must give.
func mergeHF(t *testing.T, baseDir, adapterDir string) string {
	t.Helper()
	var cfg struct {
		R            int             `json:"r"`
		Alpha        float64         `json:"lora_alpha"`
		RSLoRA       bool            `json:"use_rslora"`
		RankPattern  json.RawMessage `json:"rank_pattern"`
		AlphaPattern json.RawMessage `json:"alpha_pattern"`
	}
	data, err := os.ReadFile(filepath.Join(adapterDir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	var rankP, alphaP peft.Patterns
	if err := json.Unmarshal(cfg.RankPattern, &rankP); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cfg.AlphaPattern, &alphaP); err != nil {
		t.Fatal(err)
	}
	lookup := func(ps peft.Patterns, module string, def float64) float64 {
		for _, p := range ps {
			if regexp.MustCompile(`^(.*\.)?(` + p.Key + `)$`).MatchString(module) {
				return p.Value
			}
		}
		return def
	}
	base, err := safetensors.OpenDir(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	ad, err := safetensors.OpenFiles(filepath.Join(adapterDir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ad.Close()
	f64 := func(s *safetensors.Set, name string) ([]float64, []int64) {
		tt, err := s.Tensor(name)
		if err != nil {
			return nil, nil
		}
		v, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out, tt.Shape
	}
	var merged []*ir.Tensor
	for _, key := range base.Names() {
		w, shape := f64(base, key)
		module := strings.TrimSuffix(key, ".weight")
		p := "base_model.model." + module
		if a, ashape := f64(ad, p+".lora_A.weight"); a != nil {
			b, bshape := f64(ad, p+".lora_B.weight")
			r := float64(ashape[0])
			scale := lookup(alphaP, module, cfg.Alpha) / lookup(rankP, module, float64(cfg.R))
			if cfg.RSLoRA {
				scale = lookup(alphaP, module, cfg.Alpha) / math.Sqrt(lookup(rankP, module, float64(cfg.R)))
			}
			in, out := ashape[1], bshape[0]
			conv1D := strings.HasPrefix(key, "transformer.")
			at := func(o, i int64) *float64 { // W in [out, in] terms
				if conv1D {
					return &w[i*out+o]
				}
				return &w[o*in+i]
			}
			for o := range out {
				for i := range in {
					var d float64
					for k := range int64(r) {
						d += b[o*int64(r)+k] * a[k*in+i]
					}
					*at(o, i) += scale * d
				}
			}
			if mag, _ := f64(ad, p+".lora_magnitude_vector"); mag != nil {
				for o := range out {
					var ss float64
					for i := range in {
						ss += *at(o, i) * *at(o, i)
					}
					f := mag[o] / math.Sqrt(ss)
					for i := range in {
						*at(o, i) *= f
					}
				}
			}
		}
		if rep, _ := f64(ad, "base_model.model."+key); rep != nil {
			w = rep
		}
		v := make([]float32, len(w))
		for i, x := range w {
			v[i] = float32(x)
		}
		tt, err := ir.FromF32(key, shape, v)
		if err != nil {
			t.Fatal(err)
		}
		merged = append(merged, tt)
	}
	dir := t.TempDir()
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), merged, nil); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(baseDir)
	for _, e := range entries {
		if e.Name() == "model.safetensors" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(baseDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
	}
	return dir
}

// TestFuseEqualsMerge: importing an adapter and fusing it gives the
// weights of PEFT's merge_and_unload converted, for llama (q/k rows
// un-permuted, GQA) and gpt2 (Conv1D, fused c_attn), with rsLoRA, rank
// and alpha patterns, DoRA and modules_to_save.
func TestFuseEqualsMerge(t *testing.T) {
	stories := testmodels.Shared(t, "models/stories260K/hf")
	gpt2 := testmodels.Shared(t, "models/gpt2-tiny/hf")
	cases := []struct {
		name string
		base string
		a    testmodels.PEFTAdapter
	}{
		{"llama q,v", stories, testmodels.PEFTAdapter{Targets: []string{"q_proj", "v_proj"}, R: 8, Alpha: 16, Seed: 1}},
		{"llama all attention and MLP, rsLoRA, patterns", stories, testmodels.PEFTAdapter{
			Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, R: 8, Alpha: 16, RSLoRA: true, Seed: 2,
			RankPattern:  []testmodels.PEFTPattern{{Key: `layers\.1\.self_attn\.k_proj`, Value: 4}, {Key: "down_proj", Value: 2}},
			AlphaPattern: []testmodels.PEFTPattern{{Key: "o_proj", Value: 3}}}},
		{"llama DoRA", stories, testmodels.PEFTAdapter{Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, R: 4, Alpha: 8, DoRA: true, Seed: 3}},
		{"gpt2 Conv1D, modules_to_save", gpt2, testmodels.PEFTAdapter{Targets: []string{"c_attn", "c_proj"}, R: 8, Alpha: 32, Seed: 4,
			ModulesToSave: []string{"c_fc"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := testmodels.WritePEFT(dir, c.base, c.a); err != nil {
				t.Fatal(err)
			}
			want, err := frontend.Load(mergeHF(t, c.base, dir), frontend.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer want.Close()
			m, err := frontend.Load(c.base, frontend.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			a, err := peft.Load(dir, m)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if _, err := (passes.FuseLoRA{Adapters: []passes.WeightedAdapter{{Adapter: a, Weight: 1}}}).Run(m); err != nil {
				t.Fatal(err)
			}
			changed := 0
			for _, w := range m.Weights() {
				got, err := w.Float32s()
				if err != nil {
					t.Fatal(err)
				}
				ref, err := want.Weight(w.Name).Float32s()
				if err != nil {
					t.Fatal(err)
				}
				var worst, size float64
				for i := range got {
					worst = max(worst, math.Abs(float64(got[i]-ref[i])))
					size = max(size, math.Abs(float64(ref[i])))
				}
				if worst > 1e-5*size {
					t.Errorf("%s differs from the merged model by %.3g (largest value %.3g)", w.Name, worst, size)
				}
				if a.LoRA[w.Name] != nil || a.Replace[w.Name] != nil {
					changed++
				}
			}
			if changed == 0 {
				t.Fatal("the adapter changed no weight")
			}
			t.Logf("%d weights adapted", changed)
		})
	}
}

// TestLoadErrors: adapters that do not fit their base, or that lqc cannot
// express, fail with a message naming the file and the problem.
func TestLoadErrors(t *testing.T) {
	stories := testmodels.Shared(t, "models/stories260K/hf")
	gpt2 := testmodels.Shared(t, "models/gpt2-tiny/hf")
	base, err := frontend.Load(stories, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	write := func(t *testing.T, baseDir string, a testmodels.PEFTAdapter) string {
		dir := t.TempDir()
		if err := testmodels.WritePEFT(dir, baseDir, a); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	editConfig := func(t *testing.T, dir string, edit func(map[string]any)) {
		p := filepath.Join(dir, "adapter_config.json")
		b, _ := os.ReadFile(p)
		var m map[string]any
		json.Unmarshal(b, &m)
		edit(m)
		b, _ = json.Marshal(m)
		os.WriteFile(p, b, 0o644)
	}
	qv := testmodels.PEFTAdapter{Targets: []string{"q_proj", "v_proj"}, R: 8, Alpha: 16, Seed: 1}
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		want string
	}{
		{"gpt2 adapter on a llama base", func(t *testing.T) string {
			return write(t, gpt2, testmodels.PEFTAdapter{Targets: []string{"c_attn"}, R: 4, Alpha: 8, Seed: 1})
		}, "is a gpt2 module, but the base model is llama"},
		{"rank differs from the config", func(t *testing.T) string {
			d := write(t, stories, qv)
			editConfig(t, d, func(m map[string]any) { m["r"] = 4 })
			return d
		}, "want rank 4"},
		{"module not targeted", func(t *testing.T) string {
			d := write(t, stories, qv)
			editConfig(t, d, func(m map[string]any) { m["target_modules"] = []string{"q_proj"} })
			return d
		}, "target_modules does not select it"},
		{"not LoRA", func(t *testing.T) string {
			d := write(t, stories, qv)
			editConfig(t, d, func(m map[string]any) { m["peft_type"] = "IA3" })
			return d
		}, `peft_type "IA3"`},
		{"pickle only", func(t *testing.T) string {
			d := write(t, stories, qv)
			os.Rename(filepath.Join(d, "adapter_model.safetensors"), filepath.Join(d, "adapter_model.bin"))
			return d
		}, "adapter_model.bin"},
		{"DoRA flag without magnitudes", func(t *testing.T) string {
			d := write(t, stories, qv)
			editConfig(t, d, func(m map[string]any) { m["use_dora"] = true })
			return d
		}, "no lora_magnitude_vector"},
		{"bad regex", func(t *testing.T) string {
			d := write(t, stories, qv)
			editConfig(t, d, func(m map[string]any) { m["target_modules"] = "q_proj(" })
			return d
		}, "target_modules"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := c.dir(t)
			_, err := peft.Load(dir, base)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %v, want one naming %s and %q", err, dir, c.want)
			}
		})
	}
}
