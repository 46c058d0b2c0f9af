package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/train"
)

// benchFinetune measures training on the TinyLlama-shaped model at Q4_0:
// forward+backward tokens/s of a LoRA on every projection at ctx 256,
// the backward graph's cost against the forward's, and peak RSS against
// the weights, for ranks 16 (the speed target) and 8, 128, 256
// (the SFT sweep people run), beside PyTorch training the same rank-16
// LoRA (testmodels/torch/lora_train.py). Then the accuracy sweep of residual
// adapters on the real stories260K (lqc finetune --sweep-rank, report in
// work/finetune-report).
// torchPython is a python3 that imports torch: the one on PATH, or
// Debian's, installed with apt-get (python3-torch) when neither has it
// (the bench installs it; CI never runs this). Debian's torch multiplies
// through whatever libblas.so.3 is selected, by default the reference
// BLAS, many times slower than PyTorch anywhere else: OpenBLAS goes in
// with it.
func torchPython() (string, error) {
	debian := "/usr/bin/python3"
	openblas := "/usr/lib/" + runtimeTriplet() + "/openblas-pthread/libblas.so.3"
	if exec.Command("python3", "-c", "import torch").Run() == nil {
		if p, _ := exec.LookPath("python3"); p != debian && !strings.HasPrefix(p, "/usr/bin/") {
			return "python3", nil // a pip/conda torch brings its own BLAS
		}
	}
	var pkgs []string
	if exec.Command(debian, "-c", "import torch").Run() != nil {
		pkgs = append(pkgs, "python3-torch")
	}
	if size(openblas) == 0 {
		pkgs = append(pkgs, "libopenblas0-pthread")
	}
	if len(pkgs) > 0 {
		fmt.Fprintf(os.Stderr, "installing %s for the PyTorch comparison...\n", strings.Join(pkgs, " "))
		install := exec.Command("apt-get", append([]string{"install", "-y", "-qq"}, pkgs...)...)
		install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := install.CombinedOutput(); err != nil {
			return "", fmt.Errorf("apt-get install %s: %w: %s", strings.Join(pkgs, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return debian, nil
}

// runtimeTriplet is Debian's multiarch folder name for this machine.
func runtimeTriplet() string {
	if goruntime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// finetuneParts are what lqcbench finetune measures besides lqc's
// speed and memory.
type finetuneParts struct {
	ranks    []int
	torch    bool // PyTorch training the same rank-16 LoRA
	accuracy bool // the residual-adapter sweep on stories260K
}

func benchFinetune(work string, layers, runs, threads int, parts finetuneParts) error {
	dir, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	file, err := quantized(dir, lqc, work, layers, "q4_0")
	if err != nil {
		return err
	}
	const ctx = 256
	train.LeanGC() // as lqc finetune runs
	var table strings.Builder
	fmt.Fprintf(&table, "training a LoRA on q,k,v,o,gate,up,down of the TinyLlama shape (%d layers) at Q4_0, ctx %d, %d threads, median of %d steps of one window; "+
		"planned: the activations ir.Graph.PeakLive counts at the peak (what RSS − weights should approach):\n\n", layers, ctx, threads, runs)
	fmt.Fprintf(&table, "| rank | checkpointing | trainable params | tokens/s (fwd+bwd) | forward s | backward s | backward/forward | peak RSS | weights | RSS − weights | planned |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var rank16 float64
	for _, rank := range parts.ranks {
		for _, recompute := range []bool{false, true} {
			rate, err := finetuneSpeed(&table, file, rank, recompute, ctx, runs, threads)
			if err != nil {
				return err
			}
			if rank == 16 && !recompute {
				rank16 = rate
			}
			fmt.Fprint(os.Stderr, ".")
		}
	}
	fmt.Println(table.String())
	if !parts.torch {
		return finetuneAccuracy(work, lqc, threads, parts.accuracy)
	}
	// PyTorch, the same LoRA (rank 16, every projection) and window on the
	// same model in float32, the frozen weights as lqc's dequantized ones
	// cost: forward, backward and AdamW.
	if py, err := torchPython(); err != nil {
		fmt.Printf("PyTorch unavailable (%v): no comparison\n", err)
	} else {
		out, _, err := childRun(py, filepath.Join(testmodels.RepoRoot(), "testmodels", "torch", "lora_train.py"), dir,
			"--rank", "16", "--ctx", fmt.Sprint(ctx), "--runs", fmt.Sprint(runs), "--threads", fmt.Sprint(threads))
		var rate, f, bw float64
		if err == nil {
			_, err = fmt.Sscan(out, &rate, &f, &bw)
		}
		if err != nil {
			return fmt.Errorf("lora_train.py: %w", err)
		}
		fmt.Printf("PyTorch (float32, %d threads), rank 16: %.1f tokens/s (forward %.2f s, backward + AdamW %.2f s)", threads, rate, f, bw)
		if rank16 > 0 {
			fmt.Printf("; lqc ÷ PyTorch = %.2f×", rank16/rate)
		}
		fmt.Print("\n\n")
	}
	return finetuneAccuracy(work, lqc, threads, parts.accuracy)
}

// finetuneSpeed trains runs steps of one window at rank, with or without
// gradient checkpointing, adds the row to table and returns the median
// tokens/s.
func finetuneSpeed(table *strings.Builder, file string, rank int, recompute bool, ctx, runs, threads int) (float64, error) {
	debug.FreeOSMemory()
	train.ResetPeakRSS()
	base, err := frontend.LoadGGUF(file)
	if err != nil {
		return 0, err
	}
	defer base.Close()
	targets, err := train.ResolveTargets(base, nil)
	if err != nil {
		return 0, err
	}
	ad, err := train.NewAdapter(base, train.InitOptions{Method: "zero", Rank: rank, Alpha: float64(rank), Targets: targets, Seed: 1})
	if err != nil {
		return 0, err
	}
	b := cpu.New(threads)
	defer b.Close()
	e, err := train.NewEngine(base, ad, train.EngineOptions{Objective: passes.SFT, Backend: b, FlashAttention: true, Recompute: recompute})
	if err != nil {
		return 0, err
	}
	planned, _, err := e.Model().Graph.PeakLive(map[string]int{"seq": ctx})
	if err != nil {
		return 0, err
	}
	params := 0
	for _, p := range e.Params() {
		params += len(p.Value)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var rates, fwd, bwd []float64
	for range runs {
		toks := make([]int32, ctx)
		for i := range toks {
			toks[i] = int32(rng.IntN(base.Params.VocabSize))
		}
		ex := train.Example{Tokens: toks, Targets: append(toks[1:len(toks):len(toks)], -1)}
		f0, b0 := e.Times()
		t0 := time.Now()
		e.ZeroGrad()
		if _, err := e.Batch([]train.Example{ex}, ctx-1); err != nil {
			return 0, err
		}
		rates = append(rates, float64(ctx)/time.Since(t0).Seconds())
		f1, b1 := e.Times()
		fwd, bwd = append(fwd, (f1-f0).Seconds()), append(bwd, (b1-b0).Seconds())
	}
	rss := train.PeakRSS()
	weights := size(file)
	check := "no"
	if recompute {
		check = "per layer"
	}
	fmt.Fprintf(table, "| %d | %s | %d | %.1f | %.2f | %.2f | %.2f | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB |\n", rank, check, params, medianF(rates),
		medianF(fwd), medianF(bwd), medianF(bwd)/medianF(fwd), float64(rss)/(1<<20), float64(weights)/(1<<20), float64(rss-weights)/(1<<20), float64(planned)/(1<<20))
	return medianF(rates), nil
}

// finetuneAccuracy is the residual-adapter rank sweep on the real
// stories260K (make finetune-report), when asked for.
func finetuneAccuracy(work, lqc string, threads int, run bool) error {
	if !run {
		return nil
	}
	shared := testmodels.SharedDir()
	out := filepath.Join(work, "finetune-report")
	args := []string{"finetune", filepath.Join(shared, "golden/real/stories260K-Q4_0.gguf"),
		"--teacher", filepath.Join(shared, "models/stories260K/hf"), "--data", filepath.Join(shared, "golden/quant/imatrix-calib.txt"),
		"--eval-data", filepath.Join(shared, "golden/real/eval.txt"), "--sweep-rank", "2,4,8,16", "--ctx", "128", "--batch", "4",
		"--steps", "300", "--lr", "2e-3", "--eval-every", "50", "-t", fmt.Sprint(threads), "-q", "-o", out}
	if _, err := timeCmd(lqc, args...); err != nil {
		return err
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		return err
	}
	fmt.Printf("%s\n(report, JSON and plots in %s)\n", md, out)
	return loftqAccuracy(work, lqc, threads)
}
