package onnx_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend/onnx"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/testmodels"
)

// unfused lists the attention tests whose attention must stay as it is,
// by a part of their name, and why: for the expanded graphs, and for the
// Attention op itself.
var unfused = map[bool][][2]string{
	true: {
		{"qk_matmul", "the scores are a graph output (qk_matmul_output)"},
		{"fp16", "float16 q, k and v: FlashAttention computes in float32"},
	},
	false: {
		{"qk_matmul", "the op's qk_matmul_output is used"},
		{"fp16", "float16 q, k and v: FlashAttention computes in float32"},
		{"past_and_present", "the op's present key and value are used"},
		{"padded_kv", "padding lengths (nonpad_kv_seqlen)"},
		{"mask_3d_causal", "a run-time mask and a causal one over more keys than queries"},
		{"mask_4d_causal", "a run-time mask and a causal one over more keys than queries"},
	},
}

// TestFlashAttentionOnONNXAttention runs the flash-attention pass on
// ONNX's Attention tests: the op itself, and its expanded graphs (the
// function body, spelled out in MatMul, Transpose, Mul, Add, Where,
// Softmax, Expand, …). Every one fuses into FlashAttention but those
// listed, and all still give the expected outputs.
func TestFlashAttentionOnONNXAttention(t *testing.T) {
	root := testmodels.Shared(t, "onnx", "node")
	dirs, _ := filepath.Glob(filepath.Join(root, "test_attention_*"))
	if len(dirs) == 0 {
		t.Fatalf("no test_attention_* under %s", root)
	}
	fused, kept := 0, map[string]int{}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		expanded := strings.HasSuffix(name, "_expanded")
		f, err := onnx.Open(filepath.Join(dir, "model.onnx"))
		if err != nil {
			t.Fatal(err)
		}
		inputs, outputs := dataSet(t, f, filepath.Join(dir, "test_data_set_0"))
		opt := onnx.Options{InputShapes: map[string][]int64{}, Backend: backend}
		for n, x := range inputs {
			opt.InputShapes[n] = x.Shape
		}
		g, err := onnx.Import(f, opt)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m := &ir.Model{Graph: g}
		var notes []string
		pm := &passes.Manager{Passes: []passes.Pass{passes.FlashAttention{}}, OnNote: func(_, n string) { notes = append(notes, n) }}
		if err := pm.Run(m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ops := map[string]int{}
		for _, n := range g.Nodes {
			ops[n.Op]++
		}
		why := ""
		for _, u := range unfused[expanded] {
			if why == "" && strings.Contains(name, u[0]) {
				why = u[1]
			}
		}
		switch {
		case why == "" && (ops["FlashAttention"] != 1 || ops["Softmax"]+ops["Attention"] != 0):
			t.Errorf("%s: not fused: %v; %s", name, ops, strings.Join(notes, "; "))
		case why != "" && ops["FlashAttention"] != 0:
			t.Errorf("%s: fused, but %s", name, why)
		case why != "":
			kept[why]++
		default:
			fused++
		}
		rm, err := runtime.Load(m, backend)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rm.Run(inputs)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i := range got {
			if err := same(got[i], outputs[i]); err != nil {
				t.Errorf("%s after the pass: output %d: %v", name, i, err)
			}
		}
	}
	var reasons []string
	for r, n := range kept {
		reasons = append(reasons, fmt.Sprintf("%d kept: %s", n, r))
	}
	sort.Strings(reasons)
	t.Logf("%d of %d attention graphs fused; %s", fused, len(dirs), strings.Join(reasons, "; "))
}

// dataSet reads a test data set's inputs (by graph input name) and
// expected outputs.
func dataSet(t *testing.T, f *onnx.File, dir string) (map[string]*ir.Tensor, []*ir.Tensor) {
	t.Helper()
	inits := map[string]bool{}
	for _, x := range f.Model.Graph.Initializers {
		inits[x.Name] = true
	}
	inputs := map[string]*ir.Tensor{}
	i := 0
	for _, in := range f.Model.Graph.Inputs {
		if inits[in.Name] {
			continue
		}
		p := filepath.Join(dir, fmt.Sprintf("input_%d.pb", i))
		i++
		if _, err := os.Stat(p); err != nil {
			break
		}
		x, err := onnx.ReadTensor(p)
		if err != nil {
			t.Fatal(err)
		}
		inputs[in.Name] = x
	}
	var outputs []*ir.Tensor
	for i := range f.Model.Graph.Outputs {
		x, err := onnx.ReadTensor(filepath.Join(dir, fmt.Sprintf("output_%d.pb", i)))
		if err != nil {
			t.Fatal(err)
		}
		outputs = append(outputs, x)
	}
	return inputs, outputs
}
