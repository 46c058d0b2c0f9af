// Package calib holds what a calibration run measures at the input of
// every weight matrix: the statistics llama.cpp's importance matrix, AWQ
// and GPTQ are computed from. The runtime fills them (runtime.Calibrate);
// the quantization passes read them.
package calib

import (
	"fmt"

	"github.com/lqc-dev/lqc/quant/imatrix"
)

// Input is the statistics of one activation that one or more weight
// matrices multiply (q, k and v share one).
type Input struct {
	Cols   int       // values per token
	Count  int       // tokens seen
	SumSq  []float64 // Σx² per column: the importance matrix
	SumAbs []float64 // Σ|x| per column: AWQ's activation scale
	// Gram is Σxᵀx (Cols × Cols, row-major) when collected: GPTQ's
	// Hessian and the exact output error of any weight change.
	Gram []float64
}

// Stats are a calibration run's measurements.
type Stats struct {
	Inputs     map[string]*Input // by weight name
	ChunkCount int               // chunks of calibration text
	ChunkSize  int               // tokens per chunk
	Dataset    string            // calibration text file name
}

// NewInput returns zeroed statistics for cols columns.
func NewInput(cols int, gram bool) *Input {
	in := &Input{Cols: cols, SumSq: make([]float64, cols), SumAbs: make([]float64, cols)}
	if gram {
		in.Gram = make([]float64, cols*cols)
	}
	return in
}

// Add accumulates rows of x (len a multiple of Cols).
func (in *Input) Add(x []float32) {
	n := in.Cols
	rows := len(x) / n
	for r := range rows {
		row := x[r*n : (r+1)*n]
		for j, v := range row {
			f := float64(v)
			in.SumSq[j] += f * f
			if f < 0 {
				f = -f
			}
			in.SumAbs[j] += f
		}
	}
	in.Count += rows
	if in.Gram == nil {
		return
	}
	// Upper triangle, four rows of x at a time so that each pass over a
	// row of the Gram matrix does four rank-one updates.
	xd := make([]float64, 4*n)
	for r := 0; r < rows; r += 4 {
		k := min(4, rows-r)
		clear(xd)
		for i := range k * n {
			xd[i] = float64(x[r*n+i])
		}
		x0, x1, x2, x3 := xd[:n], xd[n:2*n], xd[2*n:3*n], xd[3*n:]
		for i := range n {
			a0, a1, a2, a3 := x0[i], x1[i], x2[i], x3[i]
			if a0 == 0 && a1 == 0 && a2 == 0 && a3 == 0 {
				continue
			}
			g := in.Gram[i*n : (i+1)*n]
			for j := i; j < n; j++ {
				g[j] += a0*x0[j] + a1*x1[j] + a2*x2[j] + a3*x3[j]
			}
		}
	}
}

// Finish mirrors the Gram matrix's upper triangle into the lower one.
func (in *Input) Finish() {
	n := in.Cols
	if in.Gram == nil {
		return
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			in.Gram[j*n+i] = in.Gram[i*n+j]
		}
	}
}

// Scale records that the input columns were divided by s (AWQ folds s
// into what produces the input): every statistic changes accordingly.
func (in *Input) Scale(s []float64) {
	n := in.Cols
	for j, v := range s {
		in.SumSq[j] /= v * v
		in.SumAbs[j] /= v
	}
	if in.Gram != nil {
		for i := range n {
			for j := range n {
				in.Gram[i*n+j] /= s[i] * s[j]
			}
		}
	}
}

// Importance is the per-column mean square: the weights llama.cpp's
// quantizers take from an importance matrix.
func (in *Input) Importance() []float32 {
	w := make([]float32, in.Cols)
	for j, v := range in.SumSq {
		w[j] = float32(v / float64(max(1, in.Count)))
	}
	return w
}

// Imatrix returns the statistics as an importance matrix, the classifier
// (output.weight) only when processOutput is set, as llama-imatrix.
func (s *Stats) Imatrix(processOutput bool) *imatrix.Matrix {
	m := &imatrix.Matrix{Entries: map[string]*imatrix.Entry{}, ChunkCount: s.ChunkCount, ChunkSize: s.ChunkSize}
	if s.Dataset != "" {
		m.Datasets = []string{s.Dataset}
	}
	for name, in := range s.Inputs {
		if name == "output.weight" && !processOutput {
			continue
		}
		e := &imatrix.Entry{Sums: make([]float32, in.Cols), Count: float32(in.Count)}
		for j, v := range in.SumSq {
			e.Sums[j] = float32(v)
		}
		m.Entries[name] = e
	}
	return m
}

// Input returns the statistics of the input of weight name, or an error
// naming what is missing.
func (s *Stats) Input(name string, cols int64, gram bool) (*Input, error) {
	in := s.Inputs[name]
	switch {
	case in == nil:
		return nil, fmt.Errorf("calibration saw no input of %s", name)
	case int64(in.Cols) != cols:
		return nil, fmt.Errorf("calibration saw %d input columns for %s, which has rows of %d", in.Cols, name, cols)
	case gram && in.Gram == nil:
		return nil, fmt.Errorf("calibration collected no Gram matrix for %s", name)
	}
	return in, nil
}
