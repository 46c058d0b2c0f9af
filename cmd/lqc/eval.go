package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lqc-dev/lqc/ir"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// gateFailed makes lqc exit 1 after printing the table.
type gateFailed struct{ failed []string }

func (g gateFailed) Error() string { return "accuracy gate failed: " + strings.Join(g.failed, "; ") }

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval", "MODEL --data TEXT [--ref REF] [flags]\n\nPerplexity of MODEL on TEXT as llama-perplexity measures it; with --ref, the KL divergence\nof MODEL's next-token distributions from REF's, top-1 agreement and the perplexity ratio.", stderr)
	data := fs.String("data", "", "text file to evaluate on (required)")
	ref := fs.String("ref", "", "reference model (the unquantized one)")
	nctx := fs.IntP("ctx", "c", 512, "tokens per chunk; the second half of each chunk is scored")
	nchunks := fs.Int("chunks", 0, "evaluate only the first N chunks (0: all the text holds), as llama-perplexity's --chunks")
	maxKLD := fs.Float64("max-kld", 0, "fail if the mean KL divergence exceeds this")
	maxRatio := fs.Float64("max-ppl-ratio", 0, "fail if PPL(MODEL)/PPL(REF) exceeds this")
	minTop1 := fs.Float64("min-top1", 0, "fail if the top-1 agreement (0 to 1) is below this")
	asJSON := fs.Bool("json", false, "machine-readable output")
	opts := addRunFlags(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	if err := opts.parseAdapters(); err != nil {
		return err
	}
	if *data == "" {
		fs.Usage()
		return usageError{fmt.Errorf("missing --data TEXT")}
	}
	if (*maxKLD != 0 || *maxRatio != 0 || *minTop1 != 0) && *ref == "" {
		return usageError{fmt.Errorf("--max-kld, --max-ppl-ratio and --min-top1 need --ref")}
	}
	text, err := os.ReadFile(*data)
	if err != nil {
		return err
	}
	l, err := loadForRun(pos[0], opts, stderr)
	if err != nil {
		return err
	}
	defer l.close()
	var refModel *lqrt.Model
	if *ref != "" {
		refOpts := *opts
		refOpts.lora, refOpts.fuse = nil, nil // the reference is the model as it is
		r, err := loadForRun(*ref, &refOpts, stderr)
		if err != nil {
			return err
		}
		defer r.close()
		if !sameVocab(l.ir.Vocab, r.ir.Vocab) {
			return fmt.Errorf("%s and %s have different vocabularies: they cannot be compared token by token", pos[0], *ref)
		}
		refModel = r.model
	}
	if *nctx > l.ir.Params.ContextLength {
		return usageError{fmt.Errorf("--ctx %d exceeds the model's context of %d", *nctx, l.ir.Params.ContextLength)}
	}
	tokens := l.tok.Encode(string(text), true)
	bos := int32(-1)
	if l.tok.AddsBOS() {
		bos = l.tok.Vocab().BOS
	}
	if *nchunks < 0 {
		return usageError{fmt.Errorf("--chunks %d", *nchunks)}
	}
	opt := lqrt.EvalOptions{Ctx: *nctx, Chunks: *nchunks, BOS: bos, Adapters: l.adapters}
	if !*asJSON {
		opt.Progress = chunkProgress(stderr)
	}
	res, err := lqrt.Evaluate(ctx, l.model, refModel, tokens, opt)
	if err != nil {
		return fmt.Errorf("%s: %w", *data, err)
	}

	type check struct {
		Name      string  `json:"name"`
		Value     float64 `json:"value"`
		Limit     float64 `json:"limit"`
		Direction string  `json:"direction"`
		Pass      bool    `json:"pass"`
	}
	var checks []check
	if res.Ref != nil {
		add := func(name string, v, limit float64, atMost bool) {
			if limit == 0 {
				return
			}
			c := check{Name: name, Value: v, Limit: limit, Direction: "at most", Pass: v <= limit}
			if !atMost {
				c.Direction, c.Pass = "at least", v >= limit
			}
			checks = append(checks, c)
		}
		add("mean KLD", res.Ref.KLDMean, *maxKLD, true)
		add("PPL ratio", res.Ref.PPLRatio, *maxRatio, true)
		add("top-1 agreement", res.Ref.Top1, *minTop1, false)
	}
	var failed []string
	for _, c := range checks {
		if !c.Pass {
			failed = append(failed, fmt.Sprintf("%s %.6g is not %s %.6g", c.Name, c.Value, c.Direction, c.Limit))
		}
	}
	if *asJSON {
		err := json.NewEncoder(stdout).Encode(struct {
			Model  string           `json:"model"`
			Ref    string           `json:"ref,omitempty"`
			Data   string           `json:"data"`
			Ctx    int              `json:"ctx"`
			Result *lqrt.EvalResult `json:"result"`
			Checks []check          `json:"checks"`
			Pass   bool             `json:"pass"`
		}{pos[0], *ref, *data, *nctx, res, checks, len(failed) == 0})
		if err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "model\t%s\n", pos[0])
		fmt.Fprintf(tw, "data\t%s: %d chunks of %d tokens, %d scored\n", *data, res.Chunks, *nctx, res.Tokens)
		fmt.Fprintf(tw, "perplexity\t%.4f ± %.4f\n", res.PPL, res.PPLStdErr)
		if r := res.Ref; r != nil {
			fmt.Fprintf(tw, "reference\t%s, perplexity %.4f\n", *ref, r.PPL)
			fmt.Fprintf(tw, "PPL ratio\t%.4f (mean ln ratio %.6f)\n", r.PPLRatio, r.MeanLnRatio)
			fmt.Fprintf(tw, "KL divergence\tmean %.6f ± %.6f, median %.6f, p99 %.6f, max %.6f\n", r.KLDMean, r.KLDStdErr, r.KLDMedian, r.KLD99, r.KLDMax)
			fmt.Fprintf(tw, "top-1 agreement\t%.2f%% ± %.2f%%\n", 100*r.Top1, 100*r.Top1StdErr)
		}
		for _, c := range checks {
			verdict := "pass"
			if !c.Pass {
				verdict = "FAIL"
			}
			fmt.Fprintf(tw, "gate: %s\t%s: %.6g, must be %s %.6g\n", c.Name, verdict, c.Value, c.Direction, c.Limit)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return gateFailed{failed}
	}
	return nil
}

// chunkProgress reports chunks done on stderr: in place on a terminal,
// otherwise a line every tenth of the way.
func chunkProgress(w io.Writer) func(done, total int) {
	tty := isTerminal(w)
	start := time.Now()
	return func(done, total int) {
		eta := time.Duration(float64(time.Since(start)) / float64(done) * float64(total-done)).Round(time.Second)
		switch {
		case tty:
			fmt.Fprintf(w, "\r\033[Kchunk %d/%d, ETA %s", done, total, eta)
			if done == total {
				fmt.Fprintln(w)
			}
		case done == total || done%max(1, total/10) == 0:
			fmt.Fprintf(w, "chunk %d/%d, ETA %s\n", done, total, eta)
		}
	}
}

func sameVocab(a, b *ir.Vocab) bool {
	if a == nil || b == nil || len(a.Tokens) != len(b.Tokens) {
		return false
	}
	for i := range a.Tokens {
		if a.Tokens[i] != b.Tokens[i] {
			return false
		}
	}
	return true
}
