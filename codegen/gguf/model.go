package gguf

import (
	"context"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
)

// QuantizationVersion is general.quantization_version: the revision of
// the block formats (GGML_QNT_VERSION).
const QuantizationVersion = 2

// ModelMetadata is the metadata lqc writes for a model, in the order
// llama.cpp's converter writes it: general.*, the architecture's
// hyper-parameters, metadata carried over from the source, then the
// tokenizer.
func ModelMetadata(m *ir.Model) (ir.Metadata, error) {
	a, err := arch.Lookup(m.Arch)
	if err != nil {
		return nil, err
	}
	md := ir.Metadata{
		{Key: "general.architecture", Value: m.Arch},
		{Key: "general.type", Value: "model"},
	}
	if m.Name != "" {
		md = append(md, ir.KV{Key: "general.name", Value: m.Name})
	}
	md = append(md, a.GGUFMetadata(m.Params)...)
	// Both llama.cpp's converter and llama-quantize record the block
	// format revision in every file, float ones included.
	md = append(md,
		ir.KV{Key: "general.file_type", Value: uint32(m.FileType)},
		ir.KV{Key: "general.quantization_version", Value: uint32(QuantizationVersion)})
	for _, kv := range m.Extra {
		if _, dup := md.Get(kv.Key); !dup {
			md = append(md, kv)
		}
	}
	if m.Vocab != nil {
		md = append(md, VocabMetadata(m.Vocab)...)
	}
	return md, nil
}

// WriteModel writes m as a GGUF model file (see WriteFile).
func WriteModel(ctx context.Context, path string, m *ir.Model, opt WriteOptions) error {
	md, err := ModelMetadata(m)
	if err != nil {
		return err
	}
	return WriteFile(ctx, path, md, m.Weights(), opt)
}

// ExtraMetadata returns the metadata of a GGUF model file that lqc does
// not regenerate itself, to be carried through a conversion: what
// ModelMetadata writes from the model's fields is left out.
func ExtraMetadata(md ir.Metadata, a arch.Arch, p ir.HParams) ir.Metadata {
	managed := map[string]bool{
		"general.architecture": true, "general.type": true, "general.name": true,
		"general.file_type": true, "general.quantization_version": true, "general.alignment": true,
	}
	for _, kv := range a.GGUFMetadata(p) {
		managed[kv.Key] = true
	}
	for _, k := range vocabKeys {
		managed[k] = true
	}
	var extra ir.Metadata
	for _, kv := range md {
		// Keys of the architecture that lqc does not model are kept too,
		// so that llama.cpp still sees them; split.* described the source
		// file's sharding and no longer applies.
		if !managed[kv.Key] && !strings.HasPrefix(kv.Key, "split.") {
			extra = append(extra, kv)
		}
	}
	return extra
}
