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
	// Layers, GQA (query heads per key/value head) and Is70B (llama.cpp's
	// LLM_TYPE_70B: 80 layers with grouped-query attention) steer the
	// per-layer rules of the K-quant mixes.
	Layers int
	GQA    int
	Is70B  bool
	// HasImatrix is true when an importance matrix steers quantization;
	// a few rules depend on it.
	HasImatrix bool
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
	} else if name != "token_embd.weight" {
		t = p.layerRule(name, t)
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

// useMoreBits is llama.cpp's choice of the layers that get more bits: the
// first and last eighth, and every third in between.
func useMoreBits(i, n int) bool {
	return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2
}

// layerOf is the block index of a per-layer tensor name ("blk.N.…").
func layerOf(name string) int {
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return 0
	}
	n := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			break
		}
		n = 10*n + int(c-'0')
	}
	return n
}

// layerRule is the per-tensor part of llama_tensor_get_type for the mixes
// lqc makes. llama-quantize visits layers in order, so its running
// counters of attn_v and ffn_down tensors equal the layer index.
func (p Plan) layerRule(name string, t Type) Type {
	ft, i, n := p.FileType, layerOf(name), p.Layers
	switch {
	case strings.Contains(name, "attn_v.weight"):
		switch {
		case ft == FileMostlyQ2_K:
			t = Q3_K
			if p.GQA >= 4 {
				t = Q4_K
			}
		case ft == FileMostlyQ3_K_M:
			t = Q4_K
			if i < 2 {
				t = Q5_K
			}
		case ft == FileMostlyQ3_K_L:
			t = Q5_K
		case (ft == FileMostlyIQ4_NL || ft == FileMostlyIQ4_XS) && p.GQA >= 4:
			t = Q5_K
		case (ft == FileMostlyQ4_K_M || ft == FileMostlyQ5_K_M) && useMoreBits(i, n):
			t = Q6_K
		case ft == FileMostlyQ4_K_S && i < 4:
			t = Q5_K
		}
		if p.Is70B && (t == Q3_K || t == Q4_K) {
			t = Q5_K
		}
	case strings.Contains(name, "ffn_down"):
		switch {
		case ft == FileMostlyQ2_K:
			t = Q3_K
		case ft == FileMostlyQ3_K_M:
			t = Q4_K
			if i < n/16 {
				t = Q5_K
			}
		case ft == FileMostlyQ3_K_L:
			t = Q5_K
		case ft == FileMostlyQ4_K_M:
			if useMoreBits(i, n) {
				t = Q6_K
			}
		case i < n/8 && (ft == FileMostlyIQ4_NL || ft == FileMostlyIQ4_XS) && !p.HasImatrix:
			t = Q5_K
		case ft == FileMostlyQ5_K_M && useMoreBits(i, n):
			t = Q6_K
		case ft == FileMostlyQ4_K_S && i < n/8:
			t = Q5_K
		case (ft == FileMostlyQ4_0 || ft == FileMostlyQ5_0) && p.HasImatrix && i < n/8:
			// llama.cpp guards the first ffn_down layers, which go wrong
			// even with an imatrix at these types.
			t = Q4_1
			if ft == FileMostlyQ5_0 {
				t = Q5_1
			}
		}
	case strings.Contains(name, "attn_output.weight"):
		switch ft {
		case FileMostlyQ2_K:
			t = Q3_K
		case FileMostlyQ3_K_M:
			t = Q4_K
		case FileMostlyQ3_K_L:
			t = Q5_K
		}
	case strings.Contains(name, "attn_qkv.weight"):
		switch ft {
		case FileMostlyQ3_K_M, FileMostlyQ3_K_L:
			t = Q4_K
		case FileMostlyQ4_K_M:
			t = Q5_K
		case FileMostlyQ5_K_M:
			t = Q6_K
		}
	}
	return t
}
