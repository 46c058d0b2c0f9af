package arch

import (
	"fmt"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

func init() { register(gpt2{}) }

// gpt2 covers GPT-2: learned absolute positions, pre-LayerNorm blocks with
// biases, a fused q|k|v projection, tanh-approximated GELU, and a
// classifier tied to the token embedding.
type gpt2 struct{}

func (gpt2) Name() string           { return "gpt2" }
func (gpt2) HFModelTypes() []string { return []string{"gpt2"} }

func (gpt2) ParamsFromHF(c Config) (ir.HParams, error) {
	var p ir.HParams
	if err := c.ints(
		key(&p.EmbeddingLength, "n_embd", "hidden_size"),
		key(&p.BlockCount, "n_layer", "num_hidden_layers"),
		key(&p.HeadCount, "n_head", "num_attention_heads"),
		// llama.cpp reads the context from n_ctx; n_positions is the same
		// number in every GPT-2 config that has both.
		key(&p.ContextLength, "n_ctx", "n_positions"),
		key(&p.VocabSize, "vocab_size"),
	); err != nil {
		return p, err
	}
	var err error
	if p.FeedForwardLength, err = c.IntOr(4*p.EmbeddingLength, "n_inner"); err != nil {
		return p, err
	}
	p.HeadCountKV = p.HeadCount
	eps, err := c.FloatOr("layer_norm_epsilon", 1e-5)
	if err != nil {
		return p, err
	}
	p.NormEpsilon = float32(eps)
	if act, _ := c["activation_function"].(string); act != "" && act != "gelu_new" && act != "gelu_pytorch_tanh" && act != "gelu" {
		return p, fmt.Errorf("activation_function %q is not supported (want gelu_new)", act)
	}
	return p, nil
}

func (gpt2) ParamsFromGGUF(md ir.Metadata) (ir.HParams, error) {
	return paramsFromGGUF("gpt2", md, false)
}

func (gpt2) GGUFMetadata(p ir.HParams) ir.Metadata {
	return ir.Metadata{
		{Key: "gpt2.block_count", Value: uint32(p.BlockCount)},
		{Key: "gpt2.context_length", Value: uint32(p.ContextLength)},
		{Key: "gpt2.embedding_length", Value: uint32(p.EmbeddingLength)},
		{Key: "gpt2.feed_forward_length", Value: uint32(p.FeedForwardLength)},
		{Key: "gpt2.attention.head_count", Value: uint32(p.HeadCount)},
		{Key: "gpt2.attention.layer_norm_epsilon", Value: p.NormEpsilon},
	}
}

func (gpt2) Tensors(p ir.HParams) []TensorSpec {
	d, ff, v, ctx := int64(p.EmbeddingLength), int64(p.FeedForwardLength), int64(p.VocabSize), int64(p.ContextLength)
	ts := []TensorSpec{
		{Name: "token_embd.weight", Shape: []int64{v, d}},
		{Name: "position_embd.weight", Shape: []int64{ctx, d}},
	}
	for i := range p.BlockCount {
		ts = append(ts,
			TensorSpec{Name: blk(i, "attn_norm.weight"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "attn_norm.bias"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "attn_qkv.weight"), Shape: []int64{3 * d, d}},
			TensorSpec{Name: blk(i, "attn_qkv.bias"), Shape: []int64{3 * d}},
			TensorSpec{Name: blk(i, "attn_output.weight"), Shape: []int64{d, d}},
			TensorSpec{Name: blk(i, "attn_output.bias"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "ffn_norm.weight"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "ffn_norm.bias"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "ffn_up.weight"), Shape: []int64{ff, d}},
			TensorSpec{Name: blk(i, "ffn_up.bias"), Shape: []int64{ff}},
			TensorSpec{Name: blk(i, "ffn_down.weight"), Shape: []int64{d, ff}},
			TensorSpec{Name: blk(i, "ffn_down.bias"), Shape: []int64{d}},
		)
	}
	return append(ts,
		TensorSpec{Name: "output_norm.weight", Shape: []int64{d}},
		TensorSpec{Name: "output_norm.bias", Shape: []int64{d}},
		TensorSpec{Name: "output.weight", Shape: []int64{v, d}, Optional: true},
	)
}

// gpt2HFLayer maps a block's HF tensor to its GGUF name and whether it is
// a Conv1D weight, stored [in, out], that must be transposed.
var gpt2HFLayer = map[string]struct {
	name      string
	transpose bool
}{
	"ln_1.weight":        {"attn_norm.weight", false},
	"ln_1.bias":          {"attn_norm.bias", false},
	"attn.c_attn.weight": {"attn_qkv.weight", true},
	"attn.c_attn.bias":   {"attn_qkv.bias", false},
	"attn.c_proj.weight": {"attn_output.weight", true},
	"attn.c_proj.bias":   {"attn_output.bias", false},
	"ln_2.weight":        {"ffn_norm.weight", false},
	"ln_2.bias":          {"ffn_norm.bias", false},
	"mlp.c_fc.weight":    {"ffn_up.weight", true},
	"mlp.c_fc.bias":      {"ffn_up.bias", false},
	"mlp.c_proj.weight":  {"ffn_down.weight", true},
	"mlp.c_proj.bias":    {"ffn_down.bias", false},
}

func transpose(t *ir.Tensor, _ ir.HParams) (*ir.Tensor, error) { return ir.Transpose(t) }

func (gpt2) MapHF(name string, p ir.HParams) (string, Fix, bool, error) {
	if name == "lm_head.weight" {
		return "output.weight", nil, true, nil
	}
	// The original OpenAI checkpoints use bare names (saved from GPT2Model),
	// transformers' GPT2LMHeadModel prefixes them with "transformer.".
	bare := strings.TrimPrefix(name, "transformer.")
	switch bare {
	case "wte.weight":
		return "token_embd.weight", nil, true, nil
	case "wpe.weight":
		return "position_embd.weight", nil, true, nil
	case "ln_f.weight":
		return "output_norm.weight", nil, true, nil
	case "ln_f.bias":
		return "output_norm.bias", nil, true, nil
	}
	if prefix, i, rest, ok := splitLayer(bare); ok && prefix == "h." {
		if rest == "attn.bias" || rest == "attn.masked_bias" {
			return "", nil, false, nil // causal-mask buffers of older checkpoints
		}
		if m, ok := gpt2HFLayer[rest]; ok {
			if m.transpose {
				return blk(i, m.name), transpose, true, nil
			}
			return blk(i, m.name), nil, true, nil
		}
	}
	return "", nil, false, fmt.Errorf("unexpected tensor %s for gpt2", name)
}

func (gpt2) HFName(canonical string) (string, bool) {
	layer := map[string]string{}
	for hf, m := range gpt2HFLayer {
		layer[hf] = m.name
	}
	return hfName(canonical, "transformer.h.", layer, map[string]string{
		"token_embd.weight": "transformer.wte.weight", "position_embd.weight": "transformer.wpe.weight",
		"output_norm.weight": "transformer.ln_f.weight", "output_norm.bias": "transformer.ln_f.bias", "output.weight": "lm_head.weight"})
}

// CompleteHF stores the tied classifier as its own output.weight, as
// llama.cpp's converter does: runtimes of its era require the tensor.
func (gpt2) CompleteHF(_ Config, _ ir.HParams, ts map[string]*ir.Tensor) error {
	if _, ok := ts["output.weight"]; !ok {
		if emb, ok := ts["token_embd.weight"]; ok {
			ts["output.weight"] = emb.WithName("output.weight")
		}
	}
	return nil
}

// ScaleGroups: the MLP's GELU sits between ffn_up and ffn_down, so only
// the two norms and v fold a scale.
func (gpt2) ScaleGroups(p ir.HParams) []ScaleGroup {
	d := int64(p.EmbeddingLength)
	var gs []ScaleGroup
	for i := range p.BlockCount {
		gs = append(gs,
			ScaleGroup{Vectors: []string{blk(i, "attn_norm.weight"), blk(i, "attn_norm.bias")}, Channels: d,
				Next: []string{blk(i, "attn_qkv.weight")}},
			ScaleGroup{Rows: blk(i, "attn_qkv.weight"), RowBias: blk(i, "attn_qkv.bias"), RowOffset: 2 * d, Channels: d,
				Next: []string{blk(i, "attn_output.weight")}},
			ScaleGroup{Vectors: []string{blk(i, "ffn_norm.weight"), blk(i, "ffn_norm.bias")}, Channels: d,
				Next: []string{blk(i, "ffn_up.weight")}},
		)
	}
	return gs
}

func (gpt2) RowFix(string, ir.HParams) Fix { return nil }

func (a gpt2) Build(p ir.HParams, weights map[string]*ir.Tensor) (*ir.Graph, error) {
	g := ir.NewGraph("gpt2")
	b := ir.NewBuilder(g)
	w := addWeights(g, a, p, weights)
	tokens, pos := graphInputs(g)
	eps := ir.Attrs{"eps": float64(p.NormEpsilon)}
	d, hd := int64(p.EmbeddingLength), p.HeadDim()
	norm := func(x *ir.Value, name string) *ir.Value { return w.layerNorm(b, eps, x, name) }
	linear := func(x *ir.Value, name string) *ir.Value { return w.linear(b, x, name) }
	slice := func(x *ir.Value, i int64) *ir.Value {
		return b.Op("Slice", ir.Attrs{"axis": int64(-1), "start": i * d, "end": (i + 1) * d}, x)
	}

	x := b.Op("Add", nil,
		b.Op("Embedding", nil, w.get("token_embd.weight"), tokens),
		b.Op("Embedding", nil, w.get("position_embd.weight"), pos))
	for i := range p.BlockCount {
		qkv := linear(norm(x, blk(i, "attn_norm")), blk(i, "attn_qkv"))
		q := heads(b, slice(qkv, 0), p.HeadCount, hd)
		k := heads(b, slice(qkv, 1), p.HeadCount, hd)
		v := heads(b, slice(qkv, 2), p.HeadCount, hd)
		x = b.Op("Add", nil, x, linear(attention(b, i, q, k, v, p), blk(i, "attn_output")))
		up := b.Op("GELU", nil, linear(norm(x, blk(i, "ffn_norm")), blk(i, "ffn_up")))
		x = b.Named(b.Op("Add", nil, x, linear(up, blk(i, "ffn_down"))), fmt.Sprintf("blk%d", i))
	}
	x = norm(x, "output_norm")
	head := "output.weight"
	if !w.has(head) {
		head = "token_embd.weight"
	}
	logits := b.Named(b.Op("Linear", nil, x, w.get(head)), "logits")
	if err := b.Err(); err != nil {
		return nil, err
	}
	g.Outputs = []*ir.Value{logits}
	return g, nil
}
