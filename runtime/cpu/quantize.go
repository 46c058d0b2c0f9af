package cpu

import (
	"math"
	"unsafe"

	"github.com/lqc-dev/lqc/quant"
)

// Activations multiplied with block-quantized weights are quantized to 8
// bits first, block by block, as ggml does, so that the dot product runs
// on integers. lqc keeps the scales in float32.

// q8Block is one 32-value block of quantized activations: scale d, sum
// s = d·Σq (for the types with a minimum), and the values.
type q8Block struct {
	d, s float32
	qs   [32]int8
}

// scaleOf returns the scale d that maps blk's largest magnitude to 127,
// and its inverse (0 for an all-zero block).
func scaleOf(blk []float32) (d, id float32) {
	var amax float32
	for _, v := range blk {
		amax = max(amax, float32(math.Abs(float64(v))))
	}
	if d = amax / 127; d != 0 {
		id = 1 / d
	}
	return d, id
}

// quantizeQ8 quantizes x (a multiple of 32 values) into dst.
func quantizeQ8(dst []q8Block, x []float32) {
	sums := q8Sums(dst)
	quantizeQ8Sums(sums, x)
	for b := range dst {
		dst[b].s = dst[b].d * float32(int32(sums[b].aux))
	}
}

// quantizeTokens quantizes T tokens of in values each into blocks of
// size values, tokens spread over the pool: the activations of a matrix
// product, before the kernels read them.
func quantizeTokens[B any](b *Backend, x []float32, T, in, size int, quantize func([]B, []float32)) []B {
	nb := in / size
	xq := make([]B, T*nb)
	b.pool.parallel(T, grainFor(in, 1), func(lo, hi int) { quantize(xq[lo*nb:hi*nb], x[lo*in:hi*in]) })
	return xq
}

// q8SumBlock is a q8Block whose second field holds Σq as an int32: the
// form quantizeQ8Sums writes. The panel kernels take it with −zero·Σq
// there.
type q8SumBlock struct {
	d   float32
	aux uint32
	qs  [32]int8
}

// q8Sums is blocks' memory as q8SumBlocks (the same layout).
func q8Sums(blocks []q8Block) []q8SumBlock {
	return unsafe.Slice((*q8SumBlock)(unsafe.Pointer(unsafe.SliceData(blocks))), len(blocks))
}

// quantizeQ8Sums quantizes x into dst with each block's Σq; the AVX-512
// kernel (quantizeQ8AVX512) where the CPU has it computes the same bits.
var quantizeQ8Sums = quantizeQ8SumsGo

func quantizeQ8SumsGo(dst []q8SumBlock, x []float32) {
	for b := range dst {
		blk := x[32*b : 32*b+32]
		d, id := scaleOf(blk)
		var sum int32
		for j, v := range blk {
			q := int8(roundToInt(v * id))
			dst[b].qs[j] = q
			sum += int32(q)
		}
		dst[b].d = d
		dst[b].aux = uint32(sum)
	}
}

// q8KBlock is one 256-value block of activations for the K-quants, with
// the sums of each 16-value group.
type q8KBlock struct {
	d     float32
	qs    [256]int8
	bsums [16]int16
}

// quantizeQ8K is ggml's quantize_row_q8_K_ref, which ggml's CPU backend
// uses on x86: the scale comes from the signed value of largest
// magnitude, so that value maps to −127.
//
// The AVX-512 kernel (quantizeQ8KAVX512) where the CPU has it computes the
// same bits for finite values.
var quantizeQ8K = quantizeQ8KGo

func quantizeQ8KGo(dst []q8KBlock, x []float32) {
	for b := range dst {
		blk := x[256*b : 256*b+256]
		var amax, mx float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); a > amax {
				amax, mx = a, v
			}
		}
		if amax == 0 {
			dst[b] = q8KBlock{}
			continue
		}
		iscale := -127 / mx
		for j, v := range blk {
			dst[b].qs[j] = int8(min(127, roundToInt(iscale*v)))
		}
		for g := range 16 {
			var s int16
			for _, q := range dst[b].qs[16*g : 16*g+16] {
				s += int16(q)
			}
			dst[b].bsums[g] = s
		}
		dst[b].d = 1 / iscale
	}
}

// roundToInt rounds |f| ≤ 2^22 to the nearest integer, ties to even, by
// adding 1.5·2^23 and reading the mantissa (much cheaper than
// math.Round).
func roundToInt(f float32) int32 {
	return int32(math.Float32bits(f+12582912)&0x007fffff) - 0x00400000
}

// actFormat says how a weight type wants its activations.
type actFormat int

const (
	actF32  actFormat = iota // dense float32 against rows decoded to float32
	actQ8                    // 32-value q8 blocks
	actQ8K                   // 256-value q8 blocks
	actHalf                  // dense float32 against F16 or BF16 rows read in place
)

func activationFormat(t quant.Type) actFormat {
	switch t {
	case quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.IQ4_NL:
		return actQ8
	case quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_XS:
		return actQ8K
	case quant.F16, quant.BF16:
		return actHalf
	}
	return actF32
}
