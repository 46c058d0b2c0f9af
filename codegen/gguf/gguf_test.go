package gguf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

func testTensors(t *testing.T) []*ir.Tensor {
	t.Helper()
	v := make([]float32, 64*3)
	for i := range v {
		v[i] = float32(i%17) - 8
	}
	a, err := ir.FromF32("a.weight", []int64{3, 64}, v)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ir.Convert(a, quant.Q4_0)
	if err != nil {
		t.Fatal(err)
	}
	q = q.WithName("q.weight")
	b, err := ir.FromF32("b", []int64{5}, []float32{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	return []*ir.Tensor{a, q, b}
}

// manyTensors are more tensors than the writer keeps in flight, several
// of them spanning many chunks, so that its window of chunks slides across
// tensor boundaries.
func manyTensors(t *testing.T) []*ir.Tensor {
	ts := testTensors(t)
	for i := range 20 {
		rows := int64(1 + i*i*500)
		ts = append(ts, ir.Computed(fmt.Sprintf("c%d", i), quant.Q8_0, []int64{rows, 64}, func(dst []float32, first, n int64) error {
			for j := range dst {
				dst[j] = float32((first*64+int64(j))%251) - 125
			}
			return nil
		}))
	}
	return ts
}

var testMetadata = ir.Metadata{
	{Key: "general.architecture", Value: "llama"},
	{Key: "u8", Value: uint8(7)}, {Key: "i8", Value: int8(-7)},
	{Key: "u16", Value: uint16(700)}, {Key: "i16", Value: int16(-700)},
	{Key: "u32", Value: uint32(70000)}, {Key: "i32", Value: int32(-70000)},
	{Key: "u64", Value: uint64(1 << 40)}, {Key: "i64", Value: int64(-1 << 40)},
	{Key: "f32", Value: float32(0.5)}, {Key: "f64", Value: 0.25},
	{Key: "bool", Value: true}, {Key: "str", Value: "héllo"},
	{Key: "strs", Value: []string{"a", "", "▁b"}},
	{Key: "f32s", Value: []float32{1, -2}}, {Key: "i32s", Value: []int32{1, 2, 6}},
	{Key: "bools", Value: []bool{true, false}},
	{Key: "nested", Value: []any{[]int32{1}, []string{"x"}}},
}

func writeTest(t *testing.T, ts []*ir.Tensor, opt WriteOptions) (string, []*ir.Tensor) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := WriteFile(context.Background(), path, testMetadata, ts, opt); err != nil {
		t.Fatal(err)
	}
	return path, ts
}

func TestRoundTrip(t *testing.T) {
	for _, align := range []int{0, 64} {
		path, ts := writeTest(t, manyTensors(t), WriteOptions{Alignment: align, Threads: 2})
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		want := append(ir.Metadata(nil), testMetadata...)
		if align != 0 {
			want = append(want, ir.KV{Key: "general.alignment", Value: uint32(align)})
		}
		if diff := cmp.Diff(want, f.Metadata); diff != "" {
			t.Errorf("metadata (-want +got):\n%s", diff)
		}
		if align != 0 && f.Alignment != uint64(align) {
			t.Errorf("alignment %d, want %d", f.Alignment, align)
		}
		for i, wt := range ts {
			ti := f.Tensors[i]
			if ti.Name != wt.Name || ti.Type != wt.Type || !cmp.Equal(ti.Shape(), wt.Shape) {
				t.Errorf("tensor %d: %s %v%v, want %v", i, ti.Name, ti.Type, ti.Shape(), wt)
			}
			if ti.Offset%f.Alignment != 0 {
				t.Errorf("tensor %s at unaligned offset %d", ti.Name, ti.Offset)
			}
			want, _ := wt.Bytes()
			if !bytes.Equal(f.TensorData(i), want) {
				t.Errorf("tensor %s data differs", ti.Name)
			}
		}
		f.Close()
	}
}

// failingSource fails after some rows, to check that a failed write
// leaves nothing behind.
type failingSource struct{}

func (s failingSource) ReadRows(dst []byte, first, n int64) error {
	if first+n > 3 {
		return errors.New("disk on fire")
	}
	return nil
}

func TestFailedWriteLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.gguf")
	bad := ir.NewTensor("bad", quant.F32, []int64{100000, 64}, failingSource{})
	err := WriteFile(context.Background(), path, testMetadata, append(testTensors(t), bad), WriteOptions{Threads: 2})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v, want the source's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteFile(ctx, path, testMetadata, testTensors(t), WriteOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: err = %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
	if err := WriteFile(context.Background(), filepath.Join(dir, "no", "such", "dir.gguf"), nil, nil, WriteOptions{}); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}

func TestParseRejectsBadFiles(t *testing.T) {
	path, _ := writeTest(t, testTensors(t), WriteOptions{})
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every truncation of a valid file that cuts into its tensor data
	// fails cleanly (the padding after the last tensor is not needed).
	gf, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	last := gf.Tensors[len(gf.Tensors)-1]
	end := int(gf.DataOffset + last.Offset + last.NumBytes())
	for n := 0; n < end; n++ {
		if _, err := Parse(good[:n]); err == nil {
			t.Fatalf("a file truncated to %d of %d bytes parsed", n, len(good))
		}
	}
	patch := func(off int, v uint64, size int) []byte {
		b := bytes.Clone(good)
		if size == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	cases := map[string]struct {
		data []byte
		want string
	}{
		"magic":          {patch(0, 0x12345678, 4), "not a GGUF file"},
		"version":        {patch(4, 99, 4), "unsupported GGUF version"},
		"tensor count":   {patch(8, 1<<60, 8), "more than the file can hold"},
		"metadata count": {patch(16, 1<<60, 8), "more than the file can hold"},
		"key length":     {patch(24, 1<<62, 8), "metadata entry 0"},
	}
	for name, c := range cases {
		_, err := Parse(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, align := range []int{0, 64} {
		ts := []*ir.Tensor{}
		v := []float32{1, 2, 3, 4, 5, 6, 7, 8}
		a, _ := ir.FromF32("a", []int64{2, 4}, v)
		ts = append(ts, a)
		var buf bytes.Buffer
		md := ir.Metadata{{Key: "k", Value: []string{"x", "y"}}, {Key: "n", Value: []any{[]int32{1}}}}
		if align != 0 {
			md = append(md, ir.KV{Key: "general.alignment", Value: uint32(align)})
		}
		if err := writeHeader(&buf, md, ts, uint64(max(align, DefaultAlignment))); err != nil {
			f.Fatal(err)
		}
		b, _ := a.Bytes()
		f.Add(append(buf.Bytes(), b...))
	}
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		gf, err := Parse(data)
		if err != nil {
			return
		}
		for i := range gf.Tensors {
			if _, err := gf.Tensor(i); err != nil {
				t.Fatalf("parsed file has a bad tensor: %v", err)
			}
			_ = gf.TensorData(i)
		}
	})
}
