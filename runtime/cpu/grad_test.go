package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// gradEnv builds one test graph: trainable float32 weights (the inputs a
// gradient is checked for), frozen weights of any type, and the graph
// inputs a training window binds.
type gradEnv struct {
	g      *ir.Graph
	b      *ir.Builder
	T      int
	vals   map[string][]float32 // parameter values, by name
	shapes map[string][]int64
	order  []string
	params []*ir.Value
	seed   uint64
	// asInputs makes parameters graph inputs (the finite differences'
	// forward graph, run by Model.Run) instead of trained weights.
	asInputs bool
}

func (e *gradEnv) values(name string, shape []int64, scale float64) []float32 {
	if v, ok := e.vals[name]; ok {
		return v
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	rng := rand.New(rand.NewPCG(e.seed, uint64(len(e.vals))+1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	e.vals[name] = v
	e.shapes[name] = shape
	e.order = append(e.order, name)
	return v
}

// param is a trained weight: its gradient is checked.
func (e *gradEnv) param(name string, shape ...int64) *ir.Value {
	return e.paramScaled(name, 1, shape...)
}

func (e *gradEnv) paramScaled(name string, scale float64, shape ...int64) *ir.Value {
	if e.asInputs {
		e.values(name, shape, scale)
		return e.g.Input(name, quant.F32, ir.Dims(shape...))
	}
	t, err := ir.FromF32(name, shape, e.values(name, shape, scale))
	if err != nil {
		panic(err)
	}
	v := e.g.AddWeight(t)
	e.params = append(e.params, v)
	return v
}

// frozen is a weight of type typ made from seeded values (quantized as
// the type stores them); it gets no gradient.
func (e *gradEnv) frozen(name string, typ quant.Type, shape ...int64) *ir.Value {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	rng := rand.New(rand.NewPCG(e.seed^0x9e37, uint64(len(name))))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.5)
	}
	t, err := ir.FromF32(name, shape, v)
	if err != nil {
		panic(err)
	}
	if typ != quant.F32 {
		if t, err = ir.Convert(t, typ); err != nil {
			panic(err)
		}
	}
	return e.g.AddWeight(t)
}

func (e *gradEnv) input(name string, t quant.Type, shape ...int64) *ir.Value {
	for _, in := range e.g.Inputs {
		if in.Name == name {
			return in
		}
	}
	return e.g.Input(name, t, ir.Dims(shape...))
}

func (e *gradEnv) tokens() *ir.Value { return e.input("tokens", quant.I32, int64(e.T)) }
func (e *gradEnv) pos() *ir.Value    { return e.input("pos", quant.I32, int64(e.T)) }

type gradCase struct {
	name  string
	T     int
	vocab int // for KLDiv's teacher input
	build func(e *gradEnv) *ir.Value
}

// window is the training window every case runs on.
func (c gradCase) window(rng *rand.Rand) lqrt.Window {
	w := lqrt.Window{Scale: 1}
	for i := range c.T {
		w.Tokens = append(w.Tokens, int32(rng.IntN(max(c.vocab, 2))))
		target := int32(rng.IntN(max(c.vocab, 2)))
		if i%4 == 3 {
			target = -1 // not scored
		}
		w.Targets = append(w.Targets, target)
	}
	for range c.T * c.vocab {
		w.Teacher = append(w.Teacher, float32(rng.NormFloat64()*2))
	}
	return w
}

// The rules, each checked against central finite differences: odd shapes,
// every differentiable input, quantized frozen weights read in place.
var gradCases = []gradCase{
	{name: "Linear/x/Q4_0", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Linear", ir.Attrs{"exact": true}, e.param("x", 3, 64), e.frozen("w", quant.Q4_0, 5, 64))
	}},
	{name: "Linear/x/Q6_K", T: 2, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Linear", ir.Attrs{"exact": true}, e.param("x", 2, 256), e.frozen("w", quant.Q6_K, 3, 256))
	}},
	{name: "Linear/x/F16+bias", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Linear", ir.Attrs{"exact": true}, e.param("x", 3, 7), e.frozen("w", quant.F16, 5, 7), e.param("bias", 5))
	}},
	{name: "Linear/w", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Linear", nil, e.param("x", 3, 7), e.param("w", 5, 7))
	}},
	{name: "LowRank", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("LowRank", ir.Attrs{"scale": 1.5}, e.param("x", 3, 9), e.param("A", 2, 9), e.param("B", 5, 2))
	}},
	{name: "Embedding", T: 5, vocab: 7, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Embedding", nil, e.param("table", 7, 3), e.tokens())
	}},
	{name: "RMSNorm", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("RMSNorm", ir.Attrs{"eps": 1e-5}, e.param("x", 3, 11), e.param("w", 11))
	}},
	{name: "LayerNorm", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("LayerNorm", ir.Attrs{"eps": 1e-5}, e.param("x", 3, 11), e.param("w", 11), e.param("b", 11))
	}},
	{name: "Add/broadcast", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Add", nil, e.param("a", 3, 2, 5), e.param("b", 5))
	}},
	{name: "Add/shared", T: 3, build: func(e *gradEnv) *ir.Value {
		x := e.param("x", 3, 5)
		return e.b.Op("Add", nil, x, e.b.Op("SiLU", nil, x))
	}},
	{name: "Mul/broadcast", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Mul", nil, e.param("a", 3, 2, 5), e.param("b", 2, 5))
	}},
	{name: "SiLU", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("SiLU", nil, e.paramScaled("x", 3, 3, 7))
	}},
	{name: "GELU/tanh", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("GELU", nil, e.paramScaled("x", 2, 3, 7))
	}},
	{name: "GELU/erf", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("GELU", ir.Attrs{"approximate": "none"}, e.paramScaled("x", 2, 3, 7))
	}},
	{name: "Scale", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Scale", ir.Attrs{"scale": -0.7}, e.param("x", 3, 5))
	}},
	{name: "Softmax+CausalMask", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Softmax", nil, e.b.Op("CausalMask", nil, e.param("x", 2, 3, 5)))
	}},
	{name: "Softmax+CausalMask/window", T: 4, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Softmax", nil, e.b.Op("CausalMask", ir.Attrs{"window": int64(2)}, e.param("x", 2, 4, 6)))
	}},
	{name: "Relu", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Relu", nil, e.param("x", 3, 5))
	}},
	{name: "Softcap", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Softcap", ir.Attrs{"cap": 1.5}, e.param("x", 3, 5))
	}},
	{name: "RoPE/normal", T: 5, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("RoPE", ir.Attrs{"n_dims": int64(6), "freq_base": 100.0, "mode": "normal"}, e.param("x", 5, 2, 8), e.pos())
	}},
	{name: "RoPE/neox", T: 5, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("RoPE", ir.Attrs{"n_dims": int64(8), "freq_base": 100.0, "mode": "neox"}, e.param("x", 5, 3, 8), e.pos())
	}},
	{name: "MatMul", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("MatMul", nil, e.param("a", 2, 3, 5), e.param("b", 2, 5, 4))
	}},
	{name: "MatMul/transpose_b/grouped", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("MatMul", ir.Attrs{"transpose_b": true}, e.param("a", 4, 3, 5), e.param("b", 2, 6, 5))
	}},
	{name: "MatMul/grouped", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("MatMul", nil, e.param("a", 6, 3, 5), e.param("b", 2, 5, 4))
	}},
	{name: "Reshape+Permute", T: 3, build: func(e *gradEnv) *ir.Value {
		x := e.b.Op("Reshape", ir.Attrs{"shape": []int64{3, 2, 5}}, e.param("x", 3, 10))
		return e.b.Op("SiLU", nil, e.b.Op("Permute", ir.Attrs{"perm": []int64{1, 2, 0}}, x))
	}},
	{name: "Slice", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("Slice", ir.Attrs{"axis": int64(-1), "start": int64(2), "end": int64(5)}, e.param("x", 3, 7))
	}},
	{name: "FlashAttention/causal/GQA", T: 5, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("FlashAttention", ir.Attrs{"scale": 0.4, "causal": true, "n_head": int64(4), "n_head_kv": int64(2)},
			e.param("q", 4, 5, 3), e.param("k", 2, 5, 3), e.param("v", 2, 5, 2))
	}},
	{name: "FlashAttention/4D/mask/softcap", T: 3, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("FlashAttention", ir.Attrs{"scale": 0.6, "n_head": int64(2), "n_head_kv": int64(1), "softcap": 2.0},
			e.param("q", 2, 2, 3, 4), e.param("k", 2, 1, 6, 4), e.param("v", 2, 1, 6, 3), e.frozen("mask", quant.F32, 3, 6))
	}},
	{name: "FlashAttention/long", T: 70, build: func(e *gradEnv) *ir.Value {
		// More queries and keys than one tile of the forward kernel.
		return e.b.Op("FlashAttention", ir.Attrs{"scale": 0.5, "causal": true, "n_head": int64(1), "n_head_kv": int64(1)},
			e.paramScaled("q", 0.5, 1, 70, 2), e.paramScaled("k", 0.5, 1, 70, 2), e.param("v", 1, 70, 1))
	}},
	{name: "FlashAttention/long/window", T: 70, build: func(e *gradEnv) *ir.Value {
		// A window shorter than a key tile, across tile boundaries.
		return e.b.Op("FlashAttention", ir.Attrs{"scale": 0.5, "causal": true, "n_head": int64(2), "n_head_kv": int64(1), "window": int64(9)},
			e.paramScaled("q", 0.5, 2, 70, 2), e.paramScaled("k", 0.5, 1, 70, 2), e.param("v", 1, 70, 1))
	}},
	{name: "CrossEntropy", T: 5, vocab: 7, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("CrossEntropy", nil, e.param("logits", 5, 7), e.input("targets", quant.I32, 5))
	}},
	{name: "KLDiv", T: 5, vocab: 7, build: func(e *gradEnv) *ir.Value {
		return e.b.Op("KLDiv", nil, e.param("logits", 5, 7), e.input("teacher", quant.F32, 5, 7))
	}},
}

