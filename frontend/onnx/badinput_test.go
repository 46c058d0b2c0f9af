package onnx

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

var testBackend = cpu.New(1)

// importFile writes data as a model file in dir and imports it.
func importFile(t *testing.T, dir string, data []byte) (string, error) {
	t.Helper()
	p := filepath.Join(dir, "model.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		return p, err
	}
	defer f.Close()
	g, err := Import(f, Options{Backend: testBackend, MaxConstBytes: 1 << 20})
	if err == nil {
		for _, w := range g.Weights {
			if _, err := w.Weight.Bytes(); err != nil {
				return p, err
			}
		}
	}
	return p, err
}

var (
	x23 = valueInfo("x", 1, 2, 3)
	y23 = valueInfo("y", 1, 2, 3)
)

// TestBadInput: each malformed model fails with one line that names the
// file and the problem.
func TestBadInput(t *testing.T) {
	real, err := os.ReadFile(testmodels.Shared(t, "models", "stories260K", "onnx", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.bin")
	if err := os.WriteFile(secret, make([]byte, 24), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		model []byte
		setup func(dir string)
		want  string
	}{
		{"truncated", real[:len(real)/2], nil, "truncated"},
		{"truncated header", real[:7], nil, "truncated"},
		{"not onnx", []byte("GGUF\x03\x00\x00\x00 this is not a protobuf"), nil, ""},
		{"empty", nil, nil, "no graph"},
		{"cycle", model([]pb{
			node("Add", "a", []string{"x", "b_out"}, []string{"a_out"}),
			node("Relu", "b", []string{"a_out"}, []string{"b_out"}),
		}, nil, []pb{x23}, []pb{valueInfo("b_out", 1, 2, 3)}), nil, "input b_out is not defined before use"},
		{"dangling input", model([]pb{node("Add", "a", []string{"x", "nowhere"}, []string{"y"})}, nil, []pb{x23}, []pb{y23}), nil, "input nowhere is not defined"},
		{"defined twice", model([]pb{
			node("Relu", "a", []string{"x"}, []string{"y"}),
			node("Neg", "b", []string{"x"}, []string{"y"}),
		}, nil, []pb{x23}, []pb{y23}), nil, "value y is defined twice"},
		{"shape contradiction", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{floatTensor("w", []int64{4}, 1, 2, 3, 4)}, []pb{x23}, []pb{y23}), nil, "node a (Add)"},
		{"unsupported op", model([]pb{node("Frobnicate", "f", []string{"x"}, []string{"y"})}, nil, []pb{x23}, []pb{y23}), nil, "op Frobnicate (opset 21) is not supported"},
		{"output never computed", model(nil, nil, []pb{x23}, []pb{y23}), nil, "output y is never computed"},
		{"huge constant", model([]pb{
			node("ConstantOfShape", "c", []string{"shape"}, []string{"y"}),
		}, []pb{int64Tensor("shape", 1<<20, 1<<20)}, nil, []pb{valueInfo("y", 1, -1, -1)}), nil, "larger than"},
		{"negative shape", model([]pb{
			node("ConstantOfShape", "c", []string{"shape"}, []string{"y"}),
		}, []pb{int64Tensor("shape", -4, 2)}, nil, []pb{valueInfo("y", 1, -1, -1)}), nil, "negative dimension"},
		{"bad reshape", model([]pb{node("Reshape", "r", []string{"x", "shape"}, []string{"y"})},
			[]pb{int64Tensor("shape", 5, 7)}, []pb{x23}, []pb{y23}), nil, "cannot reshape"},
		{"raw data too short", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{floatTensor("w", []int64{2, 3}, 1, 2)}, []pb{x23}, []pb{y23}), nil, "needs 24 bytes"},
		{"external escapes the folder", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, "../"+filepath.Base(outside)+"/secret.bin", -1, -1)}, []pb{x23}, []pb{y23}), nil, "leaves the model's folder"},
		{"external absolute", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, secret, -1, -1)}, []pb{x23}, []pb{y23}), nil, "absolute"},
		{"external symlink out", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, "link.bin", -1, -1)}, []pb{x23}, []pb{y23}),
			func(dir string) { os.Symlink(secret, filepath.Join(dir, "link.bin")) }, "outside the model's folder"},
		{"external past the end", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, "data.bin", 16, 24)}, []pb{x23}, []pb{y23}),
			func(dir string) { os.WriteFile(filepath.Join(dir, "data.bin"), make([]byte, 24), 0o644) }, "runs past the file"},
		{"external length overflows", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, "data.bin", 16, math.MaxInt64)}, []pb{x23}, []pb{y23}),
			func(dir string) { os.WriteFile(filepath.Join(dir, "data.bin"), make([]byte, 24), 0o644) }, "runs past the file"},
		{"external missing", model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
			[]pb{externalTensor("w", []int64{2, 3}, "none.bin", -1, -1)}, []pb{x23}, []pb{y23}), nil, "none.bin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.setup != nil {
				c.setup(dir)
			}
			p, err := importFile(t, dir, c.model)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, p) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q: want one line naming %s and saying %q", msg, p, c.want)
			}
		})
	}
}

// int64Tensor is an INT64 vector initializer (packed int64_data).
func int64Tensor(name string, v ...int64) pb {
	t := pb(nil).varint(1, int64(len(v))).varint(2, 7).str(8, name)
	var packed []byte
	for _, x := range v {
		packed = protowire.AppendVarint(packed, uint64(x))
	}
	return t.msg(7, packed)
}

// TestLazyFolding: a transpose, a float cast and a reshape of an
// initializer fold into lazy tensors over it (no node, no copy made at
// import) with the values the ops give.
func TestLazyFolding(t *testing.T) {
	data := model([]pb{
		node("Transpose", "t", []string{"w"}, []string{"wt"}, intsAttr("perm", 1, 0)),
		node("Cast", "c", []string{"wt"}, []string{"wh"}, pb(nil).str(1, "to").varint(3, 10).varint(20, AttrInt)),
		node("Reshape", "r", []string{"wh", "shape"}, []string{"y"}),
	}, []pb{floatTensor("w", []int64{2, 3}, 1, 2, 3, 4, 5, 6), int64Tensor("shape", 6)}, nil, []pb{valueInfo("y", 10, 6)})
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	g, err := Import(f, Options{Backend: testBackend})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Nodes) != 0 || len(g.Outputs) != 1 || g.Outputs[0].Weight == nil {
		t.Fatalf("not folded: %d nodes", len(g.Nodes))
	}
	w := g.Outputs[0].Weight
	if _, mapped := w.Source().(interface{ Bytes() []byte }); mapped {
		t.Errorf("the folded constant was materialised")
	}
	got, err := w.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{1, 4, 2, 5, 3, 6}; w.Type.String() != "F16" || fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(w.Shape) != "[6]" {
		t.Errorf("folded to %v%v %v, want F16[6] %v", w.Type, w.Shape, got, want)
	}
}
