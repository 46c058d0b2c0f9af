// Package frontend turns model files into lqc's IR. Load looks at a path
// and picks the importer: a Hugging Face folder (package hf), a llama2.c
// checkpoint (package llama2c), an ONNX export (package onnx) or a GGUF
// file.
package frontend

import (
	"fmt"
	"os"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend/hf"
	"github.com/lqc-dev/lqc/frontend/llama2c"
	"github.com/lqc-dev/lqc/frontend/onnx"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
)

// Options tune Load.
type Options struct {
	// Tokenizer is the vocabulary file of a llama2.c checkpoint, or the
	// Hugging Face tokenizer (a folder or a file in one) of an ONNX export;
	// empty means the one found beside the model.
	Tokenizer string
	// Backend runs what ONNX import evaluates (shape arithmetic, the
	// check of the recognised model); nil means the CPU backend.
	Backend runtime.Backend
}

// Load imports the model at path. The model reads its weights lazily from
// mapped files: Close it when done.
func Load(path string, opt Options) (*ir.Model, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		if !hf.IsModelDir(path) {
			return nil, fmt.Errorf("%s: a model folder needs a config.json", path)
		}
		return hf.Load(path)
	}
	switch {
	case IsGGUF(path):
		return LoadGGUF(path)
	case onnx.IsModel(path):
		b := opt.Backend
		if b == nil {
			cb := cpu.New(0)
			defer cb.Close()
			b = cb
		}
		return onnx.Load(path, onnx.LoadOptions{Backend: b, Tokenizer: opt.Tokenizer})
	case llama2c.IsCheckpoint(path):
		return llama2c.Load(path, opt.Tokenizer)
	}
	return nil, fmt.Errorf("%s: not a model lqc can read (want a Hugging Face folder, a GGUF file, an ONNX export or a llama2.c checkpoint)", path)
}

// IsGGUF reports whether path is a file that starts with GGUF's magic.
func IsGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	_, err = f.ReadAt(b[:], 0)
	return err == nil && string(b[:]) == "GGUF"
}

// LoadGGUF imports a GGUF model file.
func LoadGGUF(path string) (*ir.Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := loadGGUF(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.OnClose(f.Close)
	return m, nil
}

func loadGGUF(f *gguf.File) (*ir.Model, error) {
	name, ok := f.Metadata.String("general.architecture")
	if !ok {
		return nil, fmt.Errorf("general.architecture is missing")
	}
	if t, _ := f.Metadata.String("general.type"); t != "" && t != "model" {
		return nil, fmt.Errorf("general.type is %q, not a model", t)
	}
	a, err := arch.Lookup(name)
	if err != nil {
		return nil, err
	}
	p, err := a.ParamsFromGGUF(f.Metadata)
	if err != nil {
		return nil, err
	}
	vocab, err := gguf.VocabFromMetadata(f.Metadata)
	if err != nil {
		return nil, err
	}
	weights := map[string]*ir.Tensor{}
	for i := range f.Tensors {
		t, err := f.Tensor(i)
		if err != nil {
			return nil, err
		}
		weights[t.Name] = t
	}
	modelName, _ := f.Metadata.String("general.name")
	m, err := arch.NewModel(a, modelName, p, weights, vocab)
	if err != nil {
		return nil, err
	}
	if ft, err := f.Metadata.Uint("general.file_type"); err == nil {
		m.FileType = quant.FileType(ft)
	}
	m.Extra = gguf.ExtraMetadata(f.Metadata, a, p)
	m.Source = f.Path
	return m, nil
}
