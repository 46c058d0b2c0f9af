package calib

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestInput: the blocked Gram accumulation equals Σxᵀx, the diagonal
// equals Σx², and Scale transforms every statistic as dividing the
// inputs by s would.
func TestInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const cols, rows = 7, 11 // rows not a multiple of the four-row blocking
	x := make([]float32, rows*cols)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	s := make([]float64, cols)
	for j := range s {
		s[j] = 0.5 + rng.Float64()
	}
	scaled := make([]float32, len(x))
	for i, v := range x {
		scaled[i] = float32(float64(v) / s[i%cols])
	}
	in, want := NewInput(cols, true), NewInput(cols, true)
	in.Add(x[:3*cols]) // two calls, as chunks arrive
	in.Add(x[3*cols:])
	in.Finish()
	in.Scale(s)
	want.Add(scaled)
	want.Finish()
	if in.Count != rows || want.Count != rows {
		t.Fatalf("counts %d, %d", in.Count, want.Count)
	}
	close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-5*(1+math.Abs(b)) }
	for i := range cols {
		if !close(in.SumSq[i], want.SumSq[i]) || !close(in.SumAbs[i], want.SumAbs[i]) || !close(in.Gram[i*cols+i], in.SumSq[i]) {
			t.Errorf("column %d: Σx² %g/%g, Σ|x| %g/%g, Gram diagonal %g", i, in.SumSq[i], want.SumSq[i], in.SumAbs[i], want.SumAbs[i], in.Gram[i*cols+i])
		}
		for j := range cols {
			var brute float64
			for r := range rows {
				brute += float64(scaled[r*cols+i]) * float64(scaled[r*cols+j])
			}
			if !close(in.Gram[i*cols+j], brute) {
				t.Errorf("Gram[%d,%d] = %g, want %g", i, j, in.Gram[i*cols+j], brute)
			}
		}
	}
	imp := in.Importance()
	if !close(float64(imp[0]), in.SumSq[0]/rows) {
		t.Errorf("importance %g, want %g", imp[0], in.SumSq[0]/rows)
	}
	st := &Stats{Inputs: map[string]*Input{"a.weight": in, "output.weight": in}, ChunkCount: 2, ChunkSize: 8, Dataset: "d.txt"}
	if m := st.Imatrix(false); len(m.Entries) != 1 || m.ChunkCount != 2 || m.Datasets[0] != "d.txt" {
		t.Errorf("imatrix without the classifier: %+v", m)
	}
	if m := st.Imatrix(true); len(m.Entries) != 2 {
		t.Errorf("imatrix with the classifier: %d entries", len(m.Entries))
	}
	if _, err := st.Input("b.weight", cols, false); err == nil {
		t.Error("statistics of an unseen weight")
	}
	if _, err := st.Input("a.weight", cols+1, false); err == nil {
		t.Error("statistics for the wrong row length")
	}
}
