package main

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
	"github.com/lqc-dev/lqc/train"
)

// loftqResult is what --init loftq made before training: the new base
// (written to --base-out, which training then loads as BASE) and its
// adapter.
type loftqResult struct {
	source  string
	quant   passes.Quantize
	adapter *ir.Adapter
}

// runLoftQ quantizes the float model BASE with --quant as lqc convert
// would, LoftQ-style, writes it to --base-out and makes BASE that file.
func (o *finetuneJob) runLoftQ(ctx context.Context) error {
	start := time.Now()
	ft, err := quant.ParseFileType(o.quantType)
	if err != nil {
		return usageError{err}
	}
	m, err := frontend.Load(o.base, frontend.Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := (passes.DeadCode{}).Run(m); err != nil {
		return fmt.Errorf("%s: %w", o.base, err)
	}
	targets, err := train.ResolveTargets(m, o.targets)
	if err != nil {
		return usageError{err}
	}
	alpha := o.alpha
	if !o.alphaSet {
		alpha = float64(o.rank)
	}
	q := passes.Quantize{FileType: ft}
	ad, st, err := train.LoftQ(m, q, train.InitOptions{Rank: o.rank, Alpha: alpha, Targets: targets, Seed: o.seed}, o.loftqIter)
	if err != nil {
		return fmt.Errorf("%s: %w", o.base, err)
	}
	o.logf("loftq: %s at %s, rank %d on %d weights: ‖W − Q − s·B·A‖ is %.1f%% of plain quantization's ‖W − Q(W)‖ after %d iteration(s) (%.1f%% after the first, the SVD init) (%.1fs)",
		o.base, ft, o.rank, len(targets), 100*math.Sqrt(st.After[len(st.After)-1]/st.Plain), o.loftqIter,
		100*math.Sqrt(st.After[0]/st.Plain), time.Since(start).Seconds())
	opt := gguf.WriteOptions{Threads: o.threads}
	var prog *progress
	if !o.quiet {
		prog = newProgress(o.stderr, filepath.Base(o.baseOut))
		opt.Progress = prog.update
	}
	if err := gguf.WriteModel(ctx, o.baseOut, m, opt); err != nil {
		return err
	}
	if prog != nil {
		prog.finish(o.baseOut, start)
	}
	o.loftq = &loftqResult{source: o.base, quant: q, adapter: ad}
	o.base = o.baseOut
	return nil
}

// plainEval measures the source quantized plainly with the same --quant,
// the baseline LoftQ's adapter is judged against.
func (l *loftqResult) plainEval(o *finetuneJob, window int, teacher *ir.Model, tok *tokenizer.Tokenizer) (*evalResult, error) {
	m, err := frontend.Load(l.source, frontend.Options{})
	if err != nil {
		return nil, err
	}
	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, l.quant}}
	if err := pm.Run(m); err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", l.source, err)
	}
	ev, err := evaluatorOf(m, o.evalData, window, teacher, tok, o.threads)
	if err != nil {
		return nil, err
	}
	defer ev.close()
	return ev.run(context.Background(), nil)
}
