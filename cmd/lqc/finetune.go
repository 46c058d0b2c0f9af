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
	"github.com/lqc-dev/lqc/plan"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/chat"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
	"github.com/lqc-dev/lqc/train"
	"github.com/lqc-dev/lqc/train/report"
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

// finetuneJob is lqc finetune's command line.
type finetuneJob struct {
	base, out, peftOut, teacherPath, dataPath, sftPath string
	initAdapter, initMethod, schedule, evalData, ckDir string
	flashAttn, quantType, baseOut, templateFile        string
	loftqIter                                          int
	rank, warmup, batch, accum, nctx, steps, evalEvery int
	ckEvery, threads, teacherSamples                   int
	alpha, lr, minLR, epochs, clip, weightDecay        float64
	beta1, beta2, eps                                  float64
	seed                                               uint64
	shuffle, resume, asJSON, quiet, verbose, alphaSet  bool
	ctxSet, recompute, recomputeSet                    bool
	mem, device                                        string
	targets                                            []string
	sweep                                              []int
	objective                                          passes.Objective
	// loftq is set by --init loftq: the source model it quantized (the
	// plain quantization is the baseline), the quantization, and the
	// adapter that goes with the new base.
	loftq *loftqResult
	// samples are the windows the teacher wrote (--teacher-samples), made
	// once for every rank of a sweep.
	samples []train.Example
	args    []string // as given, for the report
	stderr  io.Writer
}

func (o *finetuneJob) logf(format string, a ...any) {
	if !o.quiet {
		fmt.Fprintf(o.stderr, format+"\n", a...)
	}
}

