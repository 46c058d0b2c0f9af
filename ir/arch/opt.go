package arch

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
)

func init() { register(opt{}) }

// opt covers Meta's OPT: learned positions (stored from transformers'
// table without its offset of 2 rows, so position p reads row p), LayerNorm
// with biases everywhere, ReLU, pre- or post-norm blocks, and an embedding
// narrower than the hidden size with projections in and out (opt-350m).
// llama.cpp has no OPT: lqc writes its own GGUF architecture "opt", with
// metadata named in llama.cpp's style:
//
//	opt.context_length, opt.embedding_length, opt.block_count,
//	opt.feed_forward_length, opt.attention.head_count,
//	opt.attention.layer_norm_epsilon, opt.embedding_projection_length
//	(when the embedding is narrower), opt.layer_norm_before (bool)
//
// and the tensors token_embd, position_embd, blk.N.{attn_norm, attn_q,
// attn_k, attn_v, attn_output, ffn_norm, ffn_up, ffn_down}.{weight,bias},
// output_norm (pre-norm models that keep it), proj_in/proj_out.
type opt struct{}

// optPositionOffset is the rows transformers' OPTLearnedPositionalEmbedding
// keeps before position 0.
const optPositionOffset = 2

func (opt) Name() string           { return "opt" }
func (opt) HFModelTypes() []string { return []string{"opt"} }

func (opt) ParamsFromHF(c Config) (ir.HParams, error) {
	var p ir.HParams
	if err := c.ints(
		key(&p.EmbeddingLength, "hidden_size"),
		key(&p.BlockCount, "num_hidden_layers"),
		key(&p.FeedForwardLength, "ffn_dim"),
		key(&p.HeadCount, "num_attention_heads"),
		key(&p.ContextLength, "max_position_embeddings"),
		key(&p.VocabSize, "vocab_size"),
	); err != nil {
		return p, err
	}
	var err error
	p.HeadCountKV = p.HeadCount
	p.NormEpsilon = 1e-5 // OPT's LayerNorms use PyTorch's default
	if proj, err := c.IntOr(p.EmbeddingLength, "word_embed_proj_dim"); err != nil {
		return p, err
	} else if proj != p.EmbeddingLength {
		p.EmbeddingProjLength = proj
	}
	before, err := c.BoolOr("do_layer_norm_before", true)
	if err != nil {
		return p, err
	}
	p.PostNorm = !before
	if act, _ := c["activation_function"].(string); act != "relu" {
		return p, fmt.Errorf("activation_function %q is not supported (OPT's is relu)", act)
	}
	for _, k := range []string{"enable_bias", "layer_norm_elementwise_affine"} {
		if b, err := c.BoolOr(k, true); err != nil {
			return p, err
		} else if !b {
			return p, fmt.Errorf("%s false is not supported", k)
		}
	}
	return p, nil
}

func (opt) ParamsFromGGUF(md ir.Metadata) (ir.HParams, error) {
	p, err := paramsFromGGUF("opt", md, false)
	if err != nil {
		return p, err
	}
	if _, ok := md.Get("opt.embedding_projection_length"); ok {
		u, err := md.Uint("opt.embedding_projection_length")
		if err != nil {
			return p, err
		}
		p.EmbeddingProjLength = int(u)
	}
	if before, ok := md.Bool("opt.layer_norm_before"); ok {
		p.PostNorm = !before
	}
	return p, nil
}

func (opt) GGUFMetadata(p ir.HParams) ir.Metadata {
	md := ir.Metadata{
		{Key: "opt.context_length", Value: uint32(p.ContextLength)},
		{Key: "opt.embedding_length", Value: uint32(p.EmbeddingLength)},
		{Key: "opt.block_count", Value: uint32(p.BlockCount)},
		{Key: "opt.feed_forward_length", Value: uint32(p.FeedForwardLength)},
		{Key: "opt.attention.head_count", Value: uint32(p.HeadCount)},
		{Key: "opt.attention.layer_norm_epsilon", Value: p.NormEpsilon},
		{Key: "opt.layer_norm_before", Value: !p.PostNorm},
	}
	if p.EmbeddingProjLength > 0 {
		md = append(md, ir.KV{Key: "opt.embedding_projection_length", Value: uint32(p.EmbeddingProjLength)})
	}
	return md
}

// embedWidth is the token embedding's width.
func embedWidth(p ir.HParams) int64 {
	if p.EmbeddingProjLength > 0 {
		return int64(p.EmbeddingProjLength)
	}
	return int64(p.EmbeddingLength)
}

