package gguf

import (
	"context"
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// AdapterAlpha is the adapter.lora.alpha a LoRA adapter GGUF records and
// how its B tensors must be scaled to go with it. llama.cpp applies each
// update with alpha/rank (rank: lora_a's rows), or 1 when alpha is 0. An
// adapter whose updates all share one rank and one scale keeps its B
// tensors as trained, with alpha = scale·rank, as llama.cpp's converter
// writes them; one whose updates differ (PEFT's rank_pattern,
// alpha_pattern) gets alpha 0 and each scale folded into its B.
func AdapterAlpha(a *ir.Adapter) (alpha float64, fold bool) {
	var rank int64
	var scale float64
	for i, name := range a.Names() {
		l := a.LoRA[name]
		if i == 0 {
			rank, scale = l.Rank(), l.Scale
		} else if l.Rank() != rank || l.Scale != scale {
			return 0, true
		}
	}
	return scale * float64(rank), false
}

// WriteAdapter writes a as a llama.cpp LoRA adapter: general.type
// "adapter", adapter.type "lora", adapter.lora.alpha, and for every
// adapted weight <name>.lora_a [r, in] and <name>.lora_b [out, r] stored
// as typ (F32, F16 or BF16). DoRA and whole-weight replacements have no
// place in the format: they are refused, to be fused instead.
func WriteAdapter(ctx context.Context, path string, a *ir.Adapter, typ quant.Type, opt WriteOptions) error {
	if typ != quant.F32 && typ != quant.F16 && typ != quant.BF16 {
		return fmt.Errorf("LoRA adapter tensors are written as F32, F16 or BF16, not %v", typ)
	}
	if len(a.Replace) > 0 {
		return fmt.Errorf("%s: the adapter replaces whole weights (modules_to_save), which a GGUF LoRA adapter cannot hold: fuse it with --fuse-lora instead", a.Name)
	}
	if len(a.LoRA) == 0 {
		return fmt.Errorf("%s: the adapter has no LoRA weights", a.Name)
	}
	alpha, fold := AdapterAlpha(a)
	var ts []*ir.Tensor
	for _, name := range a.Names() {
		l := a.LoRA[name]
		if l.Magnitude != nil {
			return fmt.Errorf("%s: DoRA adapters cannot be written as llama.cpp LoRA adapters (llama.cpp applies no magnitude): fuse it with --fuse-lora instead", a.Name)
		}
		A, err := ir.Convert(l.A.WithName(name+".lora_a"), typ)
		if err != nil {
			return err
		}
		b := l.B.WithName(name + ".lora_b")
		if fold {
			src, scale := b, l.Scale
			b = ir.Computed(b.Name, quant.F32, b.Shape, func(dst []float32, first, n int64) error {
				if err := src.ReadRowsF32(dst, first, n); err != nil {
					return err
				}
				for i := range dst {
					dst[i] = float32(float64(dst[i]) * scale)
				}
				return nil
			})
		}
		B, err := ir.Convert(b, typ)
		if err != nil {
			return err
		}
		ts = append(ts, A, B)
	}
	md := ir.Metadata{
		{Key: "general.architecture", Value: a.Arch},
		{Key: "general.type", Value: "adapter"},
		{Key: "adapter.type", Value: "lora"},
		{Key: "adapter.lora.alpha", Value: float32(alpha)},
	}
	return WriteFile(ctx, path, md, ts, opt)
}
