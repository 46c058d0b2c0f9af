// Package plan predicts, before anything is allocated, the memory a model
// needs to run or train on a device: the weights at a quantization mix,
// the adapter with its gradients and AdamW moments, the activations at
// their peak with and without per-layer recomputation, the KV caches of
// inference, and whether it all fits a budget (and if not, the largest
// context that does, or the option to change).
//
// The activations are not estimated from a formula: the plan builds the
// graph the runtime would run (for training, the training graph from
// passes.Training with a shape-only adapter) and walks its schedule with
// ir.Graph.PeakLiveWith, freeing each value after its last reader as the
// executor does. A model folder that holds only config.json is enough:
// its tensors are made from the architecture's canonical set, shapes
// without data.
package plan

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/serve"
	"github.com/lqc-dev/lqc/train"
)

// Modes.
const (
	Infer = "infer" // generation: weights, KV caches, one chunk's activations
	LoRA  = "lora"  // adapter training on the frozen weights (lqc finetune)
	Full  = "full"  // every weight trained (for comparison: lqc trains adapters)
)

// Options describe the run to plan.
type Options struct {
	Mode   string
	Device string // "cpu" or "cuda"
	// Quant is lqc convert's --quant for the weights (Pure its --pure);
	// empty keeps the types the model has.
	Quant string
	Pure  bool
	// Precision of activations and matrix products: "f32" (the CPU's),
	// "bf16" or "f16" (a GPU's mixed precision; adapter and optimizer
	// stay float32).
	Precision string
	Rank      int
	Targets   []string // as lqc finetune --targets; empty: every projection
	Ctx       int      // tokens per window (training) or per session (inference); 0: min(512, the model's context)
	// Batch is the sessions decoding together (inference). Training runs
	// the windows of a batch one after another, so it does not change the
	// memory of a step.
	Batch int
	// Teacher, for residual training, is the model distilled from.
	Teacher *ir.Model
	// Unfused plans training through the spelled-out attention (lqc
	// finetune --flash-attn off), whose scores are kept for the backward.
	Unfused bool
	// Recompute forces per-layer recomputation on or off; nil lets the
	// plan choose: off when the run fits without it.
	Recompute *bool
	// Mem is the budget in bytes; 0 plans without one.
	Mem int64
}

// Plan is the prediction, in bytes.
type Plan struct {
	Model     string `json:"model"`
	Arch      string `json:"arch"`
	Mode      string `json:"mode"`
	Device    string `json:"device"`
	Quant     string `json:"quant"`
	Precision string `json:"precision"`
	Ctx       int    `json:"ctx"`
	Batch     int    `json:"batch"`
	Rank      int    `json:"rank,omitempty"`

	// WeightsBytes is exactly the tensor data of the GGUF lqc convert
	// writes at Quant (each tensor padded to GGUF's 32-byte alignment).
	WeightsBytes  int64            `json:"weights_bytes"`
	WeightsByType map[string]int64 `json:"weights_by_type"`
	TeacherBytes  int64            `json:"teacher_bytes,omitempty"`
	// UnreadBytes is what of the weights (and teacher) the CPU never
	// brings into memory: the token embedding beyond the 64 KiB around
	// each row a step reads. The total leaves it out; a GPU holds it all.
	UnreadBytes int64 `json:"embedding_unread_bytes,omitempty"`

	TrainableParams int64 `json:"trainable_params,omitempty"`
	// ParamBytes holds the trained values: the optimizer's float32 master
	// copy, the copy the backend computes with, and (adapters) the values
	// the run started from.
	ParamBytes     int64 `json:"param_bytes,omitempty"`
	GradientBytes  int64 `json:"gradient_bytes,omitempty"`
	OptimizerBytes int64 `json:"optimizer_bytes,omitempty"` // AdamW's two moments, float32

	// Activations at the peak of a step (training) or of a prompt chunk
	// (inference), as the executor frees them; with and without per-layer
	// recomputation, and the one this plan uses.
	ActivationBytes           int64 `json:"activations_bytes"`
	ActivationsKeptBytes      int64 `json:"activations_no_recompute_bytes,omitempty"`
	ActivationsRecomputeBytes int64 `json:"activations_recompute_bytes,omitempty"`
	Recompute                 bool  `json:"recompute"`
	// LogitsBytes is the loss's [ctx × vocab] float32 tensors (logits,
	// their gradient, a teacher's logits), a part of the activations
	// shown on its own because a large vocabulary makes it dominate.
	LogitsBytes  int64 `json:"logits_bytes"`
	KVCacheBytes int64 `json:"kv_cache_bytes,omitempty"`
	// OverheadBytes is what the process or the device context takes
	// before any model: lqc's binary and runtime, or a CUDA context.
	OverheadBytes int64 `json:"overhead_bytes"`
	// HeadroomBytes is the garbage collector's: training on the CPU lets
	// the heap (everything but the mapped weights) grow by GOGC percent
	// (20 under lqc finetune) past what is live before collecting.
	HeadroomBytes int64 `json:"gc_headroom_bytes,omitempty"`

	// HostBytes is what a GPU run keeps in host memory beside the device's
	// total: the adapter's master copy, gradients and AdamW moments.
	HostBytes int64 `json:"host_bytes,omitempty"`

	TotalBytes int64    `json:"total_bytes"`
	MemBytes   int64    `json:"mem_bytes,omitempty"`
	Fits       bool     `json:"fits"`
	MaxCtx     int      `json:"max_ctx,omitempty"`   // the longest context that fits, when Mem is set
	MaxBatch   int      `json:"max_batch,omitempty"` // inference: the most sessions that fit at Ctx
	Advice     []string `json:"advice,omitempty"`
}

