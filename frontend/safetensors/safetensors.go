// Package safetensors reads Hugging Face safetensors checkpoints: a
// little-endian u64 header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the data. Files are mapped, and every
// header field is checked against the file before any tensor is handed
// out.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"sort"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/mmap"
	"github.com/lqc-dev/lqc/quant"
)

// maxHeader bounds the JSON header (the reference implementation's limit).
const maxHeader = 100 << 20

// dtypes maps safetensors dtype names to element sizes and, for the
// floating types lqc converts, their GGML type.
var dtypes = map[string]struct {
	size int
	typ  quant.Type
	ok   bool // lqc can read it as weights
}{
	"F64": {8, quant.F64, false}, "F32": {4, quant.F32, true}, "F16": {2, quant.F16, true},
	"BF16": {2, quant.BF16, true}, "I64": {8, quant.I64, false}, "I32": {4, quant.I32, false},
	"I16": {2, quant.I16, false}, "I8": {1, quant.I8, false}, "U8": {1, 0, false},
	"BOOL": {1, 0, false}, "F8_E4M3": {1, 0, false}, "F8_E5M2": {1, 0, false},
}

// Info is one tensor's header entry.
type Info struct {
	Name  string
	DType string
	Shape []int64
	Begin int64 // data offsets, relative to the end of the header
	End   int64
}

// File is an open safetensors file.
type File struct {
	Path     string
	Tensors  []Info // in data order
	Metadata map[string]string
	data     []byte // the data section
	unmap    func() error
}

type headerEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// Open maps and validates a safetensors file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, unmap, err := mmap.Map(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sf, err := Parse(b)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sf.Path, sf.unmap = path, unmap
	return sf, nil
}

// Parse validates a whole safetensors file held in b.
func Parse(b []byte) (*File, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("truncated: %d bytes, too short for the header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > maxHeader {
		return nil, fmt.Errorf("header length %d exceeds the %d-byte limit", n, maxHeader)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("truncated: header length %d runs past the end of the file (%d bytes)", n, len(b))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &raw); err != nil {
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	sf := &File{data: b[8+n:]}
	dataLen := int64(len(sf.data))
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &sf.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ is not a string map: %w", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("tensor %s: bad header entry: %w", name, err)
		}
		info, err := checkEntry(name, e, dataLen)
		if err != nil {
			return nil, err
		}
		sf.Tensors = append(sf.Tensors, info)
	}
	sort.Slice(sf.Tensors, func(i, j int) bool {
		a, b := sf.Tensors[i], sf.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.Name < b.Name
	})
	for i := 1; i < len(sf.Tensors); i++ {
		prev, cur := sf.Tensors[i-1], sf.Tensors[i]
		if cur.Begin < prev.End {
			return nil, fmt.Errorf("tensors %s and %s overlap (bytes %d-%d and %d-%d)", prev.Name, cur.Name, prev.Begin, prev.End, cur.Begin, cur.End)
		}
	}
	return sf, nil
}

func checkEntry(name string, e headerEntry, dataLen int64) (Info, error) {
	dt, ok := dtypes[e.DType]
	if !ok {
		return Info{}, fmt.Errorf("tensor %s: unknown dtype %q", name, e.DType)
	}
	if len(e.DataOffsets) != 2 {
		return Info{}, fmt.Errorf("tensor %s: data_offsets must hold 2 numbers, has %d", name, len(e.DataOffsets))
	}
	begin, end := e.DataOffsets[0], e.DataOffsets[1]
	if begin < 0 || end < begin || end > dataLen {
		return Info{}, fmt.Errorf("tensor %s: data_offsets [%d, %d] out of range (data section is %d bytes)", name, begin, end, dataLen)
	}
	if len(e.Shape) > 8 {
		return Info{}, fmt.Errorf("tensor %s: %d dimensions is absurd", name, len(e.Shape))
	}
	count := uint64(1)
	for _, d := range e.Shape {
		if d < 0 {
			return Info{}, fmt.Errorf("tensor %s: negative dimension in shape %v", name, e.Shape)
		}
		hi, lo := bits.Mul64(count, uint64(d))
		if hi != 0 || lo > math.MaxInt64/8 {
			return Info{}, fmt.Errorf("tensor %s: shape %v has an absurd element count", name, e.Shape)
		}
		count = lo
	}
	if want := count * uint64(dt.size); want != uint64(end-begin) {
		return Info{}, fmt.Errorf("tensor %s: %s%v needs %d bytes, data_offsets give %d", name, e.DType, e.Shape, want, end-begin)
	}
	return Info{Name: name, DType: e.DType, Shape: e.Shape, Begin: begin, End: end}, nil
}

