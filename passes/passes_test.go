package passes

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

func model(t *testing.T) *ir.Model {
	t.Helper()
	g := ir.NewGraph("m")
	b := ir.NewBuilder(g)
	x := g.Input("x", quant.F32, ir.Shape{ir.Sym("seq"), ir.D(32)})
	w := func(name string) *ir.Value {
		v, err := ir.FromF32(name, []int64{32, 32}, make([]float32, 32*32))
		if err != nil {
			t.Fatal(err)
		}
		return g.AddWeight(v)
	}
	live, dead := w("live.weight"), w("dead.weight")
	y := b.Op("Linear", nil, x, live)
	b.Op("SiLU", nil, b.Op("Linear", nil, x, dead)) // nothing reads it
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	g.Outputs = []*ir.Value{y}
	return &ir.Model{Graph: g}
}

func TestDeadCode(t *testing.T) {
	m := model(t)
	r, err := DeadCode{}.Run(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Graph.Nodes) != 1 || len(m.Graph.Weights) != 1 || m.Graph.Weights[0].Weight.Name != "live.weight" {
		t.Errorf("after dce: %d nodes, weights %v", len(m.Graph.Nodes), m.Weights())
	}
	if r.Changed != 3 || len(r.Notes) != 1 {
		t.Errorf("report %+v", r)
	}
}

// breaker corrupts the graph, as a buggy pass would.
type breaker struct{}

func (breaker) Name() string { return "breaker" }
func (breaker) Run(m *ir.Model) (Report, error) {
	m.Graph.Nodes[0].Inputs = m.Graph.Nodes[0].Inputs[:1]
	return Report{Changed: 1}, nil
}

type failer struct{}

func (failer) Name() string                  { return "failer" }
func (failer) Run(*ir.Model) (Report, error) { return Report{}, errors.New("no") }

func TestManagerVerifiesBetweenPasses(t *testing.T) {
	var trace strings.Builder
	pm := &Manager{Passes: []Pass{DeadCode{}, breaker{}}, Trace: &trace}
	err := pm.Run(model(t))
	if err == nil || !strings.Contains(err.Error(), "after pass breaker") {
		t.Fatalf("err = %v, want the verifier to blame breaker", err)
	}
	if !strings.Contains(trace.String(), "pass dce") || pm.Names() != "dce → breaker" {
		t.Errorf("trace %q, names %q", trace.String(), pm.Names())
	}
	if err := (&Manager{Passes: []Pass{failer{}}}).Run(model(t)); err == nil || !strings.Contains(err.Error(), "pass failer: no") {
		t.Errorf("failing pass: %v", err)
	}
}

func TestQuantizeChoosesAndConverts(t *testing.T) {
	m := model(t)
	var notes []string
	pm := &Manager{Passes: []Pass{DeadCode{}, Quantize{FileType: quant.FileMostlyQ4_0}},
		OnNote: func(p, n string) { notes = append(notes, p+": "+n) }}
	if err := pm.Run(m); err != nil {
		t.Fatal(err)
	}
	if got := m.Weights()[0].Type; got != quant.Q4_0 {
		t.Errorf("live.weight is %v, want Q4_0", got)
	}
	if m.FileType != quant.FileMostlyQ4_0 || len(notes) != 1 {
		t.Errorf("file type %v, notes %v", m.FileType, notes)
	}
	// A second quantization of quantized weights warns.
	r, err := Quantize{FileType: quant.FileMostlyQ8_0}.Run(m)
	if err != nil || r.Changed != 1 || len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "re-quantized") {
		t.Errorf("requantize: %+v, %v", r, err)
	}
}

// TestQuantizeFallbackSummary: five matrices whose rows Q4_K's block does
// not divide fall back to Q5_0, said once with the count and the first
// names, or once per tensor when each is asked for.
func TestQuantizeFallbackSummary(t *testing.T) {
	build := func() *ir.Model {
		g := ir.NewGraph("m")
		b := ir.NewBuilder(g)
		x := g.Input("x", quant.F32, ir.Shape{ir.Sym("seq"), ir.D(64)})
		y := x
		for i := range 5 {
			v, err := ir.FromF32(fmt.Sprintf("blk.%d.attn_q.weight", i), []int64{64, 64}, make([]float32, 64*64))
			if err != nil {
				t.Fatal(err)
			}
			y = b.Op("Linear", nil, y, g.AddWeight(v))
		}
		if b.Err() != nil {
			t.Fatal(b.Err())
		}
		g.Outputs = []*ir.Value{y}
		return &ir.Model{Graph: g, Params: ir.HParams{BlockCount: 5, HeadCount: 1, HeadCountKV: 1}}
	}
	for _, each := range []bool{false, true} {
		m := build()
		r, err := Quantize{FileType: quant.FileMostlyQ4_K_M, EachFallback: each}.Run(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range m.Weights() {
			if w.Type != quant.Q5_0 {
				t.Errorf("%s is %v, want the fallback Q5_0", w.Name, w.Type)
			}
		}
		const reason = "row length 64 is not a multiple of Q4_K's block size 256: using Q5_0"
		want := []string{reason + " (5 tensors: blk.0.attn_q.weight, blk.1.attn_q.weight, blk.2.attn_q.weight and 2 more)"}
		if each {
			want = nil
			for i := range 5 {
				want = append(want, fmt.Sprintf("blk.%d.attn_q.weight: %s", i, reason))
			}
		}
		if diff := cmp.Diff(want, r.Notes); diff != "" {
			t.Errorf("each=%v notes (-want +got):\n%s", each, diff)
		}
	}
}
