package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
)

// ResolveTargets turns --targets into the canonical weights to adapt.
// Each entry names a projection as GGUF does (attn_q, ffn_down) or as
// PEFT's target_modules does (q_proj, down_proj, c_attn); "all" or no
// entry at all means every matrix inside the blocks (every projection:
// for llama q, k, v, o, gate, up, down). The token embedding and the
// classifier are never adapted.
func ResolveTargets(m *ir.Model, spec []string) ([]string, error) {
	a, err := arch.Lookup(m.Arch)
	if err != nil {
		return nil, err
	}
	all := len(spec) == 0 || len(spec) == 1 && spec[0] == "all"
	matched := map[string]bool{}
	var out []string
	for _, w := range m.Graph.Weights {
		name := w.Weight.Name
		if !strings.HasPrefix(name, "blk.") || len(w.Weight.Shape) != 2 {
			continue
		}
		short := name[strings.Index(name[4:], ".")+5:]
		short = strings.TrimSuffix(short, ".weight")
		module := ""
		if hf, ok := a.HFName(name); ok {
			hf = strings.TrimSuffix(hf, ".weight")
			module = hf[strings.LastIndex(hf, ".")+1:]
		}
		take := all
		for _, s := range spec {
			if s == short || s == module {
				take, matched[s] = true, true
			}
		}
		if take {
			out = append(out, name)
		}
	}
	if !all {
		for _, s := range spec {
			if !matched[s] {
				return nil, fmt.Errorf("--targets %s names no projection of this %s model", s, m.Arch)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no projection to adapt")
	}
	sort.Strings(out)
	return out, nil
}

// InitOptions choose a new adapter's starting point.
type InitOptions struct {
	// Method: "zero" (PEFT's default: A uniform in ±1/√in as Kaiming's
	// init with a=√5 gives, B = 0, so training starts at the base), or
	// "svd" (the top-Rank singular triplets of W_teacher − W_base per
	// matrix, so the adapter starts by restoring what quantization lost
	// most).
	Method  string
	Rank    int
	Alpha   float64
	Targets []string
	Seed    uint64
	Teacher *ir.Model // svd
}

// NewAdapter makes the adapter a run starts from.
func NewAdapter(base *ir.Model, opt InitOptions) (*ir.Adapter, error) {
	if opt.Rank <= 0 {
		return nil, fmt.Errorf("rank %d", opt.Rank)
	}
	scale := opt.Alpha / float64(opt.Rank)
	at := &AdapterTensors{Arch: base.Arch, Params: base.Params, Rank: opt.Rank, Alpha: opt.Alpha, LoRA: map[string]*LoRAValues{}}
	for i, name := range opt.Targets {
		w := base.Weight(name)
		if w == nil {
			return nil, fmt.Errorf("the base has no weight %s", name)
		}
		out, in := w.Rows(), w.RowLen()
		r := int64(opt.Rank)
		if r > min(out, in) {
			return nil, fmt.Errorf("rank %d exceeds the smaller side of %s %v", r, name, w.Shape)
		}
		l := &LoRAValues{A: make([]float32, r*in), B: make([]float32, out*r), Rank: r, In: in, Out: out, Scale: scale}
		switch opt.Method {
		case "zero":
			rng := rand.New(rand.NewPCG(opt.Seed, uint64(i)))
			bound := 1 / math.Sqrt(float64(in))
			for j := range l.A {
				l.A[j] = float32((2*rng.Float64() - 1) * bound)
			}
		case "svd":
			if opt.Teacher == nil {
				return nil, fmt.Errorf("--init svd needs a teacher")
			}
			tw := opt.Teacher.Weight(name)
			if tw == nil || fmt.Sprint(tw.Shape) != fmt.Sprint(w.Shape) {
				return nil, fmt.Errorf("the teacher has no weight %s of shape %v", name, w.Shape)
			}
			if err := svdInit(l, tw, w, opt.Seed+uint64(i)); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		default:
			return nil, fmt.Errorf("--init %q: want svd or zero", opt.Method)
		}
		at.LoRA[name] = l
	}
	return at.Adapter("init:" + opt.Method)
}

// svdInit sets B·A·scale to the best rank-r approximation of
// W_teacher − W_base, the singular values split evenly between the two.
func svdInit(l *LoRAValues, teacher, base *ir.Tensor, seed uint64) error {
	t, err := teacher.Float32s()
	if err != nil {
		return err
	}
	b, err := base.Float32s()
	if err != nil {
		return err
	}
	fitResidual(l, difference(t, b), seed)
	return nil
}

// difference is a − b in float64.
func difference(a, b []float32) []float64 {
	d := make([]float64, len(a))
	for i := range d {
		d[i] = float64(a[i]) - float64(b[i])
	}
	return d
}

// fitResidual sets B·A·scale to the best rank-r approximation of d
// (out×in), the singular values split evenly between the two.
func fitResidual(l *LoRAValues, d []float64, seed uint64) {
	rows, cols := int(l.Out), int(l.In)
	r := int(l.Rank)
	u, s, vt := topSVD(d, rows, cols, r, seed)
	for k := range r {
		f := math.Sqrt(s[k] / l.Scale)
		for i := range rows {
			l.B[i*r+k] = float32(u[i*r+k] * f)
		}
		for j := range cols {
			l.A[k*cols+j] = float32(vt[k*cols+j] * f)
		}
	}
}

// LoftQStats are the quantization error of the LoftQ targets, summed
// over them: ‖W − Q(W)‖² of plain quantization, and ‖W − Q − s·B·A‖²
// after each iteration.
type LoftQStats struct {
	Plain float64
	After []float64
}

// LoftQ quantizes the float model m in place with q, as lqc convert does,
// except that each target matrix W is stored as the quantization Q of
// W − s·B·A, with s·B·A the best rank-r fit to W − Q (LoftQ, Li et al.
// 2023): the first iteration is the SVD init over plain quantization,
// each further one quantizes W less the adapter's part and fits the
// adapter again to what that leaves out. The base and the adapter it
// returns start training closer to W than plain quantization and the SVD
// init do. Quantization is plain rounding (no importance weighting).
func LoftQ(m *ir.Model, q passes.Quantize, opt InitOptions, iterations int) (*ir.Adapter, LoftQStats, error) {
	var st LoftQStats
	if opt.Rank <= 0 || iterations <= 0 {
		return nil, st, fmt.Errorf("loftq: rank %d, %d iterations", opt.Rank, iterations)
	}
	values := map[string]*ir.Value{}
	orig := map[string]*ir.Tensor{}
	for _, v := range m.Graph.Weights {
		values[v.Weight.Name] = v
	}
	for _, name := range opt.Targets {
		v := values[name]
		switch {
		case v == nil:
			return nil, st, fmt.Errorf("the model has no weight %s", name)
		case v.Weight.Type.Quantized():
			return nil, st, fmt.Errorf("--init loftq quantizes a float model, and %s is already %v: give the original weights", name, v.Weight.Type)
		}
		orig[name] = v.Weight
	}
	if q.Imatrix != nil || q.Calib != nil || q.GPTQ {
		return nil, st, fmt.Errorf("loftq: plain rounding only")
	}
	if _, err := q.Run(m); err != nil {
		return nil, st, err
	}
	st.After = make([]float64, iterations)
	scale := opt.Alpha / float64(opt.Rank)
	at := &AdapterTensors{Arch: m.Arch, Params: m.Params, Rank: opt.Rank, Alpha: opt.Alpha, LoRA: map[string]*LoRAValues{}}
	for i, name := range opt.Targets {
		v, o := values[name], orig[name]
		out, in := o.Rows(), o.RowLen()
		r := int64(opt.Rank)
		if r > min(out, in) {
			return nil, st, fmt.Errorf("rank %d exceeds the smaller side of %s %v", r, name, o.Shape)
		}
		w, err := o.Float32s()
		if err != nil {
			return nil, st, err
		}
		l := &LoRAValues{A: make([]float32, r*in), B: make([]float32, out*r), Rank: r, In: in, Out: out, Scale: scale}
		typ := v.Weight.Type
		cur := w
		var qt *ir.Tensor
		for it := range iterations {
			if qt, err = quantizeNow(name, o.Shape, cur, typ); err != nil {
				return nil, st, err
			}
			deq, err := qt.Float32s()
			if err != nil {
				return nil, st, err
			}
			d := difference(w, deq)
			if it == 0 {
				st.Plain += sumSquares(d)
			}
			fitResidual(l, d, opt.Seed+uint64(i))
			cur = minusLowRank(w, l)
			st.After[it] += sumSquares(difference(cur, deq))
		}
		v.Weight = qt
		at.LoRA[name] = l
	}
	ad, err := at.Adapter("init:loftq")
	return ad, st, err
}

// quantizeNow encodes v as typ at once, so that the float values can go.
func quantizeNow(name string, shape []int64, v []float32, typ quant.Type) (*ir.Tensor, error) {
	f, err := ir.FromF32(name, shape, v)
	if err != nil {
		return nil, err
	}
	t, err := ir.Convert(f, typ)
	if err != nil {
		return nil, err
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	return ir.FromBytes(name, typ, shape, b)
}

// minusLowRank is W − s·B·A.
func minusLowRank(w []float32, l *LoRAValues) []float32 {
	out := make([]float32, len(w))
	r, in := int(l.Rank), int(l.In)
	for o := range int(l.Out) {
		row := out[o*in : (o+1)*in]
		for j := range row {
			var ba float64
			for k := range r {
				ba += float64(l.B[o*r+k]) * float64(l.A[k*in+j])
			}
			row[j] = float32(float64(w[o*in+j]) - l.Scale*ba)
		}
	}
	return out
}

func sumSquares(d []float64) float64 {
	var s float64
	for _, v := range d {
		s += v * v
	}
	return s
}

// Adapter is the values as an ir.Adapter (copies: training goes on).
func (at *AdapterTensors) Adapter(name string) (*ir.Adapter, error) {
	ad := &ir.Adapter{Name: name, Arch: at.Arch, LoRA: map[string]*ir.LoRA{}}
	for n, l := range at.LoRA {
		A, err := ir.FromF32(n+".lora_a", []int64{l.Rank, l.In}, append([]float32(nil), l.A...))
		if err != nil {
			return nil, err
		}
		B, err := ir.FromF32(n+".lora_b", []int64{l.Out, l.Rank}, append([]float32(nil), l.B...))
		if err != nil {
			return nil, err
		}
		ad.LoRA[n] = &ir.LoRA{A: A, B: B, Scale: l.Scale}
	}
	return ad, nil
}

// Values is the engine's adapter as it stands.
func (e *Engine) Values() *AdapterTensors {
	at := &AdapterTensors{Arch: e.base.Arch, Params: e.base.Params, LoRA: map[string]*LoRAValues{}}
	for name, l := range e.lora {
		v := &LoRAValues{A: l.a.Value, B: l.b.Value, Rank: l.a.Shape[0], In: l.a.Shape[1], Out: l.b.Shape[0], Scale: l.scale,
			HFRowsOfOut: l.hfRows}
		at.LoRA[name] = v
		at.Rank = int(v.Rank)
		at.Alpha = l.scale * float64(v.Rank)
	}
	return at
}
