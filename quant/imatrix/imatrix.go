// Package imatrix reads, writes and computes importance matrices: for
// every weight matrix, the mean square of each input column's activation
// over calibration text. llama.cpp's quantizers weigh their error by it.
// Both of llama.cpp's file formats are supported: the legacy binary
// ".dat" file and the current GGUF one.
package imatrix

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/atomicfile"
	"github.com/lqc-dev/lqc/quant"
)

// Entry is one matrix's statistics. Its importance weights are
// Sums[j]/Count: in the GGUF format Sums is Σx² over the calibration
// tokens and Count their number; in the legacy format Sums holds the
// mean times the number of calls and Count that number. Keeping the pair
// as stored makes the weights exactly llama.cpp's.
type Entry struct {
	Sums  []float32
	Count float32
}

// Weights are the entry's per-column importance.
func (e *Entry) Weights() []float32 {
	w := make([]float32, len(e.Sums))
	for j, s := range e.Sums {
		w[j] = s / e.Count
	}
	return w
}

// Matrix is an importance matrix.
type Matrix struct {
	Entries    map[string]*Entry // by weight name ("blk.0.attn_q.weight")
	Datasets   []string          // calibration text file names
	ChunkCount int               // chunks of calibration text
	ChunkSize  int               // tokens per chunk
	Path       string            // the file it was read from
}

// Read reads an importance matrix in either format.
func Read(path string) (*Matrix, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// Parse reads an importance matrix held in data, in either format.
func Parse(data []byte) (*Matrix, error) {
	if len(data) >= 4 && string(data[:4]) == "GGUF" {
		return parseGGUF(data)
	}
	return parseLegacy(data)
}

func parseGGUF(data []byte) (*Matrix, error) {
	f, err := gguf.Parse(data)
	if err != nil {
		return nil, err
	}
	if t, _ := f.Metadata.String("general.type"); t != "imatrix" {
		return nil, fmt.Errorf("general.type is %q, not imatrix", t)
	}
	m := &Matrix{Entries: map[string]*Entry{}}
	if v, ok := f.Metadata.Get("imatrix.datasets"); ok {
		m.Datasets, _ = v.([]string)
	}
	if n, err := f.Metadata.Uint("imatrix.chunk_count"); err == nil {
		m.ChunkCount = int(n)
	}
	if n, err := f.Metadata.Uint("imatrix.chunk_size"); err == nil {
		m.ChunkSize = int(n)
	}
	sums, counts := map[string][]float32{}, map[string][]float32{}
	for i, ti := range f.Tensors {
		var name string
		target := sums
		switch {
		case strings.HasSuffix(ti.Name, ".in_sum2"):
			name = strings.TrimSuffix(ti.Name, ".in_sum2")
		case strings.HasSuffix(ti.Name, ".counts"):
			name, target = strings.TrimSuffix(ti.Name, ".counts"), counts
		default:
			return nil, fmt.Errorf("unexpected tensor %s", ti.Name)
		}
		if ti.Type != quant.F32 {
			return nil, fmt.Errorf("tensor %s is %s, not F32", ti.Name, ti.Type)
		}
		t, err := f.Tensor(i)
		if err != nil {
			return nil, err
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, err
		}
		target[name] = v
	}
	for name, s := range sums {
		c, ok := counts[name]
		if !ok {
			return nil, fmt.Errorf("%s has sums but no counts", name)
		}
		if len(c) != 1 {
			return nil, fmt.Errorf("%s has %d matrices (mixture of experts): not supported", name, len(c))
		}
		m.Entries[name] = &Entry{Sums: s, Count: c[0]}
	}
	return m, nil
}

// parseLegacy reads the .dat layout: int32 entry count; per entry an
// int32-prefixed name, int32 ncall, int32 nval and nval float32 values
// (mean × ncall); then int32 chunk count and an int32-prefixed dataset
// name.
func parseLegacy(b []byte) (*Matrix, error) {
	r := &reader{b: b}
	n := r.i32()
	if r.err != nil || n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("not an importance matrix (entry count %d)", n)
	}
	m := &Matrix{Entries: map[string]*Entry{}}
	for i := range n {
		name := r.str()
		ncall, nval := r.i32(), r.i32()
		if r.err != nil || nval < 0 || int64(nval)*4 > int64(len(b)) {
			return nil, fmt.Errorf("entry %d: truncated or corrupt", i)
		}
		e := &Entry{Sums: make([]float32, nval), Count: float32(ncall)}
		for j := range e.Sums {
			e.Sums[j] = math.Float32frombits(uint32(r.i32()))
		}
		if ncall <= 0 {
			e.Count = 1 // llama.cpp leaves such entries undivided
		}
		m.Entries[name] = e
	}
	if r.err != nil {
		return nil, fmt.Errorf("truncated: %w", r.err)
	}
	if r.off < len(b) {
		m.ChunkCount = int(r.i32())
		if ds := r.str(); r.err == nil {
			m.Datasets = []string{ds}
		}
	}
	return m, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) i32() int32 {
	if r.err != nil || r.off+4 > len(r.b) {
		r.err = fmt.Errorf("unexpected end of file")
		return 0
	}
	v := int32(binary.LittleEndian.Uint32(r.b[r.off:]))
	r.off += 4
	return v
}

