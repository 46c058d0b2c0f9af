package arch

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/ir"
)

// hfPermute is transformers' permute for q/k, written from its definition:
// w.view(n, rows/n/2, 2, cols).transpose(1, 2).reshape(rows, cols).
func hfPermute(w []float32, rows, cols, n int) []float32 {
	out := make([]float32, len(w))
	half := rows / n / 2
	for h := range n {
		for i := range half {
			for j := range 2 {
				src := h*rows/n + i*2 + j // view index (h, i, j)
				dst := h*rows/n + j*half + i
				copy(out[dst*cols:(dst+1)*cols], w[src*cols:(src+1)*cols])
			}
		}
	}
	return out
}

func TestUnpermuteUndoesHFPermute(t *testing.T) {
	const rows, cols, heads = 32, 3, 4
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(i)
	}
	hf, err := ir.FromF32("q", []int64{rows, cols}, hfPermute(w, rows, cols, heads))
	if err != nil {
		t.Fatal(err)
	}
	un, err := unpermuteQK(heads)(hf, ir.HParams{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := un.Float32s()
	if diff := cmp.Diff(w, got); diff != "" {
		t.Error(diff)
	}
	if _, err := unpermuteQK(5)(hf, ir.HParams{}); err == nil {
		t.Error("unpermute accepted 32 rows in 5 heads")
	}
}

func TestMapHF(t *testing.T) {
	p := ir.HParams{HeadCount: 4, HeadCountKV: 2}
	ll, _ := Lookup("llama")
	g2, _ := Lookup("gpt2")
	cases := []struct {
		a       Arch
		hf      string
		want    string
		fix, ok bool
		err     string
	}{
		{ll, "model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight", true, true, ""},
		{ll, "model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight", false, true, ""},
		{ll, "model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", false, true, ""},
		{ll, "lm_head.weight", "output.weight", false, true, ""},
		{ll, "model.layers.0.self_attn.rotary_emb.inv_freq", "", false, false, ""},
		{ll, "model.layers.0.self_attn.q_proj.bias", "", false, false, "unexpected tensor"},
		{g2, "transformer.h.1.attn.c_attn.weight", "blk.1.attn_qkv.weight", true, true, ""},
		{g2, "h.1.attn.c_attn.weight", "blk.1.attn_qkv.weight", true, true, ""},
		{g2, "transformer.h.1.attn.c_attn.bias", "blk.1.attn_qkv.bias", false, true, ""},
		{g2, "h.0.attn.bias", "", false, false, ""},
		{g2, "transformer.h.0.attn.masked_bias", "", false, false, ""},
		{g2, "wpe.weight", "position_embd.weight", false, true, ""},
		{g2, "transformer.h.0.mlp.c_fc.weight", "blk.0.ffn_up.weight", true, true, ""},
		{g2, "score.weight", "", false, false, "unexpected tensor"},
	}
	for _, c := range cases {
		got, fix, ok, err := c.a.MapHF(c.hf, p)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.hf, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want || (fix != nil) != c.fix || ok != c.ok {
			t.Errorf("%s -> %q fix=%v ok=%v err=%v; want %q fix=%v ok=%v", c.hf, got, fix != nil, ok, err, c.want, c.fix, c.ok)
		}
	}
}

func zeros(t *testing.T, specs []TensorSpec) map[string]*ir.Tensor {
	t.Helper()
	ws := map[string]*ir.Tensor{}
	for _, s := range specs {
		if s.Optional {
			continue
		}
		n := int64(1)
		for _, d := range s.Shape {
			n *= d
		}
		w, err := ir.FromF32(s.Name, s.Shape, make([]float32, n))
		if err != nil {
			t.Fatal(err)
		}
		ws[s.Name] = w
	}
	return ws
}

func TestBuildAndCheck(t *testing.T) {
	p := ir.HParams{ContextLength: 16, EmbeddingLength: 16, BlockCount: 2, FeedForwardLength: 24, HeadCount: 4,
		HeadCountKV: 2, RopeDimensionCount: 4, RopeFreqBase: 10000, NormEpsilon: 1e-5, VocabSize: 10}
	for _, name := range Names() {
		a, _ := Lookup(name)
		pp := p
		if name == "gpt2" {
			pp.HeadCountKV, pp.RopeDimensionCount = pp.HeadCount, 0
		}
		ws := zeros(t, a.Tensors(pp))
		m, err := NewModel(a, "t", pp, ws, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var sb strings.Builder
		m.Graph.Print(&sb)
		for _, op := range []string{"Embedding", "MatMul", "Softmax", "CausalMask", "Linear"} {
			if !strings.Contains(sb.String(), op) {
				t.Errorf("%s graph has no %s", name, op)
			}
		}
		if out := m.Graph.Outputs[0].Shape().String(); out != "[seq,10]" {
			t.Errorf("%s logits shape %s", name, out)
		}

		delete(ws, "blk.0.ffn_down.weight")
		if _, err := NewModel(a, "t", pp, ws, nil); err == nil || !strings.Contains(err.Error(), "missing tensor blk.0.ffn_down.weight") {
			t.Errorf("%s: missing tensor: err = %v", name, err)
		}
		ws = zeros(t, a.Tensors(pp))
		ws["extra.weight"] = ws["blk.0.ffn_down.weight"].WithName("extra.weight")
		if _, err := NewModel(a, "t", pp, ws, nil); err == nil || !strings.Contains(err.Error(), "unexpected tensors: extra.weight") {
			t.Errorf("%s: extra tensor: err = %v", name, err)
		}
		ws = zeros(t, a.Tensors(pp))
		ws["token_embd.weight"], _ = ir.FromF32("token_embd.weight", []int64{11, 16}, make([]float32, 176))
		if _, err := NewModel(a, "t", pp, ws, nil); err == nil || !strings.Contains(err.Error(), "has shape [11 16]") {
			t.Errorf("%s: wrong shape: err = %v", name, err)
		}
	}
}

func TestParamsFromHFErrors(t *testing.T) {
	ll, _ := Lookup("llama")
	base := `{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"intermediate_size":128,"num_attention_heads":8,"max_position_embeddings":128,"vocab_size":32,"rms_norm_eps":1e-5}`
	cfg, err := ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ll.ParamsFromHF(cfg)
	if err != nil || p.HeadCountKV != 8 || p.RopeFreqBase != 10000 || p.RopeDimensionCount != 8 {
		t.Fatalf("defaults: %+v, %v", p, err)
	}
	for key, want := range map[string]string{
		"hidden_size": "missing key hidden_size", "rms_norm_eps": "missing key rms_norm_eps",
	} {
		c, _ := ParseConfig([]byte(base))
		delete(c, key)
		if _, err := ll.ParamsFromHF(c); err == nil || err.Error() != want {
			t.Errorf("without %s: err = %v, want %q", key, err, want)
		}
	}
	c, _ := ParseConfig([]byte(base))
	c["num_hidden_layers"] = "two"
	if _, err := ll.ParamsFromHF(c); err == nil || !strings.Contains(err.Error(), "want a non-negative integer") {
		t.Errorf("string layers: %v", err)
	}
	if _, err := ForHF("mamba"); err == nil || !strings.Contains(err.Error(), `unknown architecture model_type "mamba"`) {
		t.Errorf("ForHF(mamba): %v", err)
	}
}
