package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/x448/float16"
)

// TestFP16DecodeAllHalves checks the decode table against an independent
// implementation for all 65536 bit patterns.
func TestFP16DecodeAllHalves(t *testing.T) {
	for h := range 1 << 16 {
		got := FP16ToFP32(uint16(h))
		want := float16.Frombits(uint16(h)).Float32()
		if math.IsNaN(float64(want)) {
			if !math.IsNaN(float64(got)) {
				t.Fatalf("half %#04x: got %v, want NaN", h, got)
			}
			continue
		}
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("half %#04x: got %v, want %v", h, got, want)
		}
	}
}

// TestFP16EncodeRoundsToNearestEven compares ggml's conversion with an
// independent round-to-nearest-even over a stride through every float32
// bit pattern (subnormals, ties and overflow included).
func TestFP16EncodeRoundsToNearestEven(t *testing.T) {
	check := func(bits uint32) {
		f := math.Float32frombits(bits)
		got := FP32ToFP16(f)
		if math.IsNaN(float64(f)) {
			if got&0x7FFF != 0x7E00 {
				t.Fatalf("NaN %#08x -> %#04x, want quiet NaN 0x7E00", bits, got)
			}
			return
		}
		if want := float16.Fromfloat32(f).Bits(); got != want {
			t.Fatalf("%g (%#08x) -> %#04x, want %#04x", f, bits, got, want)
		}
	}
	for b := uint64(0); b < 1<<32; b += 4093 {
		check(uint32(b))
	}
	// Exact ties between two halves: mantissa bits below the half's last
	// bit equal to 0x1000.
	for _, b := range []uint32{0x3F801000, 0x3F803000, 0x38801000, 0x33000000, 0x33000001, 0x477FF000, 0x477FEFFF} {
		check(b)
		check(b | 0x80000000)
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3F800000, 0x3F80}, // 1
		{0x3F808000, 0x3F80}, // tie, even stays
		{0x3F818000, 0x3F82}, // tie, odd rounds up
		{0x3F808001, 0x3F81}, // above the tie
		{0x7F7FFFFF, 0x7F80}, // max float overflows to inf
		{0x7FC00001, 0x7FC0}, // NaN stays NaN, quiet
		{0x7F800001, 0x7FC0}, // signalling NaN becomes quiet
		{0x00000001, 0x0000}, // smallest subnormal rounds to zero
	}
	for _, c := range cases {
		if got := FP32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("FP32ToBF16(%#08x) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := BF16ToFP32(0x3F80); got != 1 {
		t.Errorf("BF16ToFP32(0x3F80) = %v", got)
	}
}

// TestRoundTripError quantizes random rows and checks that every value
// comes back within the type's step size: a wrong nibble order or scale
// would show as errors far larger than half a step.
func TestRoundTripError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 4*256)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	x[5] = 9 // an outlier in the first block
	// relative bound: max error / block max magnitude
	bounds := map[Type]float64{F32: 0, F16: 1e-3, BF16: 8e-3, Q8_0: 1.0 / 127, Q4_0: 1.0 / 8, Q4_1: 1.0 / 15,
		Q5_0: 1.0 / 16, Q5_1: 1.0 / 31, Q6_K: 1.0 / 20, Q2_K: 0.7, Q3_K: 0.35, Q4_K: 0.2, Q5_K: 0.1,
		IQ4_NL: 0.2, IQ4_XS: 0.2}
	for _, typ := range ConvertibleTypes() {
		bound, ok := bounds[typ]
		if !ok {
			t.Fatalf("no error bound for %v", typ)
		}
		buf := make([]byte, typ.RowSize(int64(len(x))))
		if err := typ.Encode(buf, x); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := typ.Decode(y, buf); err != nil {
			t.Fatal(err)
		}
		bs := max(typ.BlockSize(), 32)
		for b := 0; b < len(x); b += bs {
			var amax float64
			for _, v := range x[b : b+bs] {
				amax = max(amax, math.Abs(float64(v)))
			}
			for i := b; i < b+bs; i++ {
				if e := math.Abs(float64(x[i] - y[i])); e > bound*amax*1.0001 {
					t.Errorf("%v: value %d: %v came back as %v (error %.3g > %.3g)", typ, i, x[i], y[i], e, bound*amax)
					break
				}
			}
		}
	}
}

