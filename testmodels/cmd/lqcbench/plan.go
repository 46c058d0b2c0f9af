package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/lqc-dev/lqc/testmodels"
)

// benchPlan holds lqc plan's predictions to the peak resident memory of
// the runs they predict, on the CPU: lqc finetune on the TinyLlama shape
// at Q4_0 and Q8_0 with and without gradient checkpointing, residual
// training on a 2-layer model with its bf16 teacher, and lqc run over a
// whole context. Each run is its own process, measured by the kernel
// (getrusage's maximum RSS), as a user would see it.
func benchPlan(work string, layers, threads int) error {
	dir, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	small, err := model(work, 2)
	if err != nil {
		return err
	}
	q4, err := quantized(dir, lqc, work, layers, "q4_0")
	if err != nil {
		return err
	}
	q8, err := quantized(dir, lqc, work, layers, "q8_0")
	if err != nil {
		return err
	}
	small4, err := quantized(small, lqc, work, 2, "q4_0")
	if err != nil {
		return err
	}
	data := filepath.Join(testmodels.SharedDir(), "golden/real/eval.txt")
	text, err := os.ReadFile(data)
	if err != nil {
		return err
	}
	// About 480 tokens of the synthetic tokenizer: a prompt filling most
	// of a 512-token context.
	prompt := strings.Join(strings.Fields(string(text))[:72], " ")
	finetune := func(model string, rank, ctx int, recompute bool, extra ...string) []string {
		return append([]string{"finetune", model, "--data", data, "--rank", fmt.Sprint(rank), "--ctx", fmt.Sprint(ctx), "--steps", "2", "--batch", "1",
			"-t", fmt.Sprint(threads), "-q", "-o", filepath.Join(work, "plan-adapter.gguf"), fmt.Sprintf("--gradient-checkpointing=%v", recompute)}, extra...)
	}
	plan := func(model string, mode string, rank, ctx int, recompute bool, extra ...string) []string {
		return append([]string{"plan", model, "--mode", mode, "--rank", fmt.Sprint(rank), "--ctx", fmt.Sprint(ctx), "--json",
			fmt.Sprintf("--gradient-checkpointing=%v", recompute)}, extra...)
	}
	cases := []struct {
		name      string
		plan, run []string
	}{
		{fmt.Sprintf("finetune %dl Q4_0, rank 16, ctx 256", layers), plan(q4, "lora", 16, 256, false), finetune(q4, 16, 256, false)},
		{fmt.Sprintf("finetune %dl Q4_0, rank 16, ctx 256, checkpointing", layers), plan(q4, "lora", 16, 256, true), finetune(q4, 16, 256, true)},
		{fmt.Sprintf("finetune %dl Q8_0, rank 8, ctx 512, checkpointing", layers), plan(q8, "lora", 8, 512, true), finetune(q8, 8, 512, true)},
		{"finetune 2l Q4_0 with its bf16 teacher, rank 16, ctx 256", plan(small4, "lora", 16, 256, false, "--teacher", small),
			finetune(small4, 16, 256, false, "--teacher", small, "--init", "zero")},
		{fmt.Sprintf("run %dl Q4_0, a 480-token prompt, ctx 512", layers), plan(q4, "infer", 8, 512, false),
			[]string{"run", q4, "-p", prompt, "-n", "1", "-c", "512", "-t", fmt.Sprint(threads)}},
	}
	fmt.Printf("\nlqc plan against the peak RSS of the run it plans (CPU, %d threads; TinyLlama shape)\n", threads)
	fmt.Println("| run | planned | measured peak RSS | planned / measured |")
	fmt.Println("|---|---:|---:|---:|")
	worst := 0.0
	for _, c := range cases {
		out, _, err := childRun(lqc, c.plan...)
		if err != nil {
			return err
		}
		var p struct {
			Total int64 `json:"total_bytes"`
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return fmt.Errorf("lqc plan --json: %w", err)
		}
		m, err := timeCmd(lqc, c.run...)
		if err != nil {
			return err
		}
		ratio := float64(p.Total) / float64(m.maxRSS)
		worst = max(worst, max(ratio-1, 1-ratio))
		fmt.Printf("| %s | %.1f MiB | %.1f MiB | %.3f |\n", c.name, float64(p.Total)/(1<<20), float64(m.maxRSS)/(1<<20), ratio)
		fmt.Fprint(os.Stderr, ".")
	}
	fmt.Printf("target: every plan within 10%% of the measured peak; worst here %.1f%%\n", 100*worst)
	return nil
}
