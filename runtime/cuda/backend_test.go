package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
	"github.com/lqc-dev/lqc/runtime/cuda/libcuda"
	"github.com/lqc-dev/lqc/runtime/cuda/sim"
)

// testBackend is the backend under test: on the PTX simulator, or with
// LQC_CUDA_TEST=cuda on the real GPU (make gpu-check), where the same
// tests run against the real driver.
func testBackend(t *testing.T) *Backend {
	t.Helper()
	var drv driver.Driver = sim.New()
	if os.Getenv("LQC_CUDA_TEST") == "cuda" {
		var err error
		if drv, err = libcuda.Open(0); err != nil {
			t.Fatal(err)
		}
	}
	b, err := New(drv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// operand is an input of an op case: activations (values, or token ids
// and positions) or a weight of some type.
type operand struct {
	shape    []int
	ids      []int32    // an I32 tensor
	weight   quant.Type // with isWeight, a weight of this type
	isWeight bool
}

func act(shape ...int) operand { return operand{shape: shape} }
func ints(ids ...int32) operand {
	return operand{shape: []int{len(ids)}, ids: ids}
}
func weight(typ quant.Type, shape ...int) operand {
	return operand{shape: shape, weight: typ, isWeight: true}
}

// place makes the operands on backend be with the same values: rng's
// draws, so that both backends see equal inputs.
func place(t *testing.T, be lqrt.Backend, ops []operand, seed uint64) []*lqrt.Tensor {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []*lqrt.Tensor
	for i, o := range ops {
		n := 1
		for _, d := range o.shape {
			n *= d
		}
		switch {
		case o.ids != nil:
			x := be.Alloc(quant.I32, o.shape)
			if err := be.WriteI32(x, o.ids); err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		case o.isWeight:
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
			shape := make([]int64, len(o.shape))
			for j, d := range o.shape {
				shape[j] = int64(d)
			}
			f, err := ir.FromF32(fmt.Sprintf("w%d", i), shape, v)
			if err != nil {
				t.Fatal(err)
			}
			w, err := ir.Convert(f, o.weight)
			if err != nil {
				t.Fatal(err)
			}
			x, err := be.Weight(w)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		default:
			v := make([]float32, n)
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
			x := be.Alloc(quant.F32, o.shape)
			b := make([]byte, 4*n)
			for j, f := range v {
				u := math.Float32bits(f)
				b[4*j], b[4*j+1], b[4*j+2], b[4*j+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
			}
			if err := be.Write(x, b); err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
	}
	return out
}

// TestKernelsAgainstCPU runs each op on the simulated GPU and on the CPU
// backend with the same inputs, odd shapes among them, and compares.
func TestKernelsAgainstCPU(t *testing.T) {
	cases := []struct {
		name  string
		op    string
		attrs ir.Attrs
		in    []operand
		out   []int
	}{
		{"Linear F32", "Linear", nil, []operand{act(3, 64), weight(quant.F32, 5, 64)}, []int{3, 5}},
		{"Linear F32 odd rows", "Linear", nil, []operand{act(2, 37), weight(quant.F32, 33, 37)}, []int{2, 33}},
		{"Linear F16 with bias", "Linear", ir.Attrs{"exact": true}, []operand{act(3, 96), weight(quant.F16, 7, 96), act(7)}, []int{3, 7}},
		// exact: the CPU multiplies decoded rows by float32 activations, as
		// the GPU does, instead of quantizing the activations to 8 bits.
		{"Linear Q8_0", "Linear", ir.Attrs{"exact": true}, []operand{act(1, 128), weight(quant.Q8_0, 9, 128)}, []int{1, 9}},
		{"Linear Q4_0", "Linear", ir.Attrs{"exact": true}, []operand{act(4, 160), weight(quant.Q4_0, 13, 160)}, []int{4, 13}},
		// Not exact: activations quantized to 8 bits (dp4a) on both.
		{"Linear Q4_0 on q8", "Linear", nil, []operand{act(3, 160), weight(quant.Q4_0, 13, 160)}, []int{3, 13}},
		{"Linear Q8_0 on q8, bias", "Linear", nil, []operand{act(2, 96), weight(quant.Q8_0, 9, 96), act(9)}, []int{2, 9}},
		{"Linear Q8_0 on q8, even blocks", "Linear", nil, []operand{act(5, 128), weight(quant.Q8_0, 9, 128)}, []int{5, 9}},
		{"Linear Q4_0 on q8, even blocks", "Linear", nil, []operand{act(5, 64), weight(quant.Q4_0, 9, 64)}, []int{5, 9}},
		{"Linear Q6_K", "Linear", ir.Attrs{"exact": true}, []operand{act(3, 512), weight(quant.Q6_K, 5, 512)}, []int{3, 5}},
		{"Embedding Q6_K", "Embedding", nil, []operand{weight(quant.Q6_K, 6, 256), ints(5, 0, 2)}, []int{3, 256}},
		{"Embedding Q4_0", "Embedding", nil, []operand{weight(quant.Q4_0, 11, 64), ints(3, 0, 10, 3)}, []int{4, 64}},
		{"Embedding Q8_0", "Embedding", nil, []operand{weight(quant.Q8_0, 11, 64), ints(7, 1)}, []int{2, 64}},
		{"Embedding F16", "Embedding", nil, []operand{weight(quant.F16, 5, 40), ints(4, 2)}, []int{2, 40}},
		{"RMSNorm", "RMSNorm", ir.Attrs{"eps": 1e-5}, []operand{act(3, 300), act(300)}, []int{3, 300}},
		{"LayerNorm", "LayerNorm", ir.Attrs{"eps": 1e-5}, []operand{act(2, 37), act(37), act(37)}, []int{2, 37}},
		{"Add broadcast", "Add", nil, []operand{act(3, 5, 7), act(5, 7)}, []int{3, 5, 7}},
		{"Mul", "Mul", nil, []operand{act(4, 9), act(4, 9)}, []int{4, 9}},
		{"SiLU", "SiLU", nil, []operand{act(301)}, []int{301}},
		{"GELU", "GELU", nil, []operand{act(2, 33)}, []int{2, 33}},
		{"GELU erf", "GELU", ir.Attrs{"approximate": "none"}, []operand{act(3, 41)}, []int{3, 41}},
		{"Relu", "Relu", nil, []operand{act(2, 37)}, []int{2, 37}},
		{"Scale", "Scale", ir.Attrs{"scale": 0.125}, []operand{act(17)}, []int{17}},
		{"RoPE", "RoPE", ir.Attrs{"n_dims": int64(16), "freq_base": 10000.0}, []operand{act(3, 2, 16), ints(0, 5, 100)}, []int{3, 2, 16}},
		{"RoPE neox, partial", "RoPE", ir.Attrs{"n_dims": int64(8), "freq_base": 500000.0, "mode": "neox", "freq_scale": 0.5},
			[]operand{act(2, 3, 12), ints(7, 4096)}, []int{2, 3, 12}},
		{"Permute", "Permute", ir.Attrs{"perm": []int64{1, 0, 2}}, []operand{act(3, 4, 5)}, []int{4, 3, 5}},
		{"Permute 2,0,1", "Permute", ir.Attrs{"perm": []int64{2, 0, 1}}, []operand{act(3, 4, 5)}, []int{5, 3, 4}},
		{"Slice", "Slice", ir.Attrs{"axis": int64(1), "start": int64(2), "end": int64(5)}, []operand{act(3, 7, 2)}, []int{3, 3, 2}},
		{"FlashAttention causal GQA", "FlashAttention", ir.Attrs{"scale": 0.25, "causal": true},
			[]operand{act(4, 3, 16), act(2, 8, 16), act(2, 8, 16)}, []int{4, 3, 16}},
		{"FlashAttention window softcap", "FlashAttention", ir.Attrs{"scale": 0.3, "causal": true, "window": int64(3), "softcap": 5.0},
			[]operand{act(2, 5, 8), act(1, 40, 8), act(1, 40, 8)}, []int{2, 5, 8}},
		{"FlashAttention mask, batch, 70 keys", "FlashAttention", ir.Attrs{"scale": 0.2},
			[]operand{act(2, 2, 3, 8), act(2, 1, 70, 8), act(2, 1, 70, 12), act(1, 1, 3, 70)}, []int{2, 2, 3, 12}},
		{"Softmax", "Softmax", nil, []operand{act(3, 70)}, []int{3, 70}},
		{"Softmax long rows", "Softmax", nil, []operand{act(2, 1000)}, []int{2, 1000}},
		{"CausalMask past keys, window", "CausalMask", ir.Attrs{"window": int64(4)}, []operand{act(2, 3, 9)}, []int{2, 3, 9}},
		{"CausalMask zero", "CausalMask", ir.Attrs{"zero": true}, []operand{act(5, 5)}, []int{5, 5}},
		{"Softcap", "Softcap", ir.Attrs{"cap": 3.0}, []operand{act(2, 45)}, []int{2, 45}},
		{"MatMul transposed, grouped", "MatMul", ir.Attrs{"transpose_b": true}, []operand{act(4, 3, 8), act(2, 5, 8)}, []int{4, 3, 5}},
		{"MatMul", "MatMul", nil, []operand{act(2, 3, 5), act(2, 5, 7)}, []int{2, 3, 7}},
		{"LowRank", "LowRank", ir.Attrs{"scale": 2.0}, []operand{act(3, 40), weight(quant.F32, 4, 40), weight(quant.F32, 6, 4)}, []int{3, 6}},
		// Training: the backward ops and the losses. The trained factors
		// are activations the trainer owns, not uploaded weights.
		{"LowRank on trained factors", "LowRank", ir.Attrs{"scale": 0.5}, []operand{act(3, 64), act(4, 64), act(6, 4)}, []int{3, 6}},
		{"SiLUGrad", "SiLUGrad", nil, []operand{act(301), act(301)}, []int{301}},
		{"RMSNormGrad", "RMSNormGrad", ir.Attrs{"eps": 1e-5, "wrt": "x"}, []operand{act(3, 300), act(300), act(3, 300)}, []int{3, 300}},
		{"LinearT Q4_0", "LinearT", nil, []operand{act(5, 13), weight(quant.Q4_0, 13, 160)}, []int{5, 160}},
		{"LinearT Q6_K", "LinearT", nil, []operand{act(2, 5), weight(quant.Q6_K, 5, 512)}, []int{2, 512}},
		{"LinearT F16", "LinearT", nil, []operand{act(3, 7), weight(quant.F16, 7, 96)}, []int{3, 96}},
		{"LinearT on a trained factor", "LinearT", nil, []operand{act(3, 64), act(64, 4)}, []int{3, 4}},
		{"LinearT on a trained factor, 64 wide", "LinearT", nil, []operand{act(9, 4), act(4, 64)}, []int{9, 64}},
		{"LinearGradW", "LinearGradW", nil, []operand{act(5, 6), act(5, 40)}, []int{6, 40}},
		{"CrossEntropy", "CrossEntropy", nil, []operand{act(4, 70), ints(3, -1, 69, 0)}, []int{1}},
		{"CrossEntropyGrad", "CrossEntropyGrad", nil, []operand{act(4, 70), ints(3, -1, 69, 0), act(1)}, []int{4, 70}},
		{"KLDiv", "KLDiv", nil, []operand{act(3, 300), act(3, 300)}, []int{1}},
		{"KLDivGrad", "KLDivGrad", nil, []operand{act(3, 300), act(3, 300), act(1)}, []int{3, 300}},
		{"GELUGrad", "GELUGrad", nil, []operand{act(2, 33), act(2, 33)}, []int{2, 33}},
		{"GELUGrad erf", "GELUGrad", ir.Attrs{"approximate": "none"}, []operand{act(3, 41), act(3, 41)}, []int{3, 41}},
		{"ReluGrad", "ReluGrad", nil, []operand{act(2, 37), act(2, 37)}, []int{2, 37}},
		{"SoftcapGrad", "SoftcapGrad", ir.Attrs{"cap": 3.0}, []operand{act(2, 45), act(2, 45)}, []int{2, 45}},
		{"SoftmaxGrad", "SoftmaxGrad", nil, []operand{act(3, 70), act(3, 70)}, []int{3, 70}},
		{"LayerNormGrad", "LayerNormGrad", ir.Attrs{"eps": 1e-5, "wrt": "x"}, []operand{act(2, 37), act(37), act(2, 37)}, []int{2, 37}},
		{"SliceGrad", "SliceGrad", ir.Attrs{"axis": int64(1), "start": int64(2)}, []operand{act(3, 3, 2)}, []int{3, 7, 2}},
	}
	// Every other block type lqc writes: a matrix product (the CPU
	// multiplying decoded rows, as the GPU does) and embedding rows.
	for _, typ := range []quant.Type{quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.IQ4_NL, quant.IQ4_XS, quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K} {
		in := 96
		if typ.BlockSize() == 256 {
			in = 512
		}
		cases = append(cases, []struct {
			name  string
			op    string
			attrs ir.Attrs
			in    []operand
			out   []int
		}{
			{"Linear " + typ.String(), "Linear", ir.Attrs{"exact": true}, []operand{act(2, in), weight(typ, 7, in)}, []int{2, 7}},
			{"Embedding " + typ.String(), "Embedding", nil, []operand{weight(typ, 5, in), ints(4, 0, 2)}, []int{3, in}},
		}...)
	}
	gpu := testBackend(t)
	host := cpu.New(1)
	defer host.Close()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := run(t, host, c.op, c.attrs, c.in, c.out, uint64(i))
			got := run(t, gpu, c.op, c.attrs, c.in, c.out, uint64(i))
			var scale, diff float64
			for j := range want {
				if got[j] == want[j] { // masked scores: −inf on both
					continue
				}
				scale = max(scale, math.Abs(float64(want[j])))
				diff = max(diff, math.Abs(float64(got[j]-want[j])))
			}
			if diff > 1e-5*max(scale, 1) || math.IsNaN(diff) {
				t.Errorf("max |GPU − CPU| = %.3g (values up to %.3g)", diff, scale)
			}
		})
	}
}

func run(t *testing.T, be lqrt.Backend, op string, attrs ir.Attrs, ops []operand, shape []int, seed uint64) []float32 {
	t.Helper()
	in := place(t, be, ops, seed)
	out := be.Alloc(quant.F32, shape)
	if err := be.Run(op, attrs, out, in); err != nil {
		t.Fatalf("%s: %v", be.Name(), err)
	}
	v := make([]float32, out.Len())
	if err := be.ReadF32(out, v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestKVCache: writes at a position land in the cache where the CPU
// backend puts them, and the op's view reads back as the cached
// positions of every head.
func TestKVCache(t *testing.T) {
	gpu := testBackend(t)
	host := cpu.New(1)
	defer host.Close()
	var views [2][]float32
	var gpuView []byte
	for i, be := range []lqrt.Backend{host, gpu} {
		in := place(t, be, []operand{act(2, 3, 4), act(3, 10, 4)}, 9)
		out := &lqrt.Tensor{Type: quant.F32, Shape: []int{3, 7, 4}}
		if err := be.Run("KVCache", ir.Attrs{"pos": int64(5)}, out, in); err != nil {
			t.Fatal(err)
		}
		if out.Stride0 != 40 {
			t.Fatalf("%s: the view's stride is %d, want 40", be.Name(), out.Stride0)
		}
		if be == lqrt.Backend(gpu) {
			v, err := be.Read(out)
			if err != nil {
				t.Fatal(err)
			}
			gpuView = v
		}
		raw, err := be.Read(in[1])
		if err != nil {
			t.Fatal(err)
		}
		views[i] = make([]float32, len(raw)/4)
		for j := range views[i] {
			views[i][j] = math.Float32frombits(uint32(raw[4*j]) | uint32(raw[4*j+1])<<8 | uint32(raw[4*j+2])<<16 | uint32(raw[4*j+3])<<24)
		}
	}
	for j := range views[0] {
		if views[0][j] != views[1][j] {
			t.Fatalf("cache element %d: GPU %v, CPU %v", j, views[1][j], views[0][j])
		}
	}
	// The view: head h's first 7 positions, 4 values each.
	for h := range 3 {
		for k := range 7 * 4 {
			j := 4 * (h*7*4 + k)
			got := math.Float32frombits(uint32(gpuView[j]) | uint32(gpuView[j+1])<<8 | uint32(gpuView[j+2])<<16 | uint32(gpuView[j+3])<<24)
			if want := views[0][h*10*4+k]; got != want {
				t.Fatalf("view head %d value %d: %v, want %v", h, k, got, want)
			}
		}
	}
}

// TestFlashAttentionTraining: the fused attention's log-sum-exp output
// and its backward (dq, dk, dv recomputed from it) agree with the CPU
// backend's, with grouped heads, causal windows, a softcap and a mask.
func TestFlashAttentionTraining(t *testing.T) {
	cases := []struct {
		name  string
		attrs ir.Attrs
		q, kv []int // shapes; kv's last axis is the head size of both
		mask  []int
	}{
		{"causal GQA", ir.Attrs{"scale": 0.25, "causal": true}, []int{4, 37, 16}, []int{2, 37, 16}, nil},
		{"window, softcap", ir.Attrs{"scale": 0.3, "causal": true, "window": int64(5), "softcap": 4.0}, []int{2, 40, 8}, []int{1, 40, 8}, nil},
		{"batched, masked", ir.Attrs{"scale": 0.2}, []int{2, 2, 3, 8}, []int{2, 1, 70, 8}, []int{1, 1, 3, 70}},
	}
	gpu := testBackend(t)
	host := cpu.New(1)
	defer host.Close()
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var results [2][][]float32
			for j, be := range []lqrt.Backend{host, gpu} {
				ops := []operand{act(c.q...), act(c.kv...), act(c.kv...), act(c.q...)} // q, k, v, do
				if c.mask != nil {
					ops = append(ops, act(c.mask...))
				}
				in := place(t, be, ops, uint64(i))
				lseShape := c.q[:len(c.q)-1]
				o, lse := be.Alloc(quant.F32, c.q), be.Alloc(quant.F32, lseShape)
				fwd := []*lqrt.Tensor{in[0], in[1], in[2]}
				if c.mask != nil {
					fwd = append(fwd, in[4])
				}
				if err := be.RunOutputs("FlashAttention", c.attrs, []*lqrt.Tensor{o, lse}, fwd); err != nil {
					t.Fatalf("%s: %v", be.Name(), err)
				}
				grads := []*lqrt.Tensor{be.Alloc(quant.F32, c.q), be.Alloc(quant.F32, c.kv), be.Alloc(quant.F32, c.kv)}
				bwd := []*lqrt.Tensor{in[0], in[1], in[2], o, lse, in[3]}
				if c.mask != nil {
					bwd = append(bwd, in[4])
				}
				if err := be.RunOutputs("FlashAttentionGrad", c.attrs, grads, bwd); err != nil {
					t.Fatalf("%s: %v", be.Name(), err)
				}
				for _, x := range append([]*lqrt.Tensor{o, lse}, grads...) {
					v := make([]float32, x.Len())
					if err := be.ReadF32(x, v); err != nil {
						t.Fatal(err)
					}
					results[j] = append(results[j], v)
				}
			}
			for k, what := range []string{"o", "lse", "dq", "dk", "dv"} {
				want, got := results[0][k], results[1][k]
				var scale, diff float64
				for j := range want {
					scale = max(scale, math.Abs(float64(want[j])))
					diff = max(diff, math.Abs(float64(got[j]-want[j])))
				}
				if diff > 2e-5*max(scale, 1) || math.IsNaN(diff) || scale == 0 {
					t.Errorf("%s: max |GPU − CPU| = %.3g (values up to %.3g)", what, diff, scale)
				}
			}
		})
	}
}
