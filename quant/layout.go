package quant

// Layout helpers that dot-product kernels elsewhere (the CPU backend's
// integer kernels) need to read blocks in place, exported so that the
// packing facts live in one package.

// ScaleMinK4 unpacks the 6-bit scale and minimum of sub-block j (0…7)
// from the 12 scale bytes of a Q4_K or Q5_K super-block.
func ScaleMinK4(j int, scales []byte) (scale, min uint8) { return getScaleMinK4(j, scales) }

// ScaleQ3K unpacks the signed 6-bit scale of sub-block j (0…15) from the
// 12 scale bytes of a Q3_K super-block.
func ScaleQ3K(scales []byte, j int) int { return q3Scale(scales, j) }

// IQ4NLValues is the non-linear grid of IQ4_NL and IQ4_XS: level q stands
// for IQ4NLValues()[q] times the block scale.
func IQ4NLValues() [16]int8 { return kvaluesIQ4NL }
