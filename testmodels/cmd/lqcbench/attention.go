package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
)

// benchAttention times causal self-attention over T positions, fused
// (FlashAttention) against the spelled-out ops, each configuration in its
// own process so that its peak RSS is its own. Extra memory is the peak
// RSS above a process that only holds the inputs.
func benchAttention(threads, heads int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Printf("\ncausal attention, %d heads, %d threads: time and peak memory, fused vs unfused\n", heads, threads)
	fmt.Printf("  %5s %6s %10s %10s %7s %12s %12s %8s\n", "d", "T", "fused ms", "unfused ms", "speed ×", "fused MB", "unfused MB", "mem ×")
	for _, d := range []int{64, 128} {
		for _, T := range []int{512, 1024, 2048, 4096, 8192, 16384} {
			res := map[string][2]float64{}
			for _, mode := range []string{"inputs", "fused", "unfused"} {
				out, m, err := childRun(self, "attention-child", "-mode", mode, "-T", fmt.Sprint(T), "-d", fmt.Sprint(d),
					"-heads", fmt.Sprint(heads), "-threads", fmt.Sprint(threads))
				if err != nil {
					return err
				}
				ms, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
				res[mode] = [2]float64{ms, float64(m.maxRSS)}
			}
			base := res["inputs"][1]
			fx, ux := (res["fused"][1]-base)/1e6, (res["unfused"][1]-base)/1e6
			fmt.Printf("  %5d %6d %10.1f %10.1f %7.2f %12.1f %12.1f %8.3f\n", d, T, res["fused"][0], res["unfused"][0],
				res["unfused"][0]/res["fused"][0], fx, ux, fx/ux)
		}
	}
	return nil
}

// attentionChild runs one configuration and prints its time in ms.
func attentionChild(args []string) error {
	fs := flag.NewFlagSet("attention-child", flag.ExitOnError)
	mode := fs.String("mode", "fused", "inputs, fused or unfused")
	T := fs.Int("T", 512, "positions")
	d := fs.Int("d", 64, "head size")
	heads := fs.Int("heads", 2, "heads")
	threads := fs.Int("threads", 2, "threads")
	fs.Parse(args)
	b := cpu.New(*threads)
	defer b.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	tensor := func(shape ...int) *lqrt.Tensor {
		t := b.Alloc(quant.F32, shape)
		for i := range t.Data.([]float32) {
			t.Data.([]float32)[i] = float32(rng.NormFloat64())
		}
		return t
	}
	H := *heads
	q, k, v := tensor(H, *T, *d), tensor(H, *T, *d), tensor(H, *T, *d)
	scale := 1 / math.Sqrt(float64(*d))
	run := func(op string, attrs ir.Attrs, shape []int, in ...*lqrt.Tensor) *lqrt.Tensor {
		out := b.Alloc(quant.F32, shape)
		if err := b.Run(op, attrs, out, in); err != nil {
			panic(err)
		}
		return out
	}
	t0 := time.Now()
	switch *mode {
	case "fused":
		run("FlashAttention", ir.Attrs{"scale": scale, "causal": true, "n_head": int64(H), "n_head_kv": int64(H), "softcap": 0.0},
			[]int{H, *T, *d}, q, k, v)
	case "unfused":
		sq := []int{H, *T, *T}
		s := run("MatMul", ir.Attrs{"transpose_b": true}, sq, q, k)
		s = run("Scale", ir.Attrs{"scale": scale}, sq, s)
		s = run("CausalMask", nil, sq, s)
		s = run("Softmax", nil, sq, s)
		run("MatMul", nil, []int{H, *T, *d}, s, v)
	}
	fmt.Printf("%.3f\n", float64(time.Since(t0).Microseconds())/1000)
	return nil
}
