package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/imatrix"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("convert", "SRC -o OUT.gguf [flags]\n\nSRC is a Hugging Face folder, a llama2.c checkpoint or a GGUF file.", stderr)
	out := fs.StringP("output", "o", "", "output GGUF file (required)")
	q := fs.String("quant", "f16", "quantization: "+joinNames(quant.FileTypeNames()))
	pure := fs.Bool("pure", false, "give every weight matrix the --quant type, without llama.cpp's per-tensor rules")
	imatFile := fs.String("imatrix", "", "importance matrix (llama.cpp .gguf or .dat) that weights the quantization error, as llama-quantize --imatrix")
	calib := addCalibFlags(fs, "calib", "calib-")
	tok := fs.String("tokenizer", "", "tokenizer file of a llama2.c checkpoint (default: tokenizer.bin or tok*.bin beside it)")
	threads := fs.IntP("threads", "t", runtime.GOMAXPROCS(0), "worker threads")
	showPasses := fs.Bool("passes", false, "print the pass pipeline and what each pass changed")
	verbose := fs.BoolP("verbose", "v", false, "same as --passes")
	dumpIR := fs.Bool("dump-ir", false, "print the graph after every pass")
	quiet := fs.BoolP("quiet", "q", false, "no progress on stderr")
	profile := profileFlag(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	stop, err := profile()
	if err != nil {
		return err
	}
	defer stop()
	if *out == "" {
		fs.Usage()
		return usageError{fmt.Errorf("missing -o OUT.gguf")}
	}
	ft, err := quant.ParseFileType(*q)
	if err != nil {
		return usageError{err}
	}
	if *imatFile != "" && calib.data != "" {
		return usageError{fmt.Errorf("--imatrix and --calib both give an importance matrix: pick one")}
	}
	if st, err := os.Stat(*out); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", *out)
	}

	var imat *imatrix.Matrix
	switch {
	case *imatFile != "":
		if imat, err = imatrix.Read(*imatFile); err != nil {
			return err
		}
	case calib.data != "":
		// The importance is measured on the unquantized source, loaded a
		// second time: the mapping is shared by the page cache.
		run := &runOptions{threads: *threads, tokenizer: *tok, flashAttn: "auto"}
		if imat, err = calib.compute(ctx, pos[0], run, stderr, !*quiet); err != nil {
			return err
		}
	}

	m, err := frontend.Load(pos[0], frontend.Options{Tokenizer: *tok})
	if err != nil {
		return err
	}
	defer m.Close()

	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.Quantize{FileType: ft, Pure: *pure, Imatrix: imat}}}
	if *showPasses || *verbose {
		fmt.Fprintf(stderr, "pipeline: %s\n", pm.Names())
		pm.Trace = stderr
	} else if !*quiet {
		pm.OnNote = func(pass, note string) { fmt.Fprintf(stderr, "%s: %s\n", pass, note) }
	}
	if *dumpIR {
		pm.Dump = stdout
	}
	if err := pm.Run(m); err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}

	var prog *progress
	opt := gguf.WriteOptions{Threads: *threads}
	if !*quiet {
		prog = newProgress(stderr, filepath.Base(*out))
		opt.Progress = prog.update
	}
	if err := gguf.WriteModel(ctx, *out, m, opt); err != nil {
		return err
	}
	if prog != nil {
		prog.finish()
	}
	return nil
}
