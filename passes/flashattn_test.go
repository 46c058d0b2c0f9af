package passes

import (
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/quant"
)

func builderModel(t *testing.T, name string) *ir.Model {
	t.Helper()
	a, err := arch.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	p := ir.HParams{ContextLength: 16, EmbeddingLength: 16, BlockCount: 3, FeedForwardLength: 24, HeadCount: 4,
		HeadCountKV: 2, RopeDimensionCount: 4, RopeFreqBase: 10000, NormEpsilon: 1e-5, VocabSize: 10}
	if name == "gpt2" {
		p.HeadCountKV, p.RopeDimensionCount = 4, 0
	}
	ws := map[string]*ir.Tensor{}
	for _, s := range a.Tensors(p) {
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
	m, err := arch.NewModel(a, name, p, ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func countOps(g *ir.Graph) map[string]int {
	c := map[string]int{}
	for _, n := range g.Nodes {
		c[n.Op]++
	}
	return c
}

func TestFlashAttentionFusesBuilderGraphs(t *testing.T) {
	for _, name := range []string{"llama", "gpt2"} {
		m := builderModel(t, name)
		var notes []string
		pm := &Manager{Passes: []Pass{FlashAttention{}}, OnNote: func(_, n string) { notes = append(notes, n) }}
		if err := pm.Run(m); err != nil {
			t.Fatal(err)
		}
		c := countOps(m.Graph)
		if c["FlashAttention"] != 3 || c["Softmax"] != 0 || c["CausalMask"] != 0 || c["MatMul"] != 0 {
			t.Errorf("%s after the pass: %v", name, c)
		}
		if len(notes) != 3 || !strings.Contains(notes[0], "fused attention of layer 0") || !strings.Contains(notes[0], "causal true") {
			t.Errorf("%s notes: %q", name, notes)
		}
		for _, n := range m.Graph.Nodes {
			if n.Op == "FlashAttention" {
				want := ir.Attrs{"scale": 0.5, "causal": true, "n_head": int64(4), "n_head_kv": int64(m.Params.HeadCountKV), "softcap": 0.0}
				for k, v := range want {
					if n.Attrs[k] != v {
						t.Errorf("%s: attr %s = %v, want %v", name, k, n.Attrs[k], v)
					}
				}
			}
		}
	}
}

// nearMiss builds scores → … → softmax → MatMul(v) with one twist.
func nearMiss(t *testing.T, twist string) (*ir.Model, string) {
	t.Helper()
	g := ir.NewGraph("attn")
	b := ir.NewBuilder(g)
	q := g.Input("q", quant.F32, ir.Dims(2, 5, 8))
	k := g.Input("k", quant.F32, ir.Dims(2, 5, 8))
	v := g.Input("v", quant.F32, ir.Dims(2, 5, 8))
	s := b.Op("MatMul", ir.Attrs{"transpose_b": true}, q, k)
	var extra *ir.Value
	switch twist {
	case "activation scale":
		s = b.Op("Mul", nil, s, g.Input("scale", quant.F32, ir.Dims(5)))
	case "weight scale":
		w, _ := ir.FromF32("s", []int64{5}, []float32{1, 1, 1, 1, 1})
		s = b.Op("Mul", nil, s, g.AddWeight(w))
	default:
		s = b.Op("Scale", ir.Attrs{"scale": 0.25}, s)
	}
	if twist == "shared scores" {
		extra = s
	}
	s = b.Op("CausalMask", nil, s)
	attrs := ir.Attrs{}
	if twist == "axis" {
		attrs["axis"] = int64(1)
	}
	p := b.Op("Softmax", attrs, s)
	o := b.Op("MatMul", nil, p, v)
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	g.Outputs = []*ir.Value{o}
	if extra != nil {
		g.Outputs = append(g.Outputs, extra)
	}
	want := map[string]string{
		"activation scale": "the scale %scale is not a constant scalar",
		"weight scale":     "the scale @s is not a constant scalar",
		"shared scores":    "has other users",
		"axis":             "softmax over axis 1, not the last",
		"none":             "",
	}[twist]
	return &ir.Model{Graph: g}, want
}

func TestFlashAttentionLeavesNearMisses(t *testing.T) {
	for _, twist := range []string{"activation scale", "weight scale", "shared scores", "axis", "none"} {
		m, want := nearMiss(t, twist)
		r, err := FlashAttention{}.Run(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Graph.Verify(); err != nil {
			t.Fatalf("%s: %v", twist, err)
		}
		fused := countOps(m.Graph)["FlashAttention"]
		if want == "" {
			if fused != 1 || r.Changed != 1 {
				t.Errorf("plain attention not fused: %v", r.Notes)
			}
			continue
		}
		if fused != 0 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], want) {
			t.Errorf("%s: fused %d, notes %q, want a skip saying %q", twist, fused, r.Notes, want)
		}
	}
}
