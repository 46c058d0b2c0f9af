package quant

// The candidate search of make_qkx2_quants and make_qkx3_quants: for
// nstep+1 scales around nmax/(max−min), round every value to a level,
// fit a scale and minimum to those levels by weighted least squares, and
// keep the candidate with the lowest weighted error. It is most of the
// time the K-quants take, so candidates are evaluated eight at a time,
// one per SIMD lane (qkx_amd64.s). Every lane sums its candidate's terms
// in ggml's order, so the result is bit-identical to ggml's loop over
// candidates; the portable twins below compute exactly what the lanes do.

// qkxBatch is the number of candidates evaluated together.
const qkxBatch = 8

// qkxLevels holds the levels of up to 32 values for each candidate of a
// batch: levels[i][c], as float32 integers.
type qkxLevels [32][qkxBatch]float32

// qkxSIMD is set where the AVX2 kernels run (qkx_amd64.go).
var qkxSIMD bool

// qkxSums computes, for each candidate c with inverse scale isc[c], the
// levels clamp(round(isc[c]·(x−mn)), 0, nmax) and the weighted sums
// Σw·l, Σw·l², Σw·l·x. (Static calls, not function values, so that the
// buffers stay on the caller's stack.)
func qkxSums(x, w []float32, mn float32, isc *[qkxBatch]float32, nmax float32, lv *qkxLevels, sums *[3][qkxBatch]float32) {
	if qkxSIMD {
		qkxSumsFast(x, w, mn, isc, nmax, lv, sums)
		return
	}
	qkxSumsGo(x, w, mn, isc, nmax, lv, sums)
}

// qkxErr computes each candidate's weighted error Σw·e(sc[c]·l+mins[c]−x),
// e the absolute value with mad, else the square.
func qkxErr(x, w []float32, lv *qkxLevels, sc, mins *[qkxBatch]float32, mad bool, cur *[qkxBatch]float32) {
	if qkxSIMD {
		qkxErrFast(x, w, lv, sc, mins, mad, cur)
		return
	}
	qkxErrGo(x, w, lv, sc, mins, mad, cur)
}

func qkxSumsGo(x, w []float32, mn float32, isc *[qkxBatch]float32, nmax float32, lv *qkxLevels, sums *[3][qkxBatch]float32) {
	*sums = [3][qkxBatch]float32{}
	for i, xi := range x {
		xm := float32(xi - mn)
		for c := range qkxBatch {
			fl := float32(float32(float32(isc[c]*xm)+roundMagic) - roundMagic)
			fl = max32(0, fl)
			if fl > nmax {
				fl = nmax
			}
			lv[i][c] = fl
			wf := float32(w[i] * fl)
			sums[0][c] += wf
			sums[1][c] += float32(wf * fl)
			sums[2][c] += float32(wf * xi)
		}
	}
}

func qkxErrGo(x, w []float32, lv *qkxLevels, sc, mins *[qkxBatch]float32, mad bool, cur *[qkxBatch]float32) {
	*cur = [qkxBatch]float32{}
	for i, xi := range x {
		for c := range qkxBatch {
			d := float32(float32(sc[c]*lv[i][c])+mins[c]) - xi
			if mad {
				cur[c] += float32(w[i] * abs32(d))
			} else {
				cur[c] += float32(w[i] * float32(d*d))
			}
		}
	}
}

// roundMagic is 1.5·2²³: adding it to a float32 of magnitude ≤ 2²² and
// subtracting it again rounds to the nearest integer, ties to even, as
// nearestInt does.
const roundMagic = float32(12582912)

// qkxSearch runs the candidates is = 0…nstep of make_qkx2/3_quants from
// the fit (scale, mn) with error bestErr, updating L, and returns the
// final scale and minimum. ggml's loop carries a winner's minimum into
// the next candidate, so when a candidate wins with a new minimum the
// batch restarts after it.
func qkxSearch(x, weights []float32, L []uint8, nmax int, rmin, rdelta float32, nstep int, mad bool,
	sumW, sumX, mx, mn, scale, bestErr float32) (float32, float32) {
	n := len(x)
	fnmax := float32(nmax)
	var lv qkxLevels
	var isc, sc, mins, cur [qkxBatch]float32
	var sums [3][qkxBatch]float32
	var ok [qkxBatch]bool
	for is := 0; is <= nstep; {
		k := min(qkxBatch, nstep+1-is)
		for c := range qkxBatch {
			isc[c] = float32(float32(rmin+float32(rdelta*float32(is+min(c, k-1))))+fnmax) / (mx - mn)
		}
		qkxSums(x, weights, mn, &isc, fnmax, &lv, &sums)
		for c := range qkxBatch {
			sc[c], mins[c], ok[c] = 0, 0, false
			sumL, sumL2, sumXL := sums[0][c], sums[1][c], sums[2][c]
			d := float32(sumW*sumL2) - float32(sumL*sumL)
			if c >= k || !(d > 0) {
				continue
			}
			s := (float32(sumW*sumXL) - float32(sumX*sumL)) / d
			m := (float32(sumL2*sumX) - float32(sumL*sumXL)) / d
			if m > 0 {
				m = 0
				s = sumXL / sumL2
			}
			sc[c], mins[c], ok[c] = s, m, true
		}
		qkxErr(x, weights, &lv, &sc, &mins, mad, &cur)
		next := is + k
		for c := range k {
			if !ok[c] || !(cur[c] < bestErr) {
				continue
			}
			for i := range n {
				L[i] = uint8(lv[i][c])
			}
			moved := mins[c] != mn
			bestErr, scale, mn = cur[c], sc[c], mins[c]
			if moved {
				next = is + c + 1
				break
			}
		}
		is = next
	}
	return scale, mn
}

// qxSums computes make_qx_quants' sums for eight candidates with inverse
// scales isc: levels clamp(round(isc·x), lo, hi), Σwx·l and Σ(w·l)·l.
func qxSums(x, w, wx []float32, isc *[qkxBatch]float32, lo, hi float32, sums *[2][qkxBatch]float32) {
	if qkxSIMD {
		qxSumsFast(x, w, wx, isc, lo, hi, sums)
		return
	}
	qxSumsGo(x, w, wx, isc, lo, hi, sums)
}

func qxSumsGo(x, w, wx []float32, isc *[qkxBatch]float32, lo, hi float32, sums *[2][qkxBatch]float32) {
	*sums = [2][qkxBatch]float32{}
	for i, xi := range x {
		for c := range qkxBatch {
			fl := float32(float32(float32(isc[c]*xi)+roundMagic) - roundMagic)
			fl = max32(lo, fl)
			if fl > hi {
				fl = hi
			}
			sums[0][c] += float32(wx[i] * fl)
			sums[1][c] += float32(float32(w[i]*fl) * fl)
		}
	}
}
