package quant

import (
	"math"
	"sort"
)

// The 8- and 4-bit float formats of ONNX (and of FP8 checkpoints): no
// GGML ids, so they sit with lqc's other pseudo types. lqc stores one code
// per byte, F4_E2M1 included (ONNX packs two per byte; its decoder
// unpacks them).
const (
	F8E4M3FN   Type = 1005 // 4-bit exponent, no infinities, S.1111.111 is NaN
	F8E4M3FNUZ Type = 1006 // no infinities, no -0: 0x80 is the one NaN
	F8E5M2     Type = 1007 // IEEE-like, with infinities
	F8E5M2FNUZ Type = 1008 // no infinities, no -0: 0x80 is the one NaN
	F8E8M0     Type = 1009 // unsigned powers of two 2^(e-127) (MX scales); 0xFF is NaN
	F4E2M1     Type = 1010 // no infinities or NaN
)

// Sub-byte integers, stored one value per byte (sign-extended for I4 and
// I2); ONNX packs them and its decoder unpacks them.
const (
	I4 Type = 1011
	U4 Type = 1012
	I2 Type = 1013
	U2 Type = 1014
)

// miniFloat describes a small float format by its decoded values.
type miniFloat struct {
	codes   int       // number of codes (256 or 16)
	value   []float32 // decoded value of every code
	ladder  []float32 // the finite non-negative values, ascending
	ladderC []uint8   // their codes
	max     float32   // largest finite value
	hasInf  bool
	infCode uint8
	signed  bool
	uz      bool  // no negative zero: 0x80 is NaN
	noNaN   bool  // neither NaN nor infinity (F4_E2M1): always saturates
	nanCode uint8 // the code a NaN encodes to
}

var miniFloats = map[Type]*miniFloat{}

func init() {
	table[F8E4M3FN] = traits{"F8_E4M3FN", 1, 1, false, miniCodec{F8E4M3FN}}
	table[F8E4M3FNUZ] = traits{"F8_E4M3FNUZ", 1, 1, false, miniCodec{F8E4M3FNUZ}}
	table[F8E5M2] = traits{"F8_E5M2", 1, 1, false, miniCodec{F8E5M2}}
	table[F8E5M2FNUZ] = traits{"F8_E5M2FNUZ", 1, 1, false, miniCodec{F8E5M2FNUZ}}
	table[F8E8M0] = traits{"F8_E8M0", 1, 1, false, miniCodec{F8E8M0}}
	table[F4E2M1] = traits{"F4_E2M1", 1, 1, false, miniCodec{F4E2M1}}
	table[I4] = traits{"I4", 1, 1, false, nil}
	table[U4] = traits{"U4", 1, 1, false, nil}
	table[I2] = traits{"I2", 1, 1, false, nil}
	table[U2] = traits{"U2", 1, 1, false, nil}

	miniFloats[F8E4M3FN] = newMiniFloat(4, 3, 7, false, func(c uint8) bool { return c&0x7f == 0x7f }, 0x7f)
	miniFloats[F8E4M3FNUZ] = newMiniFloat(4, 3, 8, false, func(c uint8) bool { return c == 0x80 }, 0x80)
	miniFloats[F8E5M2] = newMiniFloat(5, 2, 15, true, func(c uint8) bool { return c&0x7f > 0x7c }, 0x7f)
	miniFloats[F8E5M2FNUZ] = newMiniFloat(5, 2, 16, false, func(c uint8) bool { return c == 0x80 }, 0x80)
	miniFloats[F4E2M1] = newMiniFloat(2, 1, 1, false, func(uint8) bool { return false }, 0)
	miniFloats[F4E2M1].noNaN = true
	e8 := &miniFloat{codes: 256, value: make([]float32, 256), nanCode: 0xff}
	for c := range 255 {
		e8.value[c] = float32(math.Ldexp(1, c-127))
		e8.ladder, e8.ladderC = append(e8.ladder, e8.value[c]), append(e8.ladderC, uint8(c))
	}
	e8.value[255] = float32(math.NaN())
	e8.max = e8.value[254]
	miniFloats[F8E8M0] = e8
}

