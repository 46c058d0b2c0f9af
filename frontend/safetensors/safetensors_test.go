package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// build makes a safetensors file from a raw header and data section.
func build(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestParseRejectsBadHeaders(t *testing.T) {
	data := make([]byte, 64)
	cases := map[string]struct {
		file []byte
		want string
	}{
		"too short":        {[]byte{1, 2, 3}, "truncated"},
		"header past end":  {append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), "runs past the end"},
		"huge header":      {binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds"},
		"not json":         {build("{nope", nil), "not valid JSON"},
		"unknown dtype":    {build(`{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}`, data), "unknown dtype"},
		"out of range":     {build(`{"a":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}`, data), "out of range"},
		"negative offset":  {build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, data), "out of range"},
		"size mismatch":    {build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, data), "needs 12 bytes"},
		"bf16 mismatch":    {build(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,4]}}`, data), "needs 8 bytes"},
		"negative dim":     {build(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, data), "negative dimension"},
		"absurd count":     {build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, data), "absurd"},
		"overlap":          {build(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}`, data), "overlap"},
		"offsets arity":    {build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, data), "2 numbers"},
		"bad metadata":     {build(`{"__metadata__":{"x":1}}`, nil), "__metadata__"},
		"entry not object": {build(`{"a":7}`, nil), "bad header entry"},
	}
	for name, c := range cases {
		if _, err := Parse(c.file); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
}

func writeTensors(t *testing.T, path string, names ...string) []*ir.Tensor {
	t.Helper()
	var ts []*ir.Tensor
	for i, n := range names {
		v := []float32{float32(i), 1.5, -2, 3.25, 4, 5, 6, 7}
		f, err := ir.FromF32(n, []int64{2, 4}, v)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if f, err = ir.Convert(f, quant.BF16); err != nil {
				t.Fatal(err)
			}
		}
		ts = append(ts, f)
	}
	if err := WriteFile(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return ts
}

func TestWriteOpenRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	want := writeTensors(t, path, "x", "y", "z")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if diff := cmp.Diff(map[string]string{"format": "pt"}, f.Metadata); diff != "" {
		t.Error(diff)
	}
	for i, info := range f.Tensors {
		got, err := f.Tensor(info)
		if err != nil {
			t.Fatal(err)
		}
		gv, _ := got.Float32s()
		wv, _ := want[i].Float32s()
		if got.Name != want[i].Name || got.Type != want[i].Type || !cmp.Equal(gv, wv) {
			t.Errorf("tensor %d: %v %v, want %v %v", i, got, gv, want[i], wv)
		}
	}
}

func TestShardedIndex(t *testing.T) {
	dir := t.TempDir()
	writeTensors(t, filepath.Join(dir, "model-00001-of-00002.safetensors"), "a", "b")
	writeTensors(t, filepath.Join(dir, "model-00002-of-00002.safetensors"), "c")
	index := map[string]any{"weight_map": map[string]string{
		"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
		"c": "model-00002-of-00002.safetensors"}}
	b, _ := json.Marshal(index)
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, s.Names()); diff != "" {
		t.Error(diff)
	}
	s.Close()

	index["weight_map"].(map[string]string)["d"] = "model-00002-of-00002.safetensors"
	b, _ = json.Marshal(index)
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644)
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), "tensor d is listed") {
		t.Errorf("index naming a missing tensor: err = %v", err)
	}
	index["weight_map"].(map[string]string)["d"] = "../elsewhere.safetensors"
	b, _ = json.Marshal(index)
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644)
	if _, err := OpenDir(dir); err == nil || !strings.Contains(err.Error(), "outside the folder") {
		t.Errorf("index escaping the folder: err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}`, make([]byte, 8)))
	f.Add(build(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[],"data_offsets":[8,10]}}`, make([]byte, 10)))
	f.Add(build(`{}`, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := Parse(data)
		if err != nil {
			return
		}
		for _, info := range sf.Tensors {
			if tt, err := sf.Tensor(info); err == nil {
				if _, err := tt.Bytes(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
