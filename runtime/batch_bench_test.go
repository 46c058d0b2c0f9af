package runtime_test

import (
	"os"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/frontend/peft"
	"github.com/lqc-dev/lqc/passes"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/testmodels"
)

// BenchmarkStep decodes eight sessions spread over four rank-16 adapters
// (q, k, v and o), one token each: in one Step ("batched") and one after
// another ("sequential"), on the CPU backend as lqc serve sets it up.
// The model is stories260K at Q4_0, or LQC_BENCH_STEP=MODEL,HF_FOLDER
// (the folder to write the adapters for), e.g. the TinyLlama shape that
// lqcbench writes.
func BenchmarkStep(b *testing.B) {
	path := testmodels.SharedDir() + "/golden/real/stories260K-Q4_0.gguf"
	dir := testmodels.SharedDir() + "/models/stories260K/hf"
	if p := os.Getenv("LQC_BENCH_STEP"); p != "" {
		path, dir, _ = strings.Cut(p, ",")
	}
	if _, err := os.Stat(path); err != nil {
		b.Skip(err)
	}
	be := cpu.New(2)
	be.KeepPanels()
	defer be.Close()
	irm, err := frontend.Load(path, frontend.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer irm.Close()
	if err := (&passes.Manager{Passes: []passes.Pass{passes.DeadCode{}, passes.FlashAttention{}}}).Run(irm); err != nil {
		b.Fatal(err)
	}
	m, err := runtime.Load(irm, be)
	if err != nil {
		b.Fatal(err)
	}
	var adapters []*runtime.Adapter
	for i := range 4 {
		ad := b.TempDir()
		if err := testmodels.WritePEFT(ad, dir, testmodels.PEFTAdapter{Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, R: 16, Alpha: 32, Seed: uint64(i + 1)}); err != nil {
			b.Fatal(err)
		}
		a, err := peft.Load(ad, irm)
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		la, err := m.LoadAdapter(a)
		if err != nil {
			b.Fatal(err)
		}
		adapters = append(adapters, la)
	}
	// sessions starts eight sessions on a 4-token prompt; they are renewed
	// every 200 steps, so the cache stays within a short reply's length.
	const renew = 200
	sessions := func() []*runtime.Session {
		ss := make([]*runtime.Session, 8)
		for i := range ss {
			if ss[i], err = m.NewSession(renew + 8); err != nil {
				b.Fatal(err)
			}
			ss[i].SetAdapters(runtime.Applied{Adapter: adapters[i%len(adapters)], Scale: 1})
			if _, err := ss[i].Forward(prompt[:4], false); err != nil {
				b.Fatal(err)
			}
		}
		return ss
	}
	next := make([]int32, 8)
	for i := range next {
		next[i] = prompt[4+i]
	}
	run := func(b *testing.B, step func([]*runtime.Session) error) {
		ss := sessions()
		i := 0
		for b.Loop() {
			if i++; i%renew == 0 {
				b.StopTimer()
				ss = sessions()
				b.StartTimer()
			}
			if err := step(ss); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("batched", func(b *testing.B) {
		run(b, func(ss []*runtime.Session) error { _, err := m.Step(ss, next); return err })
	})
	b.Run("sequential", func(b *testing.B) {
		run(b, func(ss []*runtime.Session) error {
			for i, s := range ss {
				if _, err := s.Forward(next[i:i+1], false); err != nil {
					return err
				}
			}
			return nil
		})
	})
}
