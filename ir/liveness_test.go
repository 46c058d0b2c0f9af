package ir

import (
	"testing"

	"github.com/lqc-dev/lqc/quant"
)

// TestPeakLive walks a small schedule by hand, in rows of 4 bytes per
// column: x[seq,4] → Linear to h[seq,16] → SiLU g[seq,16] → Reshape (a
// view) → Linear to o[seq,4] → Add with x → y, the output.
func TestPeakLive(t *testing.T) {
	g := NewGraph("chain")
	b := NewBuilder(g)
	x := g.Input("x", quant.F32, Shape{Sym("seq"), D(4)})
	up := g.AddWeight(mustF32(t, "up", []int64{16, 4}, make([]float32, 64)))
	down := g.AddWeight(mustF32(t, "down", []int64{4, 16}, make([]float32, 64)))
	h := b.Op("Linear", nil, x, up)
	act := b.Op("Reshape", Attrs{"shape": []int64{-1, 16}}, b.Op("SiLU", nil, h))
	y := b.Op("Add", nil, x, b.Op("Linear", nil, act, down))
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	g.Outputs = []*Value{y}
	const T = 100
	rows := func(n int64) int64 { return n * T * 4 } // n columns of T float32 rows
	cases := []struct {
		name string
		opt  LiveOptions
		want int64
	}{
		// x, h and the SiLU's output are live at once.
		{"plain", LiveOptions{}, rows(4 + 16 + 16)},
		{"bf16 activations", LiveOptions{FloatBytes: 2}, rows(4+16+16) / 2},
		// The output is the last value: its rows do not move the peak.
		{"last row of the output", LiveOptions{OutputRows: 1}, rows(4 + 16 + 16)},
		// Freed buffers stay pooled by size: when y is made, both 16-wide
		// ones are pooled beside x, o and y; the second pass reuses them
		// all and needs no more.
		{"pooled", LiveOptions{PoolBytes: 1 << 30, PoolMinBytes: 1}, rows(4 + 4 + 4 + 16 + 16)},
		// A pool of one 16-wide buffer: its peak is when o is made beside
		// x and the SiLU's output.
		{"pool of one buffer", LiveOptions{PoolBytes: rows(16), PoolMinBytes: 1}, rows(4 + 16 + 4 + 16)},
	}
	for _, c := range cases {
		got, _, err := g.PeakLiveWith(map[string]int{"seq": T}, c.opt)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s: peak %d bytes, want %d", c.name, got, c.want)
		}
	}
	if _, _, err := g.PeakLive(nil); err == nil {
		t.Error("an unbound dimension gave no error")
	}
}
