package quant

import "math"

// groupMaxEps is GROUP_MAX_EPS in ggml-quants.c: a sub-block whose largest
// magnitude is below it is treated as all zeros.
const groupMaxEps = float32(1e-15)

// nearestInt rounds to nearest, ties to even, the way ggml's nearest_int
// does it (adding 1.5·2^23 and reading the mantissa bits). Valid for
// |f| ≤ 2^22.
func nearestInt(f float32) int {
	v := f + 12582912
	return int(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// makeQxQuants picks a symmetric scale for n ≤ 32 values quantized to
// [-nmax, nmax-1], minimising the weighted squared error over a small
// grid of candidate scales: ggml's make_qx_quants with rmse_type 1, each
// value weighted by qw, or by x² when qw is nil. L receives the levels
// shifted to [0, 2·nmax).
//
// The eighteen candidates' sums are independent, so they are computed
// eight at a time, one per SIMD lane (qxSums), and the winner is then
// chosen in ggml's order: each sum keeps ggml's order of additions, so
// the result is bit-identical.
func makeQxQuants(nmax int, x []float32, L []int8, qw []float32) float32 {
	amax, mx := amaxSigned(x)
	if amax < groupMaxEps {
		for i := range x {
			L[i] = 0
		}
		return 0
	}
	var w, wx [32]float32
	for i, xi := range x {
		if qw != nil {
			w[i] = qw[i]
		} else {
			w[i] = float32(xi * xi)
		}
		wx[i] = float32(w[i] * xi)
	}
	fnmax := float32(nmax)
	level := func(iscale, xi float32) int {
		return clampInt(nearestInt(float32(iscale*xi)), -nmax, nmax-1)
	}
	iscale := -fnmax / mx
	var sumlx, suml2 float32
	for i, xi := range x {
		l := level(iscale, xi)
		L[i] = int8(l + nmax)
		fl := float32(l)
		sumlx += float32(wx[i] * fl)
		suml2 += float32(float32(w[i]*fl) * fl)
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := float32(scale * sumlx)

	// Candidates is = -9..-1, 1..9, in three batches of eight lanes.
	const nc = 18
	var isc [3 * qkxBatch]float32
	for k := range isc {
		is := min(k, nc-1) - 9
		if is >= 0 {
			is++
		}
		isc[k] = -(fnmax + float32(float32(0.1)*float32(is))) / mx
	}
	var sums [3][2][qkxBatch]float32
	n := len(x)
	for b := range 3 {
		qxSums(x, w[:n], wx[:n], (*[qkxBatch]float32)(isc[b*qkxBatch:]), float32(-nmax), float32(nmax-1), &sums[b])
	}
	for k := range nc {
		sx, s2 := sums[k/qkxBatch][0][k%qkxBatch], sums[k/qkxBatch][1][k%qkxBatch]
		if s2 > 0 && float32(sx*sx) > float32(best*s2) {
			for i, xi := range x {
				L[i] = int8(level(isc[k], xi) + nmax)
			}
			scale = sx / s2
			best = float32(scale * sx)
		}
	}
	return scale
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

// q6_K: {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}; 16 sub-blocks
// of 16 values, value = d * scale[sub] * (q - 32).
type q6_KCodec struct{}

func (q6_KCodec) encode(dst []byte, src []float32) { encodeQ6K(dst, src, nil) }

// encodeQ6K is quantize_row_q6_K_ref, or with importance weights qw (one
// per value of src) quantize_row_q6_K_impl.
func encodeQ6K(dst []byte, src, qw []float32) {
	var L [qkK]int8
	var scales [qkK / 16]float32
	for ; len(src) > 0; src, dst = src[qkK:], dst[210:] {
		var w []float32
		if qw != nil {
			w, qw = qw[:qkK], qw[qkK:]
		}
		x := src[:qkK]
		blk := dst[:210]
		ql, qh, sc := blk[0:128], blk[128:192], blk[192:208]

		var maxScale, maxAbsScale float32
		for ib := range qkK / 16 {
			var sw []float32
			if w != nil {
				sw = w[16*ib : 16*ib+16]
			}
			s := makeQxQuants(32, x[16*ib:16*ib+16], L[16*ib:16*ib+16], sw)
			scales[ib] = s
			if a := abs32(s); a > maxAbsScale {
				maxAbsScale, maxScale = a, s
			}
		}
		if maxAbsScale < groupMaxEps {
			clear(blk)
			putF16(blk[208:], 0)
			continue
		}
		iscale := -128 / maxScale
		putF16(blk[208:], 1/iscale)
		for ib := range qkK / 16 {
			sc[ib] = byte(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
		}
		d0 := getF16(blk[208:])
		for j := range qkK / 16 {
			d := float32(d0 * float32(int8(sc[j])))
			if d == 0 {
				continue
			}
			for ii := range 16 {
				l := clampInt(nearestInt(x[16*j+ii]/d), -32, 31)
				L[16*j+ii] = int8(l + 32)
			}
		}
		packQ6K(ql, qh, L[:])
	}
}

// packQ6K stores 6-bit levels (0…63 for −32…31): low nibbles in ql, the
// two high bits in qh.
func packQ6K[T int8 | uint8](ql, qh []byte, L []T) {
	for j := 0; j < qkK; j += 128 {
		o := j / 2 // ql advances 64 bytes per 128 values
		h := j / 4 // qh advances 32 bytes per 128 values
		for l := range 32 {
			q1 := uint8(L[j+l]) & 0xF
			q2 := uint8(L[j+l+32]) & 0xF
			q3 := uint8(L[j+l+64]) & 0xF
			q4 := uint8(L[j+l+96]) & 0xF
			ql[o+l] = q1 | q3<<4
			ql[o+l+32] = q2 | q4<<4
			qh[h+l] = uint8(L[j+l])>>4 | (uint8(L[j+l+32])>>4)<<2 | (uint8(L[j+l+64])>>4)<<4 | (uint8(L[j+l+96])>>4)<<6
		}
	}
}

func (q6_KCodec) decode(dst []float32, src []byte) {
	for ; len(dst) > 0; dst, src = dst[qkK:], src[210:] {
		d := getF16(src[208:])
		ql, qh, sc := src[0:128], src[128:192], src[192:208]
		y := dst[:qkK]
		for n := 0; n < qkK; n += 128 {
			o, h, s := n/2, n/4, n/16
			for l := range 32 {
				is := l / 16
				q1 := int8(ql[o+l]&0xF|(qh[h+l]>>0&3)<<4) - 32
				q2 := int8(ql[o+l+32]&0xF|(qh[h+l]>>2&3)<<4) - 32
				q3 := int8(ql[o+l]>>4|(qh[h+l]>>4&3)<<4) - 32
				q4 := int8(ql[o+l+32]>>4|(qh[h+l]>>6&3)<<4) - 32
				y[n+l] = float32(d*float32(int8(sc[s+is]))) * float32(q1)
				y[n+l+32] = float32(d*float32(int8(sc[s+is+2]))) * float32(q2)
				y[n+l+64] = float32(d*float32(int8(sc[s+is+4]))) * float32(q3)
				y[n+l+96] = float32(d*float32(int8(sc[s+is+6]))) * float32(q4)
			}
		}
	}
}
