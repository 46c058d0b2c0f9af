package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

func randTensor(b *Backend, rng *rand.Rand, shape ...int) *lqrt.Tensor {
	t := b.Alloc(quant.F32, shape)
	for i := range f32s(t) {
		f32s(t)[i] = float32(rng.NormFloat64())
	}
	return t
}

// unfusedAttention runs the spelled-out ops the builders emit.
func unfusedAttention(t *testing.T, b *Backend, q, k, v, mask *lqrt.Tensor, scale float32, causal bool, window int) *lqrt.Tensor {
	t.Helper()
	H, T := q.Shape[0], q.Shape[1]
	S := k.Shape[1]
	run := func(op string, attrs ir.Attrs, shape []int, in ...*lqrt.Tensor) *lqrt.Tensor {
		out := b.Alloc(quant.F32, shape)
		if err := b.Run(op, attrs, out, in); err != nil {
			t.Fatal(err)
		}
		return out
	}
	s := run("MatMul", ir.Attrs{"transpose_b": true}, []int{H, T, S}, q, k)
	s = run("Scale", ir.Attrs{"scale": float64(scale)}, []int{H, T, S}, s)
	if mask != nil {
		s = run("Add", nil, []int{H, T, S}, s, mask)
	}
	if causal {
		s = run("CausalMask", ir.Attrs{"window": int64(window)}, []int{H, T, S}, s)
	}
	s = run("Softmax", nil, []int{H, T, S}, s)
	return run("MatMul", nil, []int{H, T, v.Shape[2]}, s, v)
}

// TestFlashAttentionMatchesUnfused compares the fused kernel with the
// unfused ops on random shapes: heads and key/value heads (MHA, GQA, MQA),
// head sizes 32 to 128, prompt lengths 1 to 4096, decoding against a longer
// cache (a strided view, as the KV cache gives), causal and masked, and
// with sliding windows shorter and longer than a key tile.
func TestFlashAttentionMatchesUnfused(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	b := New(2)
	defer b.Close()
	type shape struct{ H, Hkv, d, T, S int }
	shapes := []shape{{8, 8, 32, 1, 1}, {8, 2, 64, 7, 7}, {4, 1, 128, 64, 64}, {8, 4, 64, 300, 300},
		{8, 2, 64, 1, 1000}, {4, 4, 32, 5, 77}, {2, 1, 64, 4096, 4096},
		// Decoding with groups of query heads: TinyLlama's 8, an odd 7
		// (Qwen2-7B's), and 16.
		{32, 4, 64, 1, 300}, {28, 4, 128, 1, 77}, {16, 1, 32, 1, 130}}
	for _, sh := range shapes {
		for _, mode := range []struct {
			causal bool
			window int
		}{{true, 0}, {false, 0}, {true, 16}, {true, 100}} {
			causal, window := mode.causal, mode.window
			for _, masked := range []bool{false, true} {
				if sh.T == 4096 && (masked || window == 16) {
					continue // the big case once per causal flag is enough
				}
				name := fmt.Sprintf("H%d/%d d%d T%d S%d causal=%v window=%d mask=%v", sh.H, sh.Hkv, sh.d, sh.T, sh.S, causal, window, masked)
				q := randTensor(b, rng, sh.H, sh.T, sh.d)
				// k and v live in a cache with room for more positions.
				ctx := sh.S + 5
				kc, vc := randTensor(b, rng, sh.Hkv, ctx, sh.d), randTensor(b, rng, sh.Hkv, ctx, sh.d)
				k := &lqrt.Tensor{Type: quant.F32, Shape: []int{sh.Hkv, sh.S, sh.d}, Stride0: ctx * sh.d, Data: kc.Data}
				v := &lqrt.Tensor{Type: quant.F32, Shape: []int{sh.Hkv, sh.S, sh.d}, Stride0: ctx * sh.d, Data: vc.Data}
				var mask *lqrt.Tensor
				if masked {
					mask = randTensor(b, rng, sh.T, sh.S)
					for i, x := range f32s(mask) {
						if x > 1.2 {
							f32s(mask)[i] = float32(math.Inf(-1)) // some positions blocked outright
						}
					}
					for r := range sh.T { // every row keeps its first key
						f32s(mask)[r*sh.S] = 0
					}
				}
				scale := float32(1 / math.Sqrt(float64(sh.d)))
				want := unfusedAttention(t, b, q, k, v, mask, scale, causal, window)
				got := b.Alloc(quant.F32, []int{sh.H, sh.T, sh.d})
				attrs := ir.Attrs{"scale": float64(scale), "causal": causal, "n_head": int64(sh.H), "n_head_kv": int64(sh.Hkv), "softcap": 0.0,
					"window": int64(window)}
				in := []*lqrt.Tensor{q, k, v}
				if mask != nil {
					in = append(in, mask)
				}
				if err := b.Run("FlashAttention", attrs, got, in); err != nil {
					t.Fatal(err)
				}
				var worst float64
				for i, w := range f32s(want) {
					worst = max(worst, math.Abs(float64(f32s(got)[i]-w)))
				}
				if worst > 1e-5 {
					t.Errorf("%s: max |fused - unfused| = %.3g", name, worst)
				}
			}
		}
	}
}

