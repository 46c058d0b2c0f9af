package passes

import (
	"errors"
	"strings"
	"testing"

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