// build makes the case's graph: y = f(params), and with loss the scalar
// Σ c·y (c fixed, seeded) and its backward graph.
func (c gradCase) graph(t *testing.T, vals map[string][]float32, shapes map[string][]int64, order *[]string, loss bool) (*ir.Model, *gradEnv) {
	t.Helper()
	g := ir.NewGraph(c.name)
	e := &gradEnv{g: g, b: ir.NewBuilder(g), T: c.T, vals: vals, shapes: shapes, order: *order, seed: 7, asInputs: !loss}
	y := c.build(e)
	*order = e.order
	if err := e.b.Err(); err != nil {
		t.Fatal(err)
	}
	g.Outputs = []*ir.Value{y}
	if loss {
		n := int64(1)
		for _, d := range y.Shape() {
			n *= d.Size
		}
		flat := e.b.Op("Reshape", ir.Attrs{"shape": []int64{1, n}}, y)
		l := e.b.Op("Reshape", ir.Attrs{"shape": []int64{1}}, e.b.Op("Linear", nil, flat, e.frozen("c", quant.F32, 1, n)))
		if err := e.b.Err(); err != nil {
			t.Fatal(err)
		}
		grads, err := ir.Backward(g, l, e.params)
		if err != nil {
			t.Fatal(err)
		}
		g.Outputs = append([]*ir.Value{l}, grads...)
	}
	if err := g.Verify(); err != nil {
		t.Fatal(err)
	}
	return &ir.Model{Arch: "test", Graph: g, Params: ir.HParams{VocabSize: c.vocab}}, e
}