func runFinetune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := &finetuneJob{stderr: stderr, args: args}
	fs := newFlags("finetune", finetuneUsage, stderr)
	fs.StringVarP(&o.out, "output", "o", "", "the adapter to write, a llama.cpp LoRA GGUF (required); with --sweep-rank, the report's folder")
	fs.StringVar(&o.peftOut, "peft-out", "", "also write the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors)")
	fs.StringVar(&o.teacherPath, "teacher", "", "the model to distil from (HF folder, GGUF, ONNX): residual training")
	fs.StringVar(&o.dataPath, "data", "", "training text, or a .json batch of token ids")
	fs.IntVar(&o.teacherSamples, "teacher-samples", 0, "residual training: add this many windows of text the teacher writes itself (sampled from BOS, seeded by --seed) to --data, so a small calibration text does not limit what the adapter learns")
	fs.StringVar(&o.sftPath, "sft", "", "supervised fine-tuning rows (JSONL: alpaca or chat)")
	fs.StringVar(&o.initAdapter, "init-adapter", "", "start from this adapter (PEFT folder or GGUF): continue training it")
	fs.StringVar(&o.initMethod, "init", "", "how a new adapter starts: svd (top-r SVD of teacher − base; default with --teacher), zero (B = 0), or loftq (BASE is the float model, quantized here with --quant into --base-out)")
	fs.StringVar(&o.quantType, "quant", "", "--init loftq: the quantization of the new base, as lqc convert --quant")
	fs.StringVar(&o.baseOut, "base-out", "", "--init loftq: where the new base is written (GGUF); the adapter is trained on it")
	fs.IntVar(&o.loftqIter, "loftq-iter", 5, "--init loftq: alternations of quantizing W − B·A and fitting B·A to what quantization left out")
	fs.IntVarP(&o.rank, "rank", "r", 8, "LoRA rank")
	fs.Float64Var(&o.alpha, "alpha", 0, "LoRA alpha: the update is scaled by alpha/rank (default: the rank)")
	fs.StringSliceVar(&o.targets, "targets", nil, "projections to adapt, GGUF (attn_q) or PEFT (q_proj) names (default: every projection)")
	fs.Float64Var(&o.lr, "lr", 1e-3, "peak learning rate (AdamW)")
	fs.Float64Var(&o.minLR, "min-lr", 0, "learning rate at the end of the cosine schedule")
	fs.IntVar(&o.warmup, "warmup", 0, "steps of linear warmup")
	fs.StringVar(&o.schedule, "schedule", "cosine", "learning-rate schedule after warmup: cosine or constant")
	fs.IntVarP(&o.batch, "batch", "b", 4, "windows per micro-batch")
	fs.IntVar(&o.accum, "grad-accum", 1, "micro-batches per optimizer step")
	fs.IntVarP(&o.nctx, "ctx", "c", 0, "tokens per window (default: min(512, the model's context))")
	fs.IntVar(&o.steps, "steps", 0, "optimizer steps (default: --epochs over the data)")
	fs.Float64Var(&o.epochs, "epochs", 1, "passes over the data, when --steps is not given")
	fs.Float64Var(&o.clip, "clip", 1, "clip the global gradient norm to this (0: no clipping)")
	fs.Float64Var(&o.weightDecay, "weight-decay", 0, "AdamW's decoupled weight decay")
	fs.Float64Var(&o.beta1, "beta1", 0.9, "AdamW β1")
	fs.Float64Var(&o.beta2, "beta2", 0.999, "AdamW β2")
	fs.Float64Var(&o.eps, "adam-eps", 1e-8, "AdamW ε")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the initialization and of the data order")
	fs.BoolVar(&o.shuffle, "shuffle", true, "visit the windows in a new seeded order each epoch (a .json batch is always used in order)")
	fs.StringVar(&o.evalData, "eval-data", "", "held-out text: mean KLD against the teacher (or perplexity) every --eval-every steps; the best step's adapter is written")
	fs.IntVar(&o.evalEvery, "eval-every", 0, "steps between evaluations (default: at the end)")
	fs.StringVar(&o.ckDir, "checkpoint-dir", "", "write checkpoints here (and on SIGINT)")
	fs.IntVar(&o.ckEvery, "checkpoint-every", 50, "steps between checkpoints")
	fs.BoolVar(&o.resume, "resume", false, "continue the run in --checkpoint-dir")
	fs.IntSliceVar(&o.sweep, "sweep-rank", nil, "train one adapter per rank (e.g. 2,4,8,16) and write a report (markdown, JSON, plots) into the -o folder; needs --eval-data")
	fs.BoolVar(&o.asJSON, "json", false, "one JSON object per step (and per evaluation) on stdout")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "no progress on stderr")
	fs.IntVarP(&o.threads, "threads", "t", runtime.GOMAXPROCS(0), "threads")
	fs.StringVar(&o.templateFile, "chat-template", "", "--sft: a Jinja chat template file for chat rows instead of the model's (without either, ### Role: headers)")
	fs.StringVar(&o.flashAttn, "flash-attn", "on", "fused attention in training: on (backward from the saved log-sum-exp) or off")
	fs.BoolVar(&o.recompute, "gradient-checkpointing", false, "recompute each layer's activations in the backward pass instead of keeping them: one layer's alive at a time, for about a third more compute (default: on when the run does not fit --mem without it)")
	addDeviceFlag(fs, &o.device)
	fs.StringVar(&o.mem, "mem", "", "the memory the run must fit in, as 15GiB (default: what the system has available); lqc plan's prediction decides gradient checkpointing, and a run that cannot fit is refused before it starts")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "print the training passes and what they did")
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
	train.LeanGC()
	o.base, o.alphaSet, o.ctxSet = pos[0], fs.Changed("alpha"), fs.Changed("ctx")
	o.recomputeSet = fs.Changed("gradient-checkpointing")
	switch {
	case o.out == "":
		return usageError{errors.New("missing -o ADAPTER.gguf")}
	case o.sftPath != "" && (o.dataPath != "" || o.teacherPath != ""):
		return usageError{errors.New("--sft takes its data from the JSONL file: drop --data and --teacher")}
	case o.sftPath == "" && o.dataPath == "":
		return usageError{errors.New("no training data: give --data TEXT (with --teacher for residual training) or --sft ROWS.jsonl")}
	case o.resume && o.ckDir == "":
		return usageError{errors.New("--resume needs --checkpoint-dir")}
	case o.flashAttn != "on" && o.flashAttn != "off":
		return usageError{fmt.Errorf("--flash-attn %q: want on or off", o.flashAttn)}
	case o.schedule != "cosine" && o.schedule != "constant":
		return usageError{fmt.Errorf("--schedule %q: want cosine or constant", o.schedule)}
	case o.batch <= 0 || o.accum <= 0 || o.rank <= 0:
		return usageError{errors.New("--batch, --grad-accum and --rank must be positive")}
	case len(o.sweep) > 0 && (o.evalData == "" || o.resume || o.initAdapter != "" || o.ckDir != "" || o.peftOut != ""):
		return usageError{errors.New("--sweep-rank needs --eval-data, and trains new adapters: no --resume, --init-adapter, --checkpoint-dir or --peft-out")}
	case o.initMethod == "loftq" && (o.quantType == "" || o.baseOut == ""):
		return usageError{errors.New("--init loftq quantizes BASE itself: give --quant TYPE and --base-out FILE.gguf")}
	case o.initMethod == "loftq" && (o.resume || o.initAdapter != "" || len(o.sweep) > 0):
		return usageError{errors.New("--init loftq starts a new base and adapter: no --resume (continue with the --base-out file as BASE), --init-adapter or --sweep-rank")}
	case o.initMethod != "loftq" && (o.quantType != "" || o.baseOut != ""):
		return usageError{errors.New("--quant and --base-out go with --init loftq")}
	case o.teacherSamples < 0 || (o.teacherSamples > 0 && (o.teacherPath == "" && o.initMethod != "loftq" || o.sftPath != "")):
		return usageError{errors.New("--teacher-samples adds the teacher's own text to residual training: it needs --teacher or --init loftq (and no --sft)")}
	case o.loftqIter <= 0:
		return usageError{fmt.Errorf("--loftq-iter %d: want at least 1", o.loftqIter)}
	}
	for _, p := range []*string{&o.base, &o.teacherPath, &o.initAdapter} {
		if *p, err = fromHub(ctx, *p, stderr, o.quiet); err != nil {
			return err
		}
	}
	if o.initMethod == "loftq" && o.teacherPath == "" && o.sftPath == "" {
		o.teacherPath = o.base // the float model is the one to distil
	}
	o.objective = passes.SFT
	if o.teacherPath != "" {
		o.objective = passes.Distill
	}
	if len(o.sweep) > 0 {
		return o.runSweep(ctx, stdout)
	}
	// A typo in an output path should not cost a training run.
	for _, path := range []string{o.out, o.peftOut, o.baseOut} {
		if err := checkWritable(path); err != nil {
			return err
		}
	}
	if o.initMethod == "loftq" {
		if err := o.runLoftQ(ctx); err != nil {
			return err
		}
	}
	_, err = o.train(ctx, o.rank, o.out, o.peftOut, stdout)
	return err
}

