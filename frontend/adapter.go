package frontend

import (
	"fmt"
	"os"
	"strings"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend/peft"
	"github.com/lqc-dev/lqc/ir"
)

// IsAdapter reports whether path holds a LoRA adapter: a PEFT folder or a
// GGUF file of general.type "adapter".
func IsAdapter(path string) bool {
	if peft.IsAdapter(path) {
		return true
	}
	if !IsGGUF(path) {
		return false
	}
	f, err := gguf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	t, _ := f.Metadata.String("general.type")
	return t == "adapter"
}

// LoadAdapter imports the LoRA adapter at path for base: a PEFT folder or
// a llama.cpp LoRA adapter GGUF. It is checked against the base.
func LoadAdapter(path string, base *ir.Model) (*ir.Adapter, error) {
	if peft.IsAdapter(path) {
		return peft.Load(path, base)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() || !IsGGUF(path) {
		return nil, fmt.Errorf("%s: not a LoRA adapter (want a PEFT folder with adapter_config.json or a GGUF adapter)", path)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	a, err := loadGGUFAdapter(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a.OnClose(f.Close)
	if err := a.Check(base); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// loadGGUFAdapter reads llama.cpp's adapter layout: <weight>.lora_a
// [r, in] and <weight>.lora_b [out, r], applied with alpha/r (1 when
// alpha is 0).
func loadGGUFAdapter(f *gguf.File, path string) (*ir.Adapter, error) {
	if t, _ := f.Metadata.String("general.type"); t != "adapter" {
		return nil, fmt.Errorf("general.type is %q, not adapter", t)
	}
	if t, _ := f.Metadata.String("adapter.type"); t != "lora" {
		return nil, fmt.Errorf("adapter.type is %q; lqc reads LoRA adapters", t)
	}
	arch, _ := f.Metadata.String("general.architecture")
	alpha, _ := f.Metadata.Float("adapter.lora.alpha")
	a := &ir.Adapter{Name: path, Arch: arch, LoRA: map[string]*ir.LoRA{}}
	for i, ti := range f.Tensors {
		t, err := f.Tensor(i)
		if err != nil {
			return nil, err
		}
		var name string
		var isA bool
		switch {
		case strings.HasSuffix(ti.Name, ".lora_a"):
			name, isA = strings.TrimSuffix(ti.Name, ".lora_a"), true
		case strings.HasSuffix(ti.Name, ".lora_b"):
			name = strings.TrimSuffix(ti.Name, ".lora_b")
		case strings.HasSuffix(ti.Name, "_norm.weight"):
			continue // llama.cpp skips these too
		default:
			return nil, fmt.Errorf("tensor %s is neither a lora_a nor a lora_b", ti.Name)
		}
		if strings.HasSuffix(name, "token_embd.weight") {
			return nil, fmt.Errorf("%s: LoRA on the token embedding is not supported", ti.Name)
		}
		l := a.LoRA[name]
		if l == nil {
			l = &ir.LoRA{}
			a.LoRA[name] = l
		}
		if isA {
			l.A = t
		} else {
			l.B = t
		}
	}
	for name, l := range a.LoRA {
		if l.A == nil || l.B == nil {
			return nil, fmt.Errorf("%s has only one of lora_a and lora_b", name)
		}
		l.Scale = 1
		if alpha != 0 {
			l.Scale = alpha / float64(l.Rank())
		}
	}
	return a, nil
}
