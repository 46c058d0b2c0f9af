package main

import (
	"fmt"
	"sort"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/passes"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

// runTypes are the file types lqcbench run compares by default: every
// block type lqc writes appears in one of their mixes.
var runTypes = []string{"f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "iq4_nl", "iq4_xs", "q3_k_m", "q2_k"}

// benchRun compares lqc's runtime with llama.cpp on the same GGUF files.
// benchTG is llama-bench's tg32: the tokens the decode benchmarks generate.
const benchTG = 32

// pp and tg are the prompt and generated tokens (llama-bench's pp64 and
// tg32 by default).
func benchRun(work string, layers, runs, threads int, types []string, pp, tg int) error {
	dir, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	files := map[string]string{}
	for _, q := range types {
		if files[q], err = quantized(dir, lqc, work, layers, q); err != nil {
			return err
		}
	}
	fmt.Printf("\npp%d / tg%d tokens/s, TinyLlama-1.1B shape (%d layers), %d threads, median of %d\n", pp, tg, layers, threads, runs)
	fmt.Printf("  %-8s %10s %10s %10s %10s %8s %8s\n", "", "lqc pp", "llama pp", "lqc tg", "llama tg", "pp ×", "tg ×")
	nlc, nlcErr := llamacpp.Install()
	for _, q := range types {
		lqcPP, lqcTG, err := benchLQC(files[q], runs, threads, pp, tg)
		if err != nil {
			return err
		}
		lpp, ltg := 0.0, 0.0
		if nlcErr == nil {
			res, err := llamacpp.Run(nlc, []llamacpp.Job{{Model: files[q], Bench: &llamacpp.Bench{PP: pp, TG: tg, Threads: threads, Reps: runs}}})
			if err != nil {
				return err
			}
			if res[0].Error != "" {
				return fmt.Errorf("llama.cpp: %s", res[0].Error)
			}
			lpp = float64(pp) / (medianF(res[0].PPms) / 1000)
			ltg = float64(tg) / (medianF(res[0].TGms) / 1000)
		}
		fmt.Printf("  %-8s %10.1f %10.1f %10.1f %10.1f %8.2f %8.2f\n", q, lqcPP, lpp, lqcTG, ltg, lqcPP/lpp, lqcTG/ltg)
	}
	if nlcErr != nil {
		fmt.Printf("  llama.cpp unavailable (%v): no ratios\n", nlcErr)
	}
	return nil
}

// benchLQC measures pp and tg like llama-bench: the prompt as one batch
// into an empty cache, then tg tokens generated one at a time from BOS.
func benchLQC(path string, runs, threads, pp, tg int) (ppRate, tgRate float64, err error) {
	m, err := frontend.LoadGGUF(path)
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	// The passes lqc run applies by default.
	if err := (&passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}).Run(m); err != nil {
		return 0, 0, err
	}
	b := cpu.New(threads)
	defer b.Close()
	rm, err := lqrt.Load(m, b)
	if err != nil {
		return 0, 0, err
	}
	return measurePPTG(rm, m.Vocab.BOS, runs, pp, tg)
}

func medianF(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