// sftTemplate is the chat template chat rows are written in: the
// --chat-template file, else the model's own; nil (### Role: headers)
// when there is neither.
// teacherWindows has the teacher write --teacher-samples windows once
// per job, with progress redrawn on a terminal and every few seconds
// otherwise.
func (o *finetuneJob) teacherWindows(ctx context.Context, teacher *ir.Model, window int) error {
	if o.samples != nil {
		return nil
	}
	b := cpu.New(o.threads)
	defer b.Close()
	start, last, tty := time.Now(), time.Now(), isTerminal(o.stderr)
	samples, err := train.TeacherSamples(ctx, teacher, b, o.teacherSamples, window, o.seed, func(done int) {
		if o.quiet || (!tty && time.Since(last) < 2*time.Second && done < o.teacherSamples) {
			return
		}
		last = time.Now()
		if tty {
			fmt.Fprintf(o.stderr, "\r\033[Kteacher samples: %d/%d", done, o.teacherSamples)
		} else {
			fmt.Fprintf(o.stderr, "teacher samples: %d/%d\n", done, o.teacherSamples)
		}
	})
	if err != nil {
		return err
	}
	if tty && !o.quiet {
		fmt.Fprint(o.stderr, "\r\033[K")
	}
	n := 0
	for _, ex := range samples {
		n += len(ex.Tokens)
	}
	o.logf("data: %d windows the teacher wrote (%d tokens, %.0f s)", len(samples), n, time.Since(start).Seconds())
	o.samples = samples
	return nil
}

