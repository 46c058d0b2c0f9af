package quant

import "fmt"

// Grids: a block whose scales are chosen but whose values are not yet.
// Error-compensating quantizers (GPTQ) fix a block's scales first and then
// round its values one at a time, each after the rounding error of the
// ones before has been spread onto the rest; they need, per value, the
// levels the block can represent and a way to store the levels chosen.

// levelCodec is implemented by the codecs whose blocks are scales plus
// one level index per value.
type levelCodec interface {
	// levels is the number of level indices per value.
	levels() int
	// setLevels stores one level index per value (len = block size) into
	// blk, leaving its scales alone.
	setLevels(blk []byte, L []uint8)
}

// Grid is one block of a type with its scales fixed.
type Grid struct {
	typ    Type
	blk    []byte
	L      []uint8
	values []float32 // values[q*bs+i]: value i's representation at level q
	levels int
}

// HasGrid reports whether t's blocks can be quantized level by level
// (every quantized type lqc encodes).
func (t Type) HasGrid() bool {
	_, ok := table[t].codec.(levelCodec)
	return ok
}

// FitGrid chooses the scales of one block for the values x (one block
// long) as t's quantizer does, weighted by qw when qw is not nil, and
// returns the block's grid with every value at the level the quantizer
// chose.
func (t Type) FitGrid(x, qw []float32) (*Grid, error) {
	lc, ok := table[t].codec.(levelCodec)
	if !ok {
		return nil, fmt.Errorf("quant: %v has no level grid", t)
	}
	bs := t.BlockSize()
	if len(x) != bs || (qw != nil && len(qw) != bs) {
		return nil, fmt.Errorf("quant: %v grid needs %d values", t, bs)
	}
	g := &Grid{typ: t, blk: make([]byte, t.TypeSize()), L: make([]uint8, bs), levels: lc.levels()}
	if err := t.EncodeWeighted(g.blk, x, bs, qw); err != nil {
		return nil, err
	}
	// The value of every level, by decoding the block with all its values
	// at that level: exactly what a decoder will compute.
	g.values = make([]float32, g.levels*bs)
	tmp := make([]byte, len(g.blk))
	for q := range g.levels {
		copy(tmp, g.blk)
		for i := range g.L {
			g.L[i] = uint8(q)
		}
		lc.setLevels(tmp, g.L)
		table[t].codec.decode(g.values[q*bs:(q+1)*bs], tmp)
	}
	// Start from the levels the quantizer chose, read back by matching
	// the decoded block. (Where a zero scale makes levels equal, another
	// level of the same value may be picked: the block decodes the same.)
	dec := make([]float32, bs)
	table[t].codec.decode(dec, g.blk)
	for i, v := range dec {
		g.L[i], _ = g.Nearest(i, v)
	}
	return g, nil
}

// Nearest returns the level of value i nearest to v and its value.
// Levels are monotonic in their index for every type, so this is a
// binary search.
func (g *Grid) Nearest(i int, v float32) (uint8, float32) {
	bs := len(g.L)
	at := func(q int) float32 { return g.values[q*bs+i] }
	lo, hi := 0, g.levels-1
	if at(lo) > at(hi) { // decreasing: negative scale
		v = -v
		at = func(q int) float32 { return -g.values[q*bs+i] }
	}
	for hi-lo > 1 { // invariant: at(lo) <= v <= at(hi), or v outside
		mid := (lo + hi) / 2
		if at(mid) <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	q := lo
	if v-at(lo) > at(hi)-v {
		q = hi
	}
	return uint8(q), g.values[q*bs+i]
}

// Set puts value i at level q.
func (g *Grid) Set(i int, q uint8) { g.L[i] = q }

// Bytes returns the encoded block with the levels set.
func (g *Grid) Bytes() []byte {
	table[g.typ].codec.(levelCodec).setLevels(g.blk, g.L)
	return g.blk
}

// Q8_0's levels are −127…127: ggml's SIMD dot products take the absolute
// value of int8 quants, which −128 does not have.
func (q8_0Codec) levels() int { return 255 }
func (q8_0Codec) setLevels(blk []byte, L []uint8) {
	for j, l := range L {
		blk[2+j] = byte(int8(int(l) - 127))
	}
}

// packNibbles stores 32 four-bit levels, the first sixteen in the low
// nibbles.
func packNibbles[T int8 | uint8](qs []byte, L []T) {
	for j := range 16 {
		qs[j] = uint8(L[j]) | uint8(L[j+16])<<4
	}
}

func (q4_0Codec) levels() int                     { return 16 }
func (q4_0Codec) setLevels(blk []byte, L []uint8) { packNibbles(blk[2:18], L) }
func (q4_1Codec) levels() int                     { return 16 }
func (q4_1Codec) setLevels(blk []byte, L []uint8) { packNibbles(blk[4:20], L) }
func (q5_0Codec) levels() int                     { return 32 }
func (q5_0Codec) setLevels(blk []byte, L []uint8) { packQ5(blk[2:6], blk[6:22], L) }
func (q5_1Codec) levels() int                     { return 32 }
func (q5_1Codec) setLevels(blk []byte, L []uint8) { packQ5(blk[4:8], blk[8:24], L) }
func (q2_KCodec) levels() int                     { return 4 }
func (q2_KCodec) setLevels(blk []byte, L []uint8) { packQ2Bits(blk[16:80], L) }
func (q3_KCodec) levels() int                     { return 8 }
func (q3_KCodec) setLevels(blk []byte, L []uint8) { packQ3K(blk[0:32], blk[32:96], L) }
func (q4_KCodec) levels() int                     { return 16 }
func (q4_KCodec) setLevels(blk []byte, L []uint8) { packQ4K(blk[16:144], L) }
func (q5_KCodec) levels() int                     { return 32 }
func (q5_KCodec) setLevels(blk []byte, L []uint8) { packQ5K(blk[16:48], blk[48:176], L) }
func (q6_KCodec) levels() int                     { return 64 }
func (q6_KCodec) setLevels(blk []byte, L []uint8) { packQ6K(blk[0:128], blk[128:192], L) }
func (iq4_NLCodec) levels() int                   { return 16 }
func (iq4_NLCodec) setLevels(blk []byte, L []uint8) {
	packIQ4(blk[2:18], L)
}
func (iq4_XSCodec) levels() int { return 16 }
func (iq4_XSCodec) setLevels(blk []byte, L []uint8) {
	packIQ4(blk[8:136], L)
}
