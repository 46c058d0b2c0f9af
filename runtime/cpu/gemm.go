package cpu

// The float32 matrix products of training (Linear with exact activations,
// LinearT) as blocked GEMMs: a panel of the weight is decoded once into a
// small float32 buffer, and a register-tiled micro-kernel multiplies it
// with a tile of tokens, so each decoded value meets every token while it
// is in cache and each activation is reused across a whole row of the
// tile from a register. Every output element is its sum over the inner
// dimension in order, whatever the thread count.

import "github.com/lqc-dev/lqc/quant"

// gemmKernel is a micro-kernel: C[mr × nr] += A[mr × k]·B[k × nr], the
// strides in elements; narrow, if any, is the kernel for a remainder of
// columns too few for this one's nr. dot_amd64.go sets AVX2 or AVX-512
// kernels; without them gemm runs gemmGo throughout.
type gemmKernel struct {
	mr, nr int
	fn     func(a *float32, lda int, b *float32, ldb int, c *float32, ldc int, k int)
	narrow *gemmKernel
}

var gemmMicro *gemmKernel

// gemmPays reports whether m tokens fill the micro-kernel's register
// tiles: fewer are better served one dot product at a time.
func gemmPays(m int) bool { return gemmMicro != nil && m >= gemmMicro.mr }

// gemm adds A·B to C: C is m × n (row stride ldc), A m × k (lda), B
// k × n (ldb).
func gemm(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, k int) {
	if m <= 0 || n <= 0 || k <= 0 {
		return
	}
	_, _, _ = c[(m-1)*ldc+n-1], a[(m-1)*lda+k-1], b[(k-1)*ldb+n-1]
	gemmWith(gemmMicro, c, ldc, a, lda, b, ldb, m, n, k)
}

// gemmWith runs the whole tiles of gemm's product through kern, the
// columns left over through its narrower kernels, and rows fewer than a
// tile through kern on a zero-padded copy (or gemmGo, when they are very
// few).
func gemmWith(kern *gemmKernel, c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, k int) {
	if kern == nil {
		gemmGo(c, ldc, a, lda, b, ldb, m, n, k)
		return
	}
	nt := n / kern.nr * kern.nr
	if nt < n {
		gemmWith(kern.narrow, c[nt:], ldc, a, lda, b[nt:], ldb, m, n-nt, k)
	}
	if nt == 0 {
		return
	}
	mt := m / kern.mr * kern.mr
	for i := 0; i < mt; i += kern.mr {
		for j := 0; j < nt; j += kern.nr {
			kern.fn(&a[i*lda], lda, &b[j], ldb, &c[i*ldc+j], ldc, k)
		}
	}
	rest := m - mt
	if rest == 0 {
		return
	}
	if 4*rest < kern.mr {
		gemmGo(c[mt*ldc:], ldc, a[mt*lda:], lda, b, ldb, rest, nt, k)
		return
	}
	var apBuf, cpBuf [2048]float32 // on the stack for the panels lqc's products use
	ap, cp := apBuf[:], cpBuf[:]
	if kern.mr*k > len(ap) {
		ap = make([]float32, kern.mr*k)
	}
	if kern.mr*nt > len(cp) {
		cp = make([]float32, kern.mr*nt)
	}
	clear(ap[rest*k : kern.mr*k])
	for i := range rest {
		copy(ap[i*k:(i+1)*k], a[(mt+i)*lda:])
		copy(cp[i*nt:(i+1)*nt], c[(mt+i)*ldc:])
	}
	for j := 0; j < nt; j += kern.nr {
		kern.fn(&ap[0], k, &b[j], ldb, &cp[j], nt, k)
	}
	for i := range rest {
		copy(c[(mt+i)*ldc:(mt+i)*ldc+nt], cp[i*nt:(i+1)*nt])
	}
}

// gemmGo is the portable twin of the micro-kernels: each element of C
// plus its k products in order.
func gemmGo(c []float32, ldc int, a []float32, lda int, b []float32, ldb int, m, n, k int) {
	for i := range m {
		ci := c[i*ldc : i*ldc+n]
		ai := a[i*lda : i*lda+k]
		for kk, av := range ai {
			bk := b[kk*ldb : kk*ldb+n]
			for j := range ci {
				ci[j] += av * bk[j]
			}
		}
	}
}

// gemmDepth is how many values of the inner dimension a decoded panel
// holds: 256, or one block of a type with longer blocks.
func gemmDepth(blockSize int) int { return max(256/blockSize, 1) * blockSize }

// decodeSegment decodes values [c0, c1) of weight row r into dst; c0 and
// c1 lie on block boundaries (c1 may be the row's end).
func (w *weight) decodeSegment(dst []float32, r, c0, c1 int) {
	bs, ts := w.typ.BlockSize(), w.typ.TypeSize()
	decode(w.typ, dst[:c1-c0], w.row(r)[c0/bs*ts:(c1+bs-1)/bs*ts])
}