// TestFlashAttentionBatchedMasks checks the 4-D form imported graphs use
// (a batch axis, masks that broadcast over batch, heads or query rows, a
// softcap) against the generic kernel of ONNX's Attention op, which
// computes in float64 with the scores spelled out.
func TestFlashAttentionBatchedMasks(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	b := New(2)
	defer b.Close()
	const B, H, Hkv, d = 2, 8, 2, 32
	cases := []struct {
		T, S    int
		mask    []int // mask shape, nil for none
		causal  bool
		softcap float64
	}{
		{7, 7, nil, true, 0},
		{7, 7, []int{7, 7}, true, 0},
		{5, 40, []int{B, 1, 1, 40}, false, 0}, // a padding mask per sequence
		{5, 40, []int{1, H, 5, 40}, false, 0},
		{70, 70, []int{B, H, 70, 70}, true, 20},
		{33, 33, nil, true, 5},
		{1, 100, []int{B, 1, 1, 100}, false, 20}, // decoding
		{1, 70, []int{1, H, 1, 70}, false, 0},
	}
	for _, c := range cases {
		name := fmt.Sprintf("T%d S%d mask %v causal %v softcap %g", c.T, c.S, c.mask, c.causal, c.softcap)
		q := randTensor(b, rng, B, H, c.T, d)
		k, v := randTensor(b, rng, B, Hkv, c.S, d), randTensor(b, rng, B, Hkv, c.S, d)
		in := []*lqrt.Tensor{q, k, v}
		if c.mask != nil {
			m := randTensor(b, rng, c.mask...)
			for i, x := range f32s(m) {
				if x > 1 && i%c.S != 0 { // block some keys, never a whole row
					f32s(m)[i] = float32(math.Inf(-1))
				}
			}
			in = append(in, m)
		}
		scale := 1 / math.Sqrt(d)
		got := b.Alloc(quant.F32, []int{B, H, c.T, d})
		if err := b.Run("FlashAttention", ir.Attrs{"scale": scale, "causal": c.causal, "n_head": int64(H), "n_head_kv": int64(Hkv), "softcap": c.softcap}, got, in); err != nil {
			t.Fatal(err)
		}
		outs := []*lqrt.Tensor{b.Alloc(quant.F32, []int{B, H, c.T, d}), b.Alloc(quant.F32, []int{B, Hkv, c.S, d}),
			b.Alloc(quant.F32, []int{B, Hkv, c.S, d}), b.Alloc(quant.F32, []int{B, H, c.T, c.S})}
		attrs := ir.Attrs{"scale": scale, "is_causal": map[bool]int64{true: 1}[c.causal], "softcap": c.softcap, "has_mask": c.mask != nil}
		if err := b.RunOutputs("Attention", attrs, outs, in); err != nil {
			t.Fatal(err)
		}
		var worst float64
		for i, w := range f32s(outs[0]) {
			worst = max(worst, math.Abs(float64(f32s(got)[i]-w)))
		}
		if worst > 1e-5 {
			t.Errorf("%s: max |fused - reference| = %.3g", name, worst)
		}
	}
}
