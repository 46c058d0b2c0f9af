package imatrix_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant/imatrix"
	"github.com/lqc-dev/lqc/testmodels"
)

func read(t *testing.T, path string) *imatrix.Matrix {
	t.Helper()
	m, err := imatrix.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func weights(m *imatrix.Matrix) map[string][]float32 {
	w := map[string][]float32{}
	for name, e := range m.Entries {
		w[name] = e.Weights()
	}
	return w
}

// TestFormatsAgree reads llama.cpp's legacy and GGUF files of the same
// matrix: the weights a quantizer uses must agree bit for bit.
func TestFormatsAgree(t *testing.T) {
	dat := read(t, testmodels.Shared(t, "golden/quant/imatrix.dat"))
	gg := read(t, testmodels.Shared(t, "golden/quant/imatrix.gguf"))
	if len(dat.Entries) != 14 || dat.ChunkCount != 39 || gg.ChunkCount != 39 || gg.ChunkSize != 128 {
		t.Errorf("entries %d, chunks %d/%d, chunk size %d; want 14, 39, 128", len(dat.Entries), dat.ChunkCount, gg.ChunkCount, gg.ChunkSize)
	}
	want := []string{"imatrix-calib.txt"}
	if diff := cmp.Diff(want, dat.Datasets); diff != "" {
		t.Errorf(".dat datasets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, gg.Datasets); diff != "" {
		t.Errorf(".gguf datasets (-want +got):\n%s", diff)
	}
	if e := gg.Entries["blk.0.ffn_down.weight"]; e == nil || len(e.Sums) != 768 || e.Count != 4992 {
		t.Errorf("blk.0.ffn_down.weight entry: %+v", e)
	}
	if diff := cmp.Diff(weights(dat), weights(gg)); diff != "" {
		t.Errorf(".dat and .gguf weights differ (-dat +gguf):\n%s", diff)
	}
}

// TestWriteRoundTrip writes the golden matrix in both formats and reads
// it back.
func TestWriteRoundTrip(t *testing.T) {
	src := read(t, testmodels.Shared(t, "golden/quant/imatrix.gguf"))
	for _, name := range []string{"m.gguf", "m.dat"} {
		path := filepath.Join(t.TempDir(), name)
		if err := src.Write(path); err != nil {
			t.Fatal(err)
		}
		got := read(t, path)
		if got.ChunkCount != src.ChunkCount || !cmp.Equal(got.Datasets, src.Datasets) {
			t.Errorf("%s: chunks %d datasets %v", name, got.ChunkCount, got.Datasets)
		}
		// The legacy format stores mean × calls, which the reader divides
		// again: one rounding each way.
		ulps := uint32(0)
		if strings.HasSuffix(name, ".dat") {
			ulps = 1
		}
		want := weights(src)
		for n, w := range weights(got) {
			for j := range w {
				if d := int64(math.Float32bits(w[j])) - int64(math.Float32bits(want[n][j])); d > int64(ulps) || d < -int64(ulps) {
					t.Fatalf("%s: %s[%d] = %g, want %g", name, n, j, w[j], want[n][j])
				}
			}
		}
		if len(got.Entries) != len(want) {
			t.Errorf("%s: %d entries, want %d", name, len(got.Entries), len(want))
		}
	}
}

// TestWriteLayout: lqc's GGUF imatrix has the tensors (names, types,
// shapes, order aside) and metadata of the one llama.cpp's llama-imatrix
// wrote.
func TestWriteLayout(t *testing.T) {
	golden := testmodels.Shared(t, "golden/quant/imatrix.gguf")
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := read(t, golden).Write(path); err != nil {
		t.Fatal(err)
	}
	layout := func(p string) (map[string]string, map[string]string) {
		f, err := gguf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ts, md := map[string]string{}, map[string]string{}
		for _, ti := range f.Tensors {
			ts[ti.Name] = fmt.Sprint(ti.Type, ti.Shape())
		}
		for _, kv := range f.Metadata {
			if kv.Key != "general.alignment" {
				md[kv.Key] = fmt.Sprint(kv.Value)
			}
		}
		return ts, md
	}
	wantT, wantM := layout(golden)
	gotT, gotM := layout(path)
	if diff := cmp.Diff(wantT, gotT); diff != "" {
		t.Errorf("tensors (-llama.cpp +lqc):\n%s", diff)
	}
	if diff := cmp.Diff(wantM, gotM); diff != "" {
		t.Errorf("metadata (-llama.cpp +lqc):\n%s", diff)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	dat, err := os.ReadFile(testmodels.Shared(t, "golden/quant/imatrix.dat"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated.dat", dat[:len(dat)/2], "truncated"},
		{"empty.dat", nil, "not an importance matrix"},
		{"negative.dat", []byte{0xff, 0xff, 0xff, 0xff}, "not an importance matrix"},
	}
	for _, c := range cases {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, c.data, 0o644)
		if _, err := imatrix.Read(p); err == nil || !strings.Contains(err.Error(), c.name) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming the file and %q", c.name, err, c.want)
		}
	}
	// A model is a GGUF file, but not an importance matrix.
	model := testmodels.Shared(t, "golden/real/stories260K-Q8_0.gguf")
	if _, err := imatrix.Read(model); err == nil || !strings.Contains(err.Error(), "not imatrix") {
		t.Errorf("model read as imatrix: %v", err)
	}
}

// TestCheck: a matrix whose names or sizes do not fit the model is
// refused.
func TestCheck(t *testing.T) {
	mat := read(t, testmodels.Shared(t, "golden/quant/imatrix.gguf"))
	load := func(path string) []*ir.Tensor {
		m, err := frontend.Load(testmodels.Shared(t, path), frontend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m.Weights()
	}
	if err := mat.Check(load("golden/quant/input-f32.gguf")); err != nil {
		t.Errorf("the model it was made for: %v", err)
	}
	if err := mat.Check(load("golden/real/stories260K-f32.gguf")); err == nil || !strings.Contains(err.Error(), "another model") {
		t.Errorf("another model: %v", err)
	}
	other := &imatrix.Matrix{Path: "x.gguf", Entries: map[string]*imatrix.Entry{"model.layers.0.mlp.up_proj.weight": {Sums: []float32{1}, Count: 1}}}
	if err := other.Check(load("golden/quant/input-f32.gguf")); err == nil || !strings.Contains(err.Error(), "none of its 1 entries") {
		t.Errorf("no name matches: %v", err)
	}
}

// FuzzParse feeds the legacy and GGUF readers arbitrary bytes: they must
// return an error, never panic.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"golden/quant/imatrix.dat", "golden/quant/imatrix.gguf"} {
		if b, err := os.ReadFile(filepath.Join(testmodels.SharedDir(), p)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{1, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'c', 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 128, 63})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := imatrix.Parse(b); err == nil {
			for _, e := range m.Entries {
				e.Weights()
			}
		}
	})
}
