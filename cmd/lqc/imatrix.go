package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/lqc-dev/lqc/quant/calib"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

func runImatrix(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("imatrix", "MODEL --data TEXT -o imatrix.gguf [flags]\n\nRuns MODEL over calibration text and records, for every weight matrix, the mean square of each\ninput column: llama.cpp's importance matrix. OUT ending in .dat is written in llama.cpp's legacy format.", stderr)
	out := fs.StringP("output", "o", "", "output file: .gguf (llama.cpp's current format) or .dat (legacy) (required)")
	c := addCalibFlags(fs, "data", "")
	quiet := fs.BoolP("quiet", "q", false, "no progress on stderr")
	opts := addRunFlags(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	if err := opts.parseAdapters(); err != nil {
		return err
	}
	if len(opts.lora) > 0 {
		return usageError{fmt.Errorf("measure an adapted model with --fuse-lora: the matrices calibration sees are the merged ones")}
	}
	if *out == "" || c.data == "" {
		fs.Usage()
		return usageError{fmt.Errorf("need --data TEXT and -o OUT")}
	}
	st, err := c.compute(ctx, pos[0], opts, stderr, !*quiet, false)
	if err != nil {
		return err
	}
	mat := st.Imatrix(c.processOutput)
	if err := mat.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d matrices, %d chunks of %d tokens from %s\n", *out, len(mat.Entries), mat.ChunkCount, mat.ChunkSize, c.data)
	return nil
}

// calibFlags are the calibration flags imatrix and convert --calib share.
type calibFlags struct {
	data          string
	ctx, chunks   int
	processOutput bool
	ctxSet        func() bool // whether the context was given
}

// addCalibFlags adds the calibration flags; the text file's flag is
// called dataFlag and the others get prefix.
func addCalibFlags(fs *pflag.FlagSet, dataFlag, prefix string) *calibFlags {
	c := &calibFlags{}
	fs.StringVar(&c.data, dataFlag, "", "calibration text file")
	short := ""
	if prefix == "" {
		short = "c" // as llama-imatrix -c
	}
	fs.IntVarP(&c.ctx, prefix+"ctx", short, 512, "tokens per calibration chunk (default: min(512, the model's context))")
	c.ctxSet = func() bool { return fs.Changed(prefix + "ctx") }
	fs.IntVar(&c.chunks, prefix+"chunks", 0, "use at most this many chunks (0: all the text holds)")
	fs.BoolVar(&c.processOutput, prefix+"process-output", false, "also collect the classifier output.weight (llama.cpp leaves it out)")
	return c
}

// compute runs the model at path over the calibration text and measures
// the input of every weight matrix (with Gram matrices when gram is set),
// as llama-imatrix does: the text is tokenized as a whole and cut into
// chunks that each start with BOS.
func (c *calibFlags) compute(ctx context.Context, path string, opts *runOptions, stderr io.Writer, showProgress, gram bool) (*calib.Stats, error) {
	text, err := os.ReadFile(c.data)
	if err != nil {
		return nil, err
	}
	if c.ctx < 2 {
		return nil, usageError{fmt.Errorf("calibration context %d is too small", c.ctx)}
	}
	l, err := loadForRun(path, opts, stderr)
	if err != nil {
		return nil, err
	}
	defer l.close()
	if c.ctx > l.ir.Params.ContextLength && !c.ctxSet() {
		fmt.Fprintf(stderr, "note: calibration chunks of %d tokens, the model's context (default 512)\n", l.ir.Params.ContextLength)
		c.ctx = l.ir.Params.ContextLength
	}
	if c.ctx > l.ir.Params.ContextLength {
		return nil, usageError{fmt.Errorf("calibration context %d exceeds the model's context of %d", c.ctx, l.ir.Params.ContextLength)}
	}
	bos := int32(-1)
	if l.tok.AddsBOS() {
		bos = l.tok.Vocab().BOS
	}
	opt := lqrt.CalibrateOptions{
		Ctx: c.ctx, Chunks: c.chunks, BOS: bos, ProcessOutput: c.processOutput, Gram: gram, Dataset: filepath.Base(c.data),
	}
	if showProgress {
		opt.Progress = chunkProgress(stderr)
	}
	st, err := lqrt.Calibrate(ctx, l.model, l.tok.Encode(string(text), true), opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.data, err)
	}
	return st, nil
}