// Overheads: the resident memory of an lqc process before it touches a
// model's weights (Go runtime and binary, measured at 20 MiB for lqc
// finetune on stories260K, and the vocabulary and tokenizer, about 128
// bytes a token: 19 MiB for lqc tokenize on a 32000-token GGUF against
// 15 MiB on a 512-token one); and what a CUDA context with lqc's
// module of kernels takes on the device (a figure typical of recent
// drivers; not measured here).
const (
	cpuOverhead      = 20 << 20
	cpuOverheadToken = 128
	cudaOverhead     = 512 << 20
)

// trainingGCPercent is the collector's GOGC while lqc trains:
// train.LeanGC's 20 unless the environment sets GOGC.
func trainingGCPercent() int {
	if n, err := strconv.Atoi(os.Getenv("GOGC")); err == nil && n >= 0 {
		return n
	}
	return train.LeanGCPercent
}

// ggufAlignment is GGUF's default alignment of each tensor's data.
const ggufAlignment = 32

// Make plans the run of the model that load returns. load is called
// once per graph the plan needs (training rewrites a model's graph in
// place): each call returns a fresh model, which Make closes.
func Make(load func() (*ir.Model, error), opt Options) (*Plan, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	m, err := load()
	if err != nil {
		return nil, err
	}
	defer m.Close()
	if opt.Ctx == 0 { // lqc finetune's default window
		opt.Ctx = min(512, m.Params.ContextLength)
		if opt.Ctx <= 0 {
			opt.Ctx = 512
		}
	}
	p := &Plan{Model: m.Source, Arch: m.Arch, Mode: opt.Mode, Device: opt.Device, Quant: opt.Quant, Precision: opt.Precision,
		Ctx: opt.Ctx, Batch: opt.Batch, WeightsByType: map[string]int64{}}
	if p.Quant == "" {
		p.Quant = "as stored"
	}
	if opt.Mode == LoRA {
		p.Rank = opt.Rank
	}
	if err := p.weights(m, opt); err != nil {
		return nil, err
	}
	p.OverheadBytes = cpuOverhead + cpuOverheadToken*int64(m.Params.VocabSize)
	if opt.Device == "cuda" {
		p.OverheadBytes = cudaOverhead
	}
	live := ir.LiveOptions{FloatBytes: 4}
	if opt.Precision != "f32" {
		live.FloatBytes = 2
	}
	if opt.Device == "cpu" {
		// The CPU backend keeps released activations for reuse.
		live.PoolBytes, live.PoolMinBytes = cpu.FreeMaxBytes, cpu.FreeMinBytes
	}
	switch opt.Mode {
	case Infer:
		err = p.inference(m, opt, live)
	default:
		err = p.training(m, load, opt, live)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (o *Options) check() error {
	switch o.Mode {
	case Infer, LoRA, Full:
	default:
		return fmt.Errorf("mode %q: want infer, lora or full", o.Mode)
	}
	switch o.Device {
	case "cpu", "cuda":
	default:
		return fmt.Errorf("device %q: want cpu or cuda", o.Device)
	}
	switch o.Precision {
	case "":
		o.Precision = "f32"
		if o.Device == "cuda" && o.Mode != Infer {
			o.Precision = "bf16"
		}
	case "f32", "bf16", "f16":
	default:
		return fmt.Errorf("precision %q: want bf16, f16 or f32", o.Precision)
	}
	switch {
	case o.Device == "cpu" && o.Precision != "f32":
		return fmt.Errorf("precision %s: the CPU backend computes in float32", o.Precision)
	case o.Mode == Infer && o.Precision != "f32":
		return fmt.Errorf("precision %s: lqc runs inference in float32 on every backend (--precision is training's)", o.Precision)
	case o.Ctx < 0:
		return fmt.Errorf("context %d: want a positive number of tokens", o.Ctx)
	case o.Batch <= 0:
		return fmt.Errorf("batch %d: want at least 1", o.Batch)
	case o.Mode == LoRA && o.Rank <= 0:
		return fmt.Errorf("rank %d: want a positive LoRA rank", o.Rank)
	case o.Teacher != nil && o.Mode != LoRA:
		return fmt.Errorf("a teacher is for residual adapter training (--mode lora)")
	}
	return nil
}

// weights sizes the model's tensors at the planned types.
func (p *Plan) weights(m *ir.Model, opt Options) error {
	types := map[string]quant.Type{}
	if opt.Quant != "" {
		ft, err := quant.ParseFileType(opt.Quant)
		if err != nil {
			return err
		}
		if types, err = passes.QuantizedTypes(m, ft, opt.Pure); err != nil {
			return err
		}
	}
	var tokens int64 // rows of the embedding a step reads, at most
	if opt.Mode == Infer {
		tokens = int64(opt.Ctx) * int64(opt.Batch)
	} else {
		tokens = int64(opt.Ctx)
	}
	for _, w := range m.Graph.Weights {
		t := w.Weight
		typ := t.Type
		if q, ok := types[t.Name]; ok {
			typ = q
		}
		n := alignUp(typ.RowSize(t.RowLen())*t.Rows(), ggufAlignment)
		p.WeightsBytes += n
		p.WeightsByType[typ.String()] += n
		if opt.Device == "cpu" && opt.Mode != Full && lookupOnly(m.Graph, w) {
			p.UnreadBytes += n - min(n, tokens*alignUp(typ.RowSize(t.RowLen()), faultAround))
		}
	}
	if opt.Teacher != nil {
		for _, w := range opt.Teacher.Graph.Weights {
			n := w.Weight.NumBytes()
			p.TeacherBytes += n
			if lookupOnly(opt.Teacher.Graph, w) {
				p.UnreadBytes += n - min(n, tokens*alignUp(w.Weight.RowBytes(), faultAround))
			}
		}
	}
	return nil
}

// faultAround is how much of a mapped file one read brings into the
// process's memory: Linux maps the 16 pages around a faulting one
// (fault_around_bytes' default) when the file is cached, as a model
// just converted or read before is.
const faultAround = 64 << 10

// lookupOnly reports whether the graph reads weight w only by rows
// (Embedding): on the CPU, its pages are read from the mapped file for
// the tokens a run meets, never the whole table.
func lookupOnly(g *ir.Graph, w *ir.Value) bool {
	used := false
	for _, n := range g.Nodes {
		for i, in := range n.Inputs {
			if in != w {
				continue
			}
			if n.Op != "Embedding" || i != 0 {
				return false
			}
			used = true
		}
	}
	return used
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// inference plans Batch sessions of Ctx positions: each session's KV
// cache (float32 on both backends), and the activations of one pass with
// the classifier on each session's last row: a whole prompt of Ctx tokens
// for one session (lqc run), or lqc serve's prefill chunk beside a token
// of every session for several.
func (p *Plan) inference(m *ir.Model, opt Options, live ir.LiveOptions) error {
	pass := func(ctx, sessions int) (int64, error) {
		if sessions == 1 {
			return inferencePeak(m, ctx, live, false)
		}
		return inferencePeak(m, min(sessions*ctx, serve.DefaultPrefillChunk+sessions), live, false)
	}
	kv := kvBytes(m, opt.Ctx)
	act, err := pass(opt.Ctx, opt.Batch)
	if err != nil {
		return err
	}
	p.KVCacheBytes = kv * int64(opt.Batch)
	p.ActivationBytes = act
	p.LogitsBytes = int64(opt.Batch) * int64(m.Params.VocabSize) * 4
	p.total(opt.Mem)
	if opt.Mem <= 0 {
		return nil
	}
	fixed := p.OverheadBytes + p.WeightsBytes
	// The most sessions of Ctx positions that fit, and the longest
	// context of one session.
	for n := 1; ; n++ {
		a, err := pass(opt.Ctx, n)
		if err != nil {
			return err
		}
		if fixed+int64(n)*kv+a > opt.Mem || n > 1<<16 {
			break
		}
		p.MaxBatch = n
	}
	p.MaxCtx, err = longest(opt.Ctx, m.Params.ContextLength, func(ctx int) (bool, error) {
		a, err := pass(ctx, 1)
		return fixed+kvBytes(m, ctx)+a <= opt.Mem, err
	})
	if err != nil {
		return err
	}
	if !p.Fits {
		p.advise(fmt.Sprintf("does not fit in %s: %s needed", Bytes(opt.Mem), Bytes(p.TotalBytes)))
		switch {
		case p.MaxBatch > 0:
			p.advise(fmt.Sprintf("%d session(s) of --ctx %d fit", p.MaxBatch, opt.Ctx))
		case p.MaxCtx > 0:
			p.advise(fmt.Sprintf("one session fits up to --ctx %d", p.MaxCtx))
		default:
			p.advise("the weights alone do not fit: choose a smaller --quant")
		}
	}
	return nil
}

// kvBytes is one session's KV cache: a float32 key and value per layer,
// key/value head and position.
func kvBytes(m *ir.Model, ctx int) int64 {
	var n int64
	for _, node := range m.Graph.Nodes {
		if node.Op == "KVCache" {
			s := node.Inputs[0].Shape() // [seq, heads, head size]
			n += int64(ctx) * s[1].Size * s[2].Size * 4
		}
	}
	return n
}

// inferencePeak is the activations' peak of a prompt of ctx tokens:
// with the classifier on its last row (generation), or on every row (a
// teacher's logits for a window).
func inferencePeak(m *ir.Model, ctx int, live ir.LiveOptions, everyRow bool) (int64, error) {
	live.OutputRows = 1
	if everyRow {
		live.OutputRows = 0
	}
	peak, _, err := m.Graph.PeakLiveWith(map[string]int{"seq": ctx, ir.KVDim: ctx}, live)
	return peak, err
}

// training plans one step on a window of Ctx tokens: the training graph
// with a shape-only adapter, with and without recomputation.
func (p *Plan) training(m *ir.Model, load func() (*ir.Model, error), opt Options, live ir.LiveOptions) error {
	floatBytes, vocab := int64(live.FloatBytes), int64(m.Params.VocabSize)
	objective := passes.SFT
	if opt.Teacher != nil {
		objective = passes.Distill
	}
	// The trained values: adapters on the targets, or every weight.
	var params int64
	if opt.Mode == LoRA {
		targets, err := resolveTargets(m, opt.Targets)
		if err != nil {
			return err
		}
		for _, name := range targets {
			w := m.Weight(name)
			params += int64(opt.Rank) * (w.Rows() + w.RowLen())
		}
	} else {
		for _, w := range m.Graph.Weights {
			params += w.Weight.NumElements()
		}
	}
	p.TrainableParams = params
	// lqc's trainer (runtime.Trainer, train.AdamW) keeps float32 values as
	// the optimizer's master copy, the backend's copy it computes with,
	// the values the adapter started from, the gradients accumulated over
	// a batch and two moments. A full fine-tune is planned the way mixed
	// precision does it elsewhere: the master copy and moments in float32,
	// the weights and gradients at the precision.
	// On a GPU, lqc keeps only the copy the kernels read on the device; the
	// rest stays with the optimizer on the host, and the gradients reach
	// it as the graph's outputs (among the activations).
	switch {
	case opt.Mode == LoRA && opt.Device == "cuda":
		p.ParamBytes, p.HostBytes = 4*params, 20*params
	case opt.Mode == LoRA:
		p.ParamBytes, p.GradientBytes, p.OptimizerBytes = 12*params, 4*params, 8*params
	case opt.Mode == Full:
		p.ParamBytes, p.GradientBytes, p.OptimizerBytes = (4+floatBytes)*params, floatBytes*params, 8*params
	}
	// The training graph, with and without recomputation, built once
	// each: the window's length is a symbolic dimension, bound per step.
	graphs := map[bool]*ir.Graph{}
	graph := func(recompute bool) (*ir.Graph, error) {
		if g := graphs[recompute]; g != nil {
			return g, nil
		}
		tm, err := load()
		if err != nil {
			return nil, err
		}
		defer tm.Close()
		ad, err := shapeOnlyAdapter(tm, opt)
		if err != nil {
			return nil, err
		}
		pm := &passes.Manager{Passes: passes.Training(ad, passes.TrainingOptions{Objective: objective, FlashAttention: !opt.Unfused, Recompute: recompute})}
		if err := pm.Run(tm); err != nil {
			return nil, err
		}
		graphs[recompute] = tm.Graph
		return tm.Graph, nil
	}
	step := func(ctx int, recompute bool) (int64, error) {
		g, err := graph(recompute)
		if err != nil {
			return 0, err
		}
		peak, _, err := g.PeakLiveWith(map[string]int{"seq": ctx}, live)
		if err != nil {
			return 0, err
		}
		if opt.Teacher != nil {
			// The teacher's logits stay on the host beside the copy the
			// graph reads.
			peak += int64(ctx) * vocab * 4
		}
		return peak, nil
	}
	var err error
	if p.ActivationsKeptBytes, err = step(opt.Ctx, false); err != nil {
		return err
	}
	if p.ActivationsRecomputeBytes, err = step(opt.Ctx, true); err != nil {
		return err
	}
	p.LogitsBytes = 2 * int64(opt.Ctx) * vocab * 4
	if opt.Teacher != nil {
		p.LogitsBytes += 2 * int64(opt.Ctx) * vocab * 4
	}
	// Before each window's step the teacher runs over it alone: its
	// activations and KV cache, then its logits.
	teacher := func(ctx int) (int64, error) {
		if opt.Teacher == nil {
			return 0, nil
		}
		a, err := inferencePeak(opt.Teacher, ctx, live, true)
		if err != nil {
			return 0, fmt.Errorf("teacher: %w", err)
		}
		return a + kvBytes(opt.Teacher, ctx) + int64(ctx)*vocab*4, nil // and the host's copy of its logits
	}
	teacherPhase, err := teacher(opt.Ctx)
	if err != nil {
		return err
	}
	choose := func(recompute bool) {
		p.Recompute = recompute
		p.ActivationBytes = max(p.ActivationsKeptBytes, teacherPhase)
		if recompute {
			p.ActivationBytes = max(p.ActivationsRecomputeBytes, teacherPhase)
		}
		p.total(opt.Mem)
	}
	switch {
	case opt.Recompute != nil:
		choose(*opt.Recompute)
	default:
		choose(false)
		if !p.Fits {
			choose(true)
		}
	}
	if opt.Mem <= 0 {
		return nil
	}
	fixed := p.TotalBytes - p.ActivationBytes
	p.MaxCtx, err = longest(opt.Ctx, m.Params.ContextLength, func(ctx int) (bool, error) {
		a, err := step(ctx, p.Recompute)
		if err != nil {
			return false, err
		}
		t, err := teacher(ctx)
		return fixed+max(a, t) <= opt.Mem, err
	})
	if err != nil {
		return err
	}
	switch {
	case p.Fits && p.Recompute && opt.Recompute == nil:
		p.advise(fmt.Sprintf("fits with per-layer recomputation only: %s of activations instead of %s", Bytes(p.ActivationsRecomputeBytes), Bytes(p.ActivationsKeptBytes)))
	case !p.Fits:
		p.advise(fmt.Sprintf("does not fit in %s: %s needed", Bytes(opt.Mem), Bytes(p.TotalBytes)))
		if !p.Recompute {
			p.advise("per-layer recomputation (--gradient-checkpointing) would need " + Bytes(p.TotalBytes-p.ActivationBytes+max(p.ActivationsRecomputeBytes, teacherPhase)))
		}
		if p.MaxCtx > 0 {
			p.advise(fmt.Sprintf("fits with --ctx %d", p.MaxCtx))
		} else {
			p.advise(fmt.Sprintf("even one token does not fit: the weights and the trained values' state alone need %s", Bytes(fixed)))
		}
		if opt.Mode == Full {
			p.advise("train an adapter instead (--mode lora): the frozen weights need no gradients or moments")
		} else if opt.Quant != "" && !slices.Contains([]string{"q4_0", "q4_k_m", "iq4_xs", "q3_k_m", "q2_k"}, opt.Quant) {
			p.advise("a smaller --quant for the frozen weights (q4_k_m) shrinks the largest part")
		}
	}
	return nil
}

func (p *Plan) advise(s string) { p.Advice = append(p.Advice, s) }

// total adds the parts and compares them with mem. A full fine-tune
// trains copies of the weights (ParamBytes) instead of reading the
// quantized ones.
func (p *Plan) total(mem int64) {
	heap := p.ParamBytes + p.GradientBytes + p.OptimizerBytes + p.ActivationBytes + p.KVCacheBytes
	if p.Device == "cpu" && p.Mode != Infer {
		p.HeadroomBytes = heap * int64(trainingGCPercent()) / 100
	}
	p.TotalBytes = p.OverheadBytes + p.HeadroomBytes + p.TeacherBytes + heap - p.UnreadBytes
	if p.Mode != Full {
		p.TotalBytes += p.WeightsBytes
	}
	p.MemBytes = mem
	p.Fits = mem <= 0 || p.TotalBytes <= mem
}

// longest is the largest context in [1, limit] (limit 0: unbounded, up
// to 1M) for which fits holds, by bisection over powers of two then
// exactly; 0 when even one token does not fit. Memory grows with the
// context, so fits is monotonic.
func longest(start, limit int, fits func(int) (bool, error)) (int, error) {
	if limit <= 0 {
		limit = 1 << 20
	}
	ok, err := fits(1)
	if err != nil || !ok {
		return 0, err
	}
	lo, hi := 1, 0 // lo fits; hi (when > 0) does not
	for c := max(2, min(start, limit)); hi == 0; c = min(2*c, limit) {
		ok, err := fits(c)
		if err != nil {
			return 0, err
		}
		if !ok {
			hi = c
			break
		}
		lo = c
		if c == limit {
			return limit, nil
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		ok, err := fits(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// TypesBySize lists WeightsByType's types, largest first.
func (p *Plan) TypesBySize() []string {
	var ts []string
	for t := range p.WeightsByType {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return p.WeightsByType[ts[i]] > p.WeightsByType[ts[j]] })
	return ts
}

// Bytes formats n in binary units.
func Bytes(n int64) string {
	if n < 0 {
		return "−" + Bytes(-n)
	}
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
