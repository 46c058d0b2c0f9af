package train

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestTopSVD: the randomized decomposition finds the leading singular
// values of a matrix (checked against the eigenvalues of MᵀM, computed
// independently), and U·S·Vᵀ is the best rank-r approximation: its error
// is the energy of the remaining singular values.
func TestTopSVD(t *testing.T) {
	for _, c := range []struct{ rows, cols, r int }{{37, 23, 4}, {23, 37, 5}, {64, 64, 8}, {9, 5, 5}} {
		rng := rand.New(rand.NewPCG(1, uint64(c.rows)))
		m := make([]float64, c.rows*c.cols)
		// Decaying spectrum: a sum of rank-one terms plus noise.
		for k := range min(c.rows, c.cols) {
			sv := math.Pow(0.6, float64(k)) * 10
			u := make([]float64, c.rows)
			v := make([]float64, c.cols)
			for i := range u {
				u[i] = rng.NormFloat64()
			}
			for j := range v {
				v[j] = rng.NormFloat64()
			}
			for i := range u {
				for j := range v {
					m[i*c.cols+j] += sv * u[i] * v[j] / math.Sqrt(float64(c.rows*c.cols))
				}
			}
		}
		mtm := make([]float64, c.cols*c.cols)
		for i := range c.cols {
			for j := range c.cols {
				for x := range c.rows {
					mtm[i*c.cols+j] += m[x*c.cols+i] * m[x*c.cols+j]
				}
			}
		}
		lambda, _ := symEigen(mtm, c.cols)
		sort.Sort(sort.Reverse(sort.Float64Slice(lambda)))
		u, s, vt := topSVD(m, c.rows, c.cols, c.r, 7)
		var rest float64
		for k, l := range lambda {
			if k < c.r {
				if want := math.Sqrt(max(l, 0)); math.Abs(s[k]-want) > 1e-6*want+1e-9 {
					t.Errorf("%dx%d: σ%d = %.9g, want %.9g", c.rows, c.cols, k, s[k], want)
				}
			} else {
				rest += max(l, 0)
			}
		}
		var err2 float64
		for i := range c.rows {
			for j := range c.cols {
				v := m[i*c.cols+j]
				for k := range c.r {
					v -= u[i*c.r+k] * s[k] * vt[k*c.cols+j]
				}
				err2 += v * v
			}
		}
		if math.Abs(err2-rest) > 1e-6*(rest+1e-12)+1e-9 {
			t.Errorf("%dx%d rank %d: residual energy %.9g, the discarded singular values' %.9g", c.rows, c.cols, c.r, err2, rest)
		}
	}
}
