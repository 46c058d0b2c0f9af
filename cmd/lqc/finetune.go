package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
	"github.com/lqc-dev/lqc/train"
)

const finetuneUsage = `BASE -o ADAPTER.gguf (--teacher MODEL --data TEXT | --sft ROWS.jsonl | --data TEXT) [flags]

Trains a LoRA adapter on the frozen BASE (any model lqc loads; usually a quantized GGUF), which
llama.cpp, ollama and lqc run --lora then apply over the same BASE.
  residual:  --teacher MODEL --data TEXT   distil MODEL (the unquantized original) into BASE:
             mean KL(teacher ‖ BASE+adapter) over every position; --init svd by default
  SFT:       --sft ROWS.jsonl               alpaca rows (instruction, input, output) or chat rows
             (messages); loss on the response tokens only
  text:      --data TEXT without --teacher  next-token cross-entropy on the text
TEXT is cut into windows of --ctx−1 tokens, each after BOS; a .json file holding
{"batch": [[ids…], …]} gives pre-tokenized windows used in order.`

func runFinetune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("finetune", finetuneUsage, stderr)
	out := fs.StringP("output", "o", "", "the adapter to write, a llama.cpp LoRA GGUF (required)")
	peftOut := fs.String("peft-out", "", "also write the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors)")
	teacherPath := fs.String("teacher", "", "the model to distil from (HF folder, GGUF, ONNX): residual training")
	dataPath := fs.String("data", "", "training text, or a .json batch of token ids")
	sftPath := fs.String("sft", "", "supervised fine-tuning rows (JSONL: alpaca or chat)")
	initAdapter := fs.String("init-adapter", "", "start from this adapter (PEFT folder or GGUF): continue training it")
	initMethod := fs.String("init", "", "how a new adapter starts: svd (top-r SVD of teacher − base; default with --teacher) or zero (B = 0)")
	rank := fs.IntP("rank", "r", 8, "LoRA rank")
	alpha := fs.Float64("alpha", 0, "LoRA alpha: the update is scaled by alpha/rank (default: the rank)")
	targets := fs.StringSlice("targets", nil, "projections to adapt, GGUF (attn_q) or PEFT (q_proj) names (default: every projection)")
	lr := fs.Float64("lr", 1e-3, "peak learning rate (AdamW)")
	minLR := fs.Float64("min-lr", 0, "learning rate at the end of the cosine schedule")
	warmup := fs.Int("warmup", 0, "steps of linear warmup")
	schedule := fs.String("schedule", "cosine", "learning-rate schedule after warmup: cosine or constant")
	batch := fs.IntP("batch", "b", 4, "windows per micro-batch")
	accum := fs.Int("grad-accum", 1, "micro-batches per optimizer step")
	nctx := fs.IntP("ctx", "c", 0, "tokens per window (default: min(512, the model's context))")
	steps := fs.Int("steps", 0, "optimizer steps (default: --epochs over the data)")
	epochs := fs.Float64("epochs", 1, "passes over the data, when --steps is not given")
	clip := fs.Float64("clip", 1, "clip the global gradient norm to this (0: no clipping)")
	weightDecay := fs.Float64("weight-decay", 0, "AdamW's decoupled weight decay")
	beta1 := fs.Float64("beta1", 0.9, "AdamW β1")
	beta2 := fs.Float64("beta2", 0.999, "AdamW β2")
	eps := fs.Float64("adam-eps", 1e-8, "AdamW ε")
	seed := fs.Uint64("seed", 1, "seed of the initialization and of the data order")
	shuffle := fs.Bool("shuffle", true, "visit the windows in a new seeded order each epoch (a .json batch is always used in order)")
	evalData := fs.String("eval-data", "", "held-out text: mean KLD against the teacher (or perplexity) every --eval-every steps; the best step's adapter is written")
	evalEvery := fs.Int("eval-every", 0, "steps between evaluations (default: at the end)")
	ckDir := fs.String("checkpoint-dir", "", "write checkpoints here (and on SIGINT)")
	ckEvery := fs.Int("checkpoint-every", 50, "steps between checkpoints")
	resume := fs.Bool("resume", false, "continue the run in --checkpoint-dir")
	asJSON := fs.Bool("json", false, "one JSON object per step (and per evaluation) on stdout")
	quiet := fs.BoolP("quiet", "q", false, "no progress on stderr")
	threads := fs.IntP("threads", "t", runtime.GOMAXPROCS(0), "threads")
	flashAttn := fs.String("flash-attn", "on", "fused attention in training: on (backward from the saved log-sum-exp) or off")
	verbose := fs.BoolP("verbose", "v", false, "print the training passes and what they did")
	profile := profileFlag(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	stopProfile, err := profile()
	if err != nil {
		return err
	}
	defer stopProfile()
	basePath := pos[0]
	switch {
	case *out == "":
		return usageError{errors.New("missing -o ADAPTER.gguf")}
	case *sftPath != "" && (*dataPath != "" || *teacherPath != ""):
		return usageError{errors.New("--sft takes its data from the JSONL file: drop --data and --teacher")}
	case *sftPath == "" && *dataPath == "":
		return usageError{errors.New("no training data: give --data TEXT (with --teacher for residual training) or --sft ROWS.jsonl")}
	case *resume && *ckDir == "":
		return usageError{errors.New("--resume needs --checkpoint-dir")}
	case *flashAttn != "on" && *flashAttn != "off":
		return usageError{fmt.Errorf("--flash-attn %q: want on or off", *flashAttn)}
	case *schedule != "cosine" && *schedule != "constant":
		return usageError{fmt.Errorf("--schedule %q: want cosine or constant", *schedule)}
	case *batch <= 0 || *accum <= 0 || *rank <= 0:
		return usageError{errors.New("--batch, --grad-accum and --rank must be positive")}
	}
	// A typo in an output path should not cost a training run.
	for _, o := range []string{*out, *peftOut} {
		if err := checkWritable(o); err != nil {
			return err
		}
	}
	objective := passes.SFT
	if *teacherPath != "" {
		objective = passes.Distill
	}
	logf := func(format string, a ...any) {
		if !*quiet {
			fmt.Fprintf(stderr, format+"\n", a...)
		}
	}

	base, err := frontend.Load(basePath, frontend.Options{})
	if err != nil {
		return err
	}
	defer base.Close()
	if base.Vocab == nil {
		return fmt.Errorf("%s: the model has no vocabulary to tokenize the data with", basePath)
	}
	tok, err := tokenizer.New(base.Vocab)
	if err != nil {
		return fmt.Errorf("%s: %w", basePath, err)
	}
	fingerprint := train.Fingerprint(base)
	var teacher *ir.Model
	if objective == passes.Distill {
		if teacher, err = frontend.Load(*teacherPath, frontend.Options{}); err != nil {
			return err
		}
		defer teacher.Close()
		if err := train.CheckTeacher(base, teacher); err != nil {
			return err
		}
		pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}
		if err := pm.Run(teacher); err != nil {
			return fmt.Errorf("%s: %w", *teacherPath, err)
		}
	}
	window, err := windowSize(*nctx, fs.Changed("ctx"), base.Params.ContextLength, logf)
	if err != nil {
		return err
	}

	// The data.
	var data []train.Example
	switch {
	case *sftPath != "":
		var st train.SFTStats
		if data, st, err = train.LoadSFT(*sftPath, tok, window); err != nil {
			return err
		}
		logf("data: %s: %d rows, %d response tokens scored, %d cut at %d tokens", *sftPath, st.Rows, st.Scored, st.Truncated, window)
	case strings.HasSuffix(*dataPath, ".json"):
		if data, err = train.LoadBatchJSON(*dataPath, base.Params.VocabSize, window, objective == passes.SFT); err != nil {
			return err
		}
		*shuffle = false
		logf("data: %s: %d windows of token ids, in order", *dataPath, len(data))
	default:
		text, err := os.ReadFile(*dataPath)
		if err != nil {
			return err
		}
		ids := tok.Encode(string(text), false)
		if data, err = train.TextWindows(ids, base.Vocab.BOS, window, objective == passes.SFT); err != nil {
			return err
		}
		logf("data: %s: %d tokens in %d windows of up to %d", *dataPath, len(ids), len(data), window)
	}
	if len(data) < *batch {
		return fmt.Errorf("%s: the data makes %d windows, fewer than one batch of %d (lower --batch or --ctx, or give more data)", firstOf(*sftPath, *dataPath), len(data), *batch)
	}
	total := *steps
	if total <= 0 {
		total = int(math.Ceil(*epochs * float64(len(data)) / float64(*batch**accum)))
	}

	// The adapter it starts from.
	var ad *ir.Adapter
	info := train.RunInfo{Base: basePath, Fingerprint: fingerprint, Objective: objective.String(), Batch: *batch, GradAccum: *accum, Seed: *seed}
	if *initAdapter != "" {
		if ad, err = frontend.LoadAdapter(*initAdapter, base); err != nil {
			return err
		}
		defer ad.Close()
		for _, name := range ad.Names() {
			l := ad.LoRA[name]
			info.Targets = append(info.Targets, name)
			info.Rank, info.Alpha = int(l.Rank()), l.Scale*float64(l.Rank())
		}
		logf("adapter: %s (rank %d, %d weights)", *initAdapter, info.Rank, len(ad.LoRA))
	} else {
		if info.Targets, err = train.ResolveTargets(base, *targets); err != nil {
			return usageError{err}
		}
		info.Rank, info.Alpha = *rank, *alpha
		if !fs.Changed("alpha") {
			info.Alpha = float64(*rank)
		}
		method := *initMethod
		if method == "" {
			method = "zero"
			if teacher != nil {
				method = "svd"
			}
		}
		start := time.Now()
		if ad, err = train.NewAdapter(base, train.InitOptions{Method: method, Rank: *rank, Alpha: info.Alpha, Targets: info.Targets, Seed: *seed, Teacher: teacher}); err != nil {
			return err
		}
		logf("adapter: rank %d, alpha %g, %s init on %d weights (%.1fs)", *rank, info.Alpha, method, len(info.Targets), time.Since(start).Seconds())
	}

	backend := cpu.New(*threads)
	defer backend.Close()
	opt := train.EngineOptions{Objective: objective, Teacher: teacher, Backend: backend, FlashAttention: *flashAttn == "on"}
	if *verbose {
		opt.Trace = stderr
	}
	engine, err := train.NewEngine(base, ad, opt)
	if err != nil {
		return fmt.Errorf("%s: %w", basePath, err)
	}
	var nparams int
	for _, p := range engine.Params() {
		nparams += len(p.Value)
	}
	state := &train.State{Opt: train.NewAdamW(engine.Params(), *beta1, *beta2, *eps, *weightDecay)}
	if *resume {
		ck, err := train.LoadCheckpoint(*ckDir)
		if err != nil {
			return err
		}
		defer ck.Close()
		if err := ck.Check(info); err != nil {
			return err
		}
		if err := ck.Restore(engine, state); err != nil {
			return err
		}
		logf("resumed %s at step %d", ck.Path, state.Step)
	}
	if state.Step >= total {
		return fmt.Errorf("the run is already at step %d of %d: raise --steps to continue it", state.Step, total)
	}

	// Evaluation on held-out text, against the teacher when there is one.
	var ev *evaluator
	if *evalData != "" {
		if ev, err = newEvaluator(basePath, *evalData, window, teacher, tok, *threads); err != nil {
			return err
		}
		defer ev.close()
		if !*resume {
			r, err := ev.run(ctx, nil)
			if err != nil {
				return err
			}
			ev.baseline = r
			logf("eval: base without adapter: %s", r)
			emitJSON(*asJSON, stdout, map[string]any{"step": 0, "eval": r})
		}
	}
	logf("training: %s objective, %d trainable parameters, %d steps of %d×%d windows, lr %g (%s, warmup %d)",
		objective, nparams, total, *batch, *accum, *lr, *schedule, *warmup)

	enc := json.NewEncoder(stdout)
	started, firstStep := time.Now(), state.Step
	save := func() error {
		if *ckDir == "" {
			return nil
		}
		return train.SaveCheckpoint(*ckDir, info, engine, state, state.Step**batch**accum)
	}
	var best *train.AdapterTensors
	bestStep, bestScore := 0, math.Inf(1)
	cfg := train.Config{
		Steps: total, Batch: *batch, GradAccum: *accum, Clip: *clip,
		Schedule: train.Schedule{LR: *lr, MinLR: *minLR, Warmup: *warmup, Total: total, Cosine: *schedule == "cosine"},
		Order:    &train.Order{N: len(data), Shuffle: *shuffle, Seed: *seed},
		AfterStep: func(r train.StepResult) error {
			if *asJSON {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			if !*quiet {
				el := time.Since(started)
				eta := time.Duration(float64(el) / float64(r.Step-firstStep) * float64(total-r.Step)).Round(time.Second)
				fmt.Fprintf(stderr, "step %d/%d  loss %.5f  lr %.3g  |g| %.3g  %.0f tok/s  ETA %s\n", r.Step, total, r.Loss, r.LR, r.GradNorm, r.TokensPS, eta)
			}
			if *ckDir != "" && *ckEvery > 0 && r.Step%*ckEvery == 0 {
				if err := save(); err != nil {
					return err
				}
			}
			if ev != nil && (*evalEvery > 0 && r.Step%*evalEvery == 0 || r.Step == total) {
				vals := engine.Values()
				res, err := ev.run(ctx, vals)
				if err != nil {
					return err
				}
				logf("eval at step %d: %s", r.Step, res)
				emitJSON(*asJSON, stdout, map[string]any{"step": r.Step, "eval": res})
				if s := res.score(); s < bestScore {
					bestScore, bestStep = s, r.Step
					best = copyValues(vals)
				}
			}
			return nil
		},
	}
	err = engine.Train(ctx, data, cfg, state)
	if errors.Is(err, context.Canceled) {
		if *ckDir != "" {
			if serr := save(); serr != nil {
				return fmt.Errorf("interrupted, and the checkpoint could not be written: %w", serr)
			}
			fmt.Fprintf(stderr, "lqc finetune: interrupted at step %d; checkpoint in %s (continue with --resume)\n", state.Step, *ckDir)
		}
		return err
	}
	if err != nil {
		if *ckDir != "" {
			return fmt.Errorf("%w; the last checkpoint in %s is kept", err, *ckDir)
		}
		return err
	}
	if err := save(); err != nil {
		return err
	}
	final := engine.Values()
	if best != nil && bestStep != total {
		logf("writing the adapter of step %d, the best evaluation", bestStep)
		final = best
	}
	return writeAdapterOutputs(ctx, final, *out, *peftOut, basePath, *threads)
}

