package onnx

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
)

// FuzzParse decodes and imports arbitrary bytes: errors are fine, panics
// and unbounded allocation are not. Seeds: small hand-made graphs and,
// where the shared fixtures are present, ONNX's conformance models.
func FuzzParse(f *testing.F) {
	f.Add(model([]pb{node("Add", "a", []string{"x", "w"}, []string{"y"})},
		[]pb{floatTensor("w", []int64{3}, 1, 2, 3)}, []pb{x23}, []pb{y23}))
	f.Add(model([]pb{
		node("Shape", "s", []string{"x"}, []string{"shape"}),
		node("ConstantOfShape", "c", []string{"shape"}, []string{"zeros"}),
		node("Reshape", "r", []string{"x", "target"}, []string{"flat"}),
		node("Concat", "k", []string{"flat", "flat"}, []string{"y"}, pb(nil).str(1, "axis").varint(3, 0).varint(20, AttrInt)),
	}, []pb{int64Tensor("target", -1)}, []pb{x23}, []pb{valueInfo("y", 1, 12)}))
	f.Add(model([]pb{node("Transpose", "t", []string{"x"}, []string{"y"}, intsAttr("perm", 1, 0))}, nil, []pb{x23}, []pb{valueInfo("y", 1, 3, 2)}))
	if dirs, err := filepath.Glob(filepath.Join(testmodels.SharedDir(), "onnx", "node", "test_*", "model.onnx")); err == nil {
		for i, p := range dirs {
			if i%8 != 0 { // a spread of the suite keeps the corpus small
				continue
			}
			if b, err := os.ReadFile(p); err == nil && len(b) < 4096 {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeModel(data)
		if err != nil {
			return
		}
		file := &File{Path: "fuzz.onnx", Model: m, dir: t.TempDir(), extData: map[string][]byte{}}
		g, err := Import(file, Options{Backend: testBackend, MaxConstBytes: 1 << 16})
		if err == nil {
			if err := g.Verify(); err != nil {
				t.Fatalf("imported graph does not verify: %v", err)
			}
		}
	})
}