// decode decodes encoded values of type typ, the 16-bit floats with a
// SIMD kernel where there is one (the quant package's codecs are scalar).
func decode(typ quant.Type, dst []float32, src []byte) {
	if k := decodeHalf[typ]; k != nil {
		k(dst, src)
		return
	}
	typ.Decode(dst, src)
}

// decodeHalf are the SIMD decoders of F16 and BF16 (dot_amd64.go,
// dot_arm64.go).
var decodeHalf = map[quant.Type]func(dst []float32, src []byte){}

// linearF32 computes out[t, o] = Σ_i x[t, i]·W[o, i] in float32 for T
// tokens (added to out's values with accumulate): each job owns a band of
// output columns (weight rows), decodes it a panel of gemmDepth inputs at
// a time, transposed so that the micro-kernel reads it row by row, and
// adds its product with every token's activations.
func (b *Backend) linearF32(out, x []float32, w *weight, T int, accumulate bool) {
	in, nout := w.rowLen, w.rows
	depth := gemmDepth(w.typ.BlockSize())
	const band = 64
	// The buffers as large as this matrix needs: an adapter's factors
	// (rank rows or columns) are much smaller than a band by a panel.
	size := min(band, nout) * min(depth, in)
	b.pool.parallel((nout+band-1)/band, 1, func(lo, hi int) {
		seg := make([]float32, size)
		panel := make([]float32, size)
		for job := lo; job < hi; job++ {
			r0, r1 := job*band, min(job*band+band, nout)
			nr := r1 - r0
			for t := range T {
				if !accumulate {
					clear(out[t*nout+r0 : t*nout+r1])
				}
			}
			for k0 := 0; k0 < in; k0 += depth {
				k1 := min(k0+depth, in)
				kn := k1 - k0
				for r := r0; r < r1; r++ {
					row := seg[(r-r0)*kn : (r-r0+1)*kn]
					w.decodeSegment(row, r, k0, k1)
					for kk, v := range row {
						panel[kk*nr+r-r0] = v
					}
				}
				gemm(out[r0:], nout, x[k0:], in, panel, nr, T, nr, kn)
			}
		}
	})
}

// linearTF32 computes dx[t, i] = Σ_o dy[t, o]·W[o, i] for T tokens: each
// job owns a band of dx's columns, decodes W's rows over that band a
// panel of gemmDepth rows at a time (never the whole weight), and adds
// the panel's product with every token's dy, the rows in order.
func (b *Backend) linearTF32(dx, dy []float32, w *weight, T int) {
	in, nout := w.rowLen, w.rows
	bs := w.typ.BlockSize()
	band := max(64/bs, 1) * bs
	const depth = 256
	b.pool.parallel((in+band-1)/band, 1, func(lo, hi int) {
		panel := make([]float32, depth*band)
		for job := lo; job < hi; job++ {
			c0, c1 := job*band, min(job*band+band, in)
			nc := c1 - c0
			for t := range T {
				clear(dx[t*in+c0 : t*in+c1])
			}
			for o0 := 0; o0 < nout; o0 += depth {
				o1 := min(o0+depth, nout)
				for o := o0; o < o1; o++ {
					w.decodeSegment(panel[(o-o0)*nc:(o-o0+1)*nc], o, c0, c1)
				}
				gemm(dx[c0:], in, dy[o0:], nout, panel, nc, T, nc, o1-o0)
			}
		}
	})
}

// linearGradW computes dW[o, i] = Σ_t dy[t, o]·x[t, i] for dW[nout, in]
// (the gradient of a trained matrix), the tokens in order: dyᵀ is laid
// out once, then each job multiplies it with x over a band of dW's rows
// or, for a short wide dW (a LoRA A), of its columns.
func (b *Backend) linearGradW(dw, dy, x []float32, nout, in int) {
	T := len(x) / in
	dyT := make([]float32, nout*T)
	for t := range T {
		for o, v := range dy[t*nout : (t+1)*nout] {
			dyT[o*T+t] = v
		}
	}
	clear(dw)
	const band = 64
	if nout >= in {
		b.pool.parallel((nout+band-1)/band, 1, func(lo, hi int) {
			for job := lo; job < hi; job++ {
				r0, r1 := job*band, min(job*band+band, nout)
				gemm(dw[r0*in:], in, dyT[r0*T:], T, x, in, r1-r0, in, T)
			}
		})
		return
	}
	b.pool.parallel((in+band-1)/band, 1, func(lo, hi int) {
		for job := lo; job < hi; job++ {
			c0, c1 := job*band, min(job*band+band, in)
			gemm(dw[c0:], in, dyT, T, x[c0:], in, nout, c1-c0, T)
		}
	})
}
