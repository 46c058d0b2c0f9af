package arch

import (
	"fmt"
	"maps"
	"math"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

func init() {
	// Mistral is llama with a sliding window; llama.cpp's converter writes
	// it as llama (and llama.cpp ignores the window).
	register(llama{llamaFamily{name: "llama", hfTypes: []string{"llama", "mistral"}, ggufVocab: true, ggufRopeDims: true, window: true, llama3Rope: true}})
}

// llamaFamily covers the decoders built as Llama is: RMSNorm, rotary
// embeddings, grouped-query attention, a SiLU-gated MLP, an optional
// untied classifier. Its members differ in the facts below.
type llamaFamily struct {
	name    string
	hfTypes []string
	// qkvBias: the q, k and v projections have biases (Qwen2).
	qkvBias bool
	// neox: RoPE rotates the two halves of each head, as Hugging Face's
	// rotate_half does, so q and k keep their rows on import (llama.cpp's
	// LLAMA_ROPE_TYPE_NEOX); otherwise adjacent pairs, and the rows are
	// un-permuted.
	neox bool
	// ggufVocab and ggufRopeDims: the converter writes <arch>.vocab_size
	// and <arch>.rope.dimension_count.
	ggufVocab, ggufRopeDims bool
	// window: config.json's sliding_window is honoured (Mistral); otherwise
	// one narrower than the context is refused.
	window bool
	// llama3Rope: rope_scaling of type llama3 is honoured (Llama 3.1+).
	llama3Rope bool
	// gemma: Gemma's differences — head_dim free of hidden/heads, a
	// tanh-GELU-gated MLP, embeddings scaled by √hidden, RMSNorm gains
	// (1 + w) stored as w + 1 (as the converter stores them), no lm_head,
	// RoPE base written only where it is not the default.
	gemma bool
	// gemma2 (with gemma): Gemma 2's further differences — norms after attention and
	// after the MLP, soft-capped scores and logits, query_pre_attn_scalar,
	// and the sliding window on even layers only.
	gemma2 bool
	// gemma3 (with gemma2): Gemma 3's — RMSNorm of each query and key
	// head before RoPE, a global layer every sixth with the others
	// windowed, local layers rotating with their own base, and linear RoPE
	// scaling on the global ones.
	gemma3 bool
	// fused: q, k and v are one matrix (attn_qkv) and so are the MLP's
	// gate and up (ffn_up, gate rows first), as Phi-3 stores them and
	// llama.cpp keeps them; the graph slices the products.
	fused bool
}

// llama is Llama 1/2 (and llama2.c checkpoints), the family member that
// ONNX exports are also read as.
type llama struct{ llamaFamily }

func (a llamaFamily) Name() string           { return a.name }
func (a llamaFamily) HFModelTypes() []string { return a.hfTypes }

func (a llamaFamily) ParamsFromHF(c Config) (ir.HParams, error) {
	var p ir.HParams
	if err := c.ints(
		key(&p.EmbeddingLength, "hidden_size"),
		key(&p.BlockCount, "num_hidden_layers"),
		key(&p.FeedForwardLength, "intermediate_size"),
		key(&p.HeadCount, "num_attention_heads"),
		key(&p.ContextLength, "max_position_embeddings"),
		key(&p.VocabSize, "vocab_size"),
	); err != nil {
		return p, err
	}
	var err error
	if p.HeadCountKV, err = c.IntOr(p.HeadCount, "num_key_value_heads"); err != nil {
		return p, err
	}
	if p.HeadCount == 0 {
		return p, fmt.Errorf("num_attention_heads is 0")
	}
	if hd, err := c.IntOr(0, "head_dim"); err != nil {
		return p, err
	} else if hd != 0 && hd != p.EmbeddingLength/p.HeadCount && !a.gemma {
		return p, fmt.Errorf("head_dim %d differs from hidden_size/num_attention_heads; lqc does not support that yet", hd)
	} else {
		p.KeyLength = hd // stated, so written as attention.key_length as the converter does
	}
	p.RopeDimensionCount = p.HeadDim()
	eps, err := c.FloatOr("rms_norm_eps", -1)
	if err != nil {
		return p, err
	}
	if eps < 0 {
		return p, fmt.Errorf("missing key rms_norm_eps")
	}
	p.NormEpsilon = float32(eps)
	theta, err := c.FloatOr("rope_theta", 10000)
	if err != nil {
		return p, err
	}
	p.RopeFreqBase = float32(theta)
	if a.gemma3 {
		if err := gemma3Params(c, &p); err != nil {
			return p, err
		}
	} else if _, err := a.ropeScaling(c); err != nil {
		return p, err
	}
	if a.gemma2 {
		for _, f := range []struct {
			key string
			dst *float32
		}{{"attn_logit_softcapping", &p.AttnSoftcap}, {"final_logit_softcapping", &p.FinalSoftcap}} {
			v, err := c.FloatOr(f.key, 0)
			if err != nil {
				return p, err
			}
			*f.dst = float32(v)
		}
		if p.QueryScale, err = c.IntOr(p.HeadDim(), "query_pre_attn_scalar"); err != nil {
			return p, err
		}
		if p.QueryScale == p.HeadDim() {
			p.QueryScale = 0 // the default; nothing to record
		}
	}
	if a.fused { // Phi-3 states the context it was trained at
		if p.RopeOriginalContext, err = c.IntOr(0, "original_max_position_embeddings"); err != nil {
			return p, err
		}
	}
	for _, k := range []string{"attention_bias", "mlp_bias"} {
		if b, err := c.BoolOr(k, false); err != nil {
			return p, err
		} else if b {
			return p, fmt.Errorf("%s true is not supported", k)
		}
	}
	// A sliding window narrower than the context changes what the model
	// computes. Mistral's is honoured. Qwen2 uses its window only with
	// use_sliding_window and then on some layers only (max_window_layers),
	// which lqc does not compute yet.
	if w, err := c.IntOr(0, "sliding_window"); err != nil {
		return p, err
	} else if w > 0 && w < p.ContextLength {
		switch use, err := c.BoolOr("use_sliding_window", true); {
		case err != nil:
			return p, err
		case a.window:
			p.SlidingWindow = w
		case use:
			return p, fmt.Errorf("sliding_window %d (narrower than the context of %d) with use_sliding_window is not supported yet", w, p.ContextLength)
		}
	}
	return p, nil
}

// gemma3Params reads Gemma 3's RoPE (local base, linear scaling on the
// global layers) and checks its layer pattern is the one GGUF implies.
func gemma3Params(c Config, p *ir.HParams) error {
	base, err := c.FloatOr("rope_local_base_freq", 10000)
	if err != nil {
		return err
	}
	p.RopeFreqBaseSWA = float32(base)
	if rs, ok := c["rope_scaling"]; ok && rs != nil {
		m, _ := rs.(map[string]any)
		kind, _ := m["rope_type"].(string)
		if kind == "" {
			kind, _ = m["type"].(string)
		}
		factor, err := Config(m).FloatOr("factor", 0)
		if err != nil || kind != "linear" || factor <= 0 {
			return fmt.Errorf("rope_scaling %v is not supported (Gemma 3 has linear scaling with a positive factor)", rs)
		}
		p.RopeFreqScale = float32(1 / factor)
	}
	// GGUF does not record the layer pattern: llama.cpp's gemma3 makes
	// every sixth layer global, so other patterns are refused.
	if pat, err := c.IntOr(6, "sliding_window_pattern"); err != nil {
		return err
	} else if pat != 6 {
		return fmt.Errorf("sliding_window_pattern %d is not supported (Gemma 3's, and GGUF's, is 6)", pat)
	}
	if lt, ok := c["layer_types"].([]any); ok {
		for i, t := range lt {
			want := "sliding_attention"
			if !gemma3Sliding(i) {
				want = "full_attention"
			}
			if t != want {
				return fmt.Errorf("layer_types[%d] is %v, not %s as every sixth layer global implies", i, t, want)
			}
		}
	}
	return nil
}

// gemma3Sliding reports whether Gemma 3's layer i attends through the
// sliding window: all but every sixth.
func gemma3Sliding(i int) bool { return (i+1)%6 != 0 }

func (a llamaFamily) llamaCppCaveats(p ir.HParams) []string {
	var cs []string
	if w := p.SlidingWindow; w > 0 && a.name == "llama" {
		cs = append(cs, fmt.Sprintf("the model attends through a sliding window of %d positions, recorded as llama.attention.sliding_window; "+
			"llama.cpp's llama ignores it and attends to the whole context, so beyond %d tokens it computes something else (lqc applies the window)", w, w))
	}
	if qs := p.QueryScale; qs > 0 {
		cs = append(cs, fmt.Sprintf("query_pre_attn_scalar %d differs from the head size %d: lqc scales queries by 1/√%d as transformers does "+
			"(recorded as %s.attention.query_pre_attn_scalar), llama.cpp by 1/√%d, so its logits will differ", qs, p.HeadDim(), qs, a.name, p.HeadDim()))
	}
	return cs
}

// llama3Scaling is config.json's rope_scaling of type llama3.
type llama3Scaling struct {
	factor, lowFreqFactor, highFreqFactor, originalContext float64
}

// ropeScaling reads rope_scaling: nil when absent, Llama 3's where the
// family has it, else an error naming the key.
func (a llamaFamily) ropeScaling(c Config) (*llama3Scaling, error) {
	rs, ok := c["rope_scaling"]
	if !ok || rs == nil {
		return nil, nil
	}
	m, ok := rs.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("rope_scaling %v is not an object", rs)
	}
	kind, _ := m["rope_type"].(string)
	if kind == "" {
		kind, _ = m["type"].(string)
	}
	if kind != "llama3" || !a.llama3Rope {
		return nil, fmt.Errorf("rope_scaling of type %q is not supported yet", kind)
	}
	s := &llama3Scaling{factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalContext: 8192}
	sc := Config(m)
	for _, f := range []struct {
		key string
		dst *float64
	}{{"factor", &s.factor}, {"low_freq_factor", &s.lowFreqFactor}, {"high_freq_factor", &s.highFreqFactor},
		{"original_max_position_embeddings", &s.originalContext}} {
		v, err := sc.FloatOr(f.key, *f.dst)
		if err != nil {
			return nil, fmt.Errorf("rope_scaling: %w", err)
		}
		*f.dst = v
	}
	if s.highFreqFactor == s.lowFreqFactor {
		return nil, fmt.Errorf("rope_scaling: high_freq_factor equals low_freq_factor")
	}
	return s, nil
}

