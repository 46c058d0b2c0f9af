package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/plan"
	"github.com/lqc-dev/lqc/runtime/cuda/libcuda"
	"github.com/lqc-dev/lqc/train"
)

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("plan", "MODEL [flags]\n\nThe memory MODEL needs to run (--mode infer) or train (lora, full) on a device, before anything\nis allocated, and whether it fits --mem. MODEL is anything lqc loads, or a Hugging Face folder\nwith only its config.json (plan before downloading).", stderr)
	mode := fs.String("mode", plan.LoRA, "infer (generation), lora (lqc finetune's adapter training) or full (every weight trained, for comparison)")
	q := fs.String("quant", "", "the weights' quantization, as lqc convert --quant (default: as the model stores them)")
	pure := fs.Bool("pure", false, "as lqc convert --pure: --quant for every matrix, without llama.cpp's per-tensor rules")
	precision := fs.String("precision", "", "training's activations and products: f32 (the CPU's), bf16 (the default for training on a GPU) or f16 (with loss scaling)")
	device := fs.String("device", "cpu", "cpu or cuda")
	memFlag := fs.String("mem", "", "the memory to fit in, as 15GiB, 16GB or bytes (default: the CPU's available memory, or GPU 0's)")
	rank := fs.IntP("rank", "r", 8, "LoRA rank (--mode lora)")
	targets := fs.StringSlice("targets", nil, "projections to adapt, as lqc finetune --targets (default: every projection)")
	nctx := fs.IntP("ctx", "c", 0, "tokens per window (training) or per session (inference) (default: min(512, the model's context))")
	batch := fs.IntP("batch", "b", 1, "sessions decoding together (--mode infer); training runs a batch's windows one after another")
	teacherPath := fs.String("teacher", "", "residual training: the model distilled from, as lqc finetune --teacher")
	recompute := fs.Bool("gradient-checkpointing", false, "plan with per-layer recomputation on (or off, =false); default: on only when the run does not fit without it")
	asJSON := fs.Bool("json", false, "machine-readable output")
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	path := pos[0]
	opt := plan.Options{Mode: *mode, Device: *device, Quant: strings.ToLower(*q), Pure: *pure, Precision: *precision,
		Rank: *rank, Targets: *targets, Ctx: *nctx, Batch: *batch}
	if fs.Changed("gradient-checkpointing") {
		opt.Recompute = recompute
	}
	if opt.Mem, err = planBudget(*memFlag, *device); err != nil {
		return usageError{err}
	}
	load := func() (*ir.Model, error) { return loadForPlan(path) }
	if *teacherPath != "" {
		t, err := frontend.Load(*teacherPath, frontend.Options{})
		if err != nil {
			return err
		}
		defer t.Close()
		if err := (&passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}).Run(t); err != nil {
			return fmt.Errorf("%s: %w", *teacherPath, err)
		}
		opt.Teacher = t
	}
	p, err := plan.Make(load, opt)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", path, err)}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(p); err != nil {
			return err
		}
		if !p.Fits {
			return notFit{p}
		}
		return nil
	}
	printPlan(stdout, p)
	if !p.Fits {
		return notFit{p}
	}
	return nil
}

// notFit makes lqc plan exit 1 after printing a plan that does not fit,
// so a script can gate on it.
type notFit struct{ p *plan.Plan }

func (e notFit) Error() string {
	return fmt.Sprintf("%s needed, %s available", plan.Bytes(e.p.TotalBytes), plan.Bytes(e.p.MemBytes))
}

// loadForPlan loads what lqc plan reads: the model, or the shapes its
// config.json implies when the folder holds no weights.
func loadForPlan(path string) (*ir.Model, error) {
	if plan.ConfigOnly(path) {
		return plan.ConfigModel(path)
	}
	return frontend.Load(path, frontend.Options{})
}

