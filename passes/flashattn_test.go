package passes

import (
	"math"
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

// exported builds attention as PyTorch's ONNX export spells it, on
// q[2,4,5,8] and k, v[2,2,5,8]: k and v repeated per query head by
// Unsqueeze/Expand/Reshape, MatMul(q, Transpose(k)), Div by √d, Where on
// a causal condition, Softmax, MatMul(·, v); twist changes one thing.
func exported(t *testing.T, twist string) (*ir.Model, string) {
	t.Helper()
	g := ir.NewGraph("export")
	b := ir.NewBuilder(g)
	q := g.Input("q", quant.F32, ir.Dims(2, 4, 5, 8))
	k := g.Input("k", quant.F32, ir.Dims(2, 2, 5, 8))
	v := g.Input("v", quant.F32, ir.Dims(2, 2, 5, 8))
	repeat := func(x *ir.Value) *ir.Value {
		if twist == "tile" {
			return b.Op("Tile", ir.Attrs{"repeats": []int64{1, 2, 1, 1}}, x)
		}
		u := b.Op("Reshape", ir.Attrs{"shape": []int64{2, 2, 1, 5, 8}}, x)
		e := b.Op("Expand", ir.Attrs{"shape": []int64{2, 2, 2, 5, 8}}, u)
		return b.Op("Reshape", ir.Attrs{"shape": []int64{2, 4, 5, 8}}, e)
	}
	kt := b.Op("Permute", ir.Attrs{"perm": []int64{0, 1, 3, 2}}, repeat(k))
	if twist == "transpose" { // a reshape where the transpose should be
		kt = b.Op("Reshape", ir.Attrs{"shape": []int64{2, 4, 8, 5}}, repeat(k))
	}
	s := b.Op("MatMul", nil, q, kt)
	div := scalar(t, g, "sqrt_d", 2.828427)
	if twist == "computed scale" {
		div = g.Input("d", quant.F32, ir.Dims(1))
	}
	s = b.Op("Div", nil, s, div)
	if twist == "softcap" {
		c := scalar(t, g, "cap", 30)
		s = b.Op("Mul", nil, b.Op("Tanh", nil, b.Op("Div", nil, s, c)), c)
	}
	cond := make([]byte, 25)
	for i := range 5 {
		for j := range 5 {
			if j > i || twist == "padding" && j == 4 {
				cond[i*5+j] = 1
			}
		}
	}
	ct, _ := ir.FromBytes("causal", quant.Bool, []int64{5, 5}, cond)
	c := g.AddWeight(ct)
	if twist == "run-time condition" {
		c = g.Input("cond", quant.Bool, ir.Dims(5, 5))
	}
	s = b.Op("Where", nil, c, scalar(t, g, "neg_inf", float32(math.Inf(-1))), s)
	if twist == "mask before softcap" {
		cp := scalar(t, g, "cap", 30)
		s = b.Op("Mul", nil, b.Op("Tanh", nil, b.Op("Div", nil, s, cp)), cp)
	}
	p := b.Op("Softmax", ir.Attrs{"axis": int64(-1)}, s)
	o := b.Op("MatMul", nil, p, repeat(v))
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	g.Outputs = []*ir.Value{o}
	want := map[string]string{
		"tile":                "repeated by Tile",
		"transpose":           "not a product of queries with transposed keys",
		"computed scale":      "the scale %d is not a constant scalar",
		"run-time condition":  "a Where that is not a constant mask",
		"mask before softcap": "a mask comes before the softcap",
	}[twist]
	return &ir.Model{Graph: g}, want
}

func scalar(t *testing.T, g *ir.Graph, name string, v float32) *ir.Value {
	w, err := ir.FromF32(name, []int64{1}, []float32{v})
	if err != nil {
		t.Fatal(err)
	}
	return g.AddWeight(w)
}

func TestFlashAttentionExportedForms(t *testing.T) {
	for _, twist := range []string{"none", "softcap", "padding", "tile", "transpose", "computed scale", "run-time condition", "mask before softcap"} {
		m, want := exported(t, twist)
		r, err := FlashAttention{}.Run(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Graph.Verify(); err != nil {
			t.Fatalf("%s: %v", twist, err)
		}
		c := countOps(m.Graph)
		if want != "" {
			if c["FlashAttention"] != 0 || !strings.Contains(strings.Join(r.Notes, "\n"), want) {
				t.Errorf("%s: fused %d, notes %q, want a skip saying %q", twist, c["FlashAttention"], r.Notes, want)
			}
			continue
		}
		if c["FlashAttention"] != 1 || len(m.Graph.Nodes) != 1 {
			t.Fatalf("%s: not fused to one node: %v %q", twist, c, r.Notes)
		}
		n := m.Graph.Nodes[0]
		if n.Inputs[1].Name != "k" || n.Inputs[2].Name != "v" || n.Attrs.Int("n_head") != 4 || n.Attrs.Int("n_head_kv") != 2 ||
			math.Abs(n.Attrs.Float("scale")-1/2.828427) > 1e-6 {
			t.Errorf("%s: fused as %v %v", twist, n.Inputs, n.Attrs)
		}
		// The causal condition becomes the causal flag; the padding one a mask.
		if wantMask := twist == "padding"; n.Attrs.Bool("causal") == wantMask || (len(n.Inputs) == 4) != wantMask {
			t.Errorf("%s: causal %v, %d inputs", twist, n.Attrs.Bool("causal"), len(n.Inputs))
		}
		if wantCap := map[bool]float64{true: 30}[twist == "softcap"]; n.Attrs.Float("softcap") != wantCap {
			t.Errorf("%s: softcap %v", twist, n.Attrs.Float("softcap"))
		}
	}
}
