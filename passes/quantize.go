package passes

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/imatrix"
)

// Quantize stores each weight in the type llama-quantize would choose for
// the file type (see quant.Plan). Weights are rewrapped lazily: nothing is
// encoded until the tensors are streamed out.
//
// For the float file types (F32, F16, BF16) every matrix takes the type, as
// llama.cpp's converter writes them. Vectors (norm gains, biases) are
// stored F32 for every file type. Matrices llama-quantize leaves alone
// (position embeddings) keep their type.
type Quantize struct {
	FileType quant.FileType
	Pure     bool
	// Imatrix, when set, weights the quantization error of the matrices
	// it covers by their inputs' importance, as llama-quantize --imatrix.
	Imatrix *imatrix.Matrix
}

func (Quantize) Name() string { return "quantize" }

func (q Quantize) Run(m *ir.Model) (Report, error) {
	p := m.Params
	plan := quant.Plan{
		FileType: q.FileType, Pure: q.Pure, HasOutput: m.Weight("output.weight") != nil,
		Layers: p.BlockCount, GQA: max(1, p.HeadCount/max(1, p.HeadCountKV)),
		Is70B:      m.Arch == "llama" && p.BlockCount == 80 && p.HeadCount != p.HeadCountKV,
		HasImatrix: q.Imatrix != nil,
	}
	if q.Imatrix != nil {
		if err := q.Imatrix.Check(m.Weights()); err != nil {
			return Report{}, err
		}
	}
	float := !q.FileType.Base().Quantized()
	var r Report
	requantized := 0
	for _, w := range m.Graph.Weights {
		t := w.Weight
		target := t.Type
		switch d, err := plan.Choose(t.Name, t.Shape); {
		case err != nil:
			return r, err
		case len(t.Shape) == 1:
			target = quant.F32
		case float:
			target = q.FileType.Base()
		case d.Quantize:
			target = d.Type
			if d.Fallback != "" {
				r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", t.Name, d.Fallback))
			}
		}
		if target == t.Type {
			continue
		}
		if t.Type.Quantized() {
			requantized++
		}
		var nt *ir.Tensor
		var err error
		if e := q.imatrixEntry(t.Name); e != nil && target.TakesWeights() {
			nt, err = ir.ConvertWeighted(t, target, e.Weights())
		} else {
			nt, err = ir.Convert(t, target)
		}
		if err != nil {
			return r, err
		}
		w.Weight = nt
		r.Changed++
	}
	if requantized > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("re-quantized %d tensors that were already quantized: accuracy is lost twice; convert from the original weights if you have them", requantized))
	}
	m.FileType = q.FileType
	if q.Imatrix != nil {
		for _, kv := range q.Imatrix.Metadata() {
			m.Extra.Set(kv.Key, kv.Value)
		}
	}
	return r, nil
}

func (q Quantize) imatrixEntry(name string) *imatrix.Entry {
	if q.Imatrix == nil {
		return nil
	}
	return q.Imatrix.Entries[name]
}
