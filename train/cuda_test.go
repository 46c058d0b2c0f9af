package train

import (
	"math"
	"os"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/cuda"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
	"github.com/lqc-dev/lqc/runtime/cuda/libcuda"
	"github.com/lqc-dev/lqc/runtime/cuda/sim"
	"github.com/lqc-dev/lqc/testmodels"
)

// cudaBackend is the CUDA backend on the PTX simulator, or on the GPU
// with LQC_CUDA_TEST=cuda.
func cudaBackend(t *testing.T) runtime.Backend {
	t.Helper()
	var drv driver.Driver = sim.New()
	if os.Getenv("LQC_CUDA_TEST") == "cuda" {
		var err error
		if drv, err = libcuda.Open(0); err != nil {
			t.Fatal(err)
		}
	}
	b, err := cuda.New(drv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestCUDAMatchesCPUOnGPT2: an SFT step on gpt2-tiny (LayerNorm, GELU,
// biases, its own attention) gives the same loss and gradients on the
// CUDA backend as on the CPU backend, whose gradient rules are checked
// against finite differences and PyTorch.
func TestCUDAMatchesCPUOnGPT2(t *testing.T) {
	dir := testmodels.Shared(t, "models", "gpt2-tiny", "hf")
	tokens := []int32{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 198, 464, 2068, 7586, 21831, 18045}
	ex := Example{Tokens: tokens, Targets: append(append([]int32(nil), tokens[1:]...), -1)}
	step := func(b runtime.Backend) (float64, []*runtime.Param) {
		base, err := frontend.Load(dir, frontend.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { base.Close() })
		targets, err := ResolveTargets(base, nil)
		if err != nil {
			t.Fatal(err)
		}
		ad, err := NewAdapter(base, InitOptions{Method: "zero", Rank: 4, Alpha: 8, Targets: targets, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		e, err := NewEngine(base, ad, EngineOptions{Objective: passes.SFT, Backend: b, FlashAttention: true})
		if err != nil {
			t.Fatal(err)
		}
		loss, err := e.Batch([]Example{ex}, len(tokens)-1)
		if err != nil {
			t.Fatal(err)
		}
		return loss, e.Params()
	}
	host := cpu.New(2)
	defer host.Close()
	wantLoss, want := step(host)
	gotLoss, got := step(cudaBackend(t))
	if rel := math.Abs(gotLoss-wantLoss) / wantLoss; rel > 1e-5 {
		t.Errorf("loss %.9g on the GPU, %.9g on the CPU", gotLoss, wantLoss)
	}
	nonzero := 0
	for i, p := range want {
		var dd, gg float64
		for j, w := range p.Grad {
			d := float64(got[i].Grad[j]) - float64(w)
			dd += d * d
			gg += float64(w) * float64(w)
		}
		if gg == 0 {
			continue // A's gradient while B is zero
		}
		nonzero++
		if rel := math.Sqrt(dd / gg); rel > 1e-4 {
			t.Errorf("%s: ‖Δ‖/‖g‖ = %.3g", p.Name, rel)
		}
	}
	if nonzero == 0 {
		t.Fatal("every gradient is zero: nothing compared")
	}
	t.Logf("loss %.9g; %d non-zero gradients compared", wantLoss, nonzero)
}
