package cpu

import (
	"math"

	lqrt "github.com/lqc-dev/lqc/runtime"
)

// Tile sizes of the fused attention: blockQ query rows share each tile of
// blockK keys and values while it is in cache.
const (
	blockQ = 32
	blockK = 64
)

// flashAttention computes softmax(q·kᵀ·scale + mask, causal)·v for
// q[H,T,d], k[Hkv,S,d], v[Hkv,S,dv] (k and v may be views into a KV
// cache) without the T×S scores: each query row keeps a running maximum,
// a running sum of exponentials and its weighted sum of values, rescaled
// when a new key tile raises the maximum (the online softmax). With
// causal set, query t (the last T of S positions) sees keys up to S-T+t,
// and key tiles wholly above the diagonal are never visited. Query head h
// reads key/value head h/(H/Hkv) in place: nothing is copied per head.
func (b *Backend) flashAttention(out, q, k, v, mask *lqrt.Tensor, scale float32, causal bool) {
	H, T, d := q.Shape[0], q.Shape[1], q.Shape[2]
	Hkv, S, dv := k.Shape[0], k.Shape[1], v.Shape[2]
	group := H / Hkv
	ks, vs := stride0(k), stride0(v)
	qd, kd, vd, od := f32s(q), f32s(k), f32s(v), f32s(out)
	var md []float32
	if mask != nil {
		md = f32s(mask)
	}
	tiles := (T + blockQ - 1) / blockQ
	b.pool.parallel(H*tiles, 1, func(lo, hi int) {
		var (
			mx     [blockQ]float32 // running maximum per row
			sum    [blockQ]float32 // running Σ exp(score − max) per row
			acc    = make([]float32, blockQ*dv)
			scores [blockK]float32
		)
		for job := lo; job < hi; job++ {
			h, t0 := job/tiles, (job%tiles)*blockQ
			rows := min(blockQ, T-t0)
			kh, vh := kd[(h/group)*ks:], vd[(h/group)*vs:]
			for r := range rows {
				mx[r], sum[r] = float32(math.Inf(-1)), 0
			}
			clear(acc[:rows*dv])
			end := S
			if causal {
				end = min(S, S-T+t0+rows) // the last row's last visible key, plus one
			}
			for s0 := 0; s0 < end; s0 += blockK {
				cols := min(blockK, end-s0)
				for r := range rows {
					t := t0 + r
					limit := S // keys s < limit are visible
					if causal {
						limit = S - T + t + 1
					}
					n := min(cols, limit-s0)
					if n <= 0 {
						continue
					}
					qrow := qd[(h*T+t)*d : (h*T+t+1)*d]
					rowMax := float32(math.Inf(-1))
					for c := range n {
						s := s0 + c
						sc := dotF32(qrow, kh[s*d:(s+1)*d]) * scale
						if md != nil {
							sc += md[t*S+s]
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
					for c := range n {
						p := float32(math.Exp(float64(scores[c] - newMax)))
						sum[r] += p
						axpy(o, p, vh[(s0+c)*dv:(s0+c+1)*dv])
					}
					mx[r] = newMax
				}
			}
			for r := range rows {
				t := t0 + r
				dst := od[(h*T+t)*dv : (h*T+t+1)*dv]
				inv := 1 / sum[r]
				for i, x := range acc[r*dv : (r+1)*dv] {
					dst[i] = x * inv
				}
			}
		}
	})
}
