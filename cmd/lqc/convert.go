package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/calib"
	"github.com/lqc-dev/lqc/quant/gptq"
	"github.com/lqc-dev/lqc/quant/imatrix"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	fs := newFlags("convert", "SRC -o OUT.gguf [flags]\n\nSRC is a Hugging Face folder, an ONNX export, a llama2.c checkpoint or a GGUF file; or a LoRA adapter (a PEFT\nfolder) with --base MODEL, written as a llama.cpp adapter GGUF.", stderr)
	out := fs.StringP("output", "o", "", "output GGUF file (required)")
	q := fs.String("quant", "f16", "quantization: "+joinNames(quant.FileTypeNames()))
	pure := fs.Bool("pure", false, "give every weight matrix the --quant type, without llama.cpp's per-tensor rules")
	imatFile := fs.String("imatrix", "", "importance matrix (llama.cpp .gguf or .dat) that weights the quantization error, as llama-quantize --imatrix")
	calibration := addCalibFlags(fs, "calib", "calib-")
	method := fs.String("method", "", "how weights are rounded: rtn, imatrix, awq, gptq or awq+gptq (default: imatrix with --imatrix or --calib, else rtn)")
	actOrder := fs.Bool("act-order", false, "gptq: round columns by decreasing importance")
	damp := fs.Float64("damp", 0.01, "gptq: damping added to the Hessian's diagonal, as a fraction of its mean")
	fuse := fs.StringArray("fuse-lora", nil, "merge a LoRA adapter (PEFT folder or GGUF adapter) into the weights, PATH or PATH:WEIGHT; repeatable")
	base := fs.String("base", "", "the base model of an adapter SRC")
	tok := fs.String("tokenizer", "", tokenizerHelp)
	threads := fs.IntP("threads", "t", runtime.GOMAXPROCS(0), "worker threads")
	var device string
	addDeviceFlag(fs, &device)
	showPasses := fs.Bool("passes", false, "print the pass pipeline and what each pass changed")
	verbose := fs.BoolP("verbose", "v", false, "--passes, and every tensor that falls back to another type on its own line")
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
	if pos[0], err = fromHub(ctx, pos[0], stderr, *quiet); err != nil {
		return err
	}
	if *base, err = fromHub(ctx, *base, stderr, *quiet); err != nil {
		return err
	}
	if frontend.IsAdapter(pos[0]) {
		if len(*fuse) > 0 || *imatFile != "" || calibration.data != "" {
			return usageError{fmt.Errorf("%s is an adapter: --fuse-lora, --imatrix and --calib apply to models", pos[0])}
		}
		return convertAdapter(ctx, start, pos[0], *base, *out, *q, fs.Changed("quant"), *threads, *quiet, stderr)
	}
	if *base != "" {
		return usageError{fmt.Errorf("--base is for converting an adapter; %s is a model (to merge an adapter, use --fuse-lora)", pos[0])}
	}
	fuseSpecs, err := parseAdapterSpecs(*fuse)
	if err != nil {
		return err
	}
	for i := range fuseSpecs {
		if fuseSpecs[i].path, err = fromHub(ctx, fuseSpecs[i].path, stderr, *quiet); err != nil {
			return err
		}
	}
	ft, err := quant.ParseFileType(*q)
	if err != nil {
		return usageError{err}
	}
	if *imatFile != "" && calibration.data != "" {
		return usageError{fmt.Errorf("--imatrix and --calib both give an importance matrix: pick one")}
	}
	m0, err := parseMethod(*method, *imatFile != "", calibration.data != "")
	if err != nil {
		return usageError{err}
	}
	if st, err := os.Stat(*out); err == nil && st.IsDir() {
		return fmt.Errorf("%s is a directory", *out)
	}

	var imat *imatrix.Matrix
	var stats *calib.Stats
	switch {
	case *imatFile != "":
		if imat, err = imatrix.Read(*imatFile); err != nil {
			return err
		}
	case calibration.data != "":
		// The inputs are measured on the unquantized source, loaded a
		// second time: the mapping is shared by the page cache.
		run := &runOptions{threads: *threads, device: device, tokenizer: *tok, flashAttn: "auto", fuse: fuseSpecs}
		if stats, err = calibration.compute(ctx, pos[0], run, stderr, !*quiet, m0.awq || m0.gptq); err != nil {
			return err
		}
	}

	m, err := frontend.Load(pos[0], frontend.Options{Tokenizer: *tok})
	if err != nil {
		return err
	}
	defer m.Close()

	if !*quiet {
		if a, err := arch.Lookup(m.Arch); err == nil {
			for _, c := range arch.LlamaCppCaveats(a, m.Params) {
				fmt.Fprintf(stderr, "note: %s\n", c)
			}
		}
	}
	adapters, closeAdapters, err := loadAdapters(fuseSpecs, m)
	if err != nil {
		return err
	}
	m.OnClose(func() error { closeAdapters(); return nil })
	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}}}
	if len(adapters) > 0 {
		pm.Passes = append(pm.Passes, passes.FuseLoRA{Adapters: adapters})
	}
	if m0.awq {
		pm.Passes = append(pm.Passes, passes.AWQ{FileType: ft, Pure: *pure, Calib: stats})
	}
	pm.Passes = append(pm.Passes, passes.Quantize{FileType: ft, Pure: *pure, Imatrix: imat, Calib: stats,
		GPTQ: m0.gptq, GPTQOptions: gptq.Options{ActOrder: *actOrder, Damp: *damp, Threads: *threads}, Method: m0.name,
		EachFallback: *verbose})
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
		prog.finish(*out, start)
	}
	return nil
}

// quantMethod is a parsed --method.
type quantMethod struct {
	name      string // as recorded in quantize.method; empty for llama.cpp's own methods
	awq, gptq bool
}

// parseMethod checks --method against the calibration given: rtn takes
// none, imatrix an importance matrix from either source, and the methods
// that need every input's Gram matrix a calibration text.
func parseMethod(method string, imatrixFile, calibText bool) (quantMethod, error) {
	if method == "" {
		method = "rtn"
		if imatrixFile || calibText {
			method = "imatrix"
		}
	}
	switch method {
	case "rtn":
		if imatrixFile || calibText {
			return quantMethod{}, fmt.Errorf("--method rtn uses no calibration: drop --imatrix/--calib")
		}
		return quantMethod{}, nil
	case "imatrix":
		if !imatrixFile && !calibText {
			return quantMethod{}, fmt.Errorf("--method imatrix needs --imatrix FILE or --calib TEXT")
		}
		return quantMethod{}, nil
	case "awq", "gptq", "awq+gptq":
		if !calibText {
			return quantMethod{}, fmt.Errorf("--method %s needs --calib TEXT (an importance matrix file holds too little)", method)
		}
		return quantMethod{name: method, awq: method != "gptq", gptq: method != "awq"}, nil
	}
	return quantMethod{}, fmt.Errorf("--method %q: want rtn, imatrix, awq, gptq or awq+gptq", method)
}