// llama3RopeFactors are the frequency divisors llama.cpp's converter
// stores as rope_freqs.weight, computed as it computes them (PyTorch
// float32, where a scalar divided by a tensor is the tensor's reciprocal
// times the scalar), so the bytes are the converter's.
func llama3RopeFactors(s *llama3Scaling, base float64, dim int) []float32 {
	lowWavelen := s.originalContext / s.lowFreqFactor
	highWavelen := s.originalContext / s.highFreqFactor
	var out []float32
	for i := 0; i < dim; i += 2 {
		x := float32(i) / float32(dim)
		freq := 1 / float32(math.Pow(float64(float32(base)), float64(x)))
		wavelen := 1 / freq * float32(2*math.Pi)
		switch {
		case wavelen < float32(highWavelen):
			out = append(out, 1)
		case wavelen > float32(lowWavelen):
			out = append(out, float32(s.factor))
		default:
			smooth := (1/wavelen*float32(s.originalContext) - float32(s.lowFreqFactor)) / float32(s.highFreqFactor-s.lowFreqFactor)
			out = append(out, 1/((1-smooth)/float32(s.factor)+smooth))
		}
	}
	return out
}

func (a llamaFamily) ParamsFromGGUF(md ir.Metadata) (ir.HParams, error) {
	return paramsFromGGUF(a.name, md, true)
}

