package passes

import (
	"fmt"
	"math"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/calib"
)

// AWQ is activation-aware weight scaling (Lin et al., "AWQ: Activation-
// aware Weight Quantization for LLM Compression and Acceleration", 2023).
// Input channels that carry large activations matter most; multiplying
// a matrix's input column by s > 1 before quantization shrinks that
// column's relative rounding error, and dividing the activation by s
// where it is produced (a norm's gain, or the rows of v or up) keeps the
// model's function exactly. Per fold point of the architecture
// (arch.ScaleGroups) s = mean|x|^α, with α searched on a grid for the
// smallest output error on the calibration inputs, measured exactly with
// their Gram matrix. α = 0 is no scaling, so the search never does worse
// than plain quantization on the calibration text.
//
// The pass runs before Quantize, which it must agree with on every
// matrix's type; it rewrites the weights lazily (as F32) and updates the
// calibration statistics to the scaled inputs.
type AWQ struct {
	FileType quant.FileType
	Pure     bool
	Calib    *calib.Stats // with Gram matrices
	// Grid is the number of α steps in (0, 1] (0: 20).
	Grid int
	// Scales, when set, replaces the search: the scale of each group, by
	// its first Next matrix's name (tests use it to check the folding).
	Scales map[string][]float64
}

func (AWQ) Name() string { return "awq" }

// awqSearchRows caps the rows of each matrix the search quantizes: the
// output error is a sum over rows, and a spread sample of rows ranks the
// candidates as the whole matrix does, at a bounded cost.
const awqSearchRows = 512

func (a AWQ) Run(m *ir.Model) (Report, error) {
	if a.Calib == nil && a.Scales == nil {
		return Report{}, fmt.Errorf("AWQ needs a calibration run")
	}
	ar, err := arch.Lookup(m.Arch)
	if err != nil {
		return Report{}, err
	}
	grid := a.Grid
	if grid <= 0 {
		grid = 20
	}
	pl := plan(m, a.FileType, a.Pure, true)
	weights := map[string]*ir.Value{}
	for _, w := range m.Graph.Weights {
		weights[w.Weight.Name] = w
	}
	var r Report
	var gains []float64
groups:
	for _, g := range ar.ScaleGroups(m.Params) {
		var next []*ir.Value
		for _, name := range g.Next {
			w := weights[name]
			if w == nil {
				continue groups
			}
			next = append(next, w)
		}
		nextCol := g.NextCol
		if nextCol == nil {
			nextCol = func(c int64) int64 { return c }
		}
		cols := next[0].Weight.RowLen()
		var s []float64
		if a.Scales != nil {
			if s = a.Scales[g.Next[0]]; s == nil {
				continue
			}
		} else {
			in, err := a.Calib.Input(g.Next[0], cols, true)
			if err != nil {
				return r, err
			}
			types := make([]quant.Type, len(next))
			quantized := false
			for i, w := range next {
				if a.Calib.Inputs[w.Weight.Name] != in {
					return r, fmt.Errorf("%s and %s do not share an input", g.Next[0], w.Weight.Name)
				}
				if types[i], _, err = targetType(pl, w.Weight); err != nil {
					return r, err
				}
				quantized = quantized || types[i].Quantized()
			}
			if !quantized {
				continue
			}
			var alpha, gain float64
			s, alpha, gain, err = a.search(g, in, next, types, nextCol, grid)
			if err != nil {
				return r, err
			}
			gains = append(gains, gain)
			r.Notes = append(r.Notes, fmt.Sprintf("%s: α %.2f, calibration output error %.3f× plain", strings.Join(g.Next, ", "), alpha, gain))
			sCol := make([]float64, cols)
			for c := range sCol {
				sCol[c] = s[nextCol(int64(c))]
			}
			in.Scale(sCol)
		}
		if err := fold(g, s, nextCol, next, weights); err != nil {
			return r, err
		}
		r.Changed++
	}
	if len(gains) > 0 {
		var sum float64
		for _, v := range gains {
			sum += v
		}
		r.Notes = append(r.Notes, fmt.Sprintf("%d fold points, mean calibration output error %.3f× plain", len(gains), sum/float64(len(gains))))
	}
	return r, nil
}

