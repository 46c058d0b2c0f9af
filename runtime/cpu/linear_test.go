package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// BenchmarkLinear measures the matrix product of a layer: T tokens of in
// values through an out×in weight, on one thread.
func BenchmarkLinear(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		typ         quant.Type
		T, in, nout int
	}{{quant.Q4_0, 64, 2048, 2048}, {quant.Q4_0, 8, 2048, 2048}, {quant.Q4_0, 8, 2048, 5632}, {quant.Q4_0, 64, 5632, 2048}, {quant.Q4_0, 1, 2048, 5632}, {quant.Q8_0, 64, 2048, 2048},
		{quant.Q4_K, 64, 2048, 2048}, {quant.Q4_K, 1, 2048, 5632}, {quant.Q6_K, 64, 2048, 2048}, {quant.IQ4_NL, 64, 2048, 2048},
		{quant.F16, 64, 2048, 2048}, {quant.F16, 1, 2048, 5632}} {
		wf := randRow(rng, c.in*c.nout)
		t, _ := ir.FromF32("w", []int64{int64(c.nout), int64(c.in)}, wf)
		q, _ := ir.Convert(t, c.typ)
		be := New(1)
		wt, err := be.Weight(q)
		if err != nil {
			b.Fatal(err)
		}
		x := randRow(rng, c.T*c.in)
		out := make([]float32, c.T*c.nout)
		b.Run(fmt.Sprintf("%v/%dx%dx%d", c.typ, c.T, c.in, c.nout), func(b *testing.B) {
			for b.Loop() {
				be.linear(out, x, wt, nil, false)
			}
			b.ReportMetric(float64(c.T*c.in*c.nout)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
		})
		be.Close()
	}
}