func (a llamaFamily) GGUFMetadata(p ir.HParams) ir.Metadata {
	n := a.name
	var md ir.Metadata
	if a.ggufVocab {
		md = append(md, ir.KV{Key: n + ".vocab_size", Value: uint32(p.VocabSize)})
	}
	md = append(md,
		ir.KV{Key: n + ".context_length", Value: uint32(p.ContextLength)},
		ir.KV{Key: n + ".embedding_length", Value: uint32(p.EmbeddingLength)},
		ir.KV{Key: n + ".block_count", Value: uint32(p.BlockCount)},
		ir.KV{Key: n + ".feed_forward_length", Value: uint32(p.FeedForwardLength)})
	if a.ggufRopeDims {
		md = append(md, ir.KV{Key: n + ".rope.dimension_count", Value: uint32(p.RopeDimensionCount)})
	}
	if p.AttnSoftcap > 0 {
		md = append(md, ir.KV{Key: n + ".attn_logit_softcapping", Value: p.AttnSoftcap})
	}
	if p.FinalSoftcap > 0 {
		md = append(md, ir.KV{Key: n + ".final_logit_softcapping", Value: p.FinalSoftcap})
	}
	if p.QueryScale > 0 {
		// lqc's own key: llama.cpp's gemma2 scales queries by the head size.
		md = append(md, ir.KV{Key: n + ".attention.query_pre_attn_scalar", Value: uint32(p.QueryScale)})
	}
	if a.gemma3 {
		md = append(md, ir.KV{Key: n + ".rope.freq_base_swa", Value: p.RopeFreqBaseSWA})
	}
	if p.RopeFreqScale > 0 {
		md = append(md, ir.KV{Key: n + ".rope.scaling.type", Value: "linear"},
			ir.KV{Key: n + ".rope.scaling.factor", Value: 1 / p.RopeFreqScale})
	}
	if p.RopeOriginalContext > 0 {
		md = append(md, ir.KV{Key: n + ".rope.scaling.original_context_length", Value: uint32(p.RopeOriginalContext)})
	}
	if !a.gemma || p.RopeFreqBase != 10000 {
		md = append(md, ir.KV{Key: n + ".rope.freq_base", Value: p.RopeFreqBase})
	}
	if p.KeyLength > 0 {
		md = append(md, ir.KV{Key: n + ".attention.key_length", Value: uint32(p.KeyLength)},
			ir.KV{Key: n + ".attention.value_length", Value: uint32(p.KeyLength)})
	}
	if p.SlidingWindow > 0 {
		// llama.cpp's key for gemma2's window; its llama ignores it.
		md = append(md, ir.KV{Key: n + ".attention.sliding_window", Value: uint32(p.SlidingWindow)})
	}
	return append(md,
		ir.KV{Key: n + ".attention.head_count", Value: uint32(p.HeadCount)},
		ir.KV{Key: n + ".attention.head_count_kv", Value: uint32(p.HeadCountKV)},
		ir.KV{Key: n + ".attention.layer_norm_rms_epsilon", Value: p.NormEpsilon})
}

