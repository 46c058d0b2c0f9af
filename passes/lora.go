package passes

import (
	"fmt"
	"math"
	"sync"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// FuseLoRA merges LoRA adapters into the weights they adapt, as PEFT's
// merge_and_unload does: W' = W + w·Scale·B·A for each adapter in order
// (w the weight the user gives it), and for DoRA each output row of
// W + w·Scale·B·A rescaled to its learned magnitude. Weights PEFT saved
// whole (modules_to_save) replace the base's. The merge is lazy and row
// by row in float32 from the base's own precision, so it composes with
// every quantization and with calibration on the fused model.
type FuseLoRA struct {
	Adapters []WeightedAdapter
}

// WeightedAdapter is an adapter and the factor its update is applied with.
type WeightedAdapter struct {
	*ir.Adapter
	Weight float64
}

func (FuseLoRA) Name() string { return "fuse-lora" }

func (f FuseLoRA) Run(m *ir.Model) (Report, error) {
	var r Report
	weights := map[string]*ir.Value{}
	for _, w := range m.Graph.Weights {
		weights[w.Weight.Name] = w
	}
	for _, ad := range f.Adapters {
		if err := ad.Check(m); err != nil {
			return r, err
		}
		for _, name := range ad.Names() {
			w := weights[name]
			w.Weight = fused(w.Weight, ad.LoRA[name], ad.Weight)
			r.Changed++
		}
		for name, t := range ad.Replace {
			weights[name].Weight = t
			r.Changed++
		}
		kind := "LoRA"
		for _, l := range ad.LoRA {
			if l.Magnitude != nil {
				kind = "DoRA"
			}
			break
		}
		r.Notes = append(r.Notes, fmt.Sprintf("%s: %s on %d weights (×%g), %d replaced", ad.Name, kind, len(ad.LoRA), ad.Weight, len(ad.Replace)))
	}
	return r, nil
}

// fused is w with the update merged, computed when its rows are read.
func fused(w *ir.Tensor, l *ir.LoRA, weight float64) *ir.Tensor {
	in, r := w.RowLen(), l.Rank()
	scale := l.Scale * weight
	var once sync.Once
	var a, mag []float32
	var loadErr error
	load := func() {
		if a, loadErr = l.A.Float32s(); loadErr != nil {
			return
		}
		if l.Magnitude != nil {
			mag, loadErr = l.Magnitude.Float32s()
		}
	}
	return ir.Computed(w.Name, quant.F32, w.Shape, func(dst []float32, first, n int64) error {
		if once.Do(load); loadErr != nil {
			return loadErr
		}
		if err := w.ReadRowsF32(dst, first, n); err != nil {
			return err
		}
		b := make([]float32, n*r)
		if err := l.B.ReadRowsF32(b, first, n); err != nil {
			return err
		}
		delta := make([]float64, in)
		for i := range n {
			row := dst[i*in : (i+1)*in]
			clear(delta)
			for k, bk := range b[i*r : (i+1)*r] {
				if bk == 0 {
					continue
				}
				ak := a[int64(k)*in : int64(k+1)*in]
				for j, v := range ak {
					delta[j] += float64(bk) * float64(v)
				}
			}
			if mag == nil {
				for j := range row {
					row[j] = float32(float64(row[j]) + scale*delta[j])
				}
				continue
			}
			// DoRA: the adapted row, rescaled to the learned magnitude.
			var norm float64
			for j := range row {
				v := float64(row[j]) + scale*delta[j]
				delta[j] = v
				norm += v * v
			}
			f := float64(mag[first+i]) / math.Sqrt(norm)
			for j := range row {
				row[j] = float32(f * delta[j])
			}
		}
		return nil
	})
}
