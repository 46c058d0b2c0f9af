package ir

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/quant"
)

func mustF32(t *testing.T, name string, shape []int64, v []float32) *Tensor {
	t.Helper()
	x, err := FromF32(name, shape, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// smallGraph is x[seq,4] · w[3,4]ᵀ + b, then SiLU.
func smallGraph(t *testing.T) *Graph {
	t.Helper()
	g := NewGraph("small")
	bld := NewBuilder(g)
	x := g.Input("x", quant.F32, Shape{Sym("seq"), D(4)})
	w := g.AddWeight(mustF32(t, "w", []int64{3, 4}, make([]float32, 12)))
	b := g.AddWeight(mustF32(t, "b", []int64{3}, make([]float32, 3)))
	y := bld.Named(bld.Op("SiLU", nil, bld.Op("Linear", nil, x, w, b)), "y")
	if err := bld.Err(); err != nil {
		t.Fatal(err)
	}
	g.Outputs = []*Value{y}
	return g
}

func TestPrint(t *testing.T) {
	var sb strings.Builder
	if err := smallGraph(t).Print(&sb); err != nil {
		t.Fatal(err)
	}
	want := `graph small(%x: F32[seq,4]) -> (%y) {
  @w: F32[3,4]
  @b: F32[3]
  %3 = Linear(%x, @w, @b) : F32[seq,3]
  %y = SiLU(%3) : F32[seq,3]
}
`
	if diff := cmp.Diff(want, sb.String()); diff != "" {
		t.Error(diff)
	}
}

func TestVerifyCatchesBrokenGraphs(t *testing.T) {
	cases := map[string]struct {
		break_ func(g *Graph)
		want   string
	}{
		"dangling input": {func(g *Graph) {
			g.Nodes[1].Inputs[0] = &Value{ID: 99, typ: quant.F32, shape: Dims(1)}
		}, "not defined before use"},
		"out of order": {func(g *Graph) { g.Nodes[0], g.Nodes[1] = g.Nodes[1], g.Nodes[0] }, "not defined before use"},
		"stale shape":  {func(g *Graph) { g.Nodes[1].Outputs[0].shape = Dims(7) }, "inputs give"},
		"weight swapped for another shape": {func(g *Graph) {
			g.Weights[0].Weight = mustF32(t, "w", []int64{3, 5}, make([]float32, 15))
		}, "does not match weight"},
		"unknown op":      {func(g *Graph) { g.Nodes[1].Op = "Frobnicate" }, "unknown op"},
		"duplicate name":  {func(g *Graph) { g.Weights[1].Weight = g.Weights[0].Weight }, "appears twice"},
		"no outputs":      {func(g *Graph) { g.Outputs = nil }, "no outputs"},
		"phantom output":  {func(g *Graph) { g.Outputs = []*Value{{ID: 42}} }, "never defined"},
		"defined twice":   {func(g *Graph) { g.Nodes = append(g.Nodes, g.Nodes[1]) }, "defined twice"},
		"bad attr (RoPE)": {func(g *Graph) { g.Nodes[1].Op = "Softmax"; g.Nodes[1].Inputs = nil }, "takes 1 inputs"},
	}
	for name, c := range cases {
		g := smallGraph(t)
		if err := g.Verify(); err != nil {
			t.Fatalf("%s: fresh graph invalid: %v", name, err)
		}
		c.break_(g)
		if err := g.Verify(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
}

func TestReshapeInference(t *testing.T) {
	cases := []struct {
		in   Shape
		to   []int64
		want string
	}{
		{Shape{Sym("seq"), D(64)}, []int64{-1, 8, 8}, "[seq,8,8]"},
		{Shape{Sym("seq"), D(8), D(8)}, []int64{-1, 64}, "[seq,64]"},
		{Dims(6, 4), []int64{3, -1}, "[3,8]"},
		{Dims(6, 4), []int64{5, -1}, "error"},
		{Shape{Sym("seq"), D(64)}, []int64{64, -1}, "[64,seq]"},
		{Shape{Sym("seq"), D(64)}, []int64{8, 8}, "error"},
	}
	for _, c := range cases {
		g := NewGraph("r")
		x := g.Input("x", quant.F32, c.in)
		outs, err := g.Apply("Reshape", Attrs{"shape": c.to}, x)
		got := "error"
		if err == nil {
			got = outs[0].Shape().String()
		}
		if got != c.want {
			t.Errorf("reshape %v to %v = %s, want %s", c.in, c.to, got, c.want)
		}
	}
}

func TestLazySources(t *testing.T) {
	v := []float32{0, 1, 2, 3, 4, 5}
	x := mustF32(t, "x", []int64{3, 2}, v)
	tr, err := Transpose(x)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := tr.Float32s()
	if diff := cmp.Diff([]float32{0, 2, 4, 1, 3, 5}, got); diff != "" {
		t.Errorf("transpose: %s", diff)
	}
	p := PermuteRows(x, func(r int64) int64 { return 2 - r })
	got, _ = p.Float32s()
	if diff := cmp.Diff([]float32{4, 5, 2, 3, 0, 1}, got); diff != "" {
		t.Errorf("permute: %s", diff)
	}
	h, err := Convert(x, quant.F16)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = h.Float32s()
	if diff := cmp.Diff(v, got); diff != "" {
		t.Errorf("f16 round trip: %s", diff)
	}
	if same, _ := Convert(x, quant.F32); same != x {
		t.Error("converting to the same type made a new tensor")
	}
	if _, err := Convert(x, quant.Q4_0); err == nil {
		t.Error("Q4_0 accepted rows of 2 values")
	}
	if err := x.ReadRows(make([]byte, 8), 2, 2); err == nil {
		t.Error("reading past the last row succeeded")
	}
}

func TestMetadataAccessors(t *testing.T) {
	md := Metadata{{"a", uint32(5)}, {"b", int32(-1)}, {"c", float32(0.5)}, {"d", "s"}, {"e", true}}
	if v, err := md.Uint("a"); err != nil || v != 5 {
		t.Errorf("Uint(a) = %v, %v", v, err)
	}
	if _, err := md.Uint("b"); err == nil {
		t.Error("Uint accepted a negative value")
	}
	if _, err := md.Uint("zz"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Uint(zz): %v", err)
	}
	if v, err := md.Float("c"); err != nil || v != 0.5 {
		t.Errorf("Float(c) = %v, %v", v, err)
	}
	md.Set("d", "t")
	md.Delete("e")
	if s, _ := md.String("d"); s != "t" || len(md) != 4 {
		t.Errorf("Set/Delete: %v", md)
	}
}