func TestEncodeRejectsPartialBlocks(t *testing.T) {
	if err := Q4_0.Encode(make([]byte, 18), make([]float32, 31)); err == nil {
		t.Error("Q4_0 accepted 31 values")
	}
	if err := Q8_0.Encode(make([]byte, 10), make([]float32, 32)); err == nil {
		t.Error("Q8_0 accepted a short buffer")
	}
	if err := IQ2_XXS.Encode(make([]byte, 66), make([]float32, 256)); err == nil {
		t.Error("IQ2_XXS encoded without a codec")
	}
}

func TestTypeTraits(t *testing.T) {
	got := map[string][2]int{}
	for _, typ := range []Type{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_K} {
		got[typ.String()] = [2]int{typ.BlockSize(), typ.TypeSize()}
	}
	want := map[string][2]int{"F32": {1, 4}, "F16": {1, 2}, "BF16": {1, 2}, "Q4_0": {32, 18}, "Q4_1": {32, 20},
		"Q5_0": {32, 22}, "Q5_1": {32, 24}, "Q8_0": {32, 34}, "Q6_K": {256, 210}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Error(diff)
	}
	if typ, err := ParseType("q4_0"); err != nil || typ != Q4_0 {
		t.Errorf("ParseType(q4_0) = %v, %v", typ, err)
	}
}

func TestParseFileType(t *testing.T) {
	for in, want := range map[string]FileType{
		"q4": FileMostlyQ4_K_M, "int4": FileMostlyQ4_K_M, "q4_k": FileMostlyQ4_K_M, "Q8": FileMostlyQ8_0, "int8": FileMostlyQ8_0,
		"q8_0": FileMostlyQ8_0, "Q5_1": FileMostlyQ5_1, "f32": FileAllF32, "bf16": FileMostlyBF16, "q6_k": FileMostlyQ6_K,
	} {
		if got, err := ParseFileType(in); err != nil || got != want {
			t.Errorf("ParseFileType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseFileType("q3"); err == nil {
		t.Error("ParseFileType(q3) succeeded")
	}
}

// TestPlan checks llama-quantize's per-tensor choices, including the
// fallbacks the real stories260K model triggers.
func TestPlan(t *testing.T) {
	cases := []struct {
		name      string
		ft        FileType
		hasOutput bool
		tensor    string
		shape     []int64
		want      Decision
	}{
		{"norms stay", FileMostlyQ4_0, true, "blk.0.attn_norm.weight", []int64{64}, Decision{}},
		{"position embedding stays", FileMostlyQ4_0, true, "position_embd.weight", []int64{256, 64}, Decision{}},
		{"biases stay", FileMostlyQ4_0, true, "blk.0.attn_qkv.bias", []int64{192}, Decision{}},
		{"matrix gets base", FileMostlyQ4_0, true, "blk.0.attn_q.weight", []int64{256, 256}, Decision{Quantize: true, Type: Q4_0}},
		{"output gets Q6_K", FileMostlyQ4_0, true, "output.weight", []int64{512, 256}, Decision{Quantize: true, Type: Q6_K}},
		{"Q8_0 output stays Q8_0", FileMostlyQ8_0, true, "output.weight", []int64{512, 256}, Decision{Quantize: true, Type: Q8_0}},
		{"token_embd gets base when untied", FileMostlyQ4_1, true, "token_embd.weight", []int64{512, 256}, Decision{Quantize: true, Type: Q4_1}},
		{"tied token_embd is the output", FileMostlyQ5_0, false, "token_embd.weight", []int64{512, 64},
			Decision{Quantize: true, Type: Q8_0, Fallback: "row length 64 is not a multiple of Q6_K's block size 256: using Q8_0"}},
		{"172 columns fall back to F16", FileMostlyQ4_0, false, "blk.0.ffn_down.weight", []int64{64, 172},
			Decision{Quantize: true, Type: F16, Fallback: "row length 172 is not a multiple of Q4_0's block size 32: using F16"}},
		{"Q6_K falls back to Q8_0", FileMostlyQ6_K, true, "blk.0.attn_q.weight", []int64{64, 64},
			Decision{Quantize: true, Type: Q8_0, Fallback: "row length 64 is not a multiple of Q6_K's block size 256: using Q8_0"}},
		{"pure ignores the output rule", FileMostlyQ4_0, true, "output.weight", []int64{512, 256}, Decision{Quantize: true, Type: Q4_0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Plan{FileType: c.ft, HasOutput: c.hasOutput, Pure: c.name == "pure ignores the output rule"}
			got, err := p.Choose(c.tensor, c.shape)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Error(diff)
			}
		})
	}
	if _, err := (Plan{FileType: FileMostlyQ4_0, Pure: true}).Choose("blk.0.ffn_down.weight", []int64{64, 172}); err == nil {
		t.Error("--pure accepted a row length Q4_0 cannot hold")
	}
}

func BenchmarkEncode(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for _, typ := range ConvertibleTypes() {
		buf := make([]byte, typ.RowSize(int64(len(x))))
		b.Run(typ.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for b.Loop() {
				typ.Encode(buf, x)
			}
		})
	}
}