func (o *finetuneJob) sftTemplate(v *ir.Vocab) (*chat.Template, error) {
	src, err := readTemplate(o.templateFile)
	if err != nil {
		return nil, err
	}
	if src == "" && v.ChatTemplate == "" {
		o.logf("data: chat rows under ### Role: headers (the model has no chat template; --chat-template FILE gives one)")
		return nil, nil
	}
	t, err := chat.ForVocab(v, src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", firstOf(o.templateFile, o.base), err)
	}
	return t, nil
}

// runSummary is what one training run measured, for the sweep's report.
type runSummary struct {
	Rank      int                `json:"rank"`
	Params    int                `json:"trainable_params"`
	Steps     []train.StepResult `json:"steps"`
	Evals     []evalPoint        `json:"evals"`
	Baseline  *evalResult        `json:"baseline"`
	Final     *evalResult        `json:"final"`
	BestStep  int                `json:"best_step"`
	Seconds   float64            `json:"seconds"`
	PeakRSS   int64              `json:"peak_rss_bytes"`
	Adapter   string             `json:"adapter"`
	TokensPS  float64            `json:"tokens_per_second"`
	Objective string             `json:"objective"`
}

type evalPoint struct {
	Step int         `json:"step"`
	Eval *evalResult `json:"eval"`
}

// planMemory predicts the run's memory as lqc plan does (on --device's
// backend, the base's weights as they are, the adapter of info, windows
// of window tokens) and refuses a run that cannot fit --mem. Unless
// --gradient-checkpointing was given, it turns recomputation on when
// the run fits only with it.
func (o *finetuneJob) planMemory(info train.RunInfo, window int, teacher *ir.Model) error {
	device := "cpu"
	if strings.HasPrefix(o.device, "cuda") {
		device = "cuda"
	}
	mem, err := planBudget(o.mem, device)
	if err != nil {
		return usageError{err}
	}
	// The CUDA backend trains in float32 for now, as the CPU does.
	opt := plan.Options{Mode: plan.LoRA, Device: device, Precision: "f32", Rank: info.Rank, Targets: info.Targets, Ctx: window, Batch: 1, Teacher: teacher, Mem: mem,
		Unfused: o.flashAttn != "on"}
	if o.recomputeSet {
		opt.Recompute = &o.recompute
	}
	p, err := plan.Make(func() (*ir.Model, error) { return frontend.Load(o.base, frontend.Options{}) }, opt)
	if err != nil {
		return fmt.Errorf("memory plan: %w", err)
	}
	if !p.Fits {
		return fmt.Errorf("the run needs %s and %s is available (%s); lqc plan %s shows the parts",
			plan.Bytes(p.TotalBytes), plan.Bytes(mem), strings.Join(p.Advice[1:], "; "), o.base)
	}
	if p.Recompute && !o.recomputeSet {
		o.logf("memory: %s planned; gradient checkpointing on, since without it the run needs more than the %s available", plan.Bytes(p.TotalBytes), plan.Bytes(mem))
	} else {
		o.logf("memory: %s planned of %s available", plan.Bytes(p.TotalBytes), plan.Bytes(mem))
	}
	o.recompute = p.Recompute
	return nil
}

