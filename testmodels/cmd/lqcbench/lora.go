package main

import (
	"fmt"
	"time"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/peft"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
)

// benchLoRA measures unfused LoRA adapters at decode time on the
// TinyLlama-shaped Q4_0 model: the per-token overhead of one rank-16
// adapter on q, k, v and o over the base, and four sequences decoding
// with four different adapters, batched (one pass over the base weights
// per step, low-rank parts per adapter) against one after another.
func benchLoRA(work string, layers, runs, threads int) error {
	dir, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	file, err := quantized(dir, lqc, work, layers, "q4_0")
	if err != nil {
		return err
	}
	m, rm, closeModel, err := loadRuntime(file, threads)
	if err != nil {
		return err
	}
	defer closeModel()
	dirs, err := benchAdapters(work, dir, fmt.Sprintf("lora-%dl", layers))
	if err != nil {
		return err
	}
	var adapters []*lqrt.Adapter
	for _, ad := range dirs {
		a, err := peft.Load(ad, m)
		if err != nil {
			return err
		}
		defer a.Close()
		ra, err := rm.LoadAdapter(a)
		if err != nil {
			return err
		}
		adapters = append(adapters, ra)
	}

	// Decode benchTG tokens from BOS, timed per run.
	decode := func(as ...lqrt.Applied) (float64, error) {
		s, err := rm.NewSession(benchTG + 1)
		if err != nil {
			return 0, err
		}
		if err := s.SetAdapters(as...); err != nil {
			return 0, err
		}
		var rates []float64
		for r := 0; r <= runs; r++ {
			s.Reset()
			tok := m.Vocab.BOS
			t0 := time.Now()
			for range benchTG {
				logits, err := s.Forward([]int32{tok}, false)
				if err != nil {
					return 0, err
				}
				tok = lqrt.Argmax(logits)
			}
			if r > 0 {
				rates = append(rates, float64(benchTG)/time.Since(t0).Seconds())
			}
		}
		return medianF(rates), nil
	}
	base, err := decode()
	if err != nil {
		return err
	}
	one, err := decode(lqrt.Applied{Adapter: adapters[0], Scale: 1})
	if err != nil {
		return err
	}
	fmt.Printf("\nunfused LoRA at decode, TinyLlama-1.1B shape (%d layers) Q4_0, %d threads, tg%d, median of %d\n", layers, threads, benchTG, runs)
	fmt.Printf("  base                               %8.2f tokens/s\n", base)
	fmt.Printf("  + one rank-16 adapter on q,k,v,o   %8.2f tokens/s   overhead %.1f%%\n", one, 100*(base/one-1))

	// Four sequences, four adapters: one after another, then batched.
	var seqTotal time.Duration
	var batchRates []float64
	for r := 0; r <= runs; r++ {
		t0 := time.Now()
		for _, a := range adapters {
			s, _ := rm.NewSession(benchTG + 1)
			s.SetAdapters(lqrt.Applied{Adapter: a, Scale: 1})
			tok := m.Vocab.BOS
			for range benchTG {
				logits, err := s.Forward([]int32{tok}, false)
				if err != nil {
					return err
				}
				tok = lqrt.Argmax(logits)
			}
		}
		if r > 0 {
			seqTotal += time.Since(t0)
		}
		sessions := make([]*lqrt.Session, len(adapters))
		next := make([]int32, len(adapters))
		for i, a := range adapters {
			sessions[i], _ = rm.NewSession(benchTG + 1)
			sessions[i].SetAdapters(lqrt.Applied{Adapter: a, Scale: 1})
			next[i] = m.Vocab.BOS
		}
		t0 = time.Now()
		for range benchTG {
			logits, err := rm.Step(sessions, next)
			if err != nil {
				return err
			}
			for i := range next {
				next[i] = lqrt.Argmax(logits[i])
			}
		}
		if r > 0 {
			batchRates = append(batchRates, float64(benchTG*len(adapters))/time.Since(t0).Seconds())
		}
	}
	seqRate := float64(benchTG*len(adapters)*runs) / seqTotal.Seconds()
	batched := medianF(batchRates)
	fmt.Printf("  4 sequences × 4 adapters, one after another  %8.2f tokens/s\n", seqRate)
	fmt.Printf("  4 sequences × 4 adapters, batched (Step)     %8.2f tokens/s   %.2f×\n", batched, batched/seqRate)
	return nil
}

// loadRuntime loads a GGUF file as lqc run does (dead code removed,
// fused attention) on the CPU backend.
func loadRuntime(file string, threads int) (*ir.Model, *lqrt.Model, func(), error) {
	m, err := frontend.LoadGGUF(file)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := (&passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}).Run(m); err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	b := cpu.New(threads)
	rm, err := lqrt.Load(m, b)
	if err != nil {
		b.Close()
		m.Close()
		return nil, nil, nil, err
	}
	return m, rm, func() { b.Close(); m.Close() }, nil
}
