package quant

import (
	"fmt"
	"strings"
)

// Plan chooses each tensor's type the way llama-quantize does for a file
// type: which tensors are quantized at all, the special rule for the output
// matrix (and for a token embedding that doubles as it), and the fallback
// when a row length does not fit the chosen block size.
type Plan struct {
	FileType FileType
	// Pure gives every quantizable tensor the base type, without the
	// per-tensor rules (llama-quantize --pure).
	Pure bool
	// HasOutput is true when the model has its own output.weight; when it
	// does not, the token embedding is also the classifier and is treated
	// as the output.
	HasOutput bool
}

// Decision is the outcome of Plan.Choose for one tensor.
type Decision struct {
	Quantize bool   // false: the tensor is left as the converter stores it
	Type     Type   // the type to store when Quantize
	Fallback string // why the type differs from the rules' choice, if it does
}

// Quantizable reports whether llama-quantize would quantize a tensor: a
// weight matrix that is not a norm, not a position or token-type
// embedding, not an expert router.
func Quantizable(name string, shape []int64) bool {
	if !strings.HasSuffix(name, "weight") || len(shape) < 2 {
		return false
	}
	for _, skip := range []string{"_norm.weight", "ffn_gate_inp.weight", "attn_rel_b.weight"} {
		if strings.Contains(name, skip) {
			return false
		}
	}
	return name != "position_embd.weight" && name != "token_types.weight"
}

// Choose decides the type of the tensor name with the given row-major
// shape (the last dimension is the row length).
func (p Plan) Choose(name string, shape []int64) (Decision, error) {
	if !Quantizable(name, shape) {
		return Decision{}, nil
	}
	base := p.FileType.Base()
	row := shape[len(shape)-1]
	if p.Pure || !base.Quantized() {
		if !base.Fits(row) {
			return Decision{}, fmt.Errorf("%s: row length %d is not a multiple of %v's block size %d (drop --pure to let lqc fall back as llama.cpp does)", name, row, base, base.BlockSize())
		}
		return Decision{Quantize: true, Type: base}, nil
	}

	t := base
	if name == "output.weight" || (!p.HasOutput && name == "token_embd.weight") {
		switch {
		case row%int64(t.BlockSize()) != 0:
			t = Q8_0
		case t != Q8_0:
			t = Q6_K
		}
	}
	if t.Fits(row) {
		return Decision{Quantize: true, Type: t}, nil
	}
	// llama.cpp's fallback for row lengths the block size does not divide.
	fb := F16
	switch t {
	case Q2_K, Q3_K, IQ4_XS:
		fb = IQ4_NL
	case Q4_K:
		fb = Q5_0
	case Q5_K:
		fb = Q5_1
	case Q6_K:
		fb = Q8_0
	}
	if !fb.Fits(row) {
		fb = F16
	}
	return Decision{
		Quantize: true,
		Type:     fb,
		Fallback: fmt.Sprintf("row length %d is not a multiple of %v's block size %d: using %v", row, t, t.BlockSize(), fb),
	}, nil
}
