//go:build amd64

package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// The panel kernels sum each block exactly in int32 and add it with one
// fused multiply-add per block, so they agree with the row-at-a-time
// kernels (ggml's order) to rounding, not bit for bit.
func TestPanelLinear(t *testing.T) {
	if len(panelTypes) == 0 {
		t.Skip("no AVX-512 VNNI on this CPU")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	be, kept := New(2), New(2) // kept packs each weight once and keeps it
	defer be.Close()
	defer kept.Close()
	kept.KeepPanels()
	for _, typ := range []quant.Type{quant.Q4_0, quant.IQ4_NL, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_XS, quant.Q3_K, quant.Q2_K} {
		// 16 rows fill one panel; 37 leave a part-filled last panel.
		for _, shape := range [][2]int{{256, 16}, {2048, 37}, {5632, 33}} {
			in, out := shape[0], shape[1]
			q, w := randWeight(t, be, rng, typ, out, in)
			rows, err := matrix(w)
			if err != nil {
				t.Fatal(err)
			}
			// Token counts that take every kernel: eight, four and one
			// (and, with kept panels, from two tokens on).
			for _, T := range []int{2, 12, 13, 16, 21, 29} {
				t.Run(fmt.Sprintf("%v/%dx%dx%d", typ, T, in, out), func(t *testing.T) {
					x := randRow(rng, T*in)
					x[in+in/2] = 0 // a block's sum may be anything, a row's zero
					y := make([]float32, T*out)
					if err := be.linear(y, x, w, nil, false); err != nil {
						t.Fatal(err)
					}
					yk := make([]float32, T*out)
					if err := kept.linear(yk, x, w, nil, false); err != nil {
						t.Fatal(err)
					}
					if T >= panelMinTokens && !slices.Equal(y, yk) {
						t.Fatalf("kept panels give other products than panels packed per call")
					}
					y = yk
					rowDot := quantizedDot(typ, x, in)
					deq, _ := q.Float32s()
					for tok := range T {
						for o := range out {
							want := rowDot(rows.row(o), tok)
							got := y[tok*out+o]
							// The blocks' rounding errors add up like a random
							// walk over terms as large as ‖w‖·‖x‖/√(in/32);
							// a wrong lane or block is off by a whole term.
							tol := 1e-7*norm(deq[o*in:(o+1)*in])*norm(x[tok*in:(tok+1)*in]) + 1e-6
							if math.Abs(float64(got-want)) > tol {
								t.Fatalf("token %d row %d: panel %v, row kernel %v", tok, o, got, want)
							}
						}
					}
				})
			}
		}
	}
}

// TestPanelHalf: F16 prompts widen the weights in registers and sum the
// products in float32 with fused multiply-adds; BF16 prompts on
// AVX512-BF16 round the activations to bfloat16 first and sum the
// products in float32 (VDPBF16PS), as llama.cpp does. Both agree with a
// float64 product of the weights and the activations they take (F16
// float32, BF16 bfloat16) to float32 rounding; training's exact products
// take float32 activations for both.
func TestPanelHalf(t *testing.T) {
	if panelTypes[quant.F16] == nil {
		t.Skip("no AVX-512 on this CPU")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	be := New(2)
	defer be.Close()
	be.KeepPanels() // 16-bit float panels are packed per product all the same
	for _, typ := range []quant.Type{quant.F16, quant.BF16} {
		if panelTypes[typ] == nil {
			t.Logf("%v: no panel kernels on this CPU (BF16 needs AVX512-BF16)", typ)
			continue
		}
		for _, shape := range [][2]int{{256, 16}, {2048, 37}, {5632, 33}} {
			in, out := shape[0], shape[1]
			q, w := randWeight(t, be, rng, typ, out, in)
			deq, _ := q.Float32s()
			for _, T := range []int{12, 13, 16, 21, 29} {
				x := randRow(rng, T*in)
				y := make([]float32, T*out)
				if err := be.linear(y, x, w, nil, false); err != nil {
					t.Fatal(err)
				}
				exact := make([]float32, T*out)
				if err := be.linear(exact, x, w, nil, true); err != nil {
					t.Fatal(err)
				}
				for tok := range T {
					xt := x[tok*in : (tok+1)*in]
					for o := range out {
						wo := deq[o*in : (o+1)*in]
						var rounded, full, mag float64
						for i, v := range xt {
							rounded += float64(wo[i]) * float64(quant.BF16ToFP32(quant.FP32ToBF16(v)))
							full += float64(wo[i]) * float64(v)
							mag += math.Abs(float64(wo[i]) * float64(v))
						}
						if typ == quant.F16 {
							rounded = full
						}
						if got := y[tok*out+o]; !within(got, rounded, mag, in) {
							t.Fatalf("%v %dx%d token %d row %d: panel %v, float64 of the activations it takes %v", typ, in, out, tok, o, got, rounded)
						}
						if got := exact[tok*out+o]; !within(got, full, mag, in) {
							t.Fatalf("%v %dx%d token %d row %d: exact product %v, float64 %v", typ, in, out, tok, o, got, full)
						}
					}
				}
			}
		}
	}
}

// quantizedDot quantizes T tokens of activations as typ's row kernels
// take them and returns those kernels' product of a row with token t.
func quantizedDot(typ quant.Type, x []float32, in int) func(row []byte, t int) float32 {
	T := len(x) / in
	if activationFormat(typ) == actQ8K {
		nb := in / 256
		xq := make([]q8KBlock, T*nb)
		for t := range T {
			quantizeQ8K(xq[t*nb:(t+1)*nb], x[t*in:(t+1)*in])
		}
		return func(row []byte, t int) float32 { return dotQ8KFor(typ)(row, xq[t*nb:(t+1)*nb]) }
	}
	nb := in / 32
	xq := make([]q8Block, T*nb)
	for t := range T {
		quantizeQ8(xq[t*nb:(t+1)*nb], x[t*in:(t+1)*in])
	}
	return func(row []byte, t int) float32 { return dotQ8For(typ)(row, xq[t*nb:(t+1)*nb]) }
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func BenchmarkPanel(b *testing.B) {
	if len(panelTypes) == 0 {
		b.Skip("no AVX-512 VNNI")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	const in, out, T = 2048, 2048, 64
	be := New(1)
	defer be.Close()
	for _, typ := range []quant.Type{quant.Q4_0, quant.IQ4_NL, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_XS, quant.Q3_K, quant.Q2_K, quant.F16, quant.BF16} {
		_, w := randWeight(b, be, rng, typ, out, in)
		x := randRow(rng, T*in)
		y := make([]float32, T*out)
		// BF16 also through the float32 GEMM (exact: training's path).
		for _, exact := range []bool{false, true}[:1+btoi(typ == quant.BF16)] {
			name := typ.String()
			if exact {
				name += "/exact"
			}
			b.Run(name, func(b *testing.B) {
				for b.Loop() {
					_ = be.linear(y, x, w, nil, exact)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(in*out*T)*1e3, "ps/MAC")
			})
		}
	}
}

// The AVX-512 quantizer computes exactly what its portable twin does.
func TestQuantizeQ8Sums(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	const nb = 40
	x := randRow(rng, 32*nb)
	clear(x[64:96]) // an all-zero block
	for i := 128; i < 160; i++ {
		x[i] = float32(i%7) - 3 // ties: max 3 maps to 127, others to k·127/3
	}
	x[200] = float32(math.Inf(1)) // the scale is infinite; the Go twin's bits still hold
	x[300] = -1e30
	want, got := make([]q8SumBlock, nb), make([]q8SumBlock, nb)
	quantizeQ8SumsGo(want, x)
	quantizeQ8Sums(got, x)
	for b := range want {
		if want[b].d != got[b].d && !(math.IsNaN(float64(want[b].d)) && math.IsNaN(float64(got[b].d))) || want[b].aux != got[b].aux || want[b].qs != got[b].qs {
			t.Errorf("block %d: AVX-512 %+v, portable %+v", b, got[b], want[b])
		}
	}
}

func TestQuantizeQ8K(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512")
	}
	if unsafe.Sizeof(q8KBlock{}) != 292 {
		t.Fatalf("q8KBlock is %d bytes, the kernel writes 292", unsafe.Sizeof(q8KBlock{}))
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const nb = 12
	x := randRow(rng, 256*nb)
	clear(x[256:512])                // an all-zero block
	x[600], x[700] = -9, 9           // two of the largest magnitude: the first wins
	x[1000], x[1001] = 1e-30, -1e-30 // tiny values round to zero
	for i := 1024; i < 1280; i++ {   // ties
		x[i] = float32(i%9) - 4
	}
	x[2000] = 3e38
	want, got := make([]q8KBlock, nb), make([]q8KBlock, nb)
	quantizeQ8KGo(want, x)
	quantizeQ8K(got, x)
	for b := range want {
		if want[b] != got[b] {
			t.Errorf("block %d: AVX-512 d=%v bsums=%v, portable d=%v bsums=%v", b, got[b].d, got[b].bsums, want[b].d, want[b].bsums)
		}
	}
}

// BenchmarkPanelTokens times a product of few tokens through the panels
// and row by row, to place panelMinTokens.
func BenchmarkPanelTokens(b *testing.B) {
	if len(panelTypes) == 0 {
		b.Skip("no AVX-512 VNNI")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	const in, out = 2048, 2048
	be := New(1)
	defer be.Close()
	defer func(n int) { panelMinTokens = n }(panelMinTokens)
	for _, typ := range []quant.Type{quant.Q4_0, quant.Q4_K, quant.Q6_K} {
		_, w := randWeight(b, be, rng, typ, out, in)
		for _, T := range []int{4, 8, 12, 16, 24} {
			x := randRow(rng, T*in)
			y := make([]float32, T*out)
			for _, panels := range []bool{true, false} {
				b.Run(fmt.Sprintf("%v/T=%d/panels=%v", typ, T, panels), func(b *testing.B) {
					panelMinTokens = 4
					if !panels {
						panelMinTokens = 1 << 30
					}
					for b.Loop() {
						_ = be.linear(y, x, w, nil, false)
					}
				})
			}
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// randWeight is a random out × in matrix converted to typ, and as be
// keeps it.
func randWeight(t testing.TB, be *Backend, rng *rand.Rand, typ quant.Type, out, in int) (*ir.Tensor, *lqrt.Tensor) {
	t.Helper()
	wt, err := ir.FromF32("w", []int64{int64(out), int64(in)}, randRow(rng, in*out))
	if err != nil {
		t.Fatal(err)
	}
	q, err := ir.Convert(wt, typ)
	if err != nil {
		t.Fatal(err)
	}
	w, err := be.Weight(q)
	if err != nil {
		t.Fatal(err)
	}
	return q, w
}