// TestLayerRules checks the per-layer rules of the K-quant mixes on a
// 22-layer model (the golden files have only two layers): which layers
// llama-quantize gives more bits.
func TestLayerRules(t *testing.T) {
	layers := func(ft FileType, tensor string, gqa int) map[Type][]int {
		p := Plan{FileType: ft, HasOutput: true, Layers: 22, GQA: gqa}
		got := map[Type][]int{}
		for i := range 22 {
			d, err := p.Choose(fmt.Sprintf("blk.%d.%s", i, tensor), []int64{2048, 2048})
			if err != nil {
				t.Fatal(err)
			}
			got[d.Type] = append(got[d.Type], i)
		}
		return got
	}
	more := []int{0, 1, 4, 7, 10, 13, 16, 19, 20, 21} // use_more_bits(i, 22)
	rest := []int{2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18}
	cases := []struct {
		ft     FileType
		tensor string
		gqa    int
		want   map[Type][]int
	}{
		{FileMostlyQ4_K_M, "attn_v.weight", 8, map[Type][]int{Q6_K: more, Q4_K: rest}},
		{FileMostlyQ4_K_M, "ffn_down.weight", 8, map[Type][]int{Q6_K: more, Q4_K: rest}},
		{FileMostlyQ5_K_M, "ffn_down.weight", 8, map[Type][]int{Q6_K: more, Q5_K: rest}},
		{FileMostlyQ3_K_M, "ffn_down.weight", 8, map[Type][]int{Q5_K: {0}, Q4_K: seq(1, 22)}},
		{FileMostlyQ3_K_M, "attn_v.weight", 8, map[Type][]int{Q5_K: {0, 1}, Q4_K: seq(2, 22)}},
		{FileMostlyQ4_K_S, "attn_v.weight", 1, map[Type][]int{Q5_K: {0, 1, 2, 3}, Q4_K: seq(4, 22)}},
		{FileMostlyQ4_K_S, "ffn_down.weight", 1, map[Type][]int{Q5_K: {0, 1}, Q4_K: seq(2, 22)}},
		{FileMostlyQ2_K, "attn_v.weight", 8, map[Type][]int{Q4_K: seq(0, 22)}},
		{FileMostlyQ2_K, "attn_v.weight", 1, map[Type][]int{Q3_K: seq(0, 22)}},
		{FileMostlyIQ4_XS, "attn_v.weight", 8, map[Type][]int{Q5_K: seq(0, 22)}},
		{FileMostlyIQ4_NL, "ffn_down.weight", 1, map[Type][]int{Q5_K: {0, 1}, IQ4_NL: seq(2, 22)}},
		{FileMostlyQ4_K_M, "attn_q.weight", 8, map[Type][]int{Q4_K: seq(0, 22)}},
	}
	for _, c := range cases {
		if diff := cmp.Diff(c.want, layers(c.ft, c.tensor, c.gqa)); diff != "" {
			t.Errorf("%v %s gqa %d (-want +got):\n%s", c.ft, c.tensor, c.gqa, diff)
		}
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}
