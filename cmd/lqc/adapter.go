package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
)

// adapterSpec is [NAME=]PATH[:WEIGHT], as --fuse-lora and --lora take
// it; the name (lqc serve's model id for it) defaults to the file's.
type adapterSpec struct {
	name   string
	path   string
	weight float64
}

func parseAdapterSpecs(specs []string) ([]adapterSpec, error) {
	var out []adapterSpec
	for _, s := range specs {
		spec := adapterSpec{path: s, weight: 1}
		if i := strings.LastIndex(s, ":"); i > 0 {
			if w, err := strconv.ParseFloat(s[i+1:], 64); err == nil {
				spec.path, spec.weight = s[:i], w
			}
		}
		if i := strings.Index(spec.path, "="); i > 0 && !strings.ContainsRune(spec.path[:i], '/') {
			spec.name, spec.path = spec.path[:i], spec.path[i+1:]
		}
		if spec.path == "" {
			return nil, usageError{fmt.Errorf("adapter %q: no path", s)}
		}
		if spec.name == "" {
			base := filepath.Base(filepath.Clean(spec.path))
			spec.name = strings.TrimSuffix(base, filepath.Ext(base))
		}
		out = append(out, spec)
	}
	return out, nil
}

// loadAdapters imports the adapters for base; close releases them.
func loadAdapters(specs []adapterSpec, base *ir.Model) (ads []passes.WeightedAdapter, close func(), err error) {
	close = func() {
		for _, a := range ads {
			a.Close()
		}
	}
	for _, s := range specs {
		a, err := frontend.LoadAdapter(s.path, base)
		if err != nil {
			close()
			return nil, nil, err
		}
		ads = append(ads, passes.WeightedAdapter{Adapter: a, Weight: s.weight})
	}
	return ads, close, nil
}

// convertAdapter writes the adapter at src, for the base model, as a
// llama.cpp LoRA adapter GGUF.
func convertAdapter(ctx context.Context, start time.Time, src, base, out, q string, quantSet bool, threads int, quiet bool, stderr io.Writer) error {
	if base == "" {
		return usageError{fmt.Errorf("%s is a LoRA adapter: give its base model with --base MODEL", src)}
	}
	typ := quant.F32 // exact by default: adapters are small
	if quantSet {
		ft, err := quant.ParseFileType(q)
		if err != nil {
			return usageError{err}
		}
		typ = ft.Base()
	}
	bm, err := frontend.Load(base, frontend.Options{})
	if err != nil {
		return err
	}
	defer bm.Close()
	a, err := frontend.LoadAdapter(src, bm)
	if err != nil {
		return err
	}
	defer a.Close()
	opt := gguf.WriteOptions{Threads: threads}
	var prog *progress
	if !quiet {
		prog = newProgress(stderr, filepath.Base(out))
		opt.Progress = prog.update
	}
	if err := gguf.WriteAdapter(ctx, out, a, typ, opt); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if prog != nil {
		prog.finish(out, start)
	}
	return nil
}
