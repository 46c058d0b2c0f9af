package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cuda"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
	"github.com/lqc-dev/lqc/runtime/cuda/libcuda"
	"github.com/lqc-dev/lqc/runtime/cuda/sim"
	"github.com/lqc-dev/lqc/testmodels"
)

// gpuTypes are the types make gpu-check measures against PyTorch: the
// common downloads.
var gpuTypes = []string{"f16", "q8_0", "q4_k_m", "q4_0"}

// benchGPU measures the CUDA backend on the TinyLlama-shaped model:
// prompt (pp) and decode (tg) tokens/s per type, quantized in process
// (no lqc binary or Go toolchain on the GPU machine), beside PyTorch
// eager bf16 on the same checkpoint (testmodels/torch/bench.py) when
// python3 with torch and a GPU is there. device "cuda-sim" runs the
// same on the simulator, which is how this is tested without a GPU.
func benchGPU(work string, layers, runs int, device string, types []string, pp, tg int) error {
	dir, err := model(work, layers)
	if err != nil {
		return err
	}
	torchPP, torchTG, torchErr := torchBench(dir, runs, pp, tg)
	fmt.Printf("\npp%d / tg%d tokens/s on %s, TinyLlama-1.1B shape (%d layers), median of %d\n", pp, tg, device, layers, runs)
	if torchErr == nil {
		fmt.Printf("  PyTorch eager bf16 (SDPA): pp %.1f, tg %.1f\n", torchPP, torchTG)
	} else {
		fmt.Printf("  PyTorch unavailable (%v): no ratios\n", torchErr)
	}
	fmt.Printf("  %-6s %10s %10s %10s %10s\n", "", "lqc pp", "lqc tg", "pp ×", "tg ×")
	for _, q := range types {
		lpp, ltg, err := benchDevice(dir, q, device, runs, pp, tg)
		if err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
		if torchErr != nil {
			fmt.Printf("  %-6s %10.1f %10.1f %10s %10s\n", q, lpp, ltg, "-", "-")
			continue
		}
		fmt.Printf("  %-6s %10.1f %10.1f %10.2f %10.2f\n", q, lpp, ltg, lpp/torchPP, ltg/torchTG)
	}
	return nil
}

// benchDevice measures one type as benchLQC does, on the device.
func benchDevice(dir, q, device string, runs, pp, tg int) (float64, float64, error) {
	ft, err := quant.ParseFileType(q)
	if err != nil {
		return 0, 0, err
	}
	m, err := frontend.Load(dir, frontend.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.Quantize{FileType: ft}, passes.FlashAttention{}}}
	if err := pm.Run(m); err != nil {
		return 0, 0, err
	}
	var drv driver.Driver
	switch device {
	case "cuda-sim":
		drv = sim.New()
	case "cuda":
		if drv, err = libcuda.Open(0); err != nil {
			return 0, 0, err
		}
	default:
		return 0, 0, fmt.Errorf("--device %q: cuda or cuda-sim", device)
	}
	b, err := cuda.New(drv)
	if err != nil {
		return 0, 0, err
	}
	defer b.Close()
	t0 := time.Now()
	rm, err := lqrt.Load(m, b)
	if err != nil {
		return 0, 0, err
	}
	fmt.Fprintf(os.Stderr, "%s: uploaded in %.1fs\n", q, time.Since(t0).Seconds())
	return measurePPTG(rm, m.Vocab.BOS, runs, pp, tg)
}

// measurePPTG is llama-bench's measurement: the prompt as one batch into
// an empty cache, then tg tokens decoded one at a time from BOS; the
// first round warms up, the median of the rest is reported. Reading the
// logits back waits for the device.
func measurePPTG(rm *lqrt.Model, bos int32, runs, pp, tg int) (float64, float64, error) {
	s, err := rm.NewSession(max(pp, tg) + 1)
	if err != nil {
		return 0, 0, err
	}
	prompt := make([]int32, pp)
	for i := range prompt {
		prompt[i] = int32(1 + (i*7919)%1000)
	}
	var pps, tgs []float64
	for r := 0; r <= runs; r++ {
		s.Reset()
		t0 := time.Now()
		if _, err := s.Forward(prompt, false); err != nil {
			return 0, 0, err
		}
		ppT := time.Since(t0)
		s.Reset()
		t0 = time.Now()
		tok := bos
		for range tg {
			logits, err := s.Forward([]int32{tok}, false)
			if err != nil {
				return 0, 0, err
			}
			tok = lqrt.Argmax(logits)
		}
		if r > 0 {
			pps = append(pps, float64(pp)/ppT.Seconds())
			tgs = append(tgs, float64(tg)/time.Since(t0).Seconds())
		}
	}
	return medianF(pps), medianF(tgs), nil
}

// torchBench runs testmodels/torch/bench.py on the checkpoint and
// reads its "pp TG" line.
func torchBench(dir string, runs, pp, tg int) (float64, float64, error) {
	// Beside the sources this was built from, or under the working
	// folder (a binary copied to the GPU machine runs in a checkout).
	script := filepath.Join(testmodels.RepoRoot(), "testmodels", "torch", "bench.py")
	if size(script) == 0 {
		script = filepath.Join("testmodels", "torch", "bench.py")
	}
	cmd := exec.Command("python3", script, dir, "--pp", strconv.Itoa(pp), "--tg", strconv.Itoa(tg), "--runs", strconv.Itoa(runs))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("bench.py printed %q", out)
	}
	a, err1 := strconv.ParseFloat(f[0], 64)
	b, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bench.py printed %q", out)
	}
	return a, b, nil
}