// windowSize is --ctx: by default min(512, the model's context), said when
// lowered; an explicit size beyond the model's context is an error.
func windowSize(n int, explicit bool, modelCtx int, logf func(string, ...any)) (int, error) {
	if explicit {
		if n < 2 {
			return 0, usageError{fmt.Errorf("--ctx %d: a window needs at least 2 tokens", n)}
		}
		if modelCtx > 0 && n > modelCtx {
			return 0, usageError{fmt.Errorf("--ctx %d exceeds the model's context of %d", n, modelCtx)}
		}
		return n, nil
	}
	n = 512
	if modelCtx > 0 && modelCtx < n {
		logf("note: windows of %d tokens, the model's context (default 512)", modelCtx)
		n = modelCtx
	}
	return n, nil
}

// checkWritable makes sure a file can be created beside path ("" passes).
func checkWritable(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".probe-*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func emitJSON(on bool, w io.Writer, v any) {
	if on {
		json.NewEncoder(w).Encode(v)
	}
}

func copyValues(at *train.AdapterTensors) *train.AdapterTensors {
	c := *at
	c.LoRA = map[string]*train.LoRAValues{}
	for n, l := range at.LoRA {
		v := *l
		v.A, v.B = append([]float32(nil), l.A...), append([]float32(nil), l.B...)
		c.LoRA[n] = &v
	}
	return &c
}