// search returns the best scale for group g, its α and its output error
// relative to α = 0.
func (a AWQ) search(g arch.ScaleGroup, in *calib.Input, next []*ir.Value, types []quant.Type, nextCol func(int64) int64, grid int) ([]float64, float64, float64, error) {
	// Mean |x| per channel; columns sharing a channel (grouped-query
	// attention) pool their statistics.
	mean, shared := make([]float64, g.Channels), make([]float64, g.Channels)
	for c := range int64(in.Cols) {
		ch := nextCol(c)
		mean[ch] += in.SumAbs[c] / float64(max(1, in.Count))
		shared[ch]++
	}
	for ch := range mean {
		mean[ch] /= max(1, shared[ch])
	}
	// The sampled rows of each matrix, read once.
	samples := make([][]float32, len(next))
	for i, w := range next {
		t := w.Weight
		rows := t.Rows()
		step := max(1, rows/awqSearchRows)
		n := (rows + step - 1) / step
		buf := make([]float32, n*t.RowLen())
		row := make([]float32, t.RowLen())
		for k := range n {
			if err := t.ReadRowsF32(row, k*step, 1); err != nil {
				return nil, 0, 0, err
			}
			copy(buf[k*t.RowLen():], row)
		}
		samples[i] = buf
	}
	cols := in.Cols
	importance := in.Importance()
	sCol := make([]float64, cols)
	errorFor := func(s []float64) (float64, error) {
		for c := range sCol {
			sCol[c] = s[nextCol(int64(c))]
		}
		// The quantizer sees the scaled weights and the scaled inputs'
		// importance, as Quantize will.
		imp := make([]float32, cols)
		for c := range imp {
			imp[c] = float32(float64(importance[c]) / (sCol[c] * sCol[c]))
		}
		var total float64
		for i, w := range samples {
			scaled := make([]float32, len(w))
			for k, v := range w {
				scaled[k] = float32(float64(v) * sCol[k%cols])
			}
			deq, err := roundTrip(types[i], scaled, cols, imp)
			if err != nil {
				return 0, err
			}
			delta := make([]float64, cols)
			for r := range len(w) / cols {
				for c := range cols {
					delta[c] = float64(deq[r*cols+c])/sCol[c] - float64(w[r*cols+c])
				}
				total += quadratic(in.Gram, delta)
			}
		}
		return total, nil
	}
	ones := make([]float64, g.Channels)
	for i := range ones {
		ones[i] = 1
	}
	base, err := errorFor(ones)
	if err != nil {
		return nil, 0, 0, err
	}
	best, bestAlpha, bestErr := ones, 0.0, base
	for k := 1; k <= grid; k++ {
		alpha := float64(k) / float64(grid)
		s := make([]float64, g.Channels)
		lo, hi := math.Inf(1), 0.0
		for ch, v := range mean {
			s[ch] = max(math.Pow(v, alpha), 1e-4)
			lo, hi = min(lo, s[ch]), max(hi, s[ch])
		}
		norm := math.Sqrt(lo * hi)
		for ch := range s {
			s[ch] /= norm
		}
		e, err := errorFor(s)
		if err != nil {
			return nil, 0, 0, err
		}
		if e < bestErr {
			best, bestAlpha, bestErr = s, alpha, e
		}
	}
	gain := 1.0
	if base > 0 {
		gain = bestErr / base
	}
	return best, bestAlpha, gain, nil
}

// roundTrip quantizes rows of w to typ (weighted by importance where the
// type's quantizer takes weights) and decodes them again.
func roundTrip(typ quant.Type, w []float32, cols int, importance []float32) ([]float32, error) {
	if !typ.Quantized() {
		return w, nil
	}
	enc := make([]byte, typ.RowSize(int64(len(w))))
	if err := typ.EncodeWeighted(enc, w, cols, importance); err != nil {
		return nil, err
	}
	out := make([]float32, len(w))
	return out, typ.Decode(out, enc)
}

// quadratic is dᵀHd for symmetric H.
func quadratic(h, d []float64) float64 {
	n := len(d)
	var total float64
	for i, di := range d {
		if di == 0 {
			continue
		}
		row := h[i*n : (i+1)*n]
		var s float64
		for j, dj := range d {
			s += row[j] * dj
		}
		total += di * s
	}
	return total
}

// fold applies scale s to group g: the Next matrices' input columns are
// multiplied by it, and the producer of their input divided by it.
func fold(g arch.ScaleGroup, s []float64, nextCol func(int64) int64, next []*ir.Value, weights map[string]*ir.Value) error {
	for _, w := range next {
		t := w.Weight
		cols := t.RowLen()
		w.Weight = ir.Computed(t.Name, quant.F32, t.Shape, func(dst []float32, first, n int64) error {
			if err := t.ReadRowsF32(dst, first, n); err != nil {
				return err
			}
			for k := range dst {
				dst[k] = float32(float64(dst[k]) * s[nextCol(int64(k)%cols)])
			}
			return nil
		})
	}
	divideRows := func(name string, offset int64) error {
		w := weights[name]
		if w == nil {
			return fmt.Errorf("scale group: no tensor %s", name)
		}
		t := w.Weight
		if len(t.Shape) == 1 { // a vector: its elements are the channels
			if t.Shape[0] < offset+int64(len(s)) {
				return fmt.Errorf("scale group: %s has %d values, fewer than %d", name, t.Shape[0], offset+int64(len(s)))
			}
			w.Weight = ir.Computed(t.Name, quant.F32, t.Shape, func(dst []float32, first, n int64) error {
				if err := t.ReadRowsF32(dst, first, n); err != nil {
					return err
				}
				for k := range s {
					dst[offset+int64(k)] = float32(float64(dst[offset+int64(k)]) / s[k])
				}
				return nil
			})
			return nil
		}
		if t.Rows() < offset+int64(len(s)) {
			return fmt.Errorf("scale group: %s has %d rows, fewer than %d", name, t.Rows(), offset+int64(len(s)))
		}
		cols := t.RowLen()
		w.Weight = ir.Computed(t.Name, quant.F32, t.Shape, func(dst []float32, first, n int64) error {
			if err := t.ReadRowsF32(dst, first, n); err != nil {
				return err
			}
			for r := first; r < first+n; r++ {
				if ch := r - offset; ch >= 0 && ch < int64(len(s)) {
					row := dst[(r-first)*cols : (r-first+1)*cols]
					for k := range row {
						row[k] = float32(float64(row[k]) / s[ch])
					}
				}
			}
			return nil
		})
		return nil
	}
	for _, v := range g.Vectors {
		if err := divideRows(v, 0); err != nil {
			return err
		}
	}
	if g.Rows != "" {
		if err := divideRows(g.Rows, g.RowOffset); err != nil {
			return err
		}
		if g.RowBias != "" && weights[g.RowBias] != nil {
			if err := divideRows(g.RowBias, g.RowOffset); err != nil {
				return err
			}
		}
	}
	return nil
}