// planBudget is --mem, or the device's memory free now.
func planBudget(flag, device string) (int64, error) {
	if flag != "" {
		n, err := parseBytes(flag)
		if err != nil {
			return 0, fmt.Errorf("--mem %q: %w", flag, err)
		}
		return n, nil
	}
	if device == "cuda" {
		devs, err := libcuda.Devices()
		if err != nil || len(devs) == 0 {
			return 0, nil // plan without a budget
		}
		return devs[0].Memory, nil
	}
	return train.MemAvailable(), nil
}

// parseBytes reads 15GiB, 512MiB, 16GB (decimal), 15G (binary, as
// llama.cpp and free print it) or a number of bytes.
func parseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		scale  float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1}}
	num, scale := strings.TrimSpace(s), 1.0
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, scale = strings.TrimSpace(n), u.scale
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("want a size such as 15GiB, 16GB or 512MiB")
	}
	return int64(v * scale), nil
}

func printPlan(w io.Writer, p *plan.Plan) {
	fmt.Fprintf(w, "%s (%s): %s on %s, weights %s, %s, context %d", p.Model, p.Arch, p.Mode, p.Device, p.Quant, p.Precision, p.Ctx)
	if p.Mode == plan.Infer {
		fmt.Fprintf(w, ", %d session(s)", p.Batch)
	} else if p.Rank > 0 && p.Mode == plan.LoRA {
		fmt.Fprintf(w, ", rank %d", p.Rank)
	}
	fmt.Fprintln(w)
	row := func(what string, n int64, note string) {
		fmt.Fprintf(w, "  %-36s %11s  %s\n", what, plan.Bytes(n), note)
	}
	for _, t := range p.TypesBySize() {
		note := ""
		if p.Mode == plan.Full {
			note = "(not in the total: a full fine-tune trains copies)"
		}
		row("weights "+t, p.WeightsByType[t], note)
	}
	if p.TeacherBytes > 0 {
		row("teacher weights", p.TeacherBytes, "")
	}
	if p.UnreadBytes > 0 {
		row("embedding rows never read", -p.UnreadBytes, "mapped but never read: only the rows of the tokens met are")
	}
	if p.TrainableParams > 0 {
		row("trained values", p.ParamBytes, fmt.Sprintf("%d parameters", p.TrainableParams))
		if p.HostBytes > 0 {
			row("on the host", p.HostBytes, "the optimizer's copy, gradients and moments (not in the device's total)")
		} else {
			row("gradients", p.GradientBytes, "")
			row("AdamW moments", p.OptimizerBytes, "")
		}
		row("activations, all kept", p.ActivationsKeptBytes, mark(!p.Recompute))
		row("activations, recomputed per layer", p.ActivationsRecomputeBytes, mark(p.Recompute))
	} else {
		row("activations", p.ActivationBytes, "a prompt of the whole context at once")
		row("KV cache", p.KVCacheBytes, "")
	}
	row("of the activations: logits", p.LogitsBytes, "")
	if p.Device == "cuda" {
		row("CUDA context and kernels", p.OverheadBytes, "a typical figure, not measured")
	} else {
		row("runtime", p.OverheadBytes, "")
	}
	if p.HeadroomBytes > 0 {
		row("collector headroom", p.HeadroomBytes, "the heap grows by GOGC% before the garbage collector runs")
	}
	row("total", p.TotalBytes, "")
	switch {
	case p.MemBytes <= 0:
		fmt.Fprintln(w, "no budget to compare with (--mem)")
	case p.Fits:
		fmt.Fprintf(w, "fits in %s (%s to spare)", plan.Bytes(p.MemBytes), plan.Bytes(p.MemBytes-p.TotalBytes))
		if p.MaxCtx > 0 {
			fmt.Fprintf(w, "; the longest context that fits: %d", p.MaxCtx)
		}
		if p.MaxBatch > 0 {
			fmt.Fprintf(w, "; sessions at this context: %d", p.MaxBatch)
		}
		fmt.Fprintln(w)
	default:
		fmt.Fprintf(w, "does not fit in %s\n", plan.Bytes(p.MemBytes))
	}
	for _, a := range p.Advice {
		fmt.Fprintf(w, "- %s\n", a)
	}
}

func mark(chosen bool) string {
	if chosen {
		return "← planned"
	}
	return ""
}
