package quant

// The K-quants (Q2_K … Q5_K; Q6_K is in kquant.go): 256-value
// super-blocks of 16- or 32-value sub-blocks, each with a scale (and for
// Q2_K, Q4_K, Q5_K a minimum) that is itself quantized against one or two
// f16 super-block scales. The encoders follow llama.cpp's reference
// quantizers (quantize_row_q*_K_ref) operation by operation.

// makeQkx2Quants fits L ∈ [0, nmax] with x ≈ scale·L − min, min ≥ 0,
// trying nstep+1 scales around nmax/(max−min) and keeping the one with the
// lowest weighted error (absolute with useMad, squared otherwise); ggml's
// make_qkx2_quants. It returns the scale and the minimum (as a positive
// number to subtract).
func makeQkx2Quants(nmax int, x, weights []float32, L []uint8, rmin, rdelta float32, nstep int, useMad bool) (scale, theMin float32) {
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
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if mn > 0 {
		mn = 0
	}
	if mx == mn {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -mn
	}
	fnmax := float32(nmax)
	iscale := fnmax / (mx - mn)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		l := clampInt(nearestInt(float32(iscale*float32(x[i]-mn))), 0, nmax)
		L[i] = uint8(l)
		diff := float32(float32(scale*float32(l))+mn) - x[i]
		if useMad {
			bestErr += float32(weights[i] * abs32(diff))
		} else {
			bestErr += float32(weights[i] * float32(diff*diff))
		}
	}
	if nstep < 1 {
		return scale, -mn
	}
	s, m := qkxSearch(x, weights, L, nmax, rmin, rdelta, nstep, useMad, sumW, sumX, mx, mn, scale, bestErr)
	return s, -m
}