// TestGradientRules checks every rule against central differences of
// Σ c·y, the sums in float64.
func TestGradientRules(t *testing.T) {
	b := New(2)
	defer b.Close()
	for _, c := range gradCases {
		t.Run(c.name, func(t *testing.T) {
			vals, shapes, order := map[string][]float32{}, map[string][]int64{}, []string{}
			w := c.window(rand.New(rand.NewPCG(3, 4)))
			m, _ := c.graph(t, vals, shapes, &order, true)
			tr, err := lqrt.NewTrainer(m, b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Accumulate(w); err != nil {
				t.Fatal(err)
			}
			analytic := map[string][]float32{}
			for _, p := range tr.Params() {
				analytic[p.Name] = p.Grad
			}
			// The same weight c the loss graph used.
			cm, _ := c.graph(t, vals, shapes, &order, true)
			cw, err := cm.Graph.WeightValue("c").Weight.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			objective := func() float64 {
				fm, _ := c.graph(t, vals, shapes, &order, false)
				rm, err := lqrt.Load(fm, b)
				if err != nil {
					t.Fatal(err)
				}
				inputs := map[string]*ir.Tensor{}
				for _, in := range fm.Graph.Inputs {
					var x *ir.Tensor
					switch in.Name {
					case "tokens", "pos", "targets":
						src := w.Tokens
						if in.Name == "pos" {
							src = make([]int32, c.T)
							for i := range src {
								src[i] = int32(i)
							}
						} else if in.Name == "targets" {
							src = w.Targets
						}
						x, err = ir.FromBytes(in.Name, quant.I32, []int64{int64(len(src))}, i32Bytes(src))
					case "teacher":
						x, err = ir.FromF32(in.Name, []int64{int64(c.T), int64(c.vocab)}, w.Teacher)
					default:
						x, err = ir.FromF32(in.Name, shapes[in.Name], vals[in.Name])
					}
					if err != nil {
						t.Fatal(err)
					}
					inputs[in.Name] = x
				}
				outs, err := rm.Run(inputs)
				if err != nil {
					t.Fatal(err)
				}
				y, err := outs[0].Float32s()
				if err != nil {
					t.Fatal(err)
				}
				var s float64
				for i, v := range y {
					s += float64(cw[i]) * float64(v)
				}
				return s
			}
			for _, name := range order {
				v, g := vals[name], analytic[name]
				if g == nil {
					t.Fatalf("no gradient for %s", name)
				}
				var dd, gg float64
				worst := ""
				for i := range v {
					x := v[i]
					h := float32(1e-2 * max(1, math.Abs(float64(x))))
					v[i] = x + h
					up := objective()
					v[i] = x - h
					down := objective()
					v[i] = x
					fd := (up - down) / float64((x+h)-(x-h))
					d := fd - float64(g[i])
					dd += d * d
					gg += fd * fd
					if math.Abs(d) > 1e-2*(1+math.Abs(fd)) && worst == "" {
						worst = fmt.Sprintf("element %d: analytic %.6g, finite difference %.6g", i, g[i], fd)
					}
				}
				rel := math.Sqrt(dd / max(gg, 1e-30))
				if rel > 1e-3 || worst != "" {
					t.Errorf("%s: ‖Δ‖/‖g‖ = %.3g %s", name, rel, worst)
				} else {
					t.Logf("%s%v: ‖Δ‖/‖g‖ = %.2g", name, shapes[name], rel)
				}
			}
		})
	}
}

func i32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		u := uint32(x)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return b
}

