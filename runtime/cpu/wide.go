package cpu

import "github.com/lqc-dev/lqc/quant"

// wideDot, where the CPU has AVX-512 VNNI (wide_amd64.go), runs Q4_0,
// IQ4_NL and Q8_0 rows two blocks per step against activations in the wide layout.
// It covers block pairs [p0, p0+np) of the row.
var wideDot func(typ quant.Type, row []byte, a *wideAct, t, p0, np int, out []float32)

// wideZero is the zero point each type's weights are shifted by to enter
// VPDPBUSD as unsigned bytes: Q4_0's nibbles are w+8, Q8_0 and IQ4_NL's
// levels get w+128.
var wideZero = map[quant.Type]int32{quant.Q4_0: 8, quant.Q8_0: 128, quant.IQ4_NL: 128}

// wideAct is activations in the layout of the AVX-512 kernels: the 8-bit
// values of every token contiguous, and for each pair of blocks the lane
// corrections −zero·Σ of every four values and a vector of sixteen scales
// (the first block's eight times, then the second's).
type wideAct struct {
	qs    []byte
	corr  []int32
	dv    []float32
	pairs int
}

// toWide lays out T tokens of nb q8 blocks for weights shifted by zero.
func toWide(xq []q8Block, T, nb int, zero int32) wideAct {
	pairs := nb / 2
	w := wideAct{qs: make([]byte, T*nb*32), corr: make([]int32, T*pairs*16), dv: make([]float32, T*pairs*16), pairs: pairs}
	for i, b := range xq {
		t, blk := i/nb, i%nb
		base := (t*pairs+blk/2)*16 + 8*(blk%2)
		for j, q := range b.qs {
			w.qs[32*i+j] = byte(q)
			w.corr[base+j/4] -= zero * int32(q)
		}
		for k := range 8 {
			w.dv[base+k] = b.d
		}
	}
	return w
}
