package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

// benchKernels times the quantizers themselves on one thread, lqc's
// against ggml's ggml_quantize_chunk (the function llama-quantize calls
// per tensor) on the same 2048×5632 matrix, with and without an
// importance vector: llama_model_quantize cannot be handed an importance
// matrix from outside C++, so this is where the imatrix paths meet.
func benchKernels(dir string, runs int) error {
	const rows, cols = 2048, 5632
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(0.02 * rng.NormFloat64())
	}
	imat := make([]float32, cols)
	for j := range imat {
		imat[j] = float32(math.Exp(2 * rng.NormFloat64()))
	}
	type kernel struct {
		typ      quant.Type
		weighted bool
	}
	kernels := []kernel{{quant.Q4_0, false}, {quant.Q4_0, true}, {quant.Q4_K, false}, {quant.Q4_K, true}, {quant.Q6_K, false}}
	var jobs []llamacpp.QuantJob
	for _, k := range kernels {
		for range runs {
			j := llamacpp.QuantJob{Type: uint32(k.typ), RowLen: cols, X: x}
			if k.weighted {
				j.Imatrix = imat
			}
			jobs = append(jobs, j)
		}
	}
	_, ggmlTimes, err := llamacpp.QuantizeRows(dir, jobs)
	if err != nil {
		return err
	}
	mbIn := float64(4*len(x)) / 1e6
	fmt.Printf("\nquantizer kernels, one thread, %dx%d F32 (%.0f MB), median of %d: lqc against ggml_quantize_chunk\n", rows, cols, mbIn, runs)
	fmt.Printf("  %-16s %12s %12s %8s\n", "", "lqc MB/s", "ggml MB/s", "ratio")
	for i, k := range kernels {
		dst := make([]byte, k.typ.RowSize(int64(len(x))))
		var lqcTimes []time.Duration
		for range runs {
			start := time.Now()
			var err error
			if k.weighted {
				err = k.typ.EncodeWeighted(dst, x, cols, imat)
			} else {
				err = k.typ.Encode(dst, x)
			}
			if err != nil {
				return err
			}
			lqcTimes = append(lqcTimes, time.Since(start))
		}
		lq, gg := medianDuration(lqcTimes), medianDuration(ggmlTimes[i*runs:(i+1)*runs])
		name := k.typ.String()
		if k.weighted {
			name += " +imatrix"
		}
		fmt.Printf("  %-16s %12.1f %12.1f %8.2f\n", name, mbIn/lq.Seconds(), mbIn/gg.Seconds(), gg.Seconds()/lq.Seconds())
	}
	return nil
}

func medianDuration(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
