package quant

import "fmt"

// Importance-weighted quantization: with an importance matrix (the mean
// squared activation each input column of a matrix sees), llama.cpp's
// quantizers minimise an error weighted by it instead of the plain one.
// These encoders follow its quantize_row_*_impl functions. They work a row
// at a time, because some weigh by the spread of the whole row.

// weightedCodec is implemented by the codecs llama.cpp gives an imatrix
// path; the others ignore importance weights, as llama.cpp's do.
type weightedCodec interface {
	// encodeRow quantizes one row; qw holds one weight per value.
	encodeRow(dst []byte, row, qw []float32)
}

// TakesWeights reports whether t's quantizer uses importance weights.
func (t Type) TakesWeights() bool {
	_, ok := table[t].codec.(weightedCodec)
	return ok
}

// EncodeWeighted quantizes rows of rowLen values in src, weighting every
// column by qw (len rowLen). Types without a weighted quantizer ignore qw.
func (t Type) EncodeWeighted(dst []byte, src []float32, rowLen int, qw []float32) error {
	c, err := t.checked(int64(len(src)), len(dst))
	if err != nil {
		return err
	}
	wc, ok := c.(weightedCodec)
	if !ok || qw == nil {
		c.encode(dst, src)
		return nil
	}
	if len(qw) != rowLen || rowLen == 0 || len(src)%rowLen != 0 || !t.Fits(int64(rowLen)) {
		return fmt.Errorf("quant: %v: %d importance weights for rows of %d", t, len(qw), rowLen)
	}
	rb := int(t.RowSize(int64(rowLen)))
	for r := 0; r < len(src)/rowLen; r++ {
		wc.encodeRow(dst[r*rb:(r+1)*rb], src[r*rowLen:(r+1)*rowLen], qw)
	}
	return nil
}

// rowSigma2 is Σx²/n over a row (or 2Σx²/n with twice set), the spread
// the weighted quantizers scale importance by.
func rowSigma2(x []float32, twice bool) float32 {
	var s float32
	for _, v := range x {
		s += float32(v * v)
	}
	if twice {
		s = float32(2 * s)
	}
	return s / float32(len(x))
}

// importance fills w with qw·sqrt(σ² + x²).
func importance(w, x, qw []float32, sigma2 float32) {
	for j, v := range x {
		w[j] = float32(qw[j] * sqrt32(sigma2+float32(v*v)))
	}
}

// makeQkx3Quants is makeQkx2Quants as ggml's make_qkx3_quants: the search
// starts from the best fit so far, and levels are clamped before rounding.
func makeQkx3Quants(nmax int, x, weights []float32, L []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	mn, mx := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < mn {
			mn = x[i]
		}
		if x[i] > mx {
			mx = x[i]
		}
		sumW += weights[i]
		sumX += float32(weights[i] * x[i])
	}
	if mn > 0 {
		mn = 0
	}
	if mx <= mn {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -mn
	}
	fnmax := float32(nmax)
	iscale := fnmax / (mx - mn)
	scale = 1 / iscale
	var best float32
	for i := range n {
		l := clampInt(nearestInt(float32(iscale*float32(x[i]-mn))), 0, nmax)
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+mn) - x[i]
		best += float32(weights[i] * float32(diff*diff))
	}
	if nstep < 1 {
		return scale, -mn
	}
	// Clamping before rounding, as make_qkx3_quants does, gives the same
	// levels as rounding first: nmax is an integer.
	s, m := qkxSearch(x, weights, L, nmax, rmin, rdelta, nstep, false, sumW, sumX, mx, mn, scale, best)
	return s, -m
}