// writeAdapterOutputs writes the trained adapter as a GGUF LoRA adapter
// and, when asked, as a PEFT folder.
func writeAdapterOutputs(ctx context.Context, at *train.AdapterTensors, out, peftOut, base string, threads int) error {
	ad, err := at.Adapter(out)
	if err != nil {
		return err
	}
	if err := gguf.WriteAdapter(ctx, out, ad, quant.F32, gguf.WriteOptions{Threads: threads}); err != nil {
		return fmt.Errorf("%s: %w", out, err)
	}
	if peftOut != "" {
		if err := train.WritePEFT(peftOut, at, filepath.Base(base)); err != nil {
			return fmt.Errorf("%s: %w", peftOut, err)
		}
	}
	return nil
}

// evaluator measures an adapter on held-out text as lqc eval does: the
// base (its inference graph, with the adapter beside the weights) against
// the teacher, or its perplexity without one.
type evaluator struct {
	ir       *ir.Model
	model    *lqrt.Model
	teacher  *lqrt.Model
	backend  *cpu.Backend
	tokens   []int32
	ctx      int
	bos      int32
	baseline *evalResult
}

type evalResult struct {
	KLD       float64 `json:"kld_mean,omitempty"`
	Top1      float64 `json:"top1,omitempty"`
	PPL       float64 `json:"ppl"`
	Recovered float64 `json:"recovered,omitempty"` // share of the base's KLD the adapter removed
	teacher   bool
}

