package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/onnx"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime/cpu"
)

// tensorRow is one line of the tensor table. Ne is the GGML order (row
// length first), as llama.cpp's tools print shapes.
type tensorRow struct {
	Name  string   `json:"name"`
	Type  string   `json:"type"`
	Ne    []uint64 `json:"ne"`
	Bytes uint64   `json:"bytes"`
	count uint64
}

type inspection struct {
	Path          string            `json:"path"`
	Format        string            `json:"format"`
	Architecture  string            `json:"architecture,omitempty"`
	Version       uint32            `json:"version,omitempty"`
	Alignment     uint64            `json:"alignment,omitempty"`
	Metadata      []metaEntry       `json:"metadata,omitempty"`
	Tensors       []tensorRow       `json:"tensors"`
	Parameters    uint64            `json:"parameters"`
	Bytes         uint64            `json:"bytes"`
	BitsPerWeight float64           `json:"bits_per_weight"`
	TypeCounts    map[string]int    `json:"type_counts"`
	Types         []typeShare       `json:"types"` // by type, largest share first
	HParams       *ir.HParams       `json:"hparams,omitempty"`
	Extra         map[string]string `json:"-"`
}

// typeShare is what one tensor type takes of a file, as llama.cpp users
// read it from the quantize log.
type typeShare struct {
	Type          string  `json:"type"`
	Tensors       int     `json:"tensors"`
	Parameters    uint64  `json:"parameters"`
	Bytes         uint64  `json:"bytes"`
	Share         float64 `json:"share"` // of the tensor data's bytes
	BitsPerWeight float64 `json:"bits_per_weight"`
}

type metaEntry struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

func runInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", "FILE|DIR [flags] | --devices\n\nFILE is a GGUF file, an ONNX export or a llama2.c checkpoint, DIR a Hugging Face folder.", stderr)
	asJSON := fs.Bool("json", false, "machine-readable output")
	showIR := fs.Bool("ir", false, "print the model's graph in lqc's IR")
	showPasses := fs.Bool("passes", false, "with --ir: run the passes the runtime runs, print what each changed, then the graph")
	tok := fs.String("tokenizer", "", tokenizerHelp)
	imported := fs.Int64("imported", 0, "with --ir on an ONNX export: the graph as imported at this sequence length, before lqc recognises its architecture")
	devices := fs.Bool("devices", false, "list the GPUs lqc can run on (memory, compute capability, driver version) instead of a model")
	positional := 1
	if slices.Contains(args, "--devices") {
		positional = 0
	}
	pos, err := parseFlags(fs, args, positional)
	if err != nil {
		return err
	}
	if *devices {
		return printDevices(stdout, *asJSON)
	}
	path := pos[0]

	if *showIR && *imported > 0 {
		b := cpu.New(0)
		defer b.Close()
		g, f, err := onnx.ImportExport(path, b, *imported)
		if err != nil {
			return err
		}
		defer f.Close()
		m := &ir.Model{Graph: g}
		if *showPasses {
			pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}, Trace: stdout}
			fmt.Fprintf(stdout, "pipeline: %s\n", pm.Names())
			if err := pm.Run(m); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		return g.Print(stdout)
	}
	if *imported > 0 {
		return usageError{errors.New("--imported needs --ir")}
	}

	if *showIR {
		m, err := frontend.Load(path, frontend.Options{Tokenizer: *tok})
		if err != nil {
			return err
		}
		defer m.Close()
		if *showPasses {
			pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}, Trace: stdout}
			fmt.Fprintf(stdout, "pipeline: %s\n", pm.Names())
			if err := pm.Run(m); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		return m.Graph.Print(stdout)
	}

	var in *inspection
	if st, err := os.Stat(path); err == nil && !st.IsDir() && frontend.IsGGUF(path) {
		f, err := gguf.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in = inspectGGUF(f)
	} else {
		m, err := frontend.Load(path, frontend.Options{Tokenizer: *tok})
		if err != nil {
			return err
		}
		defer m.Close()
		in = inspectModel(path, m)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(in)
	}
	return printInspection(stdout, in)
}

func inspectGGUF(f *gguf.File) *inspection {
	in := &inspection{Path: f.Path, Format: "gguf", Version: f.Version, Alignment: f.Alignment}
	in.Architecture, _ = f.Metadata.String("general.architecture")
	for _, kv := range f.Metadata {
		in.Metadata = append(in.Metadata, metaEntry{kv.Key, summarize(kv.Value)})
	}
	for _, ti := range f.Tensors {
		in.Tensors = append(in.Tensors, tensorRow{Name: ti.Name, Type: ti.Type.String(), Ne: ti.Ne, Bytes: ti.NumBytes(), count: ti.NumElements()})
	}
	in.totals()
	return in
}

