package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/lqc-dev/lqc/quant"
)

// TestPermute checks every permutation of 3-D shapes, with and without
// axes of length 1 (which take the plain copy), against the definition:
// out[i0,i1,i2] = x[i at position perm].
func TestPermute(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := New(1)
	defer b.Close()
	perms := [][]int64{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for _, shape := range [][]int{{2, 3, 4}, {1, 32, 8}, {5, 1, 3}, {4, 6, 1}, {1, 1, 7}} {
		for _, perm := range perms {
			x := randTensor(b, rng, shape...)
			oshape := []int{shape[perm[0]], shape[perm[1]], shape[perm[2]]}
			out := b.Alloc(quant.F32, oshape)
			if err := permute(out, x, perm); err != nil {
				t.Fatal(err)
			}
			for a := range oshape[0] {
				for c := range oshape[1] {
					for e := range oshape[2] {
						var idx [3]int
						idx[perm[0]], idx[perm[1]], idx[perm[2]] = a, c, e
						want := f32s(x)[(idx[0]*shape[1]+idx[1])*shape[2]+idx[2]]
						if got := f32s(out)[(a*oshape[1]+c)*oshape[2]+e]; got != want {
							t.Fatalf("%v permuted by %v: [%d %d %d] = %g, want %g", shape, perm, a, c, e, got, want)
						}
					}
				}
			}
		}
	}
}
