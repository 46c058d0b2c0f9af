package ir

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReshape(t *testing.T) {
	v := make([]float32, 24)
	for i := range v {
		v[i] = float32(i)
	}
	base, err := FromF32("x", []int64{4, 6}, v)
	if err != nil {
		t.Fatal(err)
	}
	// Over mapped bytes and over a computed source (Transpose of the
	// transpose gives the same values through ReadRows).
	tt, _ := Transpose(base)
	back, _ := Transpose(tt)
	for _, src := range []*Tensor{base, back} {
		r, err := Reshape(src, []int64{2, 3, 4})
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(got, v) {
			t.Errorf("reshaped values %v", got)
		}
		row := make([]float32, 4)
		if err := r.ReadRowsF32(row, 3, 1); err != nil || !cmp.Equal(row, v[12:16]) {
			t.Errorf("row 3: %v %v", row, err)
		}
	}
	if _, err := Reshape(base, []int64{5, 5}); err == nil {
		t.Error("reshape to another size accepted")
	}
}