func inspectModel(path string, m *ir.Model) *inspection {
	format := "llama2.c"
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		format = "huggingface"
	}
	in := &inspection{Path: path, Format: format, Architecture: m.Arch, HParams: &m.Params}
	for _, t := range m.Weights() {
		ne := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			ne[len(t.Shape)-1-i] = uint64(d)
		}
		in.Tensors = append(in.Tensors, tensorRow{Name: t.Name, Type: t.Type.String(), Ne: ne, Bytes: uint64(t.NumBytes()), count: uint64(t.NumElements())})
	}
	in.totals()
	return in
}

func (in *inspection) totals() {
	in.TypeCounts = map[string]int{}
	for _, t := range in.Tensors {
		in.Parameters += t.count
		in.Bytes += t.Bytes
		in.TypeCounts[t.Type]++
	}
	if in.Parameters > 0 {
		in.BitsPerWeight = float64(in.Bytes) * 8 / float64(in.Parameters)
	}
	by := map[string]*typeShare{}
	for _, t := range in.Tensors {
		ts := by[t.Type]
		if ts == nil {
			ts = &typeShare{Type: t.Type}
			by[t.Type] = ts
		}
		ts.Tensors++
		ts.Parameters += t.count
		ts.Bytes += t.Bytes
	}
	for _, ts := range by {
		if in.Bytes > 0 {
			ts.Share = float64(ts.Bytes) / float64(in.Bytes)
		}
		if ts.Parameters > 0 {
			ts.BitsPerWeight = float64(ts.Bytes) * 8 / float64(ts.Parameters)
		}
		in.Types = append(in.Types, *ts)
	}
	sort.Slice(in.Types, func(i, j int) bool {
		a, b := in.Types[i], in.Types[j]
		return a.Bytes > b.Bytes || a.Bytes == b.Bytes && a.Type < b.Type
	})
}

// summarize shortens long arrays (vocabularies) to their length and first
// entries.
func summarize(v any) any {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice || rv.Len() <= 8 {
		return v
	}
	head := make([]any, 8)
	for i := range head {
		head[i] = rv.Index(i).Interface()
	}
	return map[string]any{"array_of": rv.Type().Elem().String(), "len": rv.Len(), "head": head}
}

func printInspection(w io.Writer, in *inspection) error {
	fmt.Fprintf(w, "%s: %s", in.Path, in.Format)
	if in.Version != 0 {
		fmt.Fprintf(w, " v%d, alignment %d", in.Version, in.Alignment)
	}
	if in.Architecture != "" {
		fmt.Fprintf(w, ", architecture %s", in.Architecture)
	}
	fmt.Fprintln(w)
	if in.HParams != nil {
		fmt.Fprintf(w, "hyper-parameters: %+v\n", *in.HParams)
	}
	if len(in.Metadata) > 0 {
		fmt.Fprintf(w, "\nmetadata (%d keys):\n", len(in.Metadata))
		for _, kv := range in.Metadata {
			fmt.Fprintf(w, "  %-40s %s\n", kv.Key, formatValue(kv.Value))
		}
	}
	fmt.Fprintf(w, "\ntensors (%d):\n", len(in.Tensors))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "name\ttype\tne\tbytes\t")
	for _, t := range in.Tensors {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t\n", t.Name, t.Type, t.Ne, t.Bytes)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	types := make([]string, 0, len(in.TypeCounts))
	for t, n := range in.TypeCounts {
		types = append(types, fmt.Sprintf("%s×%d", t, n))
	}
	sort.Strings(types)
	fmt.Fprintf(w, "\n%d parameters, %.2f MB, %.3f bits per weight (%s)\n",
		in.Parameters, float64(in.Bytes)/1e6, in.BitsPerWeight, strings.Join(types, ", "))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type	tensors	parameters	MB	share	bits/weight\t")
	for _, ts := range in.Types {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.1f%%\t%.2f\t\n", ts.Type, ts.Tensors, ts.Parameters, float64(ts.Bytes)/1e6, 100*ts.Share, ts.BitsPerWeight)
	}
	return tw.Flush()
}

func formatValue(v any) string {
	if m, ok := v.(map[string]any); ok {
		return fmt.Sprintf("[%v × %v] %v …", m["len"], m["array_of"], m["head"])
	}
	if s, ok := v.(string); ok {
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}
