package arch

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
)

// paramsFromGGUF reads the "<arch>.*" hyper-parameter keys llama.cpp's
// converter writes. rms selects the RMSNorm epsilon key over LayerNorm's.
func paramsFromGGUF(a string, md ir.Metadata, rms bool) (ir.HParams, error) {
	var p ir.HParams
	var err error
	get := func(dst *int, key string) {
		if err != nil {
			return
		}
		var u uint64
		if u, err = md.Uint(a + "." + key); err == nil {
			*dst = int(u)
		}
	}
	get(&p.EmbeddingLength, "embedding_length")
	get(&p.BlockCount, "block_count")
	get(&p.FeedForwardLength, "feed_forward_length")
	get(&p.HeadCount, "attention.head_count")
	get(&p.ContextLength, "context_length")
	if err != nil {
		return p, err
	}
	p.HeadCountKV = p.HeadCount
	if _, ok := md.Get(a + ".attention.head_count_kv"); ok {
		get(&p.HeadCountKV, "attention.head_count_kv")
	}
	if _, ok := md.Get(a + ".attention.key_length"); ok {
		get(&p.KeyLength, "attention.key_length")
	}
	if _, ok := md.Get(a + ".attention.sliding_window"); ok {
		get(&p.SlidingWindow, "attention.sliding_window")
	}
	for _, f := range []struct {
		key string
		dst *float32
	}{{a + ".attn_logit_softcapping", &p.AttnSoftcap}, {a + ".final_logit_softcapping", &p.FinalSoftcap}} {
		if _, ok := md.Get(f.key); ok {
			v, ferr := md.Float(f.key)
			if ferr != nil {
				return p, ferr
			}
			*f.dst = float32(v)
		}
	}
	if _, ok := md.Get(a + ".rope.freq_base_swa"); ok {
		v, ferr := md.Float(a + ".rope.freq_base_swa")
		if ferr != nil {
			return p, ferr
		}
		p.RopeFreqBaseSWA = float32(v)
	}
	if kind, ok := md.String(a + ".rope.scaling.type"); ok && kind != "none" {
		factor, ferr := md.Float(a + ".rope.scaling.factor")
		switch {
		case ferr != nil:
			return p, ferr
		case kind != "linear":
			return p, fmt.Errorf("%s.rope.scaling.type %q is not supported (lqc has linear)", a, kind)
		case factor > 0:
			p.RopeFreqScale = float32(1 / factor)
		}
	}
	if _, ok := md.Get(a + ".attention.query_pre_attn_scalar"); ok {
		get(&p.QueryScale, "attention.query_pre_attn_scalar")
	}
	if _, ok := md.Get(a + ".rope.scaling.original_context_length"); ok {
		get(&p.RopeOriginalContext, "rope.scaling.original_context_length")
	}
	if p.HeadCount > 0 {
		p.RopeDimensionCount = p.HeadDim()
	}
	epsKey := a + ".attention.layer_norm_epsilon"
	if rms {
		epsKey = a + ".attention.layer_norm_rms_epsilon"
		if _, ok := md.Get(a + ".rope.dimension_count"); ok {
			get(&p.RopeDimensionCount, "rope.dimension_count")
		}
		p.RopeFreqBase = 10000
		if _, ok := md.Get(a + ".rope.freq_base"); ok {
			f, ferr := md.Float(a + ".rope.freq_base")
			if ferr != nil {
				return p, ferr
			}
			p.RopeFreqBase = float32(f)
		}
	} else {
		p.RopeDimensionCount = 0
	}
	eps, err := md.Float(epsKey)
	if err != nil {
		return p, err
	}
	p.NormEpsilon = float32(eps)
	if _, ok := md.Get(a + ".vocab_size"); ok {
		get(&p.VocabSize, "vocab_size")
	} else if toks, ok := md.Get("tokenizer.ggml.tokens"); ok {
		if s, ok := toks.([]string); ok {
			p.VocabSize = len(s)
		}
	}
	if err != nil {
		return p, err
	}
	if p.VocabSize == 0 {
		return p, fmt.Errorf("cannot tell the vocabulary size: neither %s.vocab_size nor tokenizer.ggml.tokens is present", a)
	}
	return p, nil
}