func (r *reader) str() string {
	n := r.i32()
	if r.err != nil || n < 0 || r.off+int(n) > len(r.b) {
		r.err = fmt.Errorf("bad string length %d", n)
		return ""
	}
	s := string(r.b[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

// Names lists the entries in order.
func (m *Matrix) Names() []string {
	names := make([]string, 0, len(m.Entries))
	for n := range m.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Write writes m in the GGUF format, or the legacy one when path ends in
// ".dat".
func (m *Matrix) Write(path string) error {
	if strings.HasSuffix(path, ".dat") {
		return m.writeLegacy(path)
	}
	md := ir.Metadata{
		{Key: "general.type", Value: "imatrix"},
		{Key: "imatrix.datasets", Value: append([]string{}, m.Datasets...)},
		{Key: "imatrix.chunk_count", Value: uint32(m.ChunkCount)},
		{Key: "imatrix.chunk_size", Value: uint32(m.ChunkSize)},
	}
	var ts []*ir.Tensor
	for _, name := range m.Names() {
		e := m.Entries[name]
		s, err := ir.FromF32(name+".in_sum2", []int64{int64(len(e.Sums))}, e.Sums)
		if err != nil {
			return err
		}
		c, err := ir.FromF32(name+".counts", []int64{1}, []float32{e.Count})
		if err != nil {
			return err
		}
		ts = append(ts, s, c)
	}
	return gguf.WriteFile(context.Background(), path, md, ts, gguf.WriteOptions{})
}

// writeLegacy writes the .dat layout: values are mean × ncall, with ncall
// the chunk count.
func (m *Matrix) writeLegacy(path string) error {
	calls := float32(max(1, m.ChunkCount))
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Entries)))
	for _, name := range m.Names() {
		e := m.Entries[name]
		b = binary.LittleEndian.AppendUint32(b, uint32(len(name)))
		b = append(b, name...)
		b = binary.LittleEndian.AppendUint32(b, uint32(calls))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Sums)))
		for _, s := range e.Sums {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(s/e.Count*calls))
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(m.ChunkCount))
	ds := ""
	if len(m.Datasets) > 0 {
		ds = m.Datasets[0]
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ds)))
	b = append(b, ds...)
	return atomicfile.Write(path, func(w *bufio.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Check reports, for the weight matrices of a model, the ones the matrix
// covers with the wrong row length, and whether it covers any: an
// importance matrix made for another model must not quantize this one.
func (m *Matrix) Check(weights []*ir.Tensor) error {
	matched := 0
	for _, t := range weights {
		e, ok := m.Entries[t.Name]
		if !ok {
			continue
		}
		matched++
		if int64(len(e.Sums)) != t.RowLen() {
			return fmt.Errorf("%s: importance for %d columns, but %s has rows of %d: the matrix was made for another model", m.Path, len(e.Sums), t.Name, t.RowLen())
		}
	}
	if matched == 0 && len(m.Entries) > 0 {
		return fmt.Errorf("%s: none of its %d entries names a tensor of this model: it was made for another model", m.Path, len(m.Entries))
	}
	return nil
}

// Metadata is what llama-quantize records in a file quantized with m; a
// matrix computed on the fly has no file to name.
func (m *Matrix) Metadata() ir.Metadata {
	ds := ""
	if len(m.Datasets) > 0 {
		ds = m.Datasets[0]
	}
	var md ir.Metadata
	if m.Path != "" {
		md = append(md, ir.KV{Key: "quantize.imatrix.file", Value: filepath.Base(m.Path)})
	}
	return append(md,
		ir.KV{Key: "quantize.imatrix.dataset", Value: ds},
		ir.KV{Key: "quantize.imatrix.entries_count", Value: int32(len(m.Entries))},
		ir.KV{Key: "quantize.imatrix.chunks_count", Value: int32(m.ChunkCount)},
	)
}