// train runs one training of a rank-rank adapter (or of --init-adapter)
// and writes it to out (and peftOut).
func (o *finetuneJob) train(ctx context.Context, rank int, out, peftOut string, stdout io.Writer) (*runSummary, error) {
	started := time.Now()
	sum := &runSummary{Rank: rank, Adapter: out, Objective: o.objective.String()}
	base, err := frontend.Load(o.base, frontend.Options{})
	if err != nil {
		return nil, err
	}
	defer base.Close()
	if base.Vocab == nil {
		return nil, fmt.Errorf("%s: the model has no vocabulary to tokenize the data with", o.base)
	}
	tok, err := tokenizer.New(base.Vocab)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.base, err)
	}
	fingerprint := train.Fingerprint(base)
	var teacher *ir.Model
	if o.objective == passes.Distill {
		if teacher, err = frontend.Load(o.teacherPath, frontend.Options{}); err != nil {
			return nil, err
		}
		defer teacher.Close()
		if err := train.CheckTeacher(base, teacher); err != nil {
			return nil, err
		}
		pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}
		if err := pm.Run(teacher); err != nil {
			return nil, fmt.Errorf("%s: %w", o.teacherPath, err)
		}
	}
	window, err := windowSize(o.nctx, o.ctxSet, base.Params.ContextLength, o.logf)
	if err != nil {
		return nil, err
	}

	// The data.
	var data []train.Example
	shuffle := o.shuffle
	switch {
	case o.sftPath != "":
		var st train.SFTStats
		tmpl, err := o.sftTemplate(base.Vocab)
		if err != nil {
			return nil, err
		}
		if data, st, err = train.LoadSFT(o.sftPath, tok, window, tmpl); err != nil {
			return nil, err
		}
		o.logf("data: %s: %d rows, %d response tokens scored, %d cut at %d tokens", o.sftPath, st.Rows, st.Scored, st.Truncated, window)
	case strings.HasSuffix(o.dataPath, ".json"):
		if data, err = train.LoadBatchJSON(o.dataPath, base.Params.VocabSize, window, o.objective == passes.SFT); err != nil {
			return nil, err
		}
		shuffle = false
		o.logf("data: %s: %d windows of token ids, in order", o.dataPath, len(data))
	default:
		text, err := os.ReadFile(o.dataPath)
		if err != nil {
			return nil, err
		}
		ids := tok.Encode(string(text), false)
		if data, err = train.TextWindows(ids, base.Vocab.BOS, window, o.objective == passes.SFT); err != nil {
			return nil, err
		}
		o.logf("data: %s: %d tokens in %d windows of up to %d", o.dataPath, len(ids), len(data), window)
	}
	if o.teacherSamples > 0 {
		if err := o.teacherWindows(ctx, teacher, window); err != nil {
			return nil, err
		}
		data = append(data, o.samples...)
	}
	if len(data) < o.batch {
		return nil, fmt.Errorf("%s: the data makes %d windows, fewer than one batch of %d (lower --batch or --ctx, or give more data)", firstOf(o.sftPath, o.dataPath), len(data), o.batch)
	}
	total := o.steps
	if total <= 0 {
		total = int(math.Ceil(o.epochs * float64(len(data)) / float64(o.batch*o.accum)))
	}

	// The adapter it starts from.
	var ad *ir.Adapter
	info := train.RunInfo{Base: o.base, Fingerprint: fingerprint, Objective: o.objective.String(), Batch: o.batch, GradAccum: o.accum, Seed: o.seed, TeacherSamples: o.teacherSamples}
	if o.initAdapter != "" || o.loftq != nil {
		if o.loftq != nil {
			ad = o.loftq.adapter
		} else if ad, err = frontend.LoadAdapter(o.initAdapter, base); err != nil {
			return nil, err
		}
		defer ad.Close()
		for _, name := range ad.Names() {
			l := ad.LoRA[name]
			info.Targets = append(info.Targets, name)
			info.Rank, info.Alpha = int(l.Rank()), l.Scale*float64(l.Rank())
		}
		sum.Rank = info.Rank
		if err := o.planMemory(info, window, teacher); err != nil {
			return nil, err
		}
		if o.loftq == nil {
			o.logf("adapter: %s (rank %d, %d weights)", o.initAdapter, info.Rank, len(ad.LoRA))
		}
	} else {
		if info.Targets, err = train.ResolveTargets(base, o.targets); err != nil {
			return nil, usageError{err}
		}
		info.Rank, info.Alpha = rank, o.alpha
		if !o.alphaSet {
			info.Alpha = float64(rank)
		}
		method := o.initMethod
		if method == "" {
			method = "zero"
			if teacher != nil {
				method = "svd"
			}
		}
		if err := o.planMemory(info, window, teacher); err != nil {
			return nil, err
		}
		start := time.Now()
		if ad, err = train.NewAdapter(base, train.InitOptions{Method: method, Rank: rank, Alpha: info.Alpha, Targets: info.Targets, Seed: o.seed, Teacher: teacher}); err != nil {
			return nil, err
		}
		o.logf("adapter: rank %d, alpha %g, %s init on %d weights (%.1fs)", rank, info.Alpha, method, len(info.Targets), time.Since(start).Seconds())
	}

	backend, err := newBackend(o.device, o.threads, o.stderr)
	if err != nil {
		return nil, err
	}
	defer backend.Close()
	opt := train.EngineOptions{Objective: o.objective, Teacher: teacher, Backend: backend, FlashAttention: o.flashAttn == "on", Recompute: o.recompute}
	if o.verbose {
		opt.Trace = o.stderr
	}
	engine, err := train.NewEngine(base, ad, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.base, err)
	}
	for _, p := range engine.Params() {
		sum.Params += len(p.Value)
	}
	state := &train.State{Opt: train.NewAdamW(engine.Params(), o.beta1, o.beta2, o.eps, o.weightDecay)}
	if o.resume {
		ck, err := train.LoadCheckpoint(o.ckDir)
		if err != nil {
			return nil, err
		}
		defer ck.Close()
		if err := ck.Check(info); err != nil {
			return nil, err
		}
		if err := ck.Restore(engine, state); err != nil {
			return nil, err
		}
		o.logf("resumed %s at step %d", ck.Path, state.Step)
	}
	if state.Step >= total {
		return nil, fmt.Errorf("the run is already at step %d of %d: raise --steps to continue it", state.Step, total)
	}

	// Evaluation on held-out text, against the teacher when there is one.
	var ev *evaluator
	if o.evalData != "" {
		if ev, err = newEvaluator(o.base, o.evalData, window, teacher, tok, o.threads); err != nil {
			return nil, err
		}
		defer ev.close()
		r, err := ev.run(ctx, nil)
		if err != nil {
			return nil, err
		}
		ev.baseline, sum.Baseline = r, r
		o.logf("eval: base without adapter: %s", r)
		if o.loftq != nil {
			// What is recovered is measured against plain quantization,
			// not against the LoftQ base (which alone may be worse).
			if r, err = o.loftq.plainEval(o, window, teacher, tok); err != nil {
				return nil, err
			}
			ev.baseline, sum.Baseline = r, r
			o.logf("eval: plain %s without adapter (the baseline): %s", o.quantType, r)
		}
		if !o.resume {
			emitJSON(o.asJSON, stdout, map[string]any{"step": 0, "eval": r})
		}
	}
	o.logf("training: %s objective, %d trainable parameters, %d steps of %d×%d windows, lr %g (%s, warmup %d)",
		o.objective, sum.Params, total, o.batch, o.accum, o.lr, o.schedule, o.warmup)

	enc := json.NewEncoder(stdout)
	trainStart, firstStep := time.Now(), state.Step
	save := func() error {
		if o.ckDir == "" {
			return nil
		}
		return train.SaveCheckpoint(o.ckDir, info, engine, state, state.Step*o.batch*o.accum)
	}
	var best *train.AdapterTensors
	bestScore := math.Inf(1)
	var tokens int
	cfg := train.Config{
		Steps: total, Batch: o.batch, GradAccum: o.accum, Clip: o.clip,
		Schedule: train.Schedule{LR: o.lr, MinLR: o.minLR, Warmup: o.warmup, Total: total, Cosine: o.schedule == "cosine"},
		Order:    &train.Order{N: len(data), Shuffle: shuffle, Seed: o.seed},
		AfterStep: func(r train.StepResult) error {
			sum.Steps = append(sum.Steps, r)
			tokens += r.Tokens
			if o.asJSON {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
			el := time.Since(trainStart)
			eta := time.Duration(float64(el) / float64(r.Step-firstStep) * float64(total-r.Step)).Round(time.Second)
			o.logf("step %d/%d  loss %.5f  lr %.3g  |g| %.3g  %.0f tok/s  ETA %s", r.Step, total, r.Loss, r.LR, r.GradNorm, r.TokensPS, eta)
			if o.ckDir != "" && o.ckEvery > 0 && r.Step%o.ckEvery == 0 {
				if err := save(); err != nil {
					return err
				}
			}
			if ev != nil && (o.evalEvery > 0 && r.Step%o.evalEvery == 0 || r.Step == total) {
				vals := engine.Values()
				res, err := ev.run(ctx, vals)
				if err != nil {
					return err
				}
				o.logf("eval at step %d: %s", r.Step, res)
				emitJSON(o.asJSON, stdout, map[string]any{"step": r.Step, "eval": res})
				sum.Evals = append(sum.Evals, evalPoint{r.Step, res})
				if s := res.score(); s < bestScore {
					bestScore, sum.BestStep, sum.Final = s, r.Step, res
					best = copyValues(vals)
				}
			}
			return nil
		},
	}
	err = engine.Train(ctx, data, cfg, state)
	sum.TokensPS = float64(tokens) / time.Since(trainStart).Seconds()
	if errors.Is(err, context.Canceled) {
		if o.ckDir != "" {
			if serr := save(); serr != nil {
				return nil, fmt.Errorf("interrupted, and the checkpoint could not be written: %w", serr)
			}
			fmt.Fprintf(o.stderr, "lqc finetune: interrupted at step %d; checkpoint in %s (continue with --resume)\n", state.Step, o.ckDir)
		}
		return nil, err
	}
	if err != nil {
		if o.ckDir != "" {
			return nil, fmt.Errorf("%w; the last checkpoint in %s is kept", err, o.ckDir)
		}
		return nil, err
	}
	if err := save(); err != nil {
		return nil, err
	}
	final := engine.Values()
	if best != nil && sum.BestStep != total {
		o.logf("writing the adapter of step %d, the best evaluation", sum.BestStep)
		final = best
	}
	if err := writeAdapterOutputs(ctx, final, out, peftOut, o.base, o.threads); err != nil {
		return nil, err
	}
	sum.Seconds = time.Since(started).Seconds()
	return sum, nil
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
	m, err := frontend.Load(basePath, frontend.Options{})
	if err != nil {
		return nil, err
	}
	return evaluatorOf(m, dataPath, ctx, teacher, tok, threads)
}

