package passes

import (
	"fmt"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/quant/calib"
	"github.com/lqc-dev/lqc/quant/gptq"
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
	// Calib, when set and Imatrix is not, supplies the importance from a
	// calibration run (after any AWQ scaling), and GPTQ's Gram matrices.
	Calib *calib.Stats
	// GPTQ quantizes every matrix whose input Calib measured with GPTQ.
	GPTQ        bool
	GPTQOptions gptq.Options
	// Method is recorded in the file as quantize.method when set.
	Method string
	// EachFallback notes every tensor that falls back to another type on
	// its own line; otherwise one line per reason says how many did and
	// names a few (a 70B model has thousands).
	EachFallback bool
}

// fallbackNames is how many tensors a fallback summary names.
const fallbackNames = 3

// fallbacks groups the tensors that fell back by reason, in the order
// the reasons first appear.
type fallbacks struct {
	reasons []string
	names   map[string][]string
}

func (f *fallbacks) add(reason, name string) {
	if f.names == nil {
		f.names = map[string][]string{}
	}
	if _, ok := f.names[reason]; !ok {
		f.reasons = append(f.reasons, reason)
	}
	f.names[reason] = append(f.names[reason], name)
}

// notes is one line per reason: the count and the first few names.
func (f *fallbacks) notes() []string {
	var out []string
	for _, reason := range f.reasons {
		names := f.names[reason]
		list := strings.Join(names[:min(len(names), fallbackNames)], ", ")
		if more := len(names) - fallbackNames; more > 0 {
			list += fmt.Sprintf(" and %d more", more)
		}
		noun := "tensors"
		if len(names) == 1 {
			noun = "tensor"
		}
		out = append(out, fmt.Sprintf("%s (%d %s: %s)", reason, len(names), noun, list))
	}
	return out
}

func (Quantize) Name() string { return "quantize" }

// plan is llama-quantize's per-tensor type choice for m.
func plan(m *ir.Model, ft quant.FileType, pure, importance bool) quant.Plan {
	p := m.Params
	return quant.Plan{
		FileType: ft, Pure: pure, HasOutput: m.Weight("output.weight") != nil,
		Layers: p.BlockCount, GQA: max(1, p.HeadCount/max(1, p.HeadCountKV)),
		Is70B:      m.Arch == "llama" && p.BlockCount == 80 && p.HeadCount != p.HeadCountKV,
		HasImatrix: importance,
	}
}

// targetType is the type plan gives t, and a note when it is a fallback.
func targetType(pl quant.Plan, t *ir.Tensor) (quant.Type, string, error) {
	d, err := pl.Choose(t.Name, t.Shape)
	switch {
	case err != nil:
		return 0, "", err
	case len(t.Shape) == 1:
		return quant.F32, "", nil
	case !pl.FileType.Base().Quantized():
		return pl.FileType.Base(), "", nil
	case d.Quantize:
		return d.Type, d.Fallback, nil
	}
	return t.Type, "", nil
}

// QuantizedTypes is the type Quantize gives each weight of m for file
// type ft (pure: without the per-tensor rules), when no importance matrix
// steers it: what a memory plan sizes before anything is converted.
func QuantizedTypes(m *ir.Model, ft quant.FileType, pure bool) (map[string]quant.Type, error) {
	pl := plan(m, ft, pure, false)
	types := map[string]quant.Type{}
	for _, w := range m.Graph.Weights {
		t, _, err := targetType(pl, w.Weight)
		if err != nil {
			return nil, err
		}
		types[w.Weight.Name] = t
	}
	return types, nil
}

func (q Quantize) Run(m *ir.Model) (Report, error) {
	imat := q.Imatrix
	if imat == nil && q.Calib != nil {
		imat = q.Calib.Imatrix(false)
	}
	if q.GPTQ && q.Calib == nil {
		return Report{}, fmt.Errorf("GPTQ needs a calibration run")
	}
	if imat != nil {
		if err := imat.Check(m.Weights()); err != nil {
			return Report{}, err
		}
	}
	pl := plan(m, q.FileType, q.Pure, imat != nil)
	gptqs := map[gptqKey]*lazyQuantizer{}
	var r Report
	requantized, withGPTQ := 0, 0
	var fell fallbacks
	for _, w := range m.Graph.Weights {
		t := w.Weight
		target, fallback, err := targetType(pl, t)
		if err != nil {
			return r, err
		}
		switch {
		case fallback != "" && q.EachFallback:
			r.Notes = append(r.Notes, fmt.Sprintf("%s: %s", t.Name, fallback))
		case fallback != "":
			fell.add(fallback, t.Name)
		}
		if target == t.Type {
			continue
		}
		if t.Type.Quantized() {
			requantized++
		}
		var nt *ir.Tensor
		var in *calib.Input
		if q.Calib != nil {
			in = q.Calib.Inputs[t.Name]
		}
		switch {
		case q.GPTQ && in != nil && in.Gram != nil && target.HasGrid():
			key := gptqKey{in, target}
			if gptqs[key] == nil {
				gptqs[key] = &lazyQuantizer{in: in, typ: target, opt: q.GPTQOptions}
			}
			nt, err = gptqTensor(t, gptqs[key])
			withGPTQ++
		case imat != nil && imat.Entries[t.Name] != nil && target.TakesWeights():
			nt, err = ir.ConvertWeighted(t, target, imat.Entries[t.Name].Weights())
		default:
			nt, err = ir.Convert(t, target)
		}
		if err != nil {
			return r, err
		}
		w.Weight = nt
		r.Changed++
	}
	r.Notes = append(r.Notes, fell.notes()...)
	if requantized > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("re-quantized %d tensors that were already quantized: accuracy is lost twice; convert from the original weights if you have them", requantized))
	}
	if q.GPTQ {
		r.Notes = append(r.Notes, fmt.Sprintf("GPTQ on %d matrices, %d distinct inputs", withGPTQ, len(gptqs)))
	}
	m.FileType = q.FileType
	if imat != nil {
		for _, kv := range imat.Metadata() {
			m.Extra.Set(kv.Key, kv.Value)
		}
	}
	if q.Method != "" {
		m.Extra.Set("quantize.method", q.Method)
	}
	return r, nil
}