func (opt) Tensors(p ir.HParams) []TensorSpec {
	d, ff, v, ctx, e := int64(p.EmbeddingLength), int64(p.FeedForwardLength), int64(p.VocabSize), int64(p.ContextLength), embedWidth(p)
	ts := []TensorSpec{
		{Name: "token_embd.weight", Shape: []int64{v, e}},
		{Name: "position_embd.weight", Shape: []int64{ctx, d}},
	}
	if p.EmbeddingProjLength > 0 {
		ts = append(ts, TensorSpec{Name: "proj_in.weight", Shape: []int64{d, e}}, TensorSpec{Name: "proj_out.weight", Shape: []int64{e, d}})
	}
	for i := range p.BlockCount {
		for _, t := range []struct {
			name string
			rows int64
			cols int64
		}{{"attn_norm", d, 0}, {"attn_q", d, d}, {"attn_k", d, d}, {"attn_v", d, d}, {"attn_output", d, d},
			{"ffn_norm", d, 0}, {"ffn_up", ff, d}, {"ffn_down", d, ff}} {
			if t.cols == 0 {
				ts = append(ts, TensorSpec{Name: blk(i, t.name+".weight"), Shape: []int64{t.rows}})
			} else {
				ts = append(ts, TensorSpec{Name: blk(i, t.name+".weight"), Shape: []int64{t.rows, t.cols}})
			}
			ts = append(ts, TensorSpec{Name: blk(i, t.name+".bias"), Shape: []int64{t.rows}})
		}
	}
	// Pre-norm models end with a LayerNorm unless the checkpoint dropped
	// it (_remove_final_layer_norm): optional.
	return append(ts,
		TensorSpec{Name: "output_norm.weight", Shape: []int64{d}, Optional: true},
		TensorSpec{Name: "output_norm.bias", Shape: []int64{d}, Optional: true},
		TensorSpec{Name: "output.weight", Shape: []int64{v, e}, Optional: true},
	)
}

var optHFLayer = map[string]string{
	"self_attn_layer_norm.weight": "attn_norm.weight",
	"self_attn_layer_norm.bias":   "attn_norm.bias",
	"self_attn.q_proj.weight":     "attn_q.weight",
	"self_attn.q_proj.bias":       "attn_q.bias",
	"self_attn.k_proj.weight":     "attn_k.weight",
	"self_attn.k_proj.bias":       "attn_k.bias",
	"self_attn.v_proj.weight":     "attn_v.weight",
	"self_attn.v_proj.bias":       "attn_v.bias",
	"self_attn.out_proj.weight":   "attn_output.weight",
	"self_attn.out_proj.bias":     "attn_output.bias",
	"final_layer_norm.weight":     "ffn_norm.weight",
	"final_layer_norm.bias":       "ffn_norm.bias",
	"fc1.weight":                  "ffn_up.weight",
	"fc1.bias":                    "ffn_up.bias",
	"fc2.weight":                  "ffn_down.weight",
	"fc2.bias":                    "ffn_down.bias",
}

var optHFWhole = map[string]string{
	"token_embd.weight": "model.decoder.embed_tokens.weight", "position_embd.weight": "model.decoder.embed_positions.weight",
	"output_norm.weight": "model.decoder.final_layer_norm.weight", "output_norm.bias": "model.decoder.final_layer_norm.bias",
	"proj_in.weight": "model.decoder.project_in.weight", "proj_out.weight": "model.decoder.project_out.weight",
	"output.weight": "lm_head.weight",
}

// dropPositionOffset keeps the rows of the position table from position 0.
func dropPositionOffset(t *ir.Tensor, p ir.HParams) (*ir.Tensor, error) {
	if t.Rows() != int64(p.ContextLength+optPositionOffset) {
		return nil, fmt.Errorf("tensor %s has %d rows, want max_position_embeddings + %d = %d", t.Name, t.Rows(), optPositionOffset, p.ContextLength+optPositionOffset)
	}
	shape := []int64{int64(p.ContextLength), t.RowLen()}
	return ir.Computed(t.Name, t.Type, shape, func(dst []float32, first, n int64) error {
		return t.ReadRowsF32(dst, first+optPositionOffset, n)
	}), nil
}

func (opt) MapHF(name string, p ir.HParams) (string, Fix, bool, error) {
	for canon, hf := range optHFWhole {
		if name == hf {
			if canon == "position_embd.weight" {
				return canon, dropPositionOffset, true, nil
			}
			return canon, nil, true, nil
		}
	}
	if prefix, i, rest, ok := splitLayer(name); ok && prefix == "model.decoder.layers." {
		if g, ok := optHFLayer[rest]; ok {
			return blk(i, g), nil, true, nil
		}
	}
	return "", nil, false, fmt.Errorf("unexpected tensor %s for opt", name)
}

