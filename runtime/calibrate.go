package runtime

import (
	"context"
	"fmt"

	"github.com/lqc-dev/lqc/quant/calib"
)

// CalibrateOptions configure Calibrate, as llama-imatrix's flags do.
type CalibrateOptions struct {
	Ctx           int    // tokens per chunk (-c)
	Chunks        int    // at most this many chunks; 0: all the text holds
	BOS           int32  // written over each chunk's first token; -1 for none
	ProcessOutput bool   // also measure the classifier's input (output.weight)
	Gram          bool   // also collect Gram matrices (for GPTQ and AWQ)
	Dataset       string // name recorded for the calibration text
	Progress      func(done, total int)
}

// Calibrate runs m over tokens in chunks of opt.Ctx, each on its own with
// its first token replaced by BOS, and measures the input of every matrix
// product with a weight over all tokens, as llama-imatrix does.
func Calibrate(ctx context.Context, m *Model, tokens []int32, opt CalibrateOptions) (*calib.Stats, error) {
	if opt.Ctx < 2 {
		return nil, fmt.Errorf("context %d is too small", opt.Ctx)
	}
	chunks := len(tokens) / opt.Ctx
	if opt.Chunks > 0 {
		chunks = min(chunks, opt.Chunks)
	}
	if chunks == 0 {
		return nil, fmt.Errorf("the calibration text has %d tokens, fewer than one chunk of %d: give more text or a smaller context", len(tokens), opt.Ctx)
	}
	sess, err := m.NewSession(opt.Ctx)
	if err != nil {
		return nil, err
	}
	st := &calib.Stats{Inputs: map[string]*calib.Input{}, ChunkCount: chunks, ChunkSize: opt.Ctx, Dataset: opt.Dataset}
	byValue := map[int]*calib.Input{}
	owner := map[int]string{} // the weight whose observation accumulates a shared input
	sess.Observe = func(weight string, input int, x []float32, cols int) {
		if weight == "output.weight" && !opt.ProcessOutput {
			return
		}
		in := byValue[input]
		if in == nil {
			in = calib.NewInput(cols, opt.Gram)
			byValue[input], owner[input] = in, weight
		}
		st.Inputs[weight] = in
		if owner[input] == weight {
			in.Add(x)
		}
	}
	for c := range chunks {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := append([]int32(nil), tokens[c*opt.Ctx:(c+1)*opt.Ctx]...)
		if opt.BOS >= 0 {
			chunk[0] = opt.BOS
		}
		sess.Reset()
		if _, err := sess.Forward(chunk, opt.ProcessOutput); err != nil { // every row of the classifier only when it is measured
			return nil, err
		}
		if opt.Progress != nil {
			opt.Progress(c+1, chunks)
		}
	}
	for _, in := range byValue {
		in.Finish()
	}
	return st, nil
}