func (a llamaFamily) Tensors(p ir.HParams) []TensorSpec {
	d, ff, v := int64(p.EmbeddingLength), int64(p.FeedForwardLength), int64(p.VocabSize)
	kv, qd := int64(p.HeadCountKV*p.HeadDim()), int64(p.HeadCount*p.HeadDim())
	ts := []TensorSpec{{Name: "token_embd.weight", Shape: []int64{v, d}}}
	for i := range p.BlockCount {
		ts = append(ts, TensorSpec{Name: blk(i, "attn_norm.weight"), Shape: []int64{d}})
		if a.fused {
			ts = append(ts,
				TensorSpec{Name: blk(i, "attn_qkv.weight"), Shape: []int64{qd + 2*kv, d}},
				TensorSpec{Name: blk(i, "attn_output.weight"), Shape: []int64{d, qd}},
				TensorSpec{Name: blk(i, "ffn_norm.weight"), Shape: []int64{d}},
				TensorSpec{Name: blk(i, "ffn_down.weight"), Shape: []int64{d, ff}},
				TensorSpec{Name: blk(i, "ffn_up.weight"), Shape: []int64{2 * ff, d}})
			continue
		}
		ts = append(ts,
			TensorSpec{Name: blk(i, "attn_q.weight"), Shape: []int64{qd, d}},
			TensorSpec{Name: blk(i, "attn_k.weight"), Shape: []int64{kv, d}},
			TensorSpec{Name: blk(i, "attn_v.weight"), Shape: []int64{kv, d}},
		)
		if a.qkvBias {
			ts = append(ts,
				TensorSpec{Name: blk(i, "attn_q.bias"), Shape: []int64{qd}},
				TensorSpec{Name: blk(i, "attn_k.bias"), Shape: []int64{kv}},
				TensorSpec{Name: blk(i, "attn_v.bias"), Shape: []int64{kv}})
		}
		if a.gemma3 {
			hd := int64(p.HeadDim())
			ts = append(ts,
				TensorSpec{Name: blk(i, "attn_q_norm.weight"), Shape: []int64{hd}},
				TensorSpec{Name: blk(i, "attn_k_norm.weight"), Shape: []int64{hd}})
		}
		if a.gemma2 {
			ts = append(ts,
				TensorSpec{Name: blk(i, "post_attention_norm.weight"), Shape: []int64{d}},
				TensorSpec{Name: blk(i, "post_ffw_norm.weight"), Shape: []int64{d}})
		}
		ts = append(ts,
			TensorSpec{Name: blk(i, "attn_output.weight"), Shape: []int64{d, qd}},
			TensorSpec{Name: blk(i, "ffn_norm.weight"), Shape: []int64{d}},
			TensorSpec{Name: blk(i, "ffn_gate.weight"), Shape: []int64{ff, d}},
			TensorSpec{Name: blk(i, "ffn_down.weight"), Shape: []int64{d, ff}},
			TensorSpec{Name: blk(i, "ffn_up.weight"), Shape: []int64{ff, d}},
		)
	}
	return append(ts,
		TensorSpec{Name: "output_norm.weight", Shape: []int64{d}},
		TensorSpec{Name: "output.weight", Shape: []int64{v, d}, Optional: true},
		// Llama 3's frequency factors, derived from config.json's
		// rope_scaling on import.
		TensorSpec{Name: "rope_freqs.weight", Shape: []int64{int64(p.RopeDimensionCount / 2)}, Optional: true},
	)
}