// makeQpQuants quantizes non-negative x (sub-block scales) to [0, nmax]
// under weights qw: ggml's make_qp_quants.
func makeQpQuants(nmax int, x []float32, L []uint8, qw []float32) float32 {
	var mx float32
	for _, v := range x {
		if v > mx {
			mx = v
		}
	}
	if mx < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	fnmax := float32(nmax)
	iscale := fnmax / mx
	for i, v := range x {
		L[i] = uint8(nearestInt(float32(iscale * v)))
	}
	scale := 1 / iscale
	var bestMSE float32
	for i, v := range x {
		diff := v - float32(scale*float32(L[i]))
		bestMSE += float32(float32(qw[i]*diff) * diff)
	}
	for is := -4; is <= 4; is++ {
		if is == 0 {
			continue
		}
		iscaleIs := float32(float32(float32(0.1)*float32(is))+fnmax) / mx
		scaleIs := 1 / iscaleIs
		var mse float32
		for i, v := range x {
			l := min(nmax, nearestInt(float32(iscaleIs*v)))
			diff := v - float32(scaleIs*float32(l))
			mse += float32(float32(qw[i]*diff) * diff)
		}
		if mse < bestMSE {
			bestMSE, iscale = mse, iscaleIs
		}
	}
	var sumlx, suml2 float32
	for i, v := range x {
		l := min(nmax, nearestInt(float32(iscale*v)))
		L[i] = uint8(l)
		fl := float32(l)
		sumlx += float32(float32(qw[i]*v) * fl)
		suml2 += float32(float32(qw[i]*fl) * fl)
	}
	for range 5 {
		changed := 0
		for i, v := range x {
			w, li := qw[i], float32(L[i])
			slx := sumlx - float32(float32(w*v)*li)
			sl2 := suml2 - float32(float32(w*li)*li)
			if slx > 0 && sl2 > 0 {
				nl := min(nmax, nearestInt(float32(v*sl2)/slx))
				if nl != int(L[i]) {
					fn := float32(nl)
					slx += float32(float32(w*v) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
						L[i], sumlx, suml2 = uint8(nl), slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// The 32-value types: one row's sigma² over the whole row.

// symBlockRow is the weighted quantizer of Q4_0 and Q5_0: a symmetric fit
// per 32 values, levels -nmax … nmax-1.
func symBlockRow(dst []byte, row, qw []float32, nmax, size int, pack func(blk []byte, L []int8)) {
	sigma2 := rowSigma2(row, false)
	var w [32]float32
	var L [32]int8
	for b := 0; b < len(row)/32; b++ {
		xb := row[32*b : 32*b+32]
		importance(w[:], xb, qw[32*b:32*b+32], sigma2)
		d := makeQxQuants(nmax, xb, L[:], w[:])
		blk := dst[size*b:]
		putF16(blk, d)
		pack(blk, L[:])
	}
}

func (q4_0Codec) encodeRow(dst []byte, row, qw []float32) {
	symBlockRow(dst, row, qw, 8, 18, func(blk []byte, L []int8) { packNibbles(blk[2:18], L) })
}

func (q5_0Codec) encodeRow(dst []byte, row, qw []float32) {
	symBlockRow(dst, row, qw, 16, 22, func(blk []byte, L []int8) { packQ5(blk[2:6], blk[6:22], L) })
}

// packQ5 stores 32 five-bit levels: low nibbles in qs, fifth bits in qh.
func packQ5[T int8 | uint8](qh, qs []byte, L []T) {
	var h uint32
	for j := range 16 {
		x0, x1 := uint8(L[j]), uint8(L[j+16])
		qs[j] = x0&0x0F | (x1&0x0F)<<4
		h |= uint32(x0&0x10) >> 4 << j
		h |= uint32(x1&0x10) >> 4 << (j + 16)
	}
	qh[0], qh[1], qh[2], qh[3] = byte(h), byte(h>>8), byte(h>>16), byte(h>>24)
}

// minBlockRow is the weighted quantizer of Q4_1 and Q5_1: a fit with a
// minimum per 32 values.
func minBlockRow(dst []byte, row, qw []float32, nmax, size int, pack func(blk []byte, L []uint8)) {
	sigma2 := rowSigma2(row, false)
	var w [32]float32
	var L [32]uint8
	for b := 0; b < len(row)/32; b++ {
		xb := row[32*b : 32*b+32]
		importance(w[:], xb, qw[32*b:32*b+32], sigma2)
		d, mn := makeQkx3Quants(nmax, xb, w[:], L[:], -0.9, 0.05, 36)
		blk := dst[size*b:]
		putF16(blk, d)
		putF16(blk[2:], -mn)
		pack(blk, L[:])
	}
}

func (q4_1Codec) encodeRow(dst []byte, row, qw []float32) {
	minBlockRow(dst, row, qw, 15, 20, func(blk []byte, L []uint8) { packNibbles(blk[4:20], L) })
}

func (q5_1Codec) encodeRow(dst []byte, row, qw []float32) {
	minBlockRow(dst, row, qw, 31, 24, func(blk []byte, L []uint8) { packQ5(blk[4:8], blk[8:24], L) })
}

// The K-quants: sigma² per super-block.

func (q2_KCodec) encodeRow(dst []byte, row, qw []float32) {
	var L [qkK]uint8
	var w [16]float32
	var mins, scales, sw [16]float32
	var Ls, Lm [16]uint8
	for sb := 0; sb < len(row)/qkK; sb++ {
		x, q := row[qkK*sb:qkK*(sb+1)], qw[qkK*sb:qkK*(sb+1)]
		blk := dst[84*sb : 84*(sb+1)]
		sigma2 := rowSigma2(x, false)
		for j := range 16 {
			importance(w[:], x[16*j:16*j+16], q[16*j:16*j+16], sigma2)
			sw[j] = 0
			for _, v := range w {
				sw[j] += v
			}
			scales[j], mins[j] = makeQkx3Quants(3, x[16*j:16*j+16], w[:], L[16*j:16*j+16], -0.9, 0.05, 36)
		}
		dm := makeQpQuants(15, scales[:], Ls[:], sw[:])
		mm := makeQpQuants(15, mins[:], Lm[:], sw[:])
		putF16(blk[80:], dm)
		putF16(blk[82:], mm)
		dm, mm = getF16(blk[80:]), getF16(blk[82:])
		for j := range 16 {
			blk[j] = Ls[j] | Lm[j]<<4
		}
		for j := range 16 {
			d := float32(dm * float32(blk[j]&0xF))
			if d == 0 {
				continue
			}
			m := float32(mm * float32(blk[j]>>4))
			for ii := range 16 {
				L[16*j+ii] = uint8(clampInt(nearestInt(float32(x[16*j+ii]+m)/d), 0, 3))
			}
		}
		packQ2Bits(blk[16:80], L[:])
	}
}

func (q3_KCodec) encodeRow(dst []byte, row, qw []float32) {
	var L [qkK]int8
	var w [16]float32
	var scales, sw [16]float32
	var Ls [16]int8
	for sb := 0; sb < len(row)/qkK; sb++ {
		x, q := row[qkK*sb:qkK*(sb+1)], qw[qkK*sb:qkK*(sb+1)]
		blk := dst[110*sb : 110*(sb+1)]
		sigma2 := rowSigma2(x, true)
		for j := range 16 {
			importance(w[:], x[16*j:16*j+16], q[16*j:16*j+16], sigma2)
			sw[j] = 0
			for _, v := range w {
				sw[j] += v
			}
			scales[j] = makeQxQuants(4, x[16*j:16*j+16], L[16*j:16*j+16], w[:])
		}
		sc := blk[96:108]
		clear(sc)
		dBlock := makeQxQuants(32, scales[:], Ls[:], sw[:])
		for j := range 16 {
			l := byte(Ls[j])
			if j < 8 {
				sc[j] = l & 0xF
			} else {
				sc[j-8] |= (l & 0xF) << 4
			}
			l >>= 4
			sc[j%4+8] |= l << (2 * (j / 4))
		}
		putF16(blk[108:], dBlock)
		finishQ3K(blk, x, L[:])
	}
}

// finishQ3K requantizes a Q3_K super-block against its stored scales and
// packs the levels: the part the reference and weighted quantizers share.
func finishQ3K(blk []byte, x []float32, L []int8) {
	hmask, qs, sc := blk[0:32], blk[32:96], blk[96:108]
	d0 := getF16(blk[108:])
	for j := range 16 {
		d := float32(d0 * float32(q3Scale(sc, j)))
		if d == 0 {
			continue
		}
		for ii := range 16 {
			L[16*j+ii] = int8(clampInt(nearestInt(x[16*j+ii]/d), -4, 3) + 4)
		}
	}
	packQ3K(hmask, qs, L)
}

// packQ3K stores 3-bit levels (0…7 for −4…3): the high bit in hmask, the
// low two bits in qs.
func packQ3K[T int8 | uint8](hmask, qs []byte, L []T) {
	clear(hmask)
	m, hm := 0, byte(1)
	var U [qkK]uint8
	for j := range qkK {
		l := uint8(L[j])
		if l > 3 {
			hmask[m] |= hm
			l -= 4
		}
		U[j] = l
		if m++; m == qkK/8 {
			m, hm = 0, hm<<1
		}
	}
	packQ2Bits(qs, U[:])
}

// fitK4Weighted is the weighted fit shared by Q4_K and Q5_K: per 32-value
// sub-block a make_qkx3 fit, then the scales and minimums quantized with
// make_qp_quants weighted by each sub-block's total importance.
func fitK4Weighted(blk []byte, x, q []float32, L []uint8, nmax int) {
	var w [32]float32
	var scales, mins, sw [8]float32
	var Ls, Lm [8]uint8
	sigma2 := rowSigma2(x, true)
	for j := range 8 {
		importance(w[:], x[32*j:32*j+32], q[32*j:32*j+32], sigma2)
		sw[j] = 0
		for _, v := range w {
			sw[j] += v
		}
		scales[j], mins[j] = makeQkx3Quants(nmax, x[32*j:32*j+32], w[:], L[32*j:32*j+32], -0.9, 0.05, 36)
	}
	dBlock := makeQpQuants(63, scales[:], Ls[:], sw[:])
	mBlock := makeQpQuants(63, mins[:], Lm[:], sw[:])
	sc := blk[4:16]
	for j := range 8 {
		ls, lm := min(63, Ls[j]), min(63, Lm[j])
		if j < 4 {
			sc[j], sc[j+4] = ls, lm
		} else {
			sc[j+4] = ls&0xF | (lm&0xF)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	putF16(blk[0:], dBlock)
	putF16(blk[2:], mBlock)
	requantK4(x, L, blk, nmax)
}

func (q4_KCodec) encodeRow(dst []byte, row, qw []float32) {
	var L [qkK]uint8
	for sb := 0; sb < len(row)/qkK; sb++ {
		blk := dst[144*sb : 144*(sb+1)]
		clear(blk[4:16])
		fitK4Weighted(blk, row[qkK*sb:qkK*(sb+1)], qw[qkK*sb:qkK*(sb+1)], L[:], 15)
		packQ4K(blk[16:], L[:])
	}
}

func (q5_KCodec) encodeRow(dst []byte, row, qw []float32) {
	var L [qkK]uint8
	for sb := 0; sb < len(row)/qkK; sb++ {
		blk := dst[176*sb : 176*(sb+1)]
		clear(blk[4:16])
		fitK4Weighted(blk, row[qkK*sb:qkK*(sb+1)], qw[qkK*sb:qkK*(sb+1)], L[:], 31)
		packQ5K(blk[16:48], blk[48:176], L[:])
	}
}

func (q6_KCodec) encodeRow(dst []byte, row, qw []float32) { encodeQ6K(dst, row, qw) }

func (iq4_NLCodec) encodeRow(dst []byte, row, qw []float32) {
	var unusedH uint16
	for b := 0; b < len(row)/32; b++ {
		blk := dst[18*b : 18*b+18]
		dh := iq4Block(row[32*b:32*b+32], blk[2:18], &unusedH, nil, qw[32*b:32*b+32])
		blk[0], blk[1] = byte(dh), byte(dh>>8)
	}
}

func (iq4_XSCodec) encodeRow(dst []byte, row, qw []float32) {
	for sb := 0; sb < len(row)/qkK; sb++ {
		blk := dst[136*sb : 136*(sb+1)]
		var sh uint16
		dh := iq4Block(row[qkK*sb:qkK*(sb+1)], blk[8:136], &sh, blk[4:8], qw[qkK*sb:qkK*(sb+1)])
		blk[0], blk[1] = byte(dh), byte(dh>>8)
		blk[2], blk[3] = byte(sh), byte(sh>>8)
	}
}