func (opt) HFName(canonical string) (string, bool) {
	return hfName(canonical, "model.decoder.layers.", optHFLayer, optHFWhole)
}

func (opt) CompleteHF(cfg Config, p ir.HParams, ts map[string]*ir.Tensor) error {
	if _, ok := ts["output_norm.weight"]; !ok && !p.PostNorm {
		if remove, err := cfg.BoolOr("_remove_final_layer_norm", false); err != nil {
			return err
		} else if !remove {
			return fmt.Errorf("the checkpoint has no model.decoder.final_layer_norm, which do_layer_norm_before needs")
		}
	}
	// transformers' default ties the classifier (OPT's configs omit the key).
	if tied, err := cfg.BoolOr("tie_word_embeddings", true); err != nil {
		return err
	} else if _, ok := ts["output.weight"]; !ok && !tied {
		return fmt.Errorf("config.json sets tie_word_embeddings false, but the checkpoint has no lm_head.weight")
	}
	return nil
}

// ScaleGroups: v folds into the output projection in every OPT; the norms
// fold into what follows them only in pre-norm blocks (a post-norm block's
// norm also feeds the residual). ReLU stops a fold into ffn_down.
func (opt) ScaleGroups(p ir.HParams) []ScaleGroup {
	d := int64(p.EmbeddingLength)
	var gs []ScaleGroup
	for i := range p.BlockCount {
		gs = append(gs, ScaleGroup{Rows: blk(i, "attn_v.weight"), RowBias: blk(i, "attn_v.bias"), Channels: d,
			Next: []string{blk(i, "attn_output.weight")}})
		if !p.PostNorm {
			gs = append(gs,
				ScaleGroup{Vectors: []string{blk(i, "attn_norm.weight"), blk(i, "attn_norm.bias")}, Channels: d,
					Next: []string{blk(i, "attn_q.weight"), blk(i, "attn_k.weight"), blk(i, "attn_v.weight")}},
				ScaleGroup{Vectors: []string{blk(i, "ffn_norm.weight"), blk(i, "ffn_norm.bias")}, Channels: d,
					Next: []string{blk(i, "ffn_up.weight")}})
		}
	}
	return gs
}

func (opt) RowFix(string, ir.HParams) Fix { return nil }

func (opt) llamaCppCaveats(ir.HParams) []string {
	return []string{"llama.cpp and ollama have no OPT architecture and will not load this file; lqc runs it"}
}

func (a opt) Build(p ir.HParams, weights map[string]*ir.Tensor) (*ir.Graph, error) {
	g := ir.NewGraph("opt")
	b := ir.NewBuilder(g)
	w := addWeights(g, a, p, weights)
	tokens, pos := graphInputs(g)
	eps := ir.Attrs{"eps": float64(p.NormEpsilon)}
	hd := p.HeadDim()
	norm := func(x *ir.Value, name string) *ir.Value { return w.layerNorm(b, eps, x, name) }
	linear := func(x *ir.Value, name string) *ir.Value { return w.linear(b, x, name) }
	x := b.Op("Embedding", nil, w.get("token_embd.weight"), tokens)
	if p.EmbeddingProjLength > 0 {
		x = b.Op("Linear", nil, x, w.get("proj_in.weight"))
	}
	x = b.Op("Add", nil, x, b.Op("Embedding", nil, w.get("position_embd.weight"), pos))
	for i := range p.BlockCount {
		h := x
		if !p.PostNorm {
			h = norm(x, blk(i, "attn_norm"))
		}
		q := heads(b, linear(h, blk(i, "attn_q")), p.HeadCount, hd)
		k := heads(b, linear(h, blk(i, "attn_k")), p.HeadCount, hd)
		v := heads(b, linear(h, blk(i, "attn_v")), p.HeadCount, hd)
		x = b.Op("Add", nil, x, linear(attention(b, i, q, k, v, p), blk(i, "attn_output")))
		if p.PostNorm {
			x = norm(x, blk(i, "attn_norm"))
		}
		h = x
		if !p.PostNorm {
			h = norm(x, blk(i, "ffn_norm"))
		}
		up := b.Op("Relu", nil, linear(h, blk(i, "ffn_up")))
		x = b.Op("Add", nil, x, linear(up, blk(i, "ffn_down")))
		if p.PostNorm {
			x = norm(x, blk(i, "ffn_norm"))
		}
		x = b.Named(x, fmt.Sprintf("blk%d", i))
	}
	if w.has("output_norm.weight") {
		x = norm(x, "output_norm")
	}
	if p.EmbeddingProjLength > 0 {
		x = b.Op("Linear", nil, x, w.get("proj_out.weight"))
	}
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