var llamaHFLayer = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"self_attn.q_proj.weight":         "attn_q.weight",
	"self_attn.k_proj.weight":         "attn_k.weight",
	"self_attn.v_proj.weight":         "attn_v.weight",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"mlp.gate_proj.weight":            "ffn_gate.weight",
	"mlp.up_proj.weight":              "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
}

var fusedHFLayer = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"self_attn.qkv_proj.weight":       "attn_qkv.weight",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"mlp.gate_up_proj.weight":         "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
}

// gemma2HFLayer renames the norms: Gemma 2 has four per layer.
var gemma2HFLayer = map[string]string{
	"post_attention_layernorm.weight":   "post_attention_norm.weight",
	"pre_feedforward_layernorm.weight":  "ffn_norm.weight",
	"post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}

var qkvBiasHFLayer = map[string]string{
	"self_attn.q_proj.bias": "attn_q.bias",
	"self_attn.k_proj.bias": "attn_k.bias",
	"self_attn.v_proj.bias": "attn_v.bias",
}

// hfLayer is the family member's per-layer HF → GGUF name table.
func (a llamaFamily) hfLayer() map[string]string {
	if a.fused {
		return fusedHFLayer
	}
	if a.gemma2 {
		m := maps.Clone(llamaHFLayer)
		maps.Copy(m, gemma2HFLayer)
		if a.gemma3 {
			m["self_attn.q_norm.weight"], m["self_attn.k_norm.weight"] = "attn_q_norm.weight", "attn_k_norm.weight"
		}
		return m
	}
	if !a.qkvBias {
		return llamaHFLayer
	}
	m := maps.Clone(llamaHFLayer)
	maps.Copy(m, qkvBiasHFLayer)
	return m
}

func (a llamaFamily) MapHF(name string, p ir.HParams) (string, Fix, bool, error) {
	switch name {
	case "model.embed_tokens.weight":
		return "token_embd.weight", nil, true, nil
	case "model.norm.weight":
		return "output_norm.weight", a.normFix(), true, nil
	case "lm_head.weight":
		if a.gemma {
			return "", nil, false, nil // the tied embedding, which the converter leaves out
		}
		return "output.weight", nil, true, nil
	}
	prefix, i, rest, ok := splitLayer(name)
	if ok && prefix == "model.layers." {
		if rest == "self_attn.rotary_emb.inv_freq" {
			return "", nil, false, nil // a cached RoPE table, recomputed at run time
		}
		if g, ok := a.hfLayer()[rest]; ok {
			if strings.HasSuffix(g, "norm.weight") {
				return blk(i, g), a.normFix(), true, nil
			}
			return blk(i, g), a.RowFix(blk(i, g), p), true, nil
		}
	}
	return "", nil, false, fmt.Errorf("unexpected tensor %s for %s", name, a.name)
}

// normFix is the import fix of RMSNorm gains: Gemma's (1 + w) becomes the
// stored w + 1, added in float32.
func (a llamaFamily) normFix() Fix {
	if !a.gemma {
		return nil
	}
	return func(t *ir.Tensor, p ir.HParams) (*ir.Tensor, error) {
		return ir.Computed(t.Name, quant.F32, t.Shape, func(dst []float32, first, n int64) error {
			if err := t.ReadRowsF32(dst, first, n); err != nil {
				return err
			}
			for i := range dst {
				dst[i]++
			}
			return nil
		}), nil
	}
}

// unpermuteQK undoes the row permutation Hugging Face's conversion applies
// to q_proj/k_proj: HF's rotate_half RoPE pairs dimension i with i+d/2 of
// each head, GGUF llama pairs 2i with 2i+1. Row h·d + 2i + j of the GGUF
// tensor is row h·d + j·d/2 + i of the HF one.
func unpermuteQK(nHead int) Fix {
	return func(t *ir.Tensor, p ir.HParams) (*ir.Tensor, error) {
		rows := t.Rows()
		if nHead <= 0 || rows%int64(nHead) != 0 || (rows/int64(nHead))%2 != 0 {
			return nil, fmt.Errorf("tensor %s: %d rows cannot be split into %d heads of even size", t.Name, rows, nHead)
		}
		hd := rows / int64(nHead)
		return ir.PermuteRows(t, func(r int64) int64 {
			h, w := r/hd, r%hd
			return h*hd + (w%2)*(hd/2) + w/2
		}), nil
	}
}

func (a llamaFamily) HFName(canonical string) (string, bool) {
	return hfName(canonical, "model.layers.", a.hfLayer(), map[string]string{
		"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"})
}

func (a llamaFamily) ScaleGroups(p ir.HParams) []ScaleGroup {
	d, ff, hd := int64(p.EmbeddingLength), int64(p.FeedForwardLength), int64(p.HeadDim())
	group := int64(p.HeadCount / p.HeadCountKV) // query heads per kv head
	var gs []ScaleGroup
	kvNext := func(c int64) int64 { return c/hd/group*hd + c%hd }
	if a.fused {
		// The v rows and the up rows are the tails of the fused matrices.
		qd, kv := int64(p.HeadCount)*hd, int64(p.HeadCountKV)*hd
		for i := range p.BlockCount {
			gs = append(gs,
				ScaleGroup{Vectors: []string{blk(i, "attn_norm.weight")}, Channels: d, Next: []string{blk(i, "attn_qkv.weight")}},
				ScaleGroup{Rows: blk(i, "attn_qkv.weight"), RowOffset: qd + kv, Channels: kv,
					Next: []string{blk(i, "attn_output.weight")}, NextCol: kvNext},
				ScaleGroup{Vectors: []string{blk(i, "ffn_norm.weight")}, Channels: d, Next: []string{blk(i, "ffn_up.weight")}},
				ScaleGroup{Rows: blk(i, "ffn_up.weight"), RowOffset: ff, Channels: ff, Next: []string{blk(i, "ffn_down.weight")}})
		}
		return gs
	}
	for i := range p.BlockCount {
		gs = append(gs,
			ScaleGroup{Vectors: []string{blk(i, "attn_norm.weight")}, Channels: d,
				Next: []string{blk(i, "attn_q.weight"), blk(i, "attn_k.weight"), blk(i, "attn_v.weight")}},
			ScaleGroup{Rows: blk(i, "attn_v.weight"), RowBias: a.bias(i, "attn_v.bias"), Channels: int64(p.HeadCountKV) * hd,
				Next:    []string{blk(i, "attn_output.weight")},
				NextCol: kvNext},
			ScaleGroup{Vectors: []string{blk(i, "ffn_norm.weight")}, Channels: d,
				Next: []string{blk(i, "ffn_gate.weight"), blk(i, "ffn_up.weight")}},
			ScaleGroup{Rows: blk(i, "ffn_up.weight"), Channels: ff, Next: []string{blk(i, "ffn_down.weight")}},
		)
	}
	return gs
}

// bias is the name of a q/k/v bias where the family has them, else "".
func (a llamaFamily) bias(layer int, name string) string {
	if !a.qkvBias {
		return ""
	}
	return blk(layer, name)
}

func (a llamaFamily) RowFix(canonical string, p ir.HParams) Fix {
	switch {
	case a.neox:
		return nil
	case strings.HasSuffix(canonical, ".attn_q.weight"):
		return unpermuteQK(p.HeadCount)
	case strings.HasSuffix(canonical, ".attn_k.weight"):
		return unpermuteQK(p.HeadCountKV)
	}
	return nil
}

func (llama) ExportModules() (q, k, norm string) {
	return "self_attn.q_proj", "self_attn.k_proj", "input_layernorm"
}

// ConfigFromGraph: an export fixes every llama hyper-parameter but the
// context length; an export that computes no RoPE table keeps HF's
// default base.
func (llama) ConfigFromGraph(f GraphFacts, contextLength int) (Config, error) {
	emb := f.Tensors[f.Embedding]
	gate := f.Tensors["model.layers.0.mlp.gate_proj.weight"]
	switch {
	case emb == nil || len(emb.Shape) != 2:
		return nil, fmt.Errorf("no token embedding found")
	case gate == nil:
		return nil, fmt.Errorf("no model.layers.0.mlp.gate_proj weight found")
	case f.Heads == 0 || f.KVHeads == 0:
		return nil, fmt.Errorf("the number of attention heads is not in the graph: give a config.json")
	case f.NormEps == 0:
		return nil, fmt.Errorf("the norm epsilon is not in the graph: give a config.json")
	}
	theta := f.RopeTheta
	if theta == 0 {
		theta = 10000
	}
	return Config{
		"model_type":              "llama",
		"hidden_size":             float64(emb.Shape[1]),
		"vocab_size":              float64(emb.Shape[0]),
		"num_hidden_layers":       float64(f.Layers),
		"intermediate_size":       float64(gate.Shape[0]),
		"num_attention_heads":     float64(f.Heads),
		"num_key_value_heads":     float64(f.KVHeads),
		"rms_norm_eps":            f.NormEps,
		"rope_theta":              theta,
		"tie_word_embeddings":     f.Tied,
		"max_position_embeddings": float64(contextLength),
	}, nil
}

func (a llamaFamily) CompleteHF(cfg Config, p ir.HParams, ts map[string]*ir.Tensor) error {
	var s *llama3Scaling
	if !a.gemma3 { // Gemma 3's scaling is linear, read into p
		var err error
		if s, err = a.ropeScaling(cfg); err != nil {
			return err
		}
	}
	if s != nil {
		f, err := ir.FromF32("rope_freqs.weight", []int64{int64(p.RopeDimensionCount / 2)},
			llama3RopeFactors(s, float64(p.RopeFreqBase), p.RopeDimensionCount))
		if err != nil {
			return err
		}
		ts["rope_freqs.weight"] = f
	}
	if a.gemma {
		return nil // always tied (GemmaConfig's default)
	}
	return requireUntiedConsistent(cfg, ts, "output.weight", "lm_head.weight")
}

func (a llamaFamily) Build(p ir.HParams, weights map[string]*ir.Tensor) (*ir.Graph, error) {
	g := ir.NewGraph(a.name)
	b := ir.NewBuilder(g)
	w := addWeights(g, a, p, weights)
	tokens, pos := graphInputs(g)
	eps := ir.Attrs{"eps": float64(p.NormEpsilon)}
	mode := "normal"
	if a.neox {
		mode = "neox"
	}
	rope := ir.Attrs{"n_dims": int64(p.RopeDimensionCount), "freq_base": float64(p.RopeFreqBase), "mode": mode}
	// ropeIn is RoPE's inputs: x, the positions, and Llama 3's frequency
	// factors where the model has them.
	ropeIn := func(x *ir.Value) []*ir.Value {
		if w.has("rope_freqs.weight") {
			return []*ir.Value{x, pos, w.get("rope_freqs.weight")}
		}
		return []*ir.Value{x, pos}
	}
	// proj is a q/k/v projection, with its bias where the family has one.
	proj := func(i int, h *ir.Value, name string) *ir.Value {
		in := []*ir.Value{h, w.get(blk(i, name+".weight"))}
		if a.qkvBias {
			in = append(in, w.get(blk(i, name+".bias")))
		}
		return b.Op("Linear", nil, in...)
	}
	hd := p.HeadDim()

	x := b.Op("Embedding", nil, w.get("token_embd.weight"), tokens)
	if a.gemma {
		x = b.Op("Scale", ir.Attrs{"scale": float64(float32(math.Sqrt(float64(p.EmbeddingLength))))}, x)
	}
	act := "SiLU"
	if a.gemma {
		act = "GELU" // the tanh approximation, gelu_pytorch_tanh
	}
	for i := range p.BlockCount {
		h := b.Op("RMSNorm", eps, x, w.get(blk(i, "attn_norm.weight")))
		var q, k, v *ir.Value
		if a.fused {
			qkv := b.Op("Linear", nil, h, w.get(blk(i, "attn_qkv.weight")))
			qd, kv := p.HeadCount*hd, p.HeadCountKV*hd
			q = heads(b, slice(b, qkv, 0, qd), p.HeadCount, hd)
			k = heads(b, slice(b, qkv, qd, qd+kv), p.HeadCountKV, hd)
			v = heads(b, slice(b, qkv, qd+kv, qd+2*kv), p.HeadCountKV, hd)
		} else {
			q = heads(b, proj(i, h, "attn_q"), p.HeadCount, hd)
			k = heads(b, proj(i, h, "attn_k"), p.HeadCountKV, hd)
			v = heads(b, proj(i, h, "attn_v"), p.HeadCountKV, hd)
		}
		sliding := true
		switch {
		case a.gemma3:
			sliding = gemma3Sliding(i)
		case a.gemma2:
			sliding = i%2 == 0
		}
		ra := rope
		if a.gemma3 {
			q = b.Op("RMSNorm", eps, q, w.get(blk(i, "attn_q_norm.weight")))
			k = b.Op("RMSNorm", eps, k, w.get(blk(i, "attn_k_norm.weight")))
			ra = maps.Clone(rope)
			if sliding {
				ra["freq_base"] = float64(p.RopeFreqBaseSWA)
			} else if p.RopeFreqScale > 0 {
				ra["freq_scale"] = float64(p.RopeFreqScale)
			}
		}
		q = b.Op("RoPE", ra, ropeIn(q)...)
		k = b.Op("RoPE", ra, ropeIn(k)...)
		o := attentionWith(b, i, q, k, v, p, sliding)
		o = b.Op("Linear", nil, o, w.get(blk(i, "attn_output.weight")))
		if a.gemma2 {
			o = b.Op("RMSNorm", eps, o, w.get(blk(i, "post_attention_norm.weight")))
		}
		x = b.Op("Add", nil, x, o)
		h = b.Op("RMSNorm", eps, x, w.get(blk(i, "ffn_norm.weight")))
		var gate, up *ir.Value
		if a.fused {
			gu := b.Op("Linear", nil, h, w.get(blk(i, "ffn_up.weight")))
			ff := p.FeedForwardLength
			gate, up = b.Op(act, nil, slice(b, gu, 0, ff)), slice(b, gu, ff, 2*ff)
		} else {
			gate = b.Op(act, nil, b.Op("Linear", nil, h, w.get(blk(i, "ffn_gate.weight"))))
			up = b.Op("Linear", nil, h, w.get(blk(i, "ffn_up.weight")))
		}
		down := b.Op("Linear", nil, b.Op("Mul", nil, gate, up), w.get(blk(i, "ffn_down.weight")))
		if a.gemma2 {
			down = b.Op("RMSNorm", eps, down, w.get(blk(i, "post_ffw_norm.weight")))
		}
		x = b.Named(b.Op("Add", nil, x, down), fmt.Sprintf("blk%d", i))
	}
	x = b.Op("RMSNorm", eps, x, w.get("output_norm.weight"))
	head := "output.weight"
	if !w.has(head) {
		head = "token_embd.weight" // tied classifier
	}
	logits := b.Op("Linear", nil, x, w.get(head))
	if p.FinalSoftcap > 0 {
		logits = b.Op("Softcap", ir.Attrs{"cap": float64(p.FinalSoftcap)}, logits)
	}
	logits = b.Named(logits, "logits")
	if err := b.Err(); err != nil {
		return nil, err
	}
	g.Outputs = []*ir.Value{logits}
	return g, nil
}
