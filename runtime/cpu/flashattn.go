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

// flashAttention computes softmax(softcap(q·kᵀ·scale) + mask, causal)·v
// for q[B,H,T,d], k[B,Hkv,S,d], v[B,Hkv,S,dv] (B optional; 3-D k and v
// may be views into a KV cache) without the T×S scores: each query row
// keeps a running maximum, a running sum of exponentials and its weighted
// sum of values, rescaled when a new key tile raises the maximum (the
// online softmax). With causal set, query t (the last T of S positions)
// sees keys up to S-T+t, and key tiles wholly above the diagonal are
// never visited. Query head h reads key/value head h/(H/Hkv) in place:
// nothing is copied per head. The mask broadcasts to [B,H,T,S].
func (b *Backend) flashAttention(out, q, k, v, mask *lqrt.Tensor, scale, softcap float32, causal bool) {
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
		ks, vs = stride0(k), stride0(v)
	}
	kb, vb := Hkv*ks, Hkv*vs
	qd, kd, vd, od := f32s(q), f32s(k), f32s(v), f32s(out)
	var md []float32
	var mst [4]int // mask strides for b, h, t, s (0 where it broadcasts)
	if mask != nil {
		md = f32s(mask)
		full := [4]int{B, H, T, S}
		stride := 1
		for i := len(mask.Shape) - 1; i >= 0; i-- {
			ax := 4 - len(mask.Shape) + i
			if mask.Shape[i] != 1 || full[ax] == 1 {
				mst[ax] = stride
			}
			stride *= mask.Shape[i]
		}
	}
	tiles := (T + blockQ - 1) / blockQ
	b.pool.parallel(B*H*tiles, 1, func(lo, hi int) {
		var (
			mx     [blockQ]float32 // running maximum per row
			sum    [blockQ]float32 // running Σ exp(score − max) per row
			acc    = make([]float32, blockQ*dv)
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
					qrow := qd[(bh*T+t)*d : (bh*T+t+1)*d]
					mrow := bi*mst[0] + h*mst[1] + t*mst[2]
					rowMax := float32(math.Inf(-1))
					for c := range n {
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
				dst := od[(bh*T+t)*dv : (bh*T+t+1)*dv]
				inv := 1 / sum[r]
				for i, x := range acc[r*dv : (r+1)*dv] {
					dst[i] = x * inv
				}
			}
		}
	})
}