// newMiniFloat builds a sign-magnitude format with the given exponent and
// mantissa widths and bias; isNaN marks NaN codes; hasInf says the top
// exponent with a zero mantissa is infinity (IEEE-like).
func newMiniFloat(eBits, mBits, bias int, hasInf bool, isNaN func(uint8) bool, nanCode uint8) *miniFloat {
	bits := 1 + eBits + mBits
	f := &miniFloat{codes: 1 << bits, hasInf: hasInf, signed: true, nanCode: nanCode, uz: bits == 8 && isNaN(0x80)}
	f.value = make([]float32, f.codes)
	half := f.codes / 2
	topExp := 1<<eBits - 1
	for c := range f.codes {
		code := uint8(c)
		mag := c % half
		e, m := mag>>mBits, mag&(1<<mBits-1)
		var v float64
		switch {
		case isNaN(code):
			v = math.NaN()
		case hasInf && e == topExp && m == 0:
			v = math.Inf(1)
			f.infCode = uint8(mag)
		case hasInf && e == topExp:
			v = math.NaN()
		case e == 0:
			v = math.Ldexp(float64(m), 1-bias-mBits)
		default:
			v = math.Ldexp(float64(m|1<<mBits), e-bias-mBits)
		}
		if c >= half {
			v = -v
		}
		f.value[c] = float32(v)
		if c < half && !math.IsNaN(v) && !math.IsInf(v, 0) {
			f.ladder, f.ladderC = append(f.ladder, float32(v)), append(f.ladderC, code)
			f.max = max(f.max, float32(v))
		}
	}
	return f
}

// encode rounds v to the nearest code, ties to the even code. Values past
// the largest finite one saturate to it when saturate is set; otherwise
// they become infinity where the format has one, else NaN.
func (f *miniFloat) encode(v float32, saturate bool) uint8 {
	if v != v {
		return f.nanCode
	}
	neg := math.Signbit(float64(v))
	a := float32(math.Abs(float64(v)))
	if !f.signed && neg && a != 0 {
		return f.nanCode
	}
	var code uint8
	top := len(f.ladder) - 1
	if a > f.max {
		// Round to nearest still gives the maximum up to half a step past
		// it (the tie going to the maximum when its code is even).
		half := (f.ladder[top] - f.ladder[top-1]) / 2
		switch {
		case saturate, a < f.max+half, a == f.max+half && f.ladderC[top]&1 == 0, f.noNaN:
			code = f.ladderC[top]
		case f.hasInf:
			code = f.infCode
		default:
			return f.nanCode
		}
	} else {
		i := sort.Search(len(f.ladder), func(i int) bool { return f.ladder[i] >= a })
		if f.ladder[i] != a && i > 0 {
			d0, d1 := a-f.ladder[i-1], f.ladder[i]-a
			if d0 < d1 || d0 == d1 && f.ladderC[i-1]&1 == 0 {
				i--
			}
		}
		code = f.ladderC[i]
	}
	// The "UZ" formats have no negative zero (its code is their NaN).
	if neg && f.signed && !(f.uz && f.value[code] == 0) {
		code |= uint8(f.codes / 2)
	}
	return code
}

// RoundMini rounds v to small float type t (round to nearest even),
// saturating or not as ONNX's Cast and QuantizeLinear say.
func RoundMini(t Type, v float32, saturate bool) float32 {
	f := miniFloats[t]
	return f.value[f.encode(v, saturate)]
}

// IsMiniFloat reports whether t is one of the 8- and 4-bit float formats.
func (t Type) IsMiniFloat() bool { return miniFloats[t] != nil }

// MaxFinite is the largest finite value of small float type t.
func MaxFinite(t Type) float32 { return miniFloats[t].max }

// miniCodec converts with saturation, one code per byte.
type miniCodec struct{ t Type }

func (c miniCodec) encode(dst []byte, src []float32) {
	f := miniFloats[c.t]
	for i, v := range src {
		dst[i] = f.encode(v, true)
	}
}

func (c miniCodec) decode(dst []float32, src []byte) {
	f := miniFloats[c.t]
	for i, b := range src {
		dst[i] = f.value[int(b)%f.codes]
	}
}

// RoundE8M0 rounds v to a power of two 2^k, k in [-127, 127], as ONNX's
// Cast to FLOAT8E8M0 does: mode "up" (the default) takes the next power
// of two at or above |v|, "down" the one at or below, "nearest" the
// closer (ties up). NaN, infinities and values past the range give NaN.
func RoundE8M0(v float32, mode string) float32 {
	a := math.Abs(float64(v))
	if math.IsNaN(a) || math.IsInf(a, 0) {
		return float32(math.NaN())
	}
	if a == 0 {
		return float32(math.Ldexp(1, -127))
	}
	frac, exp := math.Frexp(a) // a = frac·2^exp, frac in [0.5, 1)
	k := exp - 1               // 2^k <= a < 2^(k+1)
	if frac != 0.5 {
		switch mode {
		case "down":
		case "nearest":
			if a >= 1.5*math.Ldexp(1, k) {
				k++
			}
		default:
			k++
		}
	}
	switch {
	case k < -127:
		k = -127
	case k > 127:
		return float32(math.NaN())
	}
	return float32(math.Ldexp(1, k))
}
