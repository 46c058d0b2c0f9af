package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// reference is shared/models/stories260K/reference/finetune: PyTorch in
// float64 training a rank-4 adapter over llama.cpp's own Q4_0 file.
type reference struct {
	dir    string
	batch  [][]int32
	losses struct {
		Distill float64 `json:"loss_distill"`
		SFT     float64 `json:"loss_sft"`
		AdamW   struct {
			LR         float64   `json:"lr"`
			Betas      []float64 `json:"betas"`
			Eps        float64   `json:"eps"`
			Steps      int       `json:"steps"`
			Trajectory []float64 `json:"loss_distill_before_each_step_then_final"`
		} `json:"adamw"`
	}
}

func loadReference(t *testing.T) *reference {
	t.Helper()
	r := &reference{dir: testmodels.Shared(t, "models", "stories260K", "reference", "finetune")}
	var b struct {
		Batch [][]int32 `json:"batch"`
	}
	readJSON(t, filepath.Join(r.dir, "batch.json"), &b)
	r.batch = b.Batch
	readJSON(t, filepath.Join(r.dir, "losses.json"), &r.losses)
	return r
}

// gradients is the file of PyTorch's gradients for obj.
func (r *reference) gradients(obj passes.Objective) string {
	if obj == passes.SFT {
		return filepath.Join(r.dir, "grads_sft.safetensors")
	}
	return filepath.Join(r.dir, "grads_distill.safetensors")
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// referenceEngine loads the Q4_0 base with the reference's initial
// adapter for opt's objective, on opt's backend (the CPU's when unset).
func referenceEngine(t *testing.T, r *reference, opt EngineOptions) *Engine {
	t.Helper()
	obj := opt.Objective
	base, err := frontend.LoadGGUF(testmodels.Shared(t, "golden", "real", "stories260K-Q4_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	if opt.Backend == nil {
		opt.Backend = cpu.New(2)
		t.Cleanup(func() { opt.Backend.Close() })
	}
	if obj == passes.Distill {
		teacher, err := frontend.Load(testmodels.Shared(t, "models", "stories260K", "hf"), frontend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { teacher.Close() })
		opt.Teacher = teacher
	}
	ad, err := frontend.LoadAdapter(filepath.Join(r.dir, "adapter"), base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ad.Close() })
	e, err := NewEngine(base, ad, opt)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (r *reference) examples(obj passes.Objective) ([]Example, int) {
	var exs []Example
	scored := 0
	for _, row := range r.batch {
		ex := Example{Tokens: row}
		if obj == passes.SFT {
			ex.Targets = make([]int32, len(row))
			for i := range row {
				ex.Targets[i] = -1
				if i+1 < len(row) {
					ex.Targets[i] = row[i+1]
					scored++
				}
			}
		} else {
			scored += len(row)
		}
		exs = append(exs, ex)
	}
	return exs, scored
}

// TestReferenceLossesAndGradients: both losses within 1e-4 relative and
// every gradient tensor within 1e-3 (‖Δ‖/‖g‖) of PyTorch's float64
// values, with the fused attention and with the spelled-out one.
func TestReferenceLossesAndGradients(t *testing.T) {
	r := loadReference(t)
	forEachObjective(t, func(t *testing.T, obj passes.Objective, flash bool) {
		checkReference(t, r, referenceEngine(t, r, EngineOptions{Objective: obj, FlashAttention: flash}), obj)
	})
}

// TestReferenceOnCUDA: the same losses and gradients from the CUDA
// backend's kernels (forward, backward, losses, the teacher), interpreted
// by the PTX simulator, or on the GPU with LQC_CUDA_TEST=cuda.
func TestReferenceOnCUDA(t *testing.T) {
	r := loadReference(t)
	for _, obj := range []passes.Objective{passes.Distill, passes.SFT} {
		t.Run(obj.String(), func(t *testing.T) {
			b := cudaBackend(t)
			checkReference(t, r, referenceEngine(t, r, EngineOptions{Objective: obj, FlashAttention: true, Backend: b}), obj)
		})
	}
}

// checkReference runs the reference batch through e and holds the loss
// and every gradient to PyTorch's.
func checkReference(t *testing.T, r *reference, e *Engine, obj passes.Objective) {
	t.Helper()
	exs, scored := r.examples(obj)
	loss, err := e.Batch(exs, scored)
	if err != nil {
		t.Fatal(err)
	}
	want := r.losses.Distill
	if obj == passes.SFT {
		want = r.losses.SFT
	}
	if rel := math.Abs(loss-want) / want; rel > 1e-4 {
		t.Errorf("loss %.9g, PyTorch %.9g (relative error %.2g)", loss, want, rel)
	} else {
		t.Logf("loss %.9g, PyTorch %.9g (relative error %.2g)", loss, want, rel)
	}
	checkGradients(t, e, r.gradients(obj))
}

// forEachObjective runs f for both objectives, with the fused attention
// and with the spelled-out one.
func forEachObjective(t *testing.T, f func(t *testing.T, obj passes.Objective, flash bool)) {
	for _, flash := range []bool{true, false} {
		for _, obj := range []passes.Objective{passes.Distill, passes.SFT} {
			name := obj.String()
			if !flash {
				name += "/unfused"
			}
			t.Run(name, func(t *testing.T) { f(t, obj, flash) })
		}
	}
}

func checkGradients(t *testing.T, e *Engine, file string) {
	t.Helper()
	ref, err := safetensors.OpenFiles(file)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	m := e.Model()
	a, err := arch.Lookup(m.Arch)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	worst, worstName := 0.0, ""
	names := make([]string, 0, len(e.lora))
	for n := range e.lora {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		l := e.lora[name]
		module, err := PEFTModule(a, name)
		if err != nil {
			t.Fatal(err)
		}
		ak, bk := PEFTKeys(module)
		rows, err := HFRows(a, name, m.Params, l.b.Shape[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			key  string
			got  []float32
			rows []int64
			r    int
		}{{ak, l.a.Grad, nil, 0}, {bk, l.b.Grad, rows, int(l.b.Shape[1])}} {
			seen[c.key] = true
			rt, err := ref.Tensor(c.key)
			if err != nil {
				t.Fatalf("reference has no %s: %v", c.key, err)
			}
			want, err := rt.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			got := c.got
			if c.rows != nil {
				got = make([]float32, len(c.got))
				for row, hf := range c.rows {
					copy(got[int(hf)*c.r:(int(hf)+1)*c.r], c.got[row*c.r:(row+1)*c.r])
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d values, reference %d", c.key, len(got), len(want))
			}
			var dd, gg float64
			for i := range want {
				d := float64(got[i]) - float64(want[i])
				dd += d * d
				gg += float64(want[i]) * float64(want[i])
			}
			rel := math.Sqrt(dd / gg)
			if rel > worst {
				worst, worstName = rel, c.key
			}
			if rel > 1e-3 {
				t.Errorf("%s: ‖Δ‖/‖g‖ = %.3g", c.key, rel)
			}
		}
	}
	if len(seen) != len(ref.Names()) {
		t.Errorf("compared %d gradient tensors, the reference has %d", len(seen), len(ref.Names()))
	}
	t.Logf("%d gradient tensors, worst ‖Δ‖/‖g‖ %.3g (%s)", len(seen), worst, worstName)
}

// TestReferenceAdamW: ten AdamW steps on the distillation loss of the one
// batch follow PyTorch's trajectory within 1e-3 at every step.
func TestReferenceAdamW(t *testing.T) {
	r := loadReference(t)
	e := referenceEngine(t, r, EngineOptions{Objective: passes.Distill, FlashAttention: true})
	exs, scored := r.examples(passes.Distill)
	cfg := r.losses.AdamW
	opt := NewAdamW(e.Params(), cfg.Betas[0], cfg.Betas[1], cfg.Eps, 0)
	for step := 0; step <= cfg.Steps; step++ {
		e.ZeroGrad()
		loss, err := e.Batch(exs, scored)
		if err != nil {
			t.Fatal(err)
		}
		want := cfg.Trajectory[step]
		rel := math.Abs(loss-want) / want
		t.Logf("step %2d: loss %.6f, PyTorch %.6f (relative %.2g)", step, loss, want, rel)
		if rel > 1e-3 {
			t.Errorf("step %d: loss %.6f, PyTorch %.6f", step, loss, want)
		}
		if step < cfg.Steps {
			if err := opt.Update(e.Params(), cfg.LR); err != nil {
				t.Fatal(err)
			}
			e.Changed()
		}
	}
}

// TestRecompute: with gradient checkpointing the training graph computes
// the same loss and the same gradients to the bit (the recomputed nodes
// are the forward's own), while the activations alive at its peak shrink
// to about one layer's beside the residual stream.
func TestRecompute(t *testing.T) {
	r := loadReference(t)
	forEachObjective(t, func(t *testing.T, obj passes.Objective, flash bool) {
		exs, scored := r.examples(obj)
		var losses [2]float64
		var peaks [2]int64
		var engines [2]*Engine
		for k, recompute := range []bool{false, true} {
			e := referenceEngine(t, r, EngineOptions{Objective: obj, FlashAttention: flash, Recompute: recompute})
			var err error
			if losses[k], err = e.Batch(exs, scored); err != nil {
				t.Fatal(err)
			}
			if peaks[k], _, err = e.Model().Graph.PeakLive(map[string]int{"seq": len(exs[0].Tokens)}); err != nil {
				t.Fatal(err)
			}
			engines[k] = e
		}
		if losses[0] != losses[1] {
			t.Errorf("loss %v with recomputation, %v without", losses[1], losses[0])
		}
		for i, p := range engines[0].Params() {
			q := engines[1].Params()[i]
			if p.Name != q.Name {
				t.Fatalf("parameter %d is %s with recomputation, %s without", i, q.Name, p.Name)
			}
			for j := range p.Grad {
				if p.Grad[j] != q.Grad[j] {
					t.Fatalf("%s: gradient %d is %v with recomputation, %v without", p.Name, j, q.Grad[j], p.Grad[j])
				}
			}
		}
		checkGradients(t, engines[1], r.gradients(obj))
		// stories260K has 5 layers: four recomputed, the last kept.
		t.Logf("peak live activations %d bytes with recomputation, %d without", peaks[1], peaks[0])
		if peaks[1] >= peaks[0]*3/4 {
			t.Errorf("peak live activations %d bytes with recomputation, %d without: expected at least a quarter less", peaks[1], peaks[0])
		}
	})
}