// makeQ3Quants is ggml's make_q3_quants with do_rmse: L ∈ [-nmax, nmax)
// refined coordinate by coordinate, returned shifted by nmax.
func makeQ3Quants(nmax int, x []float32, L []int8) float32 {
	amax, mx := amaxSigned(x)
	if amax < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	iscale := -float32(nmax) / mx
	var sumlx, suml2 float32
	for i, xi := range x {
		l := clampInt(nearestInt(float32(iscale*xi)), -nmax, nmax-1)
		L[i] = int8(l)
		w := float32(xi * xi)
		fl := float32(l)
		sumlx += float32(float32(w*xi) * fl)
		suml2 += float32(float32(w*fl) * fl)
	}
	for range 5 {
		changed := 0
		for i, xi := range x {
			w := float32(xi * xi)
			li := float32(L[i])
			slx := sumlx - float32(float32(w*xi)*li)
			if slx > 0 {
				sl2 := suml2 - float32(float32(w*li)*li)
				nl := clampInt(nearestInt(float32(xi*sl2)/slx), -nmax, nmax-1)
				if nl != int(L[i]) {
					fn := float32(nl)
					slx += float32(float32(w*xi) * fn)
					sl2 += float32(float32(w*fn) * fn)
					if sl2 > 0 && float32(float32(slx*slx)*suml2) > float32(float32(sumlx*sumlx)*sl2) {
						L[i], sumlx, suml2 = int8(nl), slx, sl2
						changed++
					}
				}
			}
		}
		if changed == 0 {
			break
		}
	}
	for i := range x {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// packQ2Bits packs 2-bit values of 128-value halves the K-quant way: byte l
// of a 32-byte run holds values l, l+32, l+64, l+96.
func packQ2Bits(qs []byte, L []uint8) {
	for j := 0; j < qkK; j += 128 {
		for l := range 32 {
			qs[j/4+l] = L[j+l] | L[j+l+32]<<2 | L[j+l+64]<<4 | L[j+l+96]<<6
		}
	}
}

// q2_K: {uint8 scales[16]; uint8 qs[64]; f16 d; f16 dmin}
type q2_KCodec struct{}

func (q2_KCodec) encode(dst []byte, src []float32) {
	var L [qkK]uint8
	var weights [16]float32
	var mins, scales [16]float32
	const q4scale = 15
	for ; len(src) > 0; src, dst = src[qkK:], dst[84:] {
		x := src[:qkK]
		sc, qs := dst[0:16], dst[16:80]
		var maxScale, maxMin float32
		for j := range 16 {
			for l := range 16 {
				weights[l] = abs32(x[16*j+l])
			}
			scales[j], mins[j] = makeQkx2Quants(3, x[16*j:16*j+16], weights[:], L[16*j:16*j+16], -0.5, 0.1, 15, true)
			if scales[j] > maxScale {
				maxScale = scales[j]
			}
			if mins[j] > maxMin {
				maxMin = mins[j]
			}
		}
		if maxScale > 0 {
			iscale := q4scale / maxScale
			for j := range 16 {
				sc[j] = uint8(nearestInt(float32(iscale * scales[j])))
			}
			putF16(dst[80:], maxScale/q4scale)
		} else {
			clear(sc)
			putF16(dst[80:], 0)
		}
		if maxMin > 0 {
			iscale := q4scale / maxMin
			for j := range 16 {
				sc[j] |= uint8(nearestInt(float32(iscale*mins[j]))) << 4
			}
			putF16(dst[82:], maxMin/q4scale)
		} else {
			putF16(dst[82:], 0)
		}
		d0, m0 := getF16(dst[80:]), getF16(dst[82:])
		for j := range 16 {
			d := float32(d0 * float32(sc[j]&0xF))
			if d == 0 {
				continue
			}
			dm := float32(m0 * float32(sc[j]>>4))
			for ii := range 16 {
				L[16*j+ii] = uint8(clampInt(nearestInt(float32(x[16*j+ii]+dm)/d), 0, 3))
			}
		}
		packQ2Bits(qs, L[:])
	}
}

func (q2_KCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[84:] {
		sc, q := src[0:16], src[16:80]
		d, mn := getF16(src[80:]), getF16(src[82:])
		y := dst[:qkK]
		is, k := 0, 0
		for n := 0; n < qkK; n += 128 {
			for shift := uint(0); shift < 8; shift += 2 {
				for half := range 2 {
					s := sc[is]
					is++
					dl, ml := float32(d*float32(s&0xF)), float32(mn*float32(s>>4))
					for l := range 16 {
						y[k] = float32(dl*float32(q[n/4+16*half+l]>>shift&3)) - ml
						k++
					}
				}
			}
		}
	}
}

// q3_K: {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d}
type q3_KCodec struct{}

// q3Scale unpacks sub-block j's 6-bit scale (minus 32).
func q3Scale(scales []byte, j int) int {
	var sc byte
	if j < 8 {
		sc = scales[j] & 0xF
	} else {
		sc = scales[j-8] >> 4
	}
	return int(sc|(scales[8+j%4]>>(2*(j/4))&3)<<4) - 32
}

func (q3_KCodec) encode(dst []byte, src []float32) {
	var L [qkK]int8
	var scales [16]float32
	for ; len(src) > 0; src, dst = src[qkK:], dst[110:] {
		x := src[:qkK]
		sc := dst[96:108]
		var maxScale, amax float32
		for j := range 16 {
			scales[j] = makeQ3Quants(4, x[16*j:16*j+16], L[16*j:16*j+16])
			if s := abs32(scales[j]); s > amax {
				amax, maxScale = s, scales[j]
			}
		}
		clear(sc)
		if maxScale != 0 {
			iscale := -32 / maxScale
			for j := range 16 {
				l := int8(nearestInt(float32(iscale * scales[j])))
				l = int8(clampInt(int(l), -32, 31)) + 32
				if j < 8 {
					sc[j] = byte(l) & 0xF
				} else {
					sc[j-8] |= (byte(l) & 0xF) << 4
				}
				l >>= 4
				sc[j%4+8] |= byte(l) << (2 * (j / 4))
			}
			putF16(dst[108:], 1/iscale)
		} else {
			putF16(dst[108:], 0)
		}
		finishQ3K(dst[:110], x, L[:])
	}
}

func (q3_KCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[110:] {
		hm, q, sc := src[0:32], src[32:96], src[96:108]
		d := getF16(src[108:])
		y := dst[:qkK]
		is, k := 0, 0
		m := byte(1)
		for n := 0; n < qkK; n += 128 {
			for shift := uint(0); shift < 8; shift += 2 {
				for half := range 2 {
					dl := float32(d * float32(q3Scale(sc, is)))
					is++
					for l := range 16 {
						v := int8(q[n/4+16*half+l] >> shift & 3)
						if hm[16*half+l]&m == 0 {
							v -= 4
						}
						y[k] = dl * float32(v)
						k++
					}
				}
				m <<= 1
			}
		}
	}
}

// getScaleMinK4 unpacks the 6-bit scale and minimum of sub-block j of a
// Q4_K/Q5_K super-block.
func getScaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&0xF | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

// encodeScalesMinsK4 quantizes eight sub-block scales and minimums to six
// bits against the super-block's largest, packs them into 12 bytes and
// returns the two f16 super-block scales (as llama.cpp's Q4_K/Q5_K do).
func encodeScalesMinsK4(dst []byte, scales, mins *[8]float32) {
	var maxScale, maxMin float32
	for j := range 8 {
		maxScale = max32(maxScale, scales[j])
		maxMin = max32(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := dst[4:16]
	for j := range 8 {
		ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
		lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
		if j < 4 {
			sc[j], sc[j+4] = ls, lm
		} else {
			sc[j+4] = ls&0xF | (lm&0xF)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	putF16(dst[0:], maxScale/63)
	putF16(dst[2:], maxMin/63)
}

// max32 is ggml's "if (v > m) m = v" (not Go's max, which treats NaN
// differently).
func max32(m, v float32) float32 {
	if v > m {
		return v
	}
	return m
}

// subblockFit32 runs makeQkx2Quants on the eight 32-value sub-blocks of a
// super-block with ggml's weights av_x + |x|.
func subblockFit32(x []float32, L []uint8, nmax int, rmin, rdelta float32, nstep int, scales, mins *[8]float32) {
	var weights [32]float32
	for j := range 8 {
		var sumX2 float32
		for l := range 32 {
			sumX2 += float32(x[32*j+l] * x[32*j+l])
		}
		avX := float32(sqrt32(sumX2 / 32))
		for l := range 32 {
			weights[l] = avX + abs32(x[32*j+l])
		}
		scales[j], mins[j] = makeQkx2Quants(nmax, x[32*j:32*j+32], weights[:], L[32*j:32*j+32], rmin, rdelta, nstep, false)
	}
}

// requantK4 recomputes the levels from the stored (rounded) scales.
func requantK4(x []float32, L []uint8, blk []byte, nmax int) {
	d0, m0 := getF16(blk[0:]), getF16(blk[2:])
	for j := range 8 {
		sc, m := getScaleMinK4(j, blk[4:16])
		d := float32(d0 * float32(sc))
		if d == 0 {
			continue
		}
		dm := float32(m0 * float32(m))
		for ii := range 32 {
			L[32*j+ii] = uint8(clampInt(nearestInt(float32(x[32*j+ii]+dm)/d), 0, nmax))
		}
	}
}

// q4_K: {f16 d; f16 dmin; uint8 scales[12]; uint8 qs[128]}
type q4_KCodec struct{}

func (q4_KCodec) encode(dst []byte, src []float32) {
	var L [qkK]uint8
	var scales, mins [8]float32
	for ; len(src) > 0; src, dst = src[qkK:], dst[144:] {
		x := src[:qkK]
		blk := dst[:144]
		clear(blk[4:16])
		subblockFit32(x, L[:], 15, -1, 0.1, 20, &scales, &mins)
		encodeScalesMinsK4(blk, &scales, &mins)
		requantK4(x, L[:], blk, 15)
		packQ4K(blk[16:], L[:])
	}
}

// packQ4K stores 4-bit levels two per byte, 64 values per 32 bytes.
func packQ4K(q []byte, L []uint8) {
	for j := 0; j < qkK; j += 64 {
		for l := range 32 {
			q[j/2+l] = L[j+l] | L[j+l+32]<<4
		}
	}
}

func (q4_KCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[144:] {
		d, mn := getF16(src[0:]), getF16(src[2:])
		q := src[16:144]
		y := dst[:qkK]
		for j, is := 0, 0; j < qkK; j, is = j+64, is+2 {
			sc, m := getScaleMinK4(is, src[4:16])
			d1, m1 := float32(d*float32(sc)), float32(mn*float32(m))
			sc, m = getScaleMinK4(is+1, src[4:16])
			d2, m2 := float32(d*float32(sc)), float32(mn*float32(m))
			for l := range 32 {
				y[j+l] = float32(d1*float32(q[j/2+l]&0xF)) - m1
				y[j+32+l] = float32(d2*float32(q[j/2+l]>>4)) - m2
			}
		}
	}
}

// q5_K: {f16 d; f16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}
type q5_KCodec struct{}

func (q5_KCodec) encode(dst []byte, src []float32) {
	var L [qkK]uint8
	var scales, mins [8]float32
	for ; len(src) > 0; src, dst = src[qkK:], dst[176:] {
		x := src[:qkK]
		blk := dst[:176]
		clear(blk[4:16])
		subblockFit32(x, L[:], 31, -0.5, 0.1, 15, &scales, &mins)
		encodeScalesMinsK4(blk, &scales, &mins)
		requantK4(x, L[:], blk, 31)
		packQ5K(blk[16:48], blk[48:176], L[:])
	}
}

// packQ5K stores 5-bit levels: low nibbles in ql, fifth bits in qh.
func packQ5K(qh, ql []byte, L []uint8) {
	clear(qh)
	m1, m2 := byte(1), byte(2)
	for n := 0; n < qkK; n += 64 {
		o := n / 2
		for j := range 32 {
			l1, l2 := L[n+j], L[n+j+32]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= m1
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= m2
			}
			ql[o+j] = l1 | l2<<4
		}
		m1, m2 = m1<<2, m2<<2
	}
}

func (q5_KCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[176:] {
		d, mn := getF16(src[0:]), getF16(src[2:])
		qh, ql := src[16:48], src[48:176]
		y := dst[:qkK]
		u1, u2 := byte(1), byte(2)
		for j, is := 0, 0; j < qkK; j, is = j+64, is+2 {
			sc, m := getScaleMinK4(is, src[4:16])
			d1, m1 := float32(d*float32(sc)), float32(mn*float32(m))
			sc, m = getScaleMinK4(is+1, src[4:16])
			d2, m2 := float32(d*float32(sc)), float32(mn*float32(m))
			for l := range 32 {
				v1, v2 := ql[j/2+l]&0xF, ql[j/2+l]>>4
				if qh[l]&u1 != 0 {
					v1 += 16
				}
				if qh[l]&u2 != 0 {
					v2 += 16
				}
				y[j+l] = float32(d1*float32(v1)) - m1
				y[j+32+l] = float32(d2*float32(v2)) - m2
			}
			u1, u2 = u1<<2, u2<<2
		}
	}
}
