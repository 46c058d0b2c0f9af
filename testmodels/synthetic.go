package testmodels

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// LlamaShape is the size of a llama-shaped model.
type LlamaShape struct {
	Layers, Hidden, FFN, Heads, KVHeads, Vocab, Context int
}

// TinyLlama is TinyLlama-1.1B's shape.
var TinyLlama = LlamaShape{Layers: 22, Hidden: 2048, FFN: 5632, Heads: 32, KVHeads: 4, Vocab: 32000, Context: 2048}

// Params counts the model's weights.
func (s LlamaShape) Params() int64 {
	d, ff, v := int64(s.Hidden), int64(s.FFN), int64(s.Vocab)
	kv := int64(s.KVHeads) * d / int64(s.Heads)
	layer := 2*d + 2*d*d + 2*kv*d + 3*d*ff
	return 2*v*d + d + int64(s.Layers)*layer
}

// WriteLlamaHF writes a Hugging Face llama folder with seeded weights:
// config.json, model.safetensors in dtype (F32, F16 or BF16; untied
// lm_head), a SentencePiece tokenizer.model and tokenizer_config.json.
// Weights are generated row by row as they are written, so a 1.1B model
// needs no more memory than a small one. The same seed gives the same
// bytes.
func WriteLlamaHF(dir string, s LlamaShape, dtype quant.Type, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, ff, v := int64(s.Hidden), int64(s.FFN), int64(s.Vocab)
	kv := int64(s.KVHeads) * d / int64(s.Heads)
	var ts []*ir.Tensor
	add := func(name string, shape []int64, norm bool) {
		ts = append(ts, seeded(name, dtype, shape, seed, norm))
	}
	add("model.embed_tokens.weight", []int64{v, d}, false)
	for i := range s.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", []int64{d}, true)
		add(p+"self_attn.q_proj.weight", []int64{d, d}, false)
		add(p+"self_attn.k_proj.weight", []int64{kv, d}, false)
		add(p+"self_attn.v_proj.weight", []int64{kv, d}, false)
		add(p+"self_attn.o_proj.weight", []int64{d, d}, false)
		add(p+"post_attention_layernorm.weight", []int64{d}, true)
		add(p+"mlp.gate_proj.weight", []int64{ff, d}, false)
		add(p+"mlp.up_proj.weight", []int64{ff, d}, false)
		add(p+"mlp.down_proj.weight", []int64{d, ff}, false)
	}
	add("model.norm.weight", []int64{d}, true)
	add("lm_head.weight", []int64{v, d}, false)
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	torchDtype := map[quant.Type]string{quant.F32: "float32", quant.F16: "float16", quant.BF16: "bfloat16"}[dtype]
	cfg := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": s.Hidden, "intermediate_size": s.FFN, "num_hidden_layers": s.Layers,
		"num_attention_heads": s.Heads, "num_key_value_heads": s.KVHeads, "vocab_size": s.Vocab,
		"max_position_embeddings": s.Context, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": torchDtype,
		"bos_token_id": 1, "eos_token_id": 2,
	}
	if err := writeJSON(filepath.Join(dir, "config.json"), cfg); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "tokenizer_config.json"), map[string]any{
		"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
	}); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.model"), SentencePieceModel(s.Vocab), 0o644)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// seeded is a lazy tensor of N(0, 0.02) values (norm gains: 1 + N(0,
// 0.1)) whose row r depends only on seed, name and r, so rows can be
// produced in any order, in parallel.
func seeded(name string, dtype quant.Type, shape []int64, seed uint64, norm bool) *ir.Tensor {
	h := fnv.New64a()
	h.Write([]byte(name))
	base := seed ^ h.Sum64()
	rowLen := shape[len(shape)-1]
	return ir.Computed(name, dtype, shape, func(dst []float32, first, n int64) error {
		for r := range n {
			// Each row starts at a hashed point of the sequence; starting
			// rows at consecutive points would make row r+1 row r shifted.
			rng := splitmix(mix64(base + uint64(first+r)))
			row := dst[r*rowLen : (r+1)*rowLen]
			for i := range row {
				g := rng.normal()
				if norm {
					row[i] = float32(1 + 0.1*g)
				} else {
					row[i] = float32(0.02 * g)
				}
			}
		}
		return nil
	})
}

// splitmix is a small, fast, seedable generator (SplitMix64).
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9E3779B97F4A7C15
	return mix64(uint64(*s))
}

// mix64 is SplitMix64's output function, a bijective bit mixer.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xBF58476D1CE4E5B9
	z = (z ^ z>>27) * 0x94D049BB133111EB
	return z ^ z>>31
}

// normal draws a standard normal value (sum of four uniforms, rescaled:
// close enough to Gaussian for weights, and much cheaper).
func (s *splitmix) normal() float64 {
	x := s.next()
	var sum float64
	for range 4 {
		sum += float64(x&0xFFFF) / 65536
		x >>= 16
	}
	return (sum - 2) * math.Sqrt(3)
}

// SentencePieceModel returns a tokenizer.model (SentencePiece ModelProto)
// with n pieces laid out as Llama's: <unk>, <s>, </s>, the 256 byte
// pieces, then filler pieces.
func SentencePieceModel(n int) []byte {
	var b []byte
	piece := func(text string, score float32, typ uint64) {
		var p []byte
		p = protowire.AppendTag(p, 1, protowire.BytesType)
		p = protowire.AppendString(p, text)
		p = protowire.AppendTag(p, 2, protowire.Fixed32Type)
		p = protowire.AppendFixed32(p, math.Float32bits(score))
		p = protowire.AppendTag(p, 3, protowire.VarintType)
		p = protowire.AppendVarint(p, typ)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, p)
	}
	piece("<unk>", 0, 2)
	piece("<s>", 0, 3)
	piece("</s>", 0, 3)
	for i := range 256 {
		piece(fmt.Sprintf("<0x%02X>", i), 0, 6)
	}
	for i := 259; i < n; i++ {
		piece(fmt.Sprintf("\u2581t%d", i), -float32(i), 1)
	}
	return b
}
