package ir

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant"
)

// Model is a whole model in lqc's IR: its architecture and
// hyper-parameters, its vocabulary, and its forward graph, which holds the
// weights. Frontends produce one, passes rewrite it, codegen writes it and
// the runtime executes it.
type Model struct {
	Arch   string // architecture name as GGUF spells it: "llama", "gpt2"
	Name   string // general.name
	Params HParams
	Vocab  *Vocab
	Graph  *Graph

	// FileType names the quantization mix the weights are in; it is
	// written as general.file_type.
	FileType quant.FileType
	// Extra holds metadata that lqc carries through without interpreting
	// (general.* descriptions from a GGUF source, for instance).
	Extra Metadata
	// Source is the path the model was read from, for messages.
	Source string

	closers []func() error
}

// OnClose registers a function that releases what the model's lazy
// tensors read from (mapped files).
func (m *Model) OnClose(f func() error) { m.closers = append(m.closers, f) }

// Close releases the model's files; its tensors must not be read after.
func (m *Model) Close() error {
	var first error
	for _, f := range m.closers {
		if err := f(); err != nil && first == nil {
			first = err
		}
	}
	m.closers = nil
	return first
}

// Weights returns the model's weight tensors in graph order.
func (m *Model) Weights() []*Tensor {
	ts := make([]*Tensor, len(m.Graph.Weights))
	for i, w := range m.Graph.Weights {
		ts[i] = w.Weight
	}
	return ts
}

// Weight returns the weight named name, or nil.
func (m *Model) Weight(name string) *Tensor {
	if v := m.Graph.WeightValue(name); v != nil {
		return v.Weight
	}
	return nil
}

// HParams are the hyper-parameters shared by the decoder-only transformer
// families lqc knows. Each architecture reads and writes the subset it
// uses (see package arch).
type HParams struct {
	ContextLength      int     // training context (positions)
	EmbeddingLength    int     // hidden size
	BlockCount         int     // transformer layers
	FeedForwardLength  int     // MLP inner size
	HeadCount          int     // query heads
	HeadCountKV        int     // key/value heads (GQA when < HeadCount)
	RopeDimensionCount int     // rotated dimensions per head (0: no RoPE)
	RopeFreqBase       float32 // RoPE theta
	NormEpsilon        float32 // RMSNorm or LayerNorm epsilon
	VocabSize          int
	// KeyLength is the head size when the model states it (config.json's
	// head_dim, GGUF's attention.key_length); 0 when it is derived as
	// hidden size / heads.
	KeyLength int
	// SlidingWindow, when positive, limits each query to the keys fewer
	// than that many positions behind it (Mistral's attention).
	SlidingWindow int
	// AttnSoftcap and FinalSoftcap, when positive, cap attention scores
	// and logits as cap·tanh(x/cap) (Gemma 2).
	AttnSoftcap, FinalSoftcap float32
	// QueryScale, when positive, is the scalar whose inverse square root
	// scales the queries (Gemma 2's query_pre_attn_scalar); else the head
	// size's.
	QueryScale int
	// RopeFreqBaseSWA, when positive, is the RoPE base of the layers with
	// a sliding window (Gemma 3's rope_local_base_freq); RopeFreqScale,
	// when positive, multiplies the positions of the others (linear RoPE
	// scaling: 1/factor).
	RopeFreqBaseSWA, RopeFreqScale float32
	// EmbeddingProjLength, when positive, is the width of the token
	// embedding, projected in and out of the hidden size (OPT's
	// word_embed_proj_dim where it differs from hidden_size).
	EmbeddingProjLength int
	// PostNorm: each block normalizes after its residual addition rather
	// than before its sublayer (OPT's do_layer_norm_before false).
	PostNorm bool
	// RopeOriginalContext is the context the model was trained at, where
	// it states one (Phi-3's original_max_position_embeddings); 0 if not.
	RopeOriginalContext int
}

// HeadDim is the per-head size.
func (p HParams) HeadDim() int {
	if p.KeyLength > 0 {
		return p.KeyLength
	}
	if p.HeadCount == 0 {
		return 0
	}
	return p.EmbeddingLength / p.HeadCount
}

// Validate checks the relations every architecture relies on.
func (p HParams) Validate() error {
	switch {
	case p.EmbeddingLength <= 0, p.BlockCount <= 0, p.HeadCount <= 0, p.VocabSize <= 0, p.FeedForwardLength <= 0:
		return fmt.Errorf("hyper-parameters must be positive: %+v", p)
	case p.KeyLength == 0 && p.EmbeddingLength%p.HeadCount != 0:
		return fmt.Errorf("hidden size %d is not a multiple of the head count %d", p.EmbeddingLength, p.HeadCount)
	case p.HeadCountKV <= 0 || p.HeadCount%p.HeadCountKV != 0:
		return fmt.Errorf("head count %d is not a multiple of the key/value head count %d", p.HeadCount, p.HeadCountKV)
	case p.RopeDimensionCount%2 != 0 || p.RopeDimensionCount > p.HeadDim():
		return fmt.Errorf("RoPE dimension count %d must be even and at most the head size %d", p.RopeDimensionCount, p.HeadDim())
	}
	return nil
}

// TokenType classifies vocabulary entries as llama.cpp does.
type TokenType int32

const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// Vocab is a tokenizer's vocabulary as GGUF stores it.
type Vocab struct {
	// Model is the tokenizer kind: "llama" (SentencePiece BPE with byte
	// fallback) or "gpt2" (byte-level BPE).
	Model string
	// Pre names the pre-tokenizer ("default", "gpt-2").
	Pre    string
	Tokens []string
	Scores []float32 // SentencePiece merge scores; nil for byte-level BPE
	Types  []TokenType
	Merges []string // byte-level BPE merges, "left right"

	// Special token ids; -1 when the vocabulary has none.
	BOS, EOS, UNK, PAD int32
	// EOT is the end-of-turn token of chat models (Gemma's
	// <end_of_turn>), which ends generation as EOS does; -1 when none.
	EOT int32
	// AddBOS, AddEOS and AddSEP are nil when the source does not say.
	AddBOS, AddEOS, AddSEP *bool
	// AddSpacePrefix is SentencePiece's add_dummy_prefix (a space put
	// before the text); nil when the source does not say (then true).
	AddSpacePrefix *bool
	ChatTemplate   string
}

// NoToken marks an absent special token.
const NoToken int32 = -1

// Validate checks that the vocabulary is internally consistent.
func (v *Vocab) Validate() error {
	n := len(v.Tokens)
	if n == 0 {
		return fmt.Errorf("vocabulary is empty")
	}
	if v.Scores != nil && len(v.Scores) != n {
		return fmt.Errorf("vocabulary has %d tokens but %d scores", n, len(v.Scores))
	}
	if len(v.Types) != n {
		return fmt.Errorf("vocabulary has %d tokens but %d token types", n, len(v.Types))
	}
	for _, id := range []int32{v.BOS, v.EOS, v.UNK, v.PAD, v.EOT} {
		if id != NoToken && (id < 0 || int(id) >= n) {
			return fmt.Errorf("special token id %d out of range (vocabulary of %d)", id, n)
		}
	}
	return nil
}

// Find returns the id of the token whose text is s, or NoToken.
func (v *Vocab) Find(s string) int32 {
	for i, t := range v.Tokens {
		if t == s {
			return int32(i)
		}
	}
	return NoToken
}