// Close unmaps the file.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap, f.data = nil, nil
	return err
}

// Tensor returns the named tensor as a lazy tensor over the mapping.
func (f *File) Tensor(info Info) (*ir.Tensor, error) {
	dt := dtypes[info.DType]
	if !dt.ok {
		return nil, fmt.Errorf("%s: tensor %s has dtype %s; lqc reads F32, F16 and BF16 weights", f.Path, info.Name, info.DType)
	}
	shape := info.Shape
	if len(shape) == 0 {
		shape = []int64{1} // a scalar
	}
	for _, d := range shape {
		if d == 0 {
			return nil, fmt.Errorf("%s: tensor %s is empty (shape %v)", f.Path, info.Name, info.Shape)
		}
	}
	b := f.data[info.Begin:info.End]
	t, err := ir.FromBytes(info.Name, dt.typ, shape, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	if f.unmap != nil { // only mapped pages may be dropped; heap memory must not be
		t.Source().(*ir.BytesSource).OnRelease = func() { mmap.Release(b) }
	}
	return t, nil
}

// Set is a checkpoint of one or more safetensors files (a sharded model
// lists its shards in model.safetensors.index.json).
type Set struct {
	Files  []*File
	byName map[string]struct {
		file *File
		info Info
	}
	order []string
}

// OpenDir opens the checkpoint in an HF folder: model.safetensors, or the
// shards its index names.
func OpenDir(dir string) (*Set, error) {
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); err == nil {
		return openIndex(dir, index)
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err != nil {
		return nil, fmt.Errorf("%s: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)", dir)
	}
	return OpenFiles(single)
}

func openIndex(dir, index string) (*Set, error) {
	data, err := os.ReadFile(index)
	if err != nil {
		return nil, err
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %w", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: weight_map is empty", index)
	}
	shards := map[string]bool{}
	var paths []string
	for name, shard := range idx.WeightMap {
		if shard == "" || filepath.Base(shard) != shard {
			return nil, fmt.Errorf("%s: tensor %s names shard %q outside the folder", index, name, shard)
		}
		if !shards[shard] {
			shards[shard] = true
			paths = append(paths, filepath.Join(dir, shard))
		}
	}
	sort.Strings(paths)
	s, err := OpenFiles(paths...)
	if err != nil {
		return nil, err
	}
	for name, shard := range idx.WeightMap {
		e, ok := s.byName[name]
		if !ok || filepath.Base(e.file.Path) != shard {
			s.Close()
			return nil, fmt.Errorf("%s: tensor %s is listed in %s but not found there", index, name, shard)
		}
	}
	return s, nil
}

// OpenFiles opens several safetensors files as one checkpoint.
func OpenFiles(paths ...string) (*Set, error) {
	s := &Set{byName: map[string]struct {
		file *File
		info Info
	}{}}
	for _, p := range paths {
		f, err := Open(p)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.Files = append(s.Files, f)
		for _, info := range f.Tensors {
			if prev, dup := s.byName[info.Name]; dup {
				s.Close()
				return nil, fmt.Errorf("tensor %s is in both %s and %s", info.Name, prev.file.Path, p)
			}
			s.byName[info.Name] = struct {
				file *File
				info Info
			}{f, info}
			s.order = append(s.order, info.Name)
		}
	}
	return s, nil
}

// Names lists the tensors in file and data order.
func (s *Set) Names() []string { return s.order }

// Tensor returns the named tensor.
func (s *Set) Tensor(name string) (*ir.Tensor, error) {
	e, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", name)
	}
	return e.file.Tensor(e.info)
}

// Close unmaps every file.
func (s *Set) Close() error {
	var first error
	for _, f := range s.Files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
