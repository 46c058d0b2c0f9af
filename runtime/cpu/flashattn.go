package cpu

import (
	"math"

	"github.com/lqc-dev/lqc/ir"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// Tile sizes of the fused attention: blockQ query rows share each tile of
// blockK keys and values while it is in cache.
const (
	blockQ = 32
	blockK = 64
)

// flashAttention computes softmax(softcap(q·kᵀ·scale) + mask, causal)·v
// for q[B,H,T,d], k[B,Hkv,S,d], v[B,Hkv,S,dv] (B optional; 3-D k and v
// may be views into a KV cache) without the T×S scores: each query row
// keeps a running maximum, a running sum of exponentials and its weighted
// sum of values, rescaled when a new key tile raises the maximum (the
// online softmax). With causal set, query t (the last T of S positions)
// sees keys up to S-T+t, and key tiles wholly above the diagonal are
// never visited. Query head h reads key/value head h/(H/Hkv) in place:
// nothing is copied per head. With window w > 0 (and causal), query t
// sees only the w keys ending at its own position, and key tiles wholly
// before the window are never visited either. The mask broadcasts to
// [B,H,T,S]. With lse
// set, each row's log-sum-exp of its scores goes there ([B,H,T]): what
// the backward pass recomputes the probabilities from.
func (b *Backend) flashAttention(out, lse, q, k, v, mask *lqrt.Tensor, scale, softcap float32, causal bool, window int) {
	r := len(q.Shape)
	B := 1
	if r == 4 {
		B = q.Shape[0]
	}
	H, T, d := q.Shape[r-3], q.Shape[r-2], q.Shape[r-1]
	Hkv, S, dv := k.Shape[r-3], k.Shape[r-2], v.Shape[r-1]
	group := H / Hkv
	// Per-head strides of k and v (a cache view's own), and per batch.
	ks, vs := S*d, S*dv
	if r == 3 {
		ks, vs = k.Step0(), v.Step0()
	}
	kb, vb := Hkv*ks, Hkv*vs
	qd, kd, vd, od := f32s(q), f32s(k), f32s(v), f32s(out)
	var ld []float32
	if lse != nil {
		ld = f32s(lse)
	}
	md, mst := maskStrides(mask, B, H, T, S)
	tiles := (T + blockQ - 1) / blockQ
	// A job is a tile of queries of one head against (up to) every key.
	b.pool.parallel(B*H*tiles, grainFor(min(T, blockQ)*S*(d+dv), 1), func(lo, hi int) {
		var (
			mx     [blockQ]float32                      // running maximum per row
			sum    [blockQ]float32                      // running Σ exp(score − max) per row
			acc    = make([]float32, min(blockQ, T)*dv) // one row when decoding
			scores [blockK]float32
		)
		for job := lo; job < hi; job++ {
			bh, t0 := job/tiles, (job%tiles)*blockQ
			bi, h := bh/H, bh%H
			rows := min(blockQ, T-t0)
			kh, vh := kd[bi*kb+(h/group)*ks:], vd[bi*vb+(h/group)*vs:]
			for r := range rows {
				mx[r], sum[r] = float32(math.Inf(-1)), 0
			}
			clear(acc[:rows*dv])
			end := S
			if causal {
				end = min(S, S-T+t0+rows) // the last row's last visible key, plus one
			}
			start := 0
			if causal && window > 0 {
				start = max(0, S-T+t0+1-window) / blockK * blockK // the first row's first visible key's tile
			}
			for s0 := start; s0 < end; s0 += blockK {
				cols := min(blockK, end-s0)
				for r := range rows {
					t := t0 + r
					first, limit := visibleKeys(t, T, S, causal, window)
					n := min(cols, limit-s0)
					c0 := max(0, first-s0)
					if n <= c0 {
						continue
					}
					qrow := qd[(bh*T+t)*d : (bh*T+t+1)*d]
					mrow := bi*mst[0] + h*mst[1] + t*mst[2]
					rowMax := float32(math.Inf(-1))
					for c := c0; c < n; c++ {
						s := s0 + c
						sc := dotF32(qrow, kh[s*d:(s+1)*d]) * scale
						if softcap != 0 {
							sc = softcap * float32(math.Tanh(float64(sc/softcap)))
						}
						if md != nil {
							sc += md[mrow+s*mst[3]]
						}
						scores[c] = sc
						rowMax = max(rowMax, sc)
					}
					newMax := max(mx[r], rowMax)
					if math.IsInf(float64(newMax), -1) {
						continue // everything so far is masked out
					}
					o := acc[r*dv : (r+1)*dv]
					if alpha := float32(math.Exp(float64(mx[r] - newMax))); alpha != 1 {
						sum[r] *= alpha
						for i := range o {
							o[i] *= alpha
						}
					}
					expShift(scores[c0:n], scores[c0:n], newMax)
					for c := c0; c < n; c++ {
						p := scores[c]
						sum[r] += p
						axpy(o, p, vh[(s0+c)*dv:(s0+c+1)*dv])
					}
					mx[r] = newMax
				}
			}
			for r := range rows {
				t := t0 + r
				dst := od[(bh*T+t)*dv : (bh*T+t+1)*dv]
				inv := 1 / sum[r]
				for i, x := range acc[r*dv : (r+1)*dv] {
					dst[i] = x * inv
				}
				if ld != nil {
					ld[bh*T+t] = mx[r] + float32(math.Log(float64(sum[r])))
				}
			}
		}
	})
}

// visibleKeys is the range [first, limit) of keys query t (of the last T
// of S positions) attends to.
func visibleKeys(t, T, S int, causal bool, window int) (first, limit int) {
	limit = S
	if causal {
		limit = S - T + t + 1
		if window > 0 {
			first = max(0, limit-window)
		}
	}
	return first, limit
}

// maskStrides returns an additive mask's values and its strides for b, h,
// t, s of the scores [B,H,T,S] it broadcasts to (0 where it repeats).
func maskStrides(mask *lqrt.Tensor, B, H, T, S int) ([]float32, [4]int) {
	var mst [4]int
	if mask == nil {
		return nil, mst
	}
	full := [4]int{B, H, T, S}
	stride := 1
	for i := len(mask.Shape) - 1; i >= 0; i-- {
		ax := 4 - len(mask.Shape) + i
		if mask.Shape[i] != 1 || full[ax] == 1 {
			mst[ax] = stride
		}
		stride *= mask.Shape[i]
	}
	return f32s(mask), mst
}

// flashAttentionGrad computes dq, dk, dv of flashAttention from q, k, v,
// its output o, its log-sum-exp and do, FlashAttention-2's way: the
// probabilities p = exp(score − lse) are recomputed key by key, never
// stored, and with D_t = do_t·o_t each score's gradient is
// p·(do_t·v_s − D_t). One job per (batch, key/value head) takes every
// query head of its group, so dk and dv are summed without races and in
// a fixed order; the extra memory is O(T).
func (b *Backend) flashAttentionGrad(attrs ir.Attrs, outs, in []*lqrt.Tensor) error {
	ops, err := denseOperands(in)
	if err != nil {
		return err
	}
	q, k, v, o, lse, do := ops[0], ops[1], ops[2], ops[3], ops[4], ops[5]
	var mask *lqrt.Tensor
	if len(ops) == 7 {
		mask = ops[6]
	}
	dq, dk, dv := outs[0], outs[1], outs[2]
	scale, softcap, causal := float32(attrs.Float("scale")), float32(attrs.Float("softcap")), attrs.Bool("causal")
	window := int(attrs.Int("window"))
	r := len(q.Shape)
	B := 1
	if r == 4 {
		B = q.Shape[0]
	}
	H, T, d := q.Shape[r-3], q.Shape[r-2], q.Shape[r-1]
	Hkv, S, vd := k.Shape[r-3], k.Shape[r-2], v.Shape[r-1]
	group := H / Hkv
	ks, vs := S*d, S*vd
	if r == 3 {
		ks, vs = k.Step0(), v.Step0()
	}
	qd, kd, vdat, od, ld, dod := f32s(q), f32s(k), f32s(v), f32s(o), f32s(lse), f32s(do)
	dqd, dkd, dvd := f32s(dq), f32s(dk), f32s(dv)
	md, mst := maskStrides(mask, B, H, T, S)
	b.pool.parallel(B*Hkv, 1, func(lo, hi int) {
		for job := lo; job < hi; job++ {
			bi, hk := job/Hkv, job%Hkv
			kh := kd[bi*Hkv*ks+hk*ks:]
			vh := vdat[bi*Hkv*vs+hk*vs:]
			dkh := dkd[(bi*Hkv+hk)*S*d : (bi*Hkv+hk+1)*S*d]
			dvh := dvd[(bi*Hkv+hk)*S*vd : (bi*Hkv+hk+1)*S*vd]
			clear(dkh)
			clear(dvh)
			for h := hk * group; h < (hk+1)*group; h++ {
				bh := bi*H + h
				for t := range T {
					qrow := qd[(bh*T+t)*d : (bh*T+t+1)*d]
					dqrow := dqd[(bh*T+t)*d : (bh*T+t+1)*d]
					dorow := dod[(bh*T+t)*vd : (bh*T+t+1)*vd]
					clear(dqrow)
					l := ld[bh*T+t]
					if math.IsInf(float64(l), -1) {
						continue // a row that sees no key
					}
					D := dotF32(dorow, od[(bh*T+t)*vd:(bh*T+t+1)*vd])
					first, limit := visibleKeys(t, T, S, causal, window)
					mrow := bi*mst[0] + h*mst[1] + t*mst[2]
					for s := first; s < limit; s++ {
						z := dotF32(qrow, kh[s*d:(s+1)*d]) * scale
						sc, dcap := z, float32(1)
						if softcap != 0 {
							th := float32(math.Tanh(float64(z / softcap)))
							sc, dcap = softcap*th, 1-th*th
						}
						if md != nil {
							sc += md[mrow+s*mst[3]]
						}
						p := float32(math.Exp(float64(sc - l)))
						if p == 0 {
							continue
						}
						axpy(dvh[s*vd:(s+1)*vd], p, dorow)
						ds := p * (dotF32(dorow, vh[s*vd:(s+1)*vd]) - D) * dcap * scale
						axpy(dqrow, ds, kh[s*d:(s+1)*d])
						axpy(dkh[s*d:(s+1)*d], ds, qrow)
					}
				}
			}
		}
	})
	return nil
}
