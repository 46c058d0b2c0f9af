package arch

import "github.com/lqc-dev/lqc/ir"

// Phi-3 (and Phi-3.5 mini) is a member of the llama family with q, k and v
// in one matrix and the MLP's gate and up in another, kept fused as
// llama.cpp keeps them; RoPE over the heads' halves; a sliding window,
// which llama.cpp applies too.
func init() {
	register(phi3{llamaFamily{name: "phi3", hfTypes: []string{"phi3"}, neox: true, fused: true, window: true, ggufRopeDims: true}})
}

type phi3 struct{ llamaFamily }

// CompleteVocab: the converter's own SentencePiece reader for Phi-3 does
// not record add_space_prefix (llama.cpp's default, a space, applies).
func (phi3) CompleteVocab(v *ir.Vocab) { v.AddSpacePrefix = nil }
