package train

import (
	"math"
	"math/rand/v2"
	"sort"
)

// topSVD returns the r largest singular triplets of the row-major
// rows×cols matrix m: u (rows×r), s (r), vt (r×cols). Randomized subspace
// iteration (Halko, Martinsson and Tropp): a Gaussian sketch with 8 extra
// columns, four power iterations re-orthonormalized each time, then the
// exact decomposition of the small projected matrix. When the sketch
// spans the whole smaller side the result is exact.
func topSVD(m []float64, rows, cols, r int, seed uint64) (u, s, vt []float64) {
	k := min(r+8, rows, cols)
	rng := rand.New(rand.NewPCG(seed, 0x5bd1e995))
	// y = m·Ω, rows×k.
	omega := make([]float64, cols*k)
	for i := range omega {
		omega[i] = rng.NormFloat64()
	}
	q := mulAB(m, omega, rows, cols, k)
	orthonormalize(q, rows, k)
	for range 4 {
		z := mulAtB(m, q, rows, cols, k) // mᵀ·q, cols×k
		orthonormalize(z, cols, k)
		q = mulAB(m, z, rows, cols, k)
		orthonormalize(q, rows, k)
	}
	// b = qᵀ·m (k×cols); b·bᵀ = w·λ·wᵀ; m ≈ q·w·√λ·(bᵀ·w/√λ)ᵀ.
	b := make([]float64, k*cols)
	for i := range rows {
		mr := m[i*cols : (i+1)*cols]
		for j := range k {
			if c := q[i*k+j]; c != 0 {
				br := b[j*cols : (j+1)*cols]
				for x, v := range mr {
					br[x] += c * v
				}
			}
		}
	}
	bbt := make([]float64, k*k)
	for i := range k {
		for j := i; j < k; j++ {
			var d float64
			for x := range cols {
				d += b[i*cols+x] * b[j*cols+x]
			}
			bbt[i*k+j], bbt[j*k+i] = d, d
		}
	}
	lambda, w := symEigen(bbt, k)
	order := make([]int, k)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, c int) bool { return lambda[order[a]] > lambda[order[c]] })
	u, s, vt = make([]float64, rows*r), make([]float64, r), make([]float64, r*cols)
	for t := range r {
		e := order[t]
		sv := math.Sqrt(max(lambda[e], 0))
		s[t] = sv
		for i := range rows {
			var d float64
			for j := range k {
				d += q[i*k+j] * w[j*k+e]
			}
			u[i*r+t] = d
		}
		if sv == 0 {
			continue
		}
		for x := range cols {
			var d float64
			for j := range k {
				d += b[j*cols+x] * w[j*k+e]
			}
			vt[t*cols+x] = d / sv
		}
	}
	return u, s, vt
}

// mulAB is m (rows×cols) times x (cols×k).
func mulAB(m, x []float64, rows, cols, k int) []float64 {
	out := make([]float64, rows*k)
	for i := range rows {
		o := out[i*k : (i+1)*k]
		for c, v := range m[i*cols : (i+1)*cols] {
			if v == 0 {
				continue
			}
			xr := x[c*k : (c+1)*k]
			for j := range o {
				o[j] += v * xr[j]
			}
		}
	}
	return out
}

// mulAtB is mᵀ (cols×rows) times y (rows×k).
func mulAtB(m, y []float64, rows, cols, k int) []float64 {
	out := make([]float64, cols*k)
	for i := range rows {
		yr := y[i*k : (i+1)*k]
		for c, v := range m[i*cols : (i+1)*cols] {
			if v == 0 {
				continue
			}
			o := out[c*k : (c+1)*k]
			for j := range o {
				o[j] += v * yr[j]
			}
		}
	}
	return out
}

// orthonormalize makes the k columns of a (n×k, row-major) orthonormal:
// modified Gram-Schmidt, twice for stability. A column that vanishes is
// left zero.
func orthonormalize(a []float64, n, k int) {
	for range 2 {
		for j := range k {
			for p := range j {
				var d float64
				for i := range n {
					d += a[i*k+j] * a[i*k+p]
				}
				for i := range n {
					a[i*k+j] -= d * a[i*k+p]
				}
			}
			var ss float64
			for i := range n {
				ss += a[i*k+j] * a[i*k+j]
			}
			if ss < 1e-300 {
				for i := range n {
					a[i*k+j] = 0
				}
				continue
			}
			inv := 1 / math.Sqrt(ss)
			for i := range n {
				a[i*k+j] *= inv
			}
		}
	}
}

// symEigen diagonalizes the symmetric k×k matrix a by cyclic Jacobi
// rotations: eigenvalues, and eigenvectors as the columns of v.
func symEigen(a []float64, k int) (lambda, v []float64) {
	a = append([]float64(nil), a...)
	v = make([]float64, k*k)
	for i := range k {
		v[i*k+i] = 1
	}
	for sweep := 0; sweep < 100; sweep++ {
		var off, total float64
		for i := range k {
			for j := range k {
				if i != j {
					off += a[i*k+j] * a[i*k+j]
				}
				total += a[i*k+j] * a[i*k+j]
			}
		}
		if off <= 1e-30*total || off == 0 {
			break
		}
		for p := range k {
			for q := p + 1; q < k; q++ {
				apq := a[p*k+q]
				if apq == 0 {
					continue
				}
				theta := (a[q*k+q] - a[p*k+p]) / (2 * apq)
				t := math.Copysign(1, theta) / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				c := 1 / math.Sqrt(t*t+1)
				s := t * c
				for i := range k {
					aip, aiq := a[i*k+p], a[i*k+q]
					a[i*k+p], a[i*k+q] = c*aip-s*aiq, s*aip+c*aiq
				}
				for i := range k {
					api, aqi := a[p*k+i], a[q*k+i]
					a[p*k+i], a[q*k+i] = c*api-s*aqi, s*api+c*aqi
				}
				for i := range k {
					vip, viq := v[i*k+p], v[i*k+q]
					v[i*k+p], v[i*k+q] = c*vip-s*viq, s*vip+c*viq
				}
			}
		}
	}
	lambda = make([]float64, k)
	for i := range k {
		lambda[i] = a[i*k+i]
	}
	return lambda, v
}