// TestEveryTransformerOpHasARule: the ops the architecture builders and
// the training passes emit are all differentiable, and an op without a
// rule is an error that names it.
func TestEveryTransformerOpHasARule(t *testing.T) {
	for _, op := range []string{"Embedding", "Linear", "LowRank", "RMSNorm", "LayerNorm", "Add", "Mul", "SiLU", "GELU",
		"Scale", "Softmax", "CausalMask", "RoPE", "MatMul", "Reshape", "Permute", "Slice", "FlashAttention",
		"CrossEntropy", "KLDiv"} {
		if !ir.HasGrad(op) {
			t.Errorf("op %s has no gradient rule", op)
		}
	}
	g := ir.NewGraph("tanh")
	b := ir.NewBuilder(g)
	x, err := ir.FromF32("x", []int64{2, 3}, make([]float32, 6))
	if err != nil {
		t.Fatal(err)
	}
	xv := g.AddWeight(x)
	y := b.Op("Tanh", nil, xv)
	c, _ := ir.FromF32("c", []int64{1, 6}, make([]float32, 6))
	l := b.Op("Reshape", ir.Attrs{"shape": []int64{1}}, b.Op("Linear", nil, b.Op("Reshape", ir.Attrs{"shape": []int64{1, 6}}, y), g.AddWeight(c)))
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	_, err = ir.Backward(g, l, []*ir.Value{xv})
	if err == nil || !strings.Contains(err.Error(), "op Tanh") {
		t.Errorf("Backward through Tanh: %v, want an error naming the op", err)
	}
}
