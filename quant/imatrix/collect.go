package imatrix

import (
	"context"
	"fmt"

	"github.com/lqc-dev/lqc/runtime"
)

// Options configure Compute, as llama-imatrix's flags do.
type Options struct {
	Ctx           int    // tokens per chunk (-c)
	Chunks        int    // at most this many chunks; 0: all the text holds
	BOS           int32  // written over each chunk's first token; -1 for none
	ProcessOutput bool   // also collect the classifier (output.weight)
	Dataset       string // name recorded for the calibration text
	Progress      func(done, total int)
}

// Compute runs m over tokens in chunks of opt.Ctx, each on its own with
// its first token replaced by BOS, and accumulates for every matrix
// product with a weight the square of each input column over all tokens,
// as llama-imatrix does.
func Compute(ctx context.Context, m *runtime.Model, tokens []int32, opt Options) (*Matrix, error) {
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
	sums := map[string][]float64{}
	count := map[string]int{}
	sess.Observe = func(name string, x []float32, in int) {
		if name == "output.weight" && !opt.ProcessOutput {
			return
		}
		s := sums[name]
		if s == nil {
			s = make([]float64, in)
			sums[name] = s
		}
		for r := 0; r < len(x)/in; r++ {
			for j, v := range x[r*in : (r+1)*in] {
				s[j] += float64(v) * float64(v)
			}
		}
		count[name] += len(x) / in
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
		if _, err := sess.Forward(chunk, opt.ProcessOutput); err != nil { // every row of the classifier only when it is collected
			return nil, err
		}
		if opt.Progress != nil {
			opt.Progress(c+1, chunks)
		}
	}
	mat := &Matrix{Entries: map[string]*Entry{}, ChunkCount: chunks, ChunkSize: opt.Ctx}
	if opt.Dataset != "" {
		mat.Datasets = []string{opt.Dataset}
	}
	for name, s := range sums {
		e := &Entry{Sums: make([]float32, len(s)), Count: float32(count[name])}
		for j, v := range s {
			e.Sums[j] = float32(v)
		}
		mat.Entries[name] = e
	}
	return mat, nil
}
