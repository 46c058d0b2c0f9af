package quant

import (
	"math"
	"testing"
)

func TestMiniFloatFormats(t *testing.T) {
	cases := []struct {
		typ      Type
		max      float32
		minSub   float32 // smallest positive value
		nanCodes int
	}{
		{F8E4M3FN, 448, 1.0 / 512, 2},
		{F8E4M3FNUZ, 240, 1.0 / 1024, 1},
		{F8E5M2, 57344, 1.0 / 65536, 6},
		{F8E5M2FNUZ, 57344, 1.0 / 131072, 1},
		{F4E2M1, 6, 0.5, 0},
		{F8E8M0, float32(math.Ldexp(1, 127)), float32(math.Ldexp(1, -127)), 1},
	}
	for _, c := range cases {
		f := miniFloats[c.typ]
		if MaxFinite(c.typ) != c.max {
			t.Errorf("%v: max %g, want %g", c.typ, MaxFinite(c.typ), c.max)
		}
		positive := float32(math.Inf(1))
		nans := 0
		for code, v := range f.value {
			if v != v {
				nans++
				continue
			}
			if v > 0 && v < positive {
				positive = v
			}
			// Every value encodes back to its own code (ties and
			// rounding aside, a representable value is exact).
			if got := f.encode(v, false); f.value[got] != v || math.Signbit(float64(f.value[got])) != math.Signbit(float64(v)) && !(f.uz && v == 0) {
				t.Errorf("%v: code %#x (%g) encodes to %#x (%g)", c.typ, code, v, got, f.value[got])
			}
		}
		if positive != c.minSub || nans != c.nanCodes {
			t.Errorf("%v: smallest %g, %d NaN codes; want %g, %d", c.typ, positive, nans, c.minSub, c.nanCodes)
		}
	}
}

func TestMiniFloatRounding(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []struct {
		typ      Type
		in       float32
		saturate bool
		want     float32
	}{
		{F8E4M3FN, 17, false, 16},        // 16 and 18 are neighbours: nearer 16
		{F8E4M3FN, 19, false, 20},        // tie between 18 (odd) and 20 (even)
		{F8E4M3FN, 464, false, 448},      // tie past the max rounds to the even max
		{F8E4M3FN, 465, true, 448},       // saturated
		{F8E4M3FN, -1000, true, -448},    // saturated, negative
		{F8E5M2, 61440, false, inf},      // tie between max (odd) and infinity
		{F8E5M2, 61439, false, 57344},    // below the tie
		{F8E5M2, inf, true, 57344},       // saturated infinity
		{F8E5M2, -inf, false, -inf},      // kept
		{F4E2M1, 5, false, 4},            // tie between 4 (even code) and 6
		{F4E2M1, 0.25, false, 0},         // tie between 0 and 0.5: even code 0
		{F4E2M1, 100, false, 6},          // no NaN or infinity: saturates
		{F8E4M3FNUZ, -0.0001, false, 0},  // no negative zero
		{F8E4M3FN, 1.0 / 1024, false, 0}, // half the smallest subnormal: tie to even 0
		{F8E4M3FN, 3.0 / 1024, false, 0.00390625},
	}
	for _, c := range cases {
		got := RoundMini(c.typ, c.in, c.saturate)
		if got != c.want || math.Signbit(float64(got)) != math.Signbit(float64(c.want)) {
			t.Errorf("RoundMini(%v, %g, %v) = %g, want %g", c.typ, c.in, c.saturate, got, c.want)
		}
	}
	for _, typ := range []Type{F8E4M3FN, F8E4M3FNUZ, F8E5M2FNUZ} {
		if got := RoundMini(typ, inf, false); got == got {
			t.Errorf("%v: infinity without saturation gives %g, want NaN", typ, got)
		}
	}
	e8 := []struct {
		in   float32
		mode string
		want float32
	}{{3, "up", 4}, {3, "down", 2}, {3, "nearest", 4}, {2.9, "nearest", 2}, {4, "up", 4}, {0, "up", float32(math.Ldexp(1, -127))}}
	for _, c := range e8 {
		if got := RoundE8M0(c.in, c.mode); got != c.want {
			t.Errorf("RoundE8M0(%g, %s) = %g, want %g", c.in, c.mode, got, c.want)
		}
	}
}
