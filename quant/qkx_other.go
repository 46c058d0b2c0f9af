//go:build !amd64

package quant

func qkxSumsFast(x, w []float32, mn float32, isc *[qkxBatch]float32, nmax float32, lv *qkxLevels, sums *[3][qkxBatch]float32) {
	qkxSumsGo(x, w, mn, isc, nmax, lv, sums)
}

func qkxErrFast(x, w []float32, lv *qkxLevels, sc, mins *[qkxBatch]float32, mad bool, cur *[qkxBatch]float32) {
	qkxErrGo(x, w, lv, sc, mins, mad, cur)
}

func qxSumsFast(x, w, wx []float32, isc *[qkxBatch]float32, lo, hi float32, sums *[2][qkxBatch]float32) {
	qxSumsGo(x, w, wx, isc, lo, hi, sums)
}