// evaluatorOf measures m (which it closes) on the text in dataPath.
func evaluatorOf(m *ir.Model, dataPath string, ctx int, teacher *ir.Model, tok *tokenizer.Tokenizer, threads int) (*evaluator, error) {
	text, err := os.ReadFile(dataPath)
	if err != nil {
		m.Close()
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

// runSweep trains one adapter per rank of --sweep-rank with the same
// settings and writes them, with the report, into the -o folder.
func (o *finetuneJob) runSweep(ctx context.Context, stdout io.Writer) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := checkWritable(filepath.Join(o.out, "report.md")); err != nil {
		return err
	}
	title := filepath.Base(o.base) + " " + o.objective.String()
	s := &report.Sweep{Title: title, Objective: o.objective.String(), Command: "lqc finetune " + strings.Join(o.args, " ")}
	for _, rank := range o.sweep {
		o.logf("== rank %d", rank)
		train.ResetPeakRSS()
		sum, err := o.train(ctx, rank, filepath.Join(o.out, fmt.Sprintf("rank-%d.gguf", rank)), "", stdout)
		if err != nil {
			return fmt.Errorf("rank %d: %w", rank, err)
		}
		r := report.Run{Rank: rank, Params: sum.Params, Seconds: sum.Seconds, TokensPS: sum.TokensPS, PeakRSS: train.PeakRSS(), Adapter: filepath.Base(sum.Adapter)}
		for _, st := range sum.Steps {
			r.Train = append(r.Train, report.Point{Step: st.Step, Value: st.Loss})
		}
		for _, e := range sum.Evals {
			r.Eval = append(r.Eval, report.Point{Step: e.Step, Value: e.Eval.score()})
		}
		if f := sum.Final; f != nil {
			r.KLD, r.Top1, r.PPL, r.Recovered = f.KLD, f.Top1, f.PPL, f.Recovered
		}
		if sum.Baseline != nil {
			r.BaseKLD = sum.Baseline.KLD
		}
		s.Runs = append(s.Runs, r)
	}
	if err := report.Write(o.out, s); err != nil {
		return fmt.Errorf("%s: %w", o.out, err)
	}
	o.logf("report: %s", filepath.Join(o.out, "report.md"))
	return nil
}