func (r *evalResult) String() string {
	if !r.teacher {
		return fmt.Sprintf("perplexity %.4f", r.PPL)
	}
	s := fmt.Sprintf("mean KLD %.6f, top-1 %.2f%%, perplexity %.4f", r.KLD, 100*r.Top1, r.PPL)
	if r.Recovered != 0 {
		s += fmt.Sprintf(", %.1f%% of the base's KLD recovered", 100*r.Recovered)
	}
	return s
}

// score is what "best" minimises.
func (r *evalResult) score() float64 {
	if r.teacher {
		return r.KLD
	}
	return r.PPL
}

func newEvaluator(basePath, dataPath string, ctx int, teacher *ir.Model, tok *tokenizer.Tokenizer, threads int) (*evaluator, error) {
	text, err := os.ReadFile(dataPath)
	if err != nil {
		return nil, err
	}
	m, err := frontend.Load(basePath, frontend.Options{})
	if err != nil {
		return nil, err
	}
	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}
	if err := pm.Run(m); err != nil {
		m.Close()
		return nil, err
	}
	b := cpu.New(threads)
	ev := &evaluator{ir: m, backend: b, ctx: ctx, bos: -1, tokens: tok.Encode(string(text), true)}
	if tok.AddsBOS() {
		ev.bos = tok.Vocab().BOS
	}
	if ev.model, err = lqrt.Load(m, b); err != nil {
		ev.close()
		return nil, err
	}
	if teacher != nil {
		if ev.teacher, err = lqrt.Load(teacher, b); err != nil {
			ev.close()
			return nil, err
		}
	}
	if len(ev.tokens) < ctx {
		ev.close()
		return nil, fmt.Errorf("%s: %d tokens, fewer than one evaluation chunk of %d", dataPath, len(ev.tokens), ctx)
	}
	return ev, nil
}

func (ev *evaluator) run(ctx context.Context, at *train.AdapterTensors) (*evalResult, error) {
	opt := lqrt.EvalOptions{Ctx: ev.ctx, BOS: ev.bos}
	if at != nil {
		ad, err := at.Adapter("training")
		if err != nil {
			return nil, err
		}
		ra, err := ev.model.LoadAdapter(ad)
		if err != nil {
			return nil, err
		}
		opt.Adapters = []lqrt.Applied{{Adapter: ra, Scale: 1}}
	}
	res, err := lqrt.Evaluate(ctx, ev.model, ev.teacher, ev.tokens, opt)
	if err != nil {
		return nil, err
	}
	r := &evalResult{PPL: res.PPL}
	if res.Ref != nil {
		r.teacher, r.KLD, r.Top1 = true, res.Ref.KLDMean, res.Ref.Top1
		if ev.baseline != nil && ev.baseline.KLD > 0 {
			r.Recovered = (ev.baseline.KLD - r.KLD) / ev.baseline.KLD
		}
	}
	return r, nil
}

func (ev *evaluator) close() {
	ev.backend.Close()
	ev.ir.Close()
}
