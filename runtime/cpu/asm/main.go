// Command asm generates lqc's AVX2 kernels with avo:
//
//	cd runtime/cpu && go generate   # the CPU backend's dot products
//	cd quant && go generate         # the K-quant candidate search (LQC_ASM_SET=quant)
//
// It is its own module so that lqc's users do not inherit avo. Every
// kernel computes exactly what its portable Go twin in dot.go computes, so
// the two agree bit for bit (dotF32 excepted: it sums in eight lanes with
// fused multiply-adds): integer products are summed exactly, and the float
// steps (the conversion, the multiply by the block scale, the add into
// the lane accumulator, the final reduction) happen in the same order.
package main

import (
	"fmt"
	"math"
	"os"

	"github.com/mmcloughlin/avo/ir"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

const (
	q8BlockSize  = 40  // sizeof(q8Block): d, s float32; qs [32]int8
	q8KBlockSize = 292 // sizeof(q8KBlock): d float32; qs [256]int8; bsums [16]int16
)

var nibbleMask, eightBytes, onesWords, mask30 Mem

func constants() {
	nibbleMask = GLOBL("nibbleMask", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(0x0F))
	}
	eightBytes = GLOBL("eightBytes", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(8))
	}
	onesWords = GLOBL("onesWords", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(2*i, U16(1))
	}
	mask30 = GLOBL("mask30", RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(0x30))
	}
}

// VPDPBUSD emits VPDPBUSD (AVX512-VNNI: dst's int32 lanes += Σ of four
// unsigned bytes of u times the signed bytes of s), which the Go assembler
// knows but avo's instruction table lacks.
func VPDPBUSD(s, u, dst Op) {
	Instruction(&ir.Instruction{
		Opcode: "VPDPBUSD", Operands: []Op{s, u, dst},
		Inputs: []Op{s, u, dst}, Outputs: []Op{dst}, ISA: []string{"AVX512VNNI"},
	})
}

// wide emits the AVX-512 VNNI kernel of a 32-value block type, two blocks
// (64 values) per step, over activations in the wide layout (wide_amd64.go):
// signed bytes x, for each pair of blocks the negated lane sums −k·Σx of
// every four values (k = 8 for Q4_0, 128 for Q8_0 and IQ4_NL), and a
// vector of the two blocks' activation scales, eight lanes each.
//
//	func dot<T>Widex<tokens>(w, x, corr, dx *byte, xStride, cStride, pairs int, out *float32)
//
// Weights enter VPDPBUSD as unsigned bytes: Q4_0's nibbles as they are
// (q = w+8), Q8_0's values and IQ4_NL's levels (a VPSHUFB of the nibbles)
// plus 128, so Σq·x − k·Σx = Σw·x per lane, exactly. Each pair's lane
// sums are converted to float and accumulated with a fused multiply-add
// by dw·dx.
func wide(name string, size int, tokens int) {
	fn := fmt.Sprintf("dot%sWidex%d", name, tokens)
	TEXT(fn, NOSPLIT, "func(w, x, corr, dx *byte, xStride, cStride, pairs int, out *float32)")
	w := Load(Param("w"), GP64())
	x := Load(Param("x"), GP64())
	corr := Load(Param("corr"), GP64())
	dx := Load(Param("dx"), GP64())
	xStride := Load(Param("xStride"), GP64())
	cStride := Load(Param("cStride"), GP64())
	n := Load(Param("pairs"), GP64())
	xs, cs, ds := []Register{x}, []Register{corr}, []Register{dx}
	for t := 1; t < tokens; t++ {
		p, c, d := GP64(), GP64(), GP64()
		LEAQ(Mem{Base: xs[t-1], Index: xStride, Scale: 1}, p)
		LEAQ(Mem{Base: cs[t-1], Index: cStride, Scale: 1}, c)
		LEAQ(Mem{Base: ds[t-1], Index: cStride, Scale: 1}, d)
		xs, cs, ds = append(xs, p), append(cs, c), append(ds, d)
	}
	acc := make([]VecVirtual, tokens)
	for t := range acc {
		acc[t] = ZMM()
		VPXORD(acc[t], acc[t], acc[t])
	}
	var levels VecVirtual
	if name == "IQ4_NL" {
		levels = ZMM()
		VBROADCASTI32X4(levelTable(name, iq4nlGrid), levels)
	}
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))

	// The pair's 64 weights as unsigned bytes, in value order.
	q := ZMM()
	if name != "Q8_0" {
		nib := YMM()
		VMOVDQU(Mem{Base: w, Disp: 2}, nib.AsX())
		VINSERTI128(Imm(1), Mem{Base: w, Disp: 2 + size}, nib, nib)
		hi := YMM()
		VPSRLW(Imm(4), nib, hi)
		VPAND(nibbleMask, hi, hi)
		VPAND(nibbleMask, nib, nib)
		VINSERTI64X4(Imm(1), hi, nib.AsZ(), q) // [b0 lo, b1 lo, b0 hi, b1 hi]
		VSHUFI64X2(Imm(0xD8), q, q, q)         // [b0 lo, b0 hi, b1 lo, b1 hi]
		if levels != nil {
			VPSHUFB(q, levels, q) // IQ4_NL's levels plus 128
		}
	} else {
		VMOVDQU(Mem{Base: w, Disp: 2}, q.AsY())
		VINSERTI64X4(Imm(1), Mem{Base: w, Disp: 2 + size}, q, q)
		VPXORD(signBits64(), q, q)
	}
	// dw: the two blocks' scales, eight lanes each.
	dw := ZMM()
	h := YMM()
	VPBROADCASTW(Mem{Base: w}, h.AsX())
	hw := XMM()
	VPBROADCASTW(Mem{Base: w, Disp: size}, hw)
	VINSERTI128(Imm(1), hw, h, h)
	VCVTPH2PS(h, dw)

	for t := 0; t < tokens; t++ {
		p := ZMM()
		VMOVDQU32(Mem{Base: cs[t]}, p)
		VPDPBUSD(Mem{Base: xs[t]}, q, p)
		VCVTDQ2PS(p, p)
		d := ZMM()
		VMULPS(Mem{Base: ds[t]}, dw, d)
		VFMADD231PS(p, d, acc[t])
	}
	ADDQ(Imm(uint64(2*size)), w)
	for t := range xs {
		ADDQ(Imm(64), xs[t])
		ADDQ(Imm(64), cs[t])
		ADDQ(Imm(64), ds[t])
	}
	DECQ(n)
	JMP(LabelRef(fn + "_loop"))
	Label(fn + "_done")
	o := Load(Param("out"), GP64())
	for t := range acc {
		lo := YMM()
		VEXTRACTF64X4(Imm(1), acc[t], lo)
		VADDPS(lo, acc[t].AsY(), lo)
		MOVSS(reduce8(lo), Mem{Base: o, Disp: 4 * t})
	}
	VZEROUPPER()
	RET()
}

var signs64 *Mem

// signBits64 is 64 bytes of 0x80: XOR adds 128 to signed bytes.
func signBits64() Mem {
	if signs64 == nil {
		m := GLOBL("signBits64", RODATA|NOPTR)
		for i := 0; i < 64; i++ {
			DATA(i, U8(0x80))
		}
		signs64 = &m
	}
	return *signs64
}

func main() {
	ConstraintExpr("amd64")
	if os.Getenv("LQC_ASM_SET") == "quant" {
		qkxSums()
		qkxErr("qkxErrSqAVX2", false)
		qkxErr("qkxErrAbsAVX2", true)
		qxSums()
		Generate()
		return
	}
	constants()
	for _, k := range []struct {
		name string
		size int
		load func(w Register) VecVirtual
	}{{"Q4_0", 18, loadQ4_0}, {"Q8_0", 34, loadQ8_0}} {
		for _, tokens := range []int{1, 4} {
			blockDot(k.name, k.size, tokens, k.load)
			wide(k.name, k.size, tokens)
		}
	}
	for _, tokens := range []int{1, 4} {
		wide("IQ4_NL", 18, tokens)
	}
	for _, k := range []struct {
		name string
		size int
		load func(w Register) VecVirtual
	}{{"IQ4_NL", 18, loadIQ4_NL}, {"Q5_0", 22, loadQ5_0}, {"Q4_1", 20, loadQ4_1}, {"Q5_1", 24, loadQ5_1}} {
		for _, tokens := range []int{1, 4} {
			blockDot(k.name, k.size, tokens, k.load)
		}
	}
	for _, tokens := range []int{1, 4} {
		dotQ6_K(tokens)
		dotQ45_K("Q4_K", tokens)
		dotQ45_K("Q5_K", tokens)
		dotIQ4_XS(tokens)
		dotQ23_K("Q2_K", tokens)
		dotQ23_K("Q3_K", tokens)
	}
	dotF32()
	dotF32x4()
	dotHalf("F16")
	dotHalf("BF16")
	axpyF32()
	gemmF32("gemmF32x6x16AVX2", 6, 2, false)
	gemmF32("gemmF32x6x8AVX2", 6, 1, false)
	gemmF32("gemmF32x8x32AVX512", 8, 2, true)
	gemmF32("gemmF32x8x16AVX512", 8, 1, true)
	for _, f := range []panelForm{{name: "Q4_0", nibbles: true}, {name: "IQ4_NL", nibbles: true, levels: iq4nlGrid}, {name: "Q8_0"}} {
		for _, tokens := range []int{1, 4, 8} {
			panelGemm(f, tokens)
		}
	}
	for _, tokens := range []int{1, 4, 8} {
		panelGemmQ45_K(false, tokens)
		panelGemmQ45_K(true, tokens)
		for _, typ := range []string{"Q6_K", "Q3_K", "Q2_K"} {
			panelGemm16(typ, tokens)
		}
	}
	for _, tokens := range []int{1, 4, 8} {
		panelBF16(tokens)
		panelF16(tokens)
	}
	dotQ6_K512()
	dotQ45_K512("Q4_K")
	dotQ45_K512("Q5_K")
	quantizeQ8()
	quantizeQ8K()
	gatherPanel()
	expKernels()
	decodeHalf("F16")
	decodeHalf("BF16")
	Generate()
}

// loadQ4_0 unpacks a Q4_0 block's 16 bytes of nibbles into its 32 values
// as signed bytes: low nibbles are values 0-15, high nibbles 16-31.
func loadQ4_0(w Register) VecVirtual {
	q := loadQ4Nibbles(w, 2)
	VPSUBB(eightBytes, q, q)
	return q
}

// loadQ4Nibbles unpacks the 16 bytes at w+at into 32 values 0..15: low
// nibbles are values 0-15, high nibbles 16-31.
func loadQ4Nibbles(w Register, at int) VecVirtual {
	q := YMM()
	VMOVDQU(Mem{Base: w, Disp: at}, q.AsX())
	hi := XMM()
	VPSRLW(Imm(4), q.AsX(), hi)
	VINSERTI128(Imm(1), hi, q, q)
	VPAND(nibbleMask, q, q)
	return q
}

// iq4nlGrid is ggml's kvalues_iq4nl, the sixteen levels of IQ4_NL and
// IQ4_XS, in both 128-bit lanes for VPSHUFB.
var iq4nlGrid = []int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}

var iq4nlTable *Mem

func iq4nl() Mem {
	if iq4nlTable == nil {
		m := GLOBL("iq4nlGrid", RODATA|NOPTR)
		for i := 0; i < 32; i++ {
			DATA(i, U8(uint8(iq4nlGrid[i%16])))
		}
		iq4nlTable = &m
	}
	return *iq4nlTable
}

// loadIQ4_NL maps a block's nibbles, in Q4_0's order, to the grid's
// signed levels.
func loadIQ4_NL(w Register) VecVirtual {
	q := loadQ4Nibbles(w, 2)
	g := YMM()
	VMOVDQU(iq4nl(), g)
	VPSHUFB(q, g, q)
	return q
}

var q5Consts *[3]Mem

// q5Constants: the byte shuffle spreading qh's byte i/8 to byte i, the
// mask that leaves bit i%8 of each byte unset, and 0xF0 in every byte.
func q5Constants() [3]Mem {
	if q5Consts == nil {
		spread := GLOBL("q5Spread", RODATA|NOPTR)
		for i := 0; i < 32; i++ {
			DATA(i, U8(uint8(i/8)))
		}
		bits := GLOBL("q5Bits", RODATA|NOPTR)
		for i := 0; i < 32; i++ {
			DATA(i, U8(^uint8(1<<(i%8))))
		}
		high := GLOBL("highNibbles", RODATA|NOPTR)
		for i := 0; i < 32; i++ {
			DATA(i, U8(0xF0))
		}
		q5Consts = &[3]Mem{spread, bits, high}
	}
	return *q5Consts
}

// loadQ4_1 gives a block's levels 0..15.
func loadQ4_1(w Register) VecVirtual { return loadQ4Nibbles(w, 4) }

// loadQ5_1 gives a block's levels nibble | fifth bit << 4.
func loadQ5_1(w Register) VecVirtual {
	q := loadQ4Nibbles(w, 8)
	b := fifthBits(w, 4)
	VPAND(splat("bit4", 0x10), b, b)
	VPOR(b, q, q)
	return q
}

// fifthBits gives, for the 32 bits at w+at, byte i all ones when bit i is
// set (ggml's bytes_from_bits_32).
func fifthBits(w Register, at int) VecVirtual {
	c := q5Constants()
	b := YMM()
	VPBROADCASTD(Mem{Base: w, Disp: at}, b)
	VPSHUFB(c[0], b, b)
	VPOR(c[1], b, b)
	ones := YMM()
	VPCMPEQB(ones, ones, ones)
	VPCMPEQB(ones, b, b)
	return b
}

// loadQ5_0 gives a block's values (nibble | fifth bit << 4) − 16 as signed
// bytes: a value whose fifth bit is clear is its nibble with 0xF0 set.
func loadQ5_0(w Register) VecVirtual {
	q := loadQ4Nibbles(w, 6)
	b := fifthBits(w, 2)
	VPANDN(q5Constants()[2], b, b)
	VPOR(b, q, q)
	return q
}

func loadQ8_0(w Register) VecVirtual {
	q := YMM()
	VMOVDQU(Mem{Base: w, Disp: 2}, q)
	return q
}

// blockDot emits the AVX2 dot product of one row of a 32-value block type
// (f16 scale first, size bytes per block) with the q8 activations of
// `tokens` tokens:
//
//	func dot<T>x<tokens>AVX2(w, x *byte, stride, nb int, out *float32)
//
// Token t's blocks start at x + t·stride bytes; out[t] receives its dot
// product. Each block's products are summed in eight int32 lanes (lane L
// covers values 4L..4L+3), converted to float, multiplied by the two
// scales and added into eight float lanes, which are reduced at the end:
// the portable kernels do exactly this.
func blockDot(name string, size, tokens int, load func(w Register) VecVirtual) {
	fn := fmt.Sprintf("dot%sx%dAVX2", name, tokens)
	w, n, xs := rowKernel(fn, tokens)
	// Q4_1 and Q5_1 add min·Σx per block, summed apart from the lanes.
	withMin := name == "Q4_1" || name == "Q5_1"
	acc := make([]VecVirtual, tokens)
	mins := make([]VecVirtual, tokens)
	for t := range acc {
		acc[t] = YMM()
		VXORPS(acc[t], acc[t], acc[t])
		if withMin {
			mins[t] = XMM()
			VXORPS(mins[t], mins[t], mins[t])
		}
	}
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))
	dw := XMM()
	s := GP32()
	if withMin {
		MOVL(Mem{Base: w}, s) // d and min
	} else {
		MOVWLZX(Mem{Base: w}, s)
	}
	VMOVD(s, dw)
	VCVTPH2PS(dw, dw)
	var mw VecVirtual
	if withMin {
		mw = XMM()
		VMOVSHDUP(dw, mw)
	}
	q := load(w)
	absw := YMM()
	VPSIGNB(q, q, absw)
	for t := 0; t < tokens; t++ {
		// d = dw·dx, broadcast to the eight lanes.
		d := YMM()
		VMULSS(Mem{Base: xs[t]}, dw, d.AsX())
		VBROADCASTSS(d.AsX(), d)
		a := YMM()
		VMOVDQU(Mem{Base: xs[t], Disp: 8}, a)
		// Signed × signed bytes through VPMADDUBSW (unsigned × signed):
		// |w| times x carrying w's sign.
		VPSIGNB(q, a, a)
		VPMADDUBSW(a, absw, a)
		VPMADDWD(onesWords, a, a)
		VCVTDQ2PS(a, a)
		VMULPS(d, a, a)
		VADDPS(a, acc[t], acc[t])
		if withMin {
			m := XMM()
			VMULSS(Mem{Base: xs[t], Disp: 4}, mw, m)
			VADDSS(m, mins[t], mins[t])
		}
	}
	nextBlock(fn, w, n, xs, size, q8BlockSize)
	o := Load(Param("out"), GP64())
	for t := range acc {
		r := reduce8(acc[t])
		if withMin {
			VADDSS(mins[t], r, r)
		}
		MOVSS(r, Mem{Base: o, Disp: 4 * t})
	}
	VZEROUPPER()
	RET()
}

var splats = map[string]Mem{}

// splat is a 32-byte constant of one repeated byte, emitted once.
func splat(name string, v uint8) Mem {
	if m, ok := splats[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 32; i++ {
		DATA(i, U8(v))
	}
	splats[name] = m
	return m
}

// rowKernel starts a kernel of signature func(w, x *byte, stride, nb int,
// out *float32): the row, the block count, and each token's activations
// (token t's at x + t·stride).
func rowKernel(fn string, tokens int) (w, n Register, xs []Register) {
	TEXT(fn, NOSPLIT, "func(w, x *byte, stride, nb int, out *float32)")
	w = Load(Param("w"), GP64())
	x := Load(Param("x"), GP64())
	stride := Load(Param("stride"), GP64())
	n = Load(Param("nb"), GP64())
	xs = []Register{x}
	for t := 1; t < tokens; t++ {
		p := GP64()
		LEAQ(Mem{Base: xs[t-1], Index: stride, Scale: 1}, p)
		xs = append(xs, p)
	}
	return w, n, xs
}

// zeroOut clears out[0:tokens], where kernels short of registers sum.
func zeroOut(tokens int) Register {
	o := Load(Param("out"), GP64())
	zero := XMM()
	VXORPS(zero, zero, zero)
	for t := 0; t < tokens; t++ {
		MOVSS(zero, Mem{Base: o, Disp: 4 * t})
	}
	return o
}

// nextBlock moves the row and every token's activations one block on and
// closes the block loop.
func nextBlock(fn string, w, n Register, xs []Register, size, actSize int) {
	ADDQ(U32(uint64(size)), w)
	for _, p := range xs {
		ADDQ(U32(uint64(actSize)), p)
	}
	DECQ(n)
	JMP(LabelRef(fn + "_loop"))
	Label(fn + "_done")
}

// reduce8 sums eight float lanes as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)),
// the order the portable kernels use.
func reduce8(v VecVirtual) Register {
	hi := XMM()
	VEXTRACTF128(Imm(1), v, hi)
	lo := v.AsX()
	VADDPS(hi, lo, lo)
	VHADDPS(lo, lo, lo)
	VHADDPS(lo, lo, lo)
	return lo
}

// dotQ6_K emits the AVX2 dot product of one Q6_K row with the q8K
// activations of `tokens` tokens, with dotQ45_K's signature, over
// super-blocks of ql[128], qh[64], scales[16] and f16 d. The 6-bit values
// are used unsigned (0..63) and 32·Σx is subtracted per group from the
// activations' group sums, so the integer result is the same as summing
// (q-32)·x; the groups' int8 scales multiply the pairwise sums in
// VPMADDWD.
func dotQ6_K(tokens int) {
	fn := fmt.Sprintf("dotQ6_Kx%dAVX2", tokens)
	w, n, xs := rowKernel(fn, tokens)
	o := zeroOut(tokens)
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))
	isum := make([]VecVirtual, tokens)
	for t := range isum {
		isum[t] = YMM()
		VPXOR(isum[t], isum[t], isum[t])
	}
	for half := 0; half < 2; half++ {
		for k := 0; k < 4; k++ {
			// q_k = low or high nibbles of ql (the k-th 32 bytes' pair),
			// with two bits of qh (shifted by 2k) on top.
			q, h := YMM(), YMM()
			src := Mem{Base: w, Disp: 64*half + 32*(k%2)}
			if k < 2 {
				VMOVDQU(src, q)
				VPAND(nibbleMask, q, q)
			} else {
				VMOVDQU(src, q)
				VPSRLW(Imm(4), q, q)
				VPAND(nibbleMask, q, q)
			}
			VMOVDQU(Mem{Base: w, Disp: 128 + 32*half}, h)
			switch shift := 4 - 2*k; {
			case shift > 0:
				VPSLLW(Imm(uint64(shift)), h, h)
			case shift < 0:
				VPSRLW(Imm(uint64(-shift)), h, h)
			}
			VPAND(mask30, h, h)
			VPOR(h, q, q)
			// Scales of the two 16-value groups of this run: lanes 0-7
			// take group 8·half+2k, lanes 8-15 group 8·half+2k+1.
			sc := YMM()
			scHi := XMM()
			g := GP32()
			MOVBLSX(Mem{Base: w, Disp: 192 + 8*half + 2*k}, g)
			VMOVD(g, sc.AsX())
			VPBROADCASTW(sc.AsX(), sc.AsX())
			MOVBLSX(Mem{Base: w, Disp: 192 + 8*half + 2*k + 1}, g)
			VMOVD(g, scHi)
			VPBROADCASTW(scHi, scHi)
			VINSERTI128(Imm(1), scHi, sc, sc)
			for t := range xs {
				// Σ q·x in sixteen int16 pairs, scaled into int32.
				p := YMM()
				VPMADDUBSW(Mem{Base: xs[t], Disp: 4 + 128*half + 32*k}, q, p)
				VPMADDWD(sc, p, p)
				VPADDD(p, isum[t], isum[t])
			}
		}
	}
	sc16 := YMM()
	VPMOVSXBW(Mem{Base: w, Disp: 192}, sc16)
	d := XMM()
	s := GP32()
	MOVWLZX(Mem{Base: w, Disp: 208}, s)
	VMOVD(s, d)
	VCVTPH2PS(d, d)
	for t := range xs {
		// isum -= 32·Σ_g scale_g·bsum_g
		bs := YMM()
		VMOVDQU(Mem{Base: xs[t], Disp: 260}, bs)
		VPMADDWD(bs, sc16, bs)
		VPSLLD(Imm(5), bs, bs)
		VPSUBD(bs, isum[t], isum[t])
		h := XMM()
		VEXTRACTI128(Imm(1), isum[t], h)
		VPADDD(isum[t].AsX(), h, h)
		VPHADDD(h, h, h)
		VPHADDD(h, h, h)
		VCVTDQ2PS(h, h)
		// out += (f16(d) · dx) · isum
		f := XMM()
		VMULSS(Mem{Base: xs[t]}, d, f)
		VMULSS(h, f, f)
		VADDSS(Mem{Base: o, Disp: 4 * t}, f, f)
		MOVSS(f, Mem{Base: o, Disp: 4 * t})
	}
	nextBlock(fn, w, n, xs, 210, q8KBlockSize)
	VZEROUPPER()
	RET()
}

// scaleShuffle is eight VPSHUFB controls; control k broadcasts word k of
// each 128-bit lane to the lane's eight words.
var scaleShuffle Mem

func scaleShuffles() Mem {
	if scaleShuffle.Symbol.Name == "" {
		scaleShuffle = GLOBL("scaleShuffle", RODATA|NOPTR)
		for k := 0; k < 8; k++ {
			for i := 0; i < 32; i += 2 {
				DATA(32*k+i, U8(2*k))
				DATA(32*k+i+1, U8(2*k+1))
			}
		}
	}
	return scaleShuffle
}

// dotQ45_K emits the AVX2 dot product of one Q4_K or Q5_K row with the
// q8K activations of `tokens` tokens:
//
//	func dot<T>x<tokens>AVX2(w, x *byte, stride, nb int, out *float32)
//
// A super-block holds f16 d and dmin, twelve bytes of eight 6-bit scales
// and mins (unpacked with ggml's mask arithmetic into bytes), for Q5_K 32
// bytes of fifth bits, and 128 bytes of nibbles: 64 values per 32 bytes,
// the low nibbles first. The values are non-negative, so VPMADDUBSW
// multiplies them with the activations directly; VPMADDWD applies the
// sub-block scales. The minimum's term is Σ min·(the activations'
// 32-value sums), from the q8K block's 16-value sums. Both are summed
// exactly as integers; the float steps are the portable kernel's:
// sum += (d·dx)·isum − (dmin·dx)·msum.
func dotQ45_K(name string, tokens int) { dotQ45_KWith(name, tokens, false) }

// dotQ45_K512 emits dotQ45_K's kernel for one token with AVX-512: a
// 32-byte run's low and high nibbles side by side in one register against
// 64 contiguous activations, the two sub-blocks' scales spread to their
// halves by VPERMW. The integer sums and the float steps are dotQ45_K's,
// so the result is the Go twin's bit for bit.
//
//	func dot<T>x1AVX512(w, x *byte, stride, nb int, out *float32)
func dotQ45_K512(name string) { dotQ45_KWith(name, 1, true) }

func dotQ45_KWith(name string, tokens int, avx512 bool) {
	fn := fmt.Sprintf("dot%sx%dAVX2", name, tokens)
	if avx512 {
		fn = fmt.Sprintf("dot%sx%dAVX512", name, tokens)
	}
	q5 := name == "Q5_K"
	size, qsAt := 144, 16
	if q5 {
		size, qsAt = 176, 48
	}
	w, n, xs := rowKernel(fn, tokens)
	acc := make([]VecVirtual, tokens)
	for t := range acc {
		acc[t] = XMM()
		VXORPS(acc[t], acc[t], acc[t])
	}
	shuf := scaleShuffles()
	var spread [4]VecVirtual // VPERMW's indexes: sub-blocks 2j and 2j+1
	var low, bit4, fifthShift VecVirtual
	if avx512 {
		for j := range spread {
			m := GLOBL(fmt.Sprintf("%sSpread%d", name, j), RODATA|NOPTR)
			for i := 0; i < 32; i++ {
				DATA(2*i, U16(uint16(2*j+i/16)))
			}
			spread[j] = ZMM()
			VMOVDQU64(m, spread[j])
		}
		low = ZMM()
		k := GP32()
		MOVL(U32(0x0F0F0F0F), k)
		VPBROADCASTD(k, low)
		if q5 {
			bit4 = ZMM()
			MOVL(U32(0x10101010), k)
			VPBROADCASTD(k, bit4)
			m := GLOBL(name+"FifthShift", RODATA|NOPTR)
			for i := 0; i < 32; i++ {
				DATA(2*i, U16([2]uint16{4, 3}[i/16]))
			}
			fifthShift = ZMM()
			VMOVDQU64(m, fifthShift)
		}
	}
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))

	// Scales (u0, u1) and mins (aux, u3) as bytes, as ggml unpacks them.
	u0, u1, u2, u3, aux, t32 := GP32(), GP32(), GP32(), GP32(), GP32(), GP32()
	MOVL(Mem{Base: w, Disp: 4}, u0)
	MOVL(Mem{Base: w, Disp: 8}, u1)
	MOVL(Mem{Base: w, Disp: 12}, u2)
	MOVL(u2, u3)
	SHRL(Imm(4), u3)
	ANDL(U32(0x0f0f0f0f), u3)
	MOVL(u1, t32)
	SHRL(Imm(6), t32)
	ANDL(U32(0x03030303), t32)
	SHLL(Imm(4), t32)
	ORL(t32, u3)
	MOVL(u1, aux)
	ANDL(U32(0x3f3f3f3f), aux)
	MOVL(u2, u1)
	ANDL(U32(0x0f0f0f0f), u1)
	MOVL(u0, t32)
	SHRL(Imm(6), t32)
	ANDL(U32(0x03030303), t32)
	SHLL(Imm(4), t32)
	ORL(t32, u1)
	ANDL(U32(0x3f3f3f3f), u0)
	scales := YMM()
	VMOVD(u0, scales.AsX())
	VPINSRD(Imm(1), u1, scales.AsX(), scales.AsX())
	VPMOVZXBW(scales.AsX(), scales.AsX())
	VINSERTI128(Imm(1), scales.AsX(), scales, scales)
	mins := XMM()
	VMOVD(aux, mins)
	VPINSRD(Imm(1), u3, mins, mins)
	VPMOVZXBW(mins, mins)

	isum := make([]VecVirtual, tokens)
	for t := range isum {
		isum[t] = YMM()
		VPXOR(isum[t], isum[t], isum[t])
	}
	if avx512 {
		var qh VecVirtual
		if q5 {
			qh = ZMM()
			VBROADCASTI64X4(Mem{Base: w, Disp: 16}, qh)
		}
		wsum := ZMM()
		VPXORD(wsum, wsum, wsum)
		for j := 0; j < 4; j++ {
			// [low nibbles, high nibbles] of run j: sub-blocks 2j, 2j+1.
			qb, hi := YMM(), YMM()
			VMOVDQU(Mem{Base: w, Disp: qsAt + 32*j}, qb)
			VPSRLW(Imm(4), qb, hi)
			q := ZMM()
			VINSERTI64X4(Imm(1), hi, qb.AsZ(), q)
			VPANDD(low, q, q)
			if q5 {
				// Bits 2j and 2j+1 of qh to bit 4 of the two halves.
				b := ZMM()
				if j > 0 {
					VPSRLW(Imm(uint64(2*j)), qh, b)
					VPSLLVW(fifthShift, b, b)
				} else {
					VPSLLVW(fifthShift, qh, b)
				}
				VPTERNLOGD(U8(0xF8), bit4, b, q) // q | (b & 0x10)
			}
			sc := ZMM()
			VPERMW(scales.AsZ(), spread[j], sc)
			p := ZMM()
			VPMADDUBSW(Mem{Base: xs[0], Disp: 4 + 64*j}, q, p)
			VPMADDWD(sc, p, p)
			VPADDD(p, wsum, wsum)
		}
		VEXTRACTI64X4(Imm(1), wsum, isum[0])
		VPADDD(wsum.AsY(), isum[0], isum[0])
	}
	var qh VecVirtual
	if q5 && !avx512 {
		qh = YMM()
		VMOVDQU(Mem{Base: w, Disp: 16}, qh)
	}
	for j := 0; j < 4 && !avx512; j++ {
		qb, lo, hi := YMM(), YMM(), YMM()
		VMOVDQU(Mem{Base: w, Disp: qsAt + 32*j}, qb)
		VPAND(nibbleMask, qb, lo)
		VPSRLW(Imm(4), qb, hi)
		VPAND(nibbleMask, hi, hi)
		if q5 {
			// The fifth bits of this chunk: bit 2j of qh for the low
			// values, bit 2j+1 for the high, moved to bit 4.
			for k, v := range []VecVirtual{lo, hi} {
				b := YMM()
				switch shift := 4 - (2*j + k); {
				case shift > 0:
					VPSLLW(Imm(uint64(shift)), qh, b)
				case shift < 0:
					VPSRLW(Imm(uint64(-shift)), qh, b)
				default:
					VMOVDQA(qh, b)
				}
				VPAND(splat("bit4", 0x10), b, b)
				VPOR(b, v, v)
			}
		}
		sl, sh := YMM(), YMM()
		VPSHUFB(shuf.Offset(64*j), scales, sl)
		VPSHUFB(shuf.Offset(64*j+32), scales, sh)
		for t := range xs {
			pl, ph := YMM(), YMM()
			VPMADDUBSW(Mem{Base: xs[t], Disp: 4 + 64*j}, lo, pl)
			VPMADDUBSW(Mem{Base: xs[t], Disp: 4 + 64*j + 32}, hi, ph)
			VPMADDWD(sl, pl, pl)
			VPMADDWD(sh, ph, ph)
			VPADDD(pl, isum[t], isum[t])
			VPADDD(ph, isum[t], isum[t])
		}
	}
	// d and dmin as floats, lanes 0 and 1.
	dd := XMM()
	d32 := GP32()
	MOVL(Mem{Base: w}, d32)
	VMOVD(d32, dd)
	VCVTPH2PS(dd, dd)
	for t := range xs {
		// msum: Σ min · (the two 16-value sums of each sub-block).
		b0, b1 := XMM(), XMM()
		VMOVDQU(Mem{Base: xs[t], Disp: 260}, b0)
		VMOVDQU(Mem{Base: xs[t], Disp: 276}, b1)
		VPHADDW(b1, b0, b0)
		VPMADDWD(mins, b0, b0)
		// [isum, msum] in lanes 0 and 1.
		h := XMM()
		VEXTRACTI128(Imm(1), isum[t], h)
		VPADDD(isum[t].AsX(), h, h)
		VPHADDD(b0, h, h)
		VPHADDD(h, h, h)
		VCVTDQ2PS(h, h)
		f := XMM()
		VBROADCASTSS(Mem{Base: xs[t]}, f)
		VMULPS(dd, f, f)
		VMULPS(h, f, f)
		m := XMM()
		VMOVSHDUP(f, m)
		VSUBSS(m, f, f)
		VADDSS(f, acc[t], acc[t])
	}
	nextBlock(fn, w, n, xs, size, q8KBlockSize)
	o := Load(Param("out"), GP64())
	for t := range acc {
		MOVSS(acc[t], Mem{Base: o, Disp: 4 * t})
	}
	VZEROUPPER()
	RET()
}

// dotIQ4_XS emits the AVX2 dot product of one IQ4_XS row with the q8K
// activations of `tokens` tokens, with dotQ45_K's signature. A super-block
// is f16 d, 16 bits of the scales' high bits, 4 bytes of their low
// nibbles, and 8 sub-blocks of 32 values as IQ4_NL nibbles. Each
// sub-block's levels come from the grid by VPSHUFB; signed × signed
// products go through VPMADDUBSW with the sign moved onto the
// activations, and VPMADDWD applies the sub-block's scale (6 bits − 32).
func dotIQ4_XS(tokens int) {
	fn := fmt.Sprintf("dotIQ4_XSx%dAVX2", tokens)
	w, n, xs := rowKernel(fn, tokens)
	// The sums accumulate in out itself: with four tokens, sixteen
	// registers do not hold four accumulators besides the block's work.
	o := zeroOut(tokens)
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))
	isum := make([]VecVirtual, tokens)
	for t := range isum {
		isum[t] = YMM()
		VPXOR(isum[t], isum[t], isum[t])
	}
	sh, sl := GP32(), GP32()
	MOVWLZX(Mem{Base: w, Disp: 2}, sh)
	MOVL(Mem{Base: w, Disp: 4}, sl)
	for ib := 0; ib < 8; ib++ {
		// ls = (sl >> 4ib & 15) | (sh >> 2ib & 3) << 4, minus 32.
		ls, hb := GP32(), GP32()
		MOVL(sl, ls)
		if ib > 0 {
			SHRL(Imm(uint64(4*ib)), ls)
		}
		ANDL(Imm(15), ls)
		MOVL(sh, hb)
		if ib > 0 {
			SHRL(Imm(uint64(2*ib)), hb)
		}
		ANDL(Imm(3), hb)
		SHLL(Imm(4), hb)
		ORL(hb, ls)
		SUBL(Imm(32), ls)
		sc := YMM()
		VMOVD(ls, sc.AsX())
		VPBROADCASTW(sc.AsX(), sc)
		q := loadQ4Nibbles(w, 8+16*ib)
		grid := YMM()
		VMOVDQU(iq4nl(), grid)
		VPSHUFB(q, grid, q)
		absw := YMM()
		VPSIGNB(q, q, absw)
		for t := range xs {
			a := YMM()
			VMOVDQU(Mem{Base: xs[t], Disp: 4 + 32*ib}, a)
			VPSIGNB(q, a, a)
			VPMADDUBSW(a, absw, a)
			VPMADDWD(sc, a, a)
			VPADDD(a, isum[t], isum[t])
		}
	}
	d := XMM()
	d16 := GP32()
	MOVWLZX(Mem{Base: w}, d16)
	VMOVD(d16, d)
	VCVTPH2PS(d, d)
	for t := range xs {
		h := XMM()
		VEXTRACTI128(Imm(1), isum[t], h)
		VPADDD(isum[t].AsX(), h, h)
		VPHADDD(h, h, h)
		VPHADDD(h, h, h)
		VCVTDQ2PS(h, h)
		f := XMM()
		VMULSS(Mem{Base: xs[t]}, d, f)
		VMULSS(h, f, f)
		VADDSS(Mem{Base: o, Disp: 4 * t}, f, f)
		MOVSS(f, Mem{Base: o, Disp: 4 * t})
	}
	nextBlock(fn, w, n, xs, 136, q8KBlockSize)
	VZEROUPPER()
	RET()
}

var pairShuffle *Mem

// pairShuffles is four VPSHUFB controls; control k broadcasts word 2k of
// the low 128-bit lane over that lane and word 2k+1 of the high lane over
// the high lane.
func pairShuffles() Mem {
	if pairShuffle == nil {
		m := GLOBL("pairShuffle", RODATA|NOPTR)
		for k := 0; k < 4; k++ {
			for i := 0; i < 32; i += 2 {
				w := 2 * k
				if i >= 16 {
					w++
				}
				DATA(32*k+i, U8(uint8(2*w)))
				DATA(32*k+i+1, U8(uint8(2*w+1)))
			}
		}
		pairShuffle = &m
	}
	return *pairShuffle
}

// dotQ23_K emits the AVX2 dot product of one Q2_K or Q3_K row with the
// q8K activations of `tokens` tokens, with dotQ45_K's signature.
//
// Both store 2-bit levels, four to a byte: 32 bytes hold 128 values, the
// k-th two bits of byte l being value 32k+l. A 16-value sub-block has its
// own scale. Q2_K (scales[16]: 4-bit scale, 4-bit minimum; qs[64]; f16 d,
// dmin): value = d·scale·q − dmin·min, the minimum's term coming from the
// activations' 16-value sums. Q3_K (hmask[32], qs[64], twelve bytes of
// 6-bit scales, f16 d): value = d·(scale−32)·(q − 4·(high bit clear)), the
// high bit of value 32k+l (within each 128) being bit k (+4 for the second
// 128) of hmask[l]. Levels and the 4s of clear high bits are unsigned, so
// VPMADDUBSW takes them as they are; VPMADDWD applies the scales, which
// stand as words, those of sub-blocks 0-7 in both lanes of one register
// and 8-15 of another. The integer sums are exact; the float steps are
// the portable kernel's.
func dotQ23_K(name string, tokens int) {
	fn := fmt.Sprintf("dot%sx%dAVX2", name, tokens)
	q3 := name == "Q3_K"
	size, qsAt := 84, 16
	if q3 {
		size, qsAt = 110, 32
	}
	w, n, xs := rowKernel(fn, tokens)
	// Sums accumulate in out, as in dotIQ4_XS.
	o := zeroOut(tokens)
	shuf := pairShuffles()
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))

	// The sixteen scales as bytes in sc (Q3_K: minus 32).
	sc := XMM()
	var mins VecVirtual
	if q3 {
		// ggml's unpacking of the twelve bytes into sixteen.
		a0, a1, a2, u, t32 := GP32(), GP32(), GP32(), GP32(), GP32()
		MOVL(Mem{Base: w, Disp: 96}, a0)
		MOVL(Mem{Base: w, Disp: 100}, a1)
		MOVL(Mem{Base: w, Disp: 104}, a2)
		for i, lo := range []struct {
			a     Register
			shift uint64 // of the low nibbles' source
			hi    uint64 // shift of a2 for the two high bits
		}{{a0, 0, 0}, {a1, 0, 2}, {a0, 4, 4}, {a1, 4, 6}} {
			MOVL(lo.a, u)
			if lo.shift > 0 {
				SHRL(Imm(lo.shift), u)
			}
			ANDL(U32(0x0f0f0f0f), u)
			MOVL(a2, t32)
			if lo.hi > 0 {
				SHRL(Imm(lo.hi), t32)
			}
			ANDL(U32(0x03030303), t32)
			SHLL(Imm(4), t32)
			ORL(t32, u)
			if i == 0 {
				VMOVD(u, sc)
			} else {
				VPINSRD(Imm(uint64(i)), u, sc, sc)
			}
		}
		c := XMM()
		VPCMPEQB(c, c, c) // −1 …
		VPABSB(c, c)      // … 1 …
		VPSLLW(Imm(5), c, c)
		VPSUBB(c, sc, sc) // … 32
	} else {
		VMOVDQU(Mem{Base: w}, sc)
		mins = XMM()
		VPSRLW(Imm(4), sc, mins)
		VPAND(nibbleMask.Offset(0), mins, mins)
		VPAND(nibbleMask.Offset(0), sc, sc)
	}
	// Words: sub-blocks 0-7 in both lanes of s0, 8-15 of s1.
	s0, s1 := YMM(), YMM()
	VPMOVSXBW(sc, s1)
	VINSERTI128(Imm(1), s1.AsX(), s1, s0)
	VPERM2I128(Imm(0x11), s1, s1, s1)

	isum := make([]VecVirtual, tokens)
	for t := range isum {
		isum[t] = YMM()
		VPXOR(isum[t], isum[t], isum[t])
	}
	for h := 0; h < 2; h++ {
		qb := YMM()
		VMOVDQU(Mem{Base: w, Disp: qsAt + 32*h}, qb)
		var hm VecVirtual
		if q3 {
			hm = YMM()
			VMOVDQU(Mem{Base: w}, hm)
		}
		for k := 0; k < 4; k++ {
			q := YMM()
			if k == 0 {
				VPAND(splat("twoBitMask", 3), qb, q)
			} else {
				VPSRLW(Imm(uint64(2*k)), qb, q)
				VPAND(splat("twoBitMask", 3), q, q)
			}
			var clear VecVirtual
			if q3 {
				// 4 where bit 4h+k of hmask is clear: the bit moved to
				// bit 2, kept, and flipped.
				clear = YMM()
				switch b := 4*h + k; {
				case b > 2:
					VPSRLW(Imm(uint64(b-2)), hm, clear)
				case b < 2:
					VPSLLW(Imm(uint64(2-b)), hm, clear)
				default:
					VMOVDQA(hm, clear)
				}
				VPAND(splat("fourBytes", 4), clear, clear)
				VPXOR(splat("fourBytes", 4), clear, clear)
			}
			scale := YMM()
			src := s0
			if h == 1 {
				src = s1
			}
			VPSHUFB(shuf.Offset(32*k), src, scale)
			for t := range xs {
				p := YMM()
				VPMADDUBSW(Mem{Base: xs[t], Disp: 4 + 128*h + 32*k}, q, p)
				if q3 {
					c := YMM()
					VPMADDUBSW(Mem{Base: xs[t], Disp: 4 + 128*h + 32*k}, clear, c)
					VPSUBW(c, p, p)
				}
				VPMADDWD(scale, p, p)
				VPADDD(p, isum[t], isum[t])
			}
		}
	}
	dd := XMM()
	d32 := GP32()
	if q3 {
		MOVWLZX(Mem{Base: w, Disp: 108}, d32)
	} else {
		MOVL(Mem{Base: w, Disp: 80}, d32)
	}
	VMOVD(d32, dd)
	VCVTPH2PS(dd, dd) // d (and Q2_K's dmin) in lanes 0 (and 1)
	var mins16 VecVirtual
	if !q3 {
		mins16 = YMM()
		VPMOVZXBW(mins, mins16)
	}
	for t := range xs {
		h := XMM()
		VEXTRACTI128(Imm(1), isum[t], h)
		VPADDD(isum[t].AsX(), h, h)
		if q3 {
			VPHADDD(h, h, h)
			VPHADDD(h, h, h)
		} else {
			// msum = Σ min · (the sub-block's activation sum), next to isum.
			m := YMM()
			VMOVDQU(Mem{Base: xs[t], Disp: 260}, m)
			VPMADDWD(mins16, m, m)
			mx := XMM()
			VEXTRACTI128(Imm(1), m, mx)
			VPADDD(m.AsX(), mx, mx)
			VPHADDD(mx, h, h)
			VPHADDD(h, h, h)
		}
		VCVTDQ2PS(h, h)
		f := XMM()
		VBROADCASTSS(Mem{Base: xs[t]}, f)
		VMULPS(dd, f, f)
		VMULPS(h, f, f)
		if !q3 {
			m := XMM()
			VMOVSHDUP(f, m)
			VSUBSS(m, f, f)
		}
		VADDSS(Mem{Base: o, Disp: 4 * t}, f, f)
		MOVSS(f, Mem{Base: o, Disp: 4 * t})
	}
	nextBlock(fn, w, n, xs, size, q8KBlockSize)
	VZEROUPPER()
	RET()
}

// dotF32 emits func dotF32AVX2(a, b *float32, n int) float32 for n a
// multiple of 8: four ymm accumulators of fused multiply-adds.
func dotF32() {
	TEXT("dotF32AVX2", NOSPLIT, "func(a, b *float32, n int) float32")
	a := Load(Param("a"), GP64())
	b := Load(Param("b"), GP64())
	n := Load(Param("n"), GP64())
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range acc {
		VXORPS(r, r, r)
	}
	Label("f32_loop32")
	CMPQ(n, Imm(32))
	JL(LabelRef("f32_loop8"))
	for i, r := range acc {
		t := YMM()
		VMOVUPS(Mem{Base: a, Disp: 32 * i}, t)
		VFMADD231PS(Mem{Base: b, Disp: 32 * i}, t, r)
	}
	ADDQ(Imm(128), a)
	ADDQ(Imm(128), b)
	SUBQ(Imm(32), n)
	JMP(LabelRef("f32_loop32"))
	Label("f32_loop8")
	CMPQ(n, Imm(8))
	JL(LabelRef("f32_done"))
	t := YMM()
	VMOVUPS(Mem{Base: a}, t)
	VFMADD231PS(Mem{Base: b}, t, acc[0])
	ADDQ(Imm(32), a)
	ADDQ(Imm(32), b)
	SUBQ(Imm(8), n)
	JMP(LabelRef("f32_loop8"))
	Label("f32_done")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	Store(reduce8(acc[0]), ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// fourRows is the addresses of four rows stride bytes apart from base.
func fourRows(base, stride Register) []Register {
	x1, x2, x3 := GP64(), GP64(), GP64()
	LEAQ(Mem{Base: base, Index: stride, Scale: 1}, x1)
	LEAQ(Mem{Base: base, Index: stride, Scale: 2}, x2)
	LEAQ(Mem{Base: x1, Index: stride, Scale: 2}, x3)
	return []Register{base, x1, x2, x3}
}

// dotF32x4 emits func dotF32x4AVX2(w, x *float32, stride, n int, out
// *float32) for n a multiple of 8: one float32 row against the
// activations of four tokens (token t's at x + t·stride bytes), each
// loaded weight vector multiplied into all four, two ymm accumulators a
// token; out[t] is token t's sum.
func dotF32x4() {
	TEXT("dotF32x4AVX2", NOSPLIT, "func(w, x *float32, stride, n int, out *float32)")
	w := Load(Param("w"), GP64())
	x0 := Load(Param("x"), GP64())
	stride := Load(Param("stride"), GP64())
	n := Load(Param("n"), GP64())
	out := Load(Param("out"), GP64())
	xs := fourRows(x0, stride)
	var acc [4][2]VecVirtual
	for t := range acc {
		for u := range acc[t] {
			acc[t][u] = YMM()
			VXORPS(acc[t][u], acc[t][u], acc[t][u])
		}
	}
	Label("f32x4_loop16")
	CMPQ(n, Imm(16))
	JL(LabelRef("f32x4_loop8"))
	for u := range 2 {
		wv := YMM()
		VMOVUPS(Mem{Base: w, Disp: 32 * u}, wv)
		for t, xt := range xs {
			VFMADD231PS(Mem{Base: xt, Disp: 32 * u}, wv, acc[t][u])
		}
	}
	ADDQ(Imm(64), w)
	for _, xt := range xs {
		ADDQ(Imm(64), xt)
	}
	SUBQ(Imm(16), n)
	JMP(LabelRef("f32x4_loop16"))
	Label("f32x4_loop8")
	CMPQ(n, Imm(8))
	JL(LabelRef("f32x4_done"))
	wv := YMM()
	VMOVUPS(Mem{Base: w}, wv)
	for t, xt := range xs {
		VFMADD231PS(Mem{Base: xt}, wv, acc[t][0])
	}
	Label("f32x4_done")
	for t := range acc {
		VADDPS(acc[t][1], acc[t][0], acc[t][0])
		VMOVSS(reduce8(acc[t][0]), Mem{Base: out, Disp: 4 * t})
	}
	VZEROUPPER()
	RET()
}

// dotHalf emits func dot<F16|BF16>AVX2(w *byte, x *float32, n int) float32
// for n a multiple of 8: dotF32 with each eight weights widened to
// float32 as they are loaded (VCVTPH2PS; BF16 by a 16-bit shift), so a
// float row is never decoded into memory.
func dotHalf(name string) {
	fn := "dot" + name + "AVX2"
	TEXT(fn, NOSPLIT, "func(w *byte, x *float32, n int) float32")
	w := Load(Param("w"), GP64())
	x := Load(Param("x"), GP64())
	n := Load(Param("n"), GP64())
	widen := func(disp int) VecVirtual {
		v := YMM()
		if name == "F16" {
			VCVTPH2PS(Mem{Base: w, Disp: disp}, v)
		} else {
			VPMOVZXWD(Mem{Base: w, Disp: disp}, v)
			VPSLLD(Imm(16), v, v)
		}
		return v
	}
	acc := []VecVirtual{YMM(), YMM(), YMM(), YMM()}
	for _, r := range acc {
		VXORPS(r, r, r)
	}
	Label(fn + "_loop32")
	CMPQ(n, Imm(32))
	JL(LabelRef(fn + "_loop8"))
	for i, r := range acc {
		VFMADD231PS(Mem{Base: x, Disp: 32 * i}, widen(16*i), r)
	}
	ADDQ(Imm(64), w)
	ADDQ(Imm(128), x)
	SUBQ(Imm(32), n)
	JMP(LabelRef(fn + "_loop32"))
	Label(fn + "_loop8")
	CMPQ(n, Imm(8))
	JL(LabelRef(fn + "_done"))
	VFMADD231PS(Mem{Base: x}, widen(0), acc[0])
	ADDQ(Imm(16), w)
	ADDQ(Imm(32), x)
	SUBQ(Imm(8), n)
	JMP(LabelRef(fn + "_loop8"))
	Label(fn + "_done")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	Store(reduce8(acc[0]), ReturnIndex(0))
	VZEROUPPER()
	RET()
}

// axpyF32 emits func axpyF32AVX2(a float32, x, y *float32, n int), y += a·x
// for n a multiple of 8, with fused multiply-adds.
func axpyF32() {
	TEXT("axpyF32AVX2", NOSPLIT, "func(a float32, x, y *float32, n int)")
	av := YMM()
	a := Load(Param("a"), XMM())
	VBROADCASTSS(a, av)
	x := Load(Param("x"), GP64())
	y := Load(Param("y"), GP64())
	n := Load(Param("n"), GP64())
	Label("axpy_loop32")
	CMPQ(n, Imm(32))
	JL(LabelRef("axpy_loop8"))
	for i := 0; i < 4; i++ {
		t := YMM()
		VMOVUPS(Mem{Base: y, Disp: 32 * i}, t)
		VFMADD231PS(Mem{Base: x, Disp: 32 * i}, av, t)
		VMOVUPS(t, Mem{Base: y, Disp: 32 * i})
	}
	ADDQ(Imm(128), x)
	ADDQ(Imm(128), y)
	SUBQ(Imm(32), n)
	JMP(LabelRef("axpy_loop32"))
	Label("axpy_loop8")
	CMPQ(n, Imm(8))
	JL(LabelRef("axpy_done"))
	t := YMM()
	VMOVUPS(Mem{Base: y}, t)
	VFMADD231PS(Mem{Base: x}, av, t)
	VMOVUPS(t, Mem{Base: y})
	ADDQ(Imm(32), x)
	ADDQ(Imm(32), y)
	SUBQ(Imm(8), n)
	JMP(LabelRef("axpy_loop8"))
	Label("axpy_done")
	VZEROUPPER()
	RET()
}

// qkxSums emits func qkxSumsAVX2(x, w *float32, n int, mn float32, isc
// *float32, nmax float32, lv, sums *float32): eight candidates of the
// K-quant scale search, one per lane (quant/qkx.go's qkxSumsGo). For each
// value: its level in every lane, clamp(round(isc·(x−mn)), 0, nmax),
// stored to lv, and Σw·l, Σw·l², Σw·l·x accumulated in value order. No
// fused multiply-adds: every product is rounded as ggml's C rounds it.
func qkxSums() {
	TEXT("qkxSumsAVX2", NOSPLIT, "func(x, w *float32, n int, mn float32, isc *float32, nmax float32, lv, sums *float32)")
	Pragma("noescape")
	x := Load(Param("x"), GP64())
	w := Load(Param("w"), GP64())
	n := Load(Param("n"), GP64())
	mn := Load(Param("mn"), XMM())
	iscP := Load(Param("isc"), GP64())
	nmaxS := Load(Param("nmax"), XMM())
	lv := Load(Param("lv"), GP64())
	sums := Load(Param("sums"), GP64())
	isc, nmax, zero := YMM(), YMM(), YMM()
	VMOVUPS(Mem{Base: iscP}, isc)
	VBROADCASTSS(nmaxS, nmax)
	VXORPS(zero, zero, zero)
	sL, sL2, sXL := YMM(), YMM(), YMM()
	VXORPS(sL, sL, sL)
	VXORPS(sL2, sL2, sL2)
	VXORPS(sXL, sXL, sXL)
	Label("qkx_sums_loop")
	TESTQ(n, n)
	JZ(LabelRef("qkx_sums_done"))
	xs := XMM()
	VMOVSS(Mem{Base: x}, xs)
	xm := XMM()
	VSUBSS(mn, xs, xm) // x − mn
	xmV, l := YMM(), YMM()
	VBROADCASTSS(xm, xmV)
	VMULPS(xmV, isc, l)
	VROUNDPS(Imm(8), l, l) // nearest, ties to even; no precision exception
	VMAXPS(zero, l, l)
	VMINPS(nmax, l, l)
	VMOVUPS(l, Mem{Base: lv})
	wV, wl, t, xV := YMM(), YMM(), YMM(), YMM()
	VBROADCASTSS(Mem{Base: w}, wV)
	VMULPS(l, wV, wl) // w·l
	VADDPS(wl, sL, sL)
	VMULPS(l, wl, t) // (w·l)·l
	VADDPS(t, sL2, sL2)
	VBROADCASTSS(Mem{Base: x}, xV)
	VMULPS(xV, wl, t) // (w·l)·x
	VADDPS(t, sXL, sXL)
	ADDQ(Imm(4), x)
	ADDQ(Imm(4), w)
	ADDQ(Imm(32), lv)
	DECQ(n)
	JMP(LabelRef("qkx_sums_loop"))
	Label("qkx_sums_done")
	VMOVUPS(sL, Mem{Base: sums})
	VMOVUPS(sL2, Mem{Base: sums, Disp: 32})
	VMOVUPS(sXL, Mem{Base: sums, Disp: 64})
	VZEROUPPER()
	RET()
}

// qkxErr emits func name(x, w *float32, n int, lv, sc, mins, cur *float32):
// each lane's weighted error Σw·e(sc·l+min−x), e the absolute value when
// abs is set, else the square (quant/qkx.go's qkxErrGo).
func qkxErr(name string, abs bool) {
	TEXT(name, NOSPLIT, "func(x, w *float32, n int, lv, sc, mins, cur *float32)")
	Pragma("noescape")
	x := Load(Param("x"), GP64())
	w := Load(Param("w"), GP64())
	n := Load(Param("n"), GP64())
	lv := Load(Param("lv"), GP64())
	scP := Load(Param("sc"), GP64())
	minsP := Load(Param("mins"), GP64())
	cur := Load(Param("cur"), GP64())
	sc, mins, acc := YMM(), YMM(), YMM()
	VMOVUPS(Mem{Base: scP}, sc)
	VMOVUPS(Mem{Base: minsP}, mins)
	VXORPS(acc, acc, acc)
	var absMask VecVirtual
	if abs {
		absMask = YMM()
		g := GP32()
		MOVL(U32(0x7fffffff), g)
		m := XMM()
		MOVD(g, m)
		VBROADCASTSS(m, absMask)
	}
	loop, done := name+"_loop", name+"_done"
	Label(loop)
	TESTQ(n, n)
	JZ(LabelRef(done))
	d, xV, wV := YMM(), YMM(), YMM()
	VMULPS(Mem{Base: lv}, sc, d) // sc·l
	VADDPS(mins, d, d)           // + min
	VBROADCASTSS(Mem{Base: x}, xV)
	VSUBPS(xV, d, d) // − x
	if abs {
		VANDPS(absMask, d, d)
	} else {
		VMULPS(d, d, d)
	}
	VBROADCASTSS(Mem{Base: w}, wV)
	VMULPS(d, wV, d) // w·e
	VADDPS(d, acc, acc)
	ADDQ(Imm(4), x)
	ADDQ(Imm(4), w)
	ADDQ(Imm(32), lv)
	DECQ(n)
	JMP(LabelRef(loop))
	Label(done)
	VMOVUPS(acc, Mem{Base: cur})
	VZEROUPPER()
	RET()
}

// qxSums emits func qxSumsAVX2(x, w, wx *float32, n int, isc *float32, lo,
// hi float32, sums *float32): eight candidates of make_qx_quants' scale
// search, one per lane (quant/qkx.go's qxSumsGo): levels
// clamp(round(isc·x), lo, hi), Σwx·l and Σ(w·l)·l in value order.
func qxSums() {
	TEXT("qxSumsAVX2", NOSPLIT, "func(x, w, wx *float32, n int, isc *float32, lo, hi float32, sums *float32)")
	Pragma("noescape")
	x := Load(Param("x"), GP64())
	w := Load(Param("w"), GP64())
	wx := Load(Param("wx"), GP64())
	n := Load(Param("n"), GP64())
	iscP := Load(Param("isc"), GP64())
	loS := Load(Param("lo"), XMM())
	hiS := Load(Param("hi"), XMM())
	sums := Load(Param("sums"), GP64())
	isc, lo, hi := YMM(), YMM(), YMM()
	VMOVUPS(Mem{Base: iscP}, isc)
	VBROADCASTSS(loS, lo)
	VBROADCASTSS(hiS, hi)
	sLX, sL2 := YMM(), YMM()
	VXORPS(sLX, sLX, sLX)
	VXORPS(sL2, sL2, sL2)
	Label("qx_sums_loop")
	TESTQ(n, n)
	JZ(LabelRef("qx_sums_done"))
	l, t, v := YMM(), YMM(), YMM()
	VBROADCASTSS(Mem{Base: x}, v)
	VMULPS(v, isc, l)
	VROUNDPS(Imm(8), l, l)
	VMAXPS(lo, l, l)
	VMINPS(hi, l, l)
	VBROADCASTSS(Mem{Base: wx}, v)
	VMULPS(l, v, t) // wx·l
	VADDPS(t, sLX, sLX)
	VBROADCASTSS(Mem{Base: w}, v)
	VMULPS(l, v, t) // w·l
	VMULPS(l, t, t) // (w·l)·l
	VADDPS(t, sL2, sL2)
	ADDQ(Imm(4), x)
	ADDQ(Imm(4), w)
	ADDQ(Imm(4), wx)
	DECQ(n)
	JMP(LabelRef("qx_sums_loop"))
	Label("qx_sums_done")
	VMOVUPS(sLX, Mem{Base: sums})
	VMOVUPS(sL2, Mem{Base: sums, Disp: 32})
	VZEROUPPER()
	RET()
}

// gemmF32 emits func <name>(a *float32, lda int, b *float32, ldb int, c
// *float32, ldc int, k int), the register-tiled micro-kernel of the
// float32 matrix products: C[mr × nr] += A[mr × k]·B[k × nr], every
// stride in elements, for k ≥ 1. The tile of C stays in registers for
// the whole sum over k (mr × vecs accumulators); each step loads one row
// of B (vecs vectors) and multiplies it with each of A's mr values,
// broadcast. Every element
// of C is its old value plus the k products added in order with fused
// multiply-adds. AVX2: 8 lanes, nr = 8·vecs; AVX-512: 16 lanes.
func gemmF32(name string, mr, vecs int, avx512 bool) {
	TEXT(name, NOSPLIT, "func(a *float32, lda int, b *float32, ldb int, c *float32, ldc int, k int)")
	a := Load(Param("a"), GP64())
	lda := Load(Param("lda"), GP64())
	bp := Load(Param("b"), GP64())
	ldb := Load(Param("ldb"), GP64())
	cp := Load(Param("c"), GP64())
	ldc := Load(Param("ldc"), GP64())
	k := Load(Param("k"), GP64())
	SHLQ(Imm(2), lda)
	SHLQ(Imm(2), ldb)
	SHLQ(Imm(2), ldc)
	vec, width := func() VecVirtual { return YMM() }, 32
	if avx512 {
		vec, width = func() VecVirtual { return ZMM() }, 64
	}
	// Row i of a matrix at base with row stride ld (bytes) is addressed
	// from one of the bases base, base+3·ld, base+6·ld, … with index ld
	// scaled by 0, 1 or 2: three rows per base register.
	bases := func(base, ld Register, rows int) []Register {
		out := []Register{base}
		for r := 3; r < rows; r += 3 {
			nb := GP64()
			LEAQ(Mem{Base: out[len(out)-1], Index: ld, Scale: 2}, nb)
			ADDQ(ld, nb)
			out = append(out, nb)
		}
		return out
	}
	rowAt := func(bs []Register, ld Register, i, disp int) Mem {
		m := Mem{Base: bs[i/3], Disp: disp}
		if i%3 > 0 {
			m.Index, m.Scale = ld, uint8(i%3)
		}
		return m
	}
	cb := bases(cp, ldc, mr)
	acc := make([][]VecVirtual, mr)
	for i := range acc {
		acc[i] = make([]VecVirtual, vecs)
		for u := range acc[i] {
			acc[i][u] = vec()
			VMOVUPS(rowAt(cb, ldc, i, width*u), acc[i][u])
		}
	}
	ab := bases(a, lda, mr)
	Label(name + "_loop")
	bv := make([]VecVirtual, vecs)
	for u := range bv {
		bv[u] = vec()
		VMOVUPS(Mem{Base: bp, Disp: width * u}, bv[u])
	}
	for i := range mr {
		x := vec()
		VBROADCASTSS(rowAt(ab, lda, i, 0), x)
		for u := range vecs {
			VFMADD231PS(x, bv[u], acc[i][u])
		}
	}
	for _, r := range ab {
		ADDQ(Imm(4), r)
	}
	ADDQ(ldb, bp)
	DECQ(k)
	JNZ(LabelRef(name + "_loop"))
	cb = bases(cp, ldc, mr) // anew: fewer registers live in the loop
	for i := range acc {
		for u := range acc[i] {
			VMOVUPS(acc[i][u], rowAt(cb, ldc, i, width*u))
		}
	}
	VZEROUPPER()
	RET()
}

// VPDPBUSDBCST is VPDPBUSD with its signed operand, four bytes in memory,
// broadcast to every lane (the Go assembler's VPDPBUSD.BCST).
func VPDPBUSDBCST(s, u, dst Op) {
	Instruction(&ir.Instruction{
		Opcode: "VPDPBUSD", Suffixes: []string{"BCST"}, Operands: []Op{s, u, dst},
		Inputs: []Op{s, u, dst}, Outputs: []Op{dst}, ISA: []string{"AVX512VNNI"},
	})
}

// panelForm is how a 32-value block type's weights sit in a panel
// (panel_amd64.go): sixteen rows side by side, one row per 32-bit lane.
type panelForm struct {
	name string
	// nibbles: each chunk holds four bytes of a row's packed nibbles (low
	// nibbles are values 4c..4c+3, high nibbles values 16+4c..); else each
	// chunk holds four values as unsigned bytes.
	nibbles bool
	// levels, when set, maps a nibble to its unsigned level (IQ4_NL).
	levels []int8
}

// levelTables are the tables of levels plus 128 (unsigned bytes for
// VPDPBUSD), sixteen bytes each, by type.
var levelTables = map[string]Mem{}

func levelTable(name string, levels []int8) Mem {
	m, ok := levelTables[name]
	if !ok {
		m = GLOBL(name+"Levels", RODATA|NOPTR)
		for i := 0; i < 16; i++ {
			DATA(i, U8(uint8(levels[i])+128))
		}
		levelTables[name] = m
	}
	return m
}

// panelFrame is what the panel kernels share: the panel pointer p, the
// tokens' activation bases (token t's from base t/3, indexed by the token
// stride scaled by t%3: three tokens per base register), the step count,
// and a float32 accumulator of sixteen rows per token.
type panelFrame struct {
	name     string
	p, n, xs Register
	bases    []Register
	acc      []VecVirtual
}

// startPanel emits a panel kernel's prologue,
//
//	func <name>(panel, x *byte, xStride, <count> int, out *float32, outStride int)
//
// with the accumulators zeroed; the caller emits its constants, then the
// label <name>_loop and one step.
func startPanel(name, count string, tokens int) *panelFrame {
	TEXT(name, NOSPLIT, fmt.Sprintf("func(panel, x *byte, xStride, %s int, out *float32, outStride int)", count))
	f := &panelFrame{name: name}
	f.p = Load(Param("panel"), GP64())
	x := Load(Param("x"), GP64())
	f.xs = Load(Param("xStride"), GP64())
	f.n = Load(Param(count), GP64())
	for t := 0; t < tokens; t += 3 {
		if t == 0 {
			f.bases = append(f.bases, x)
			continue
		}
		b := GP64()
		LEAQ(Mem{Base: f.bases[len(f.bases)-1], Index: f.xs, Scale: 2}, b)
		ADDQ(f.xs, b)
		f.bases = append(f.bases, b)
	}
	f.acc = make([]VecVirtual, tokens)
	for t := range f.acc {
		f.acc[t] = ZMM()
		VPXORD(f.acc[t], f.acc[t], f.acc[t])
	}
	return f
}

// at addresses byte disp of token t's current step.
func (f *panelFrame) at(t, disp int) Mem {
	m := Mem{Base: f.bases[t/3], Disp: disp}
	if t%3 > 0 {
		m.Index, m.Scale = f.xs, uint8(t%3)
	}
	return m
}

// end emits the step's advance (panel by stepBytes, activations by
// actBytes), the loop, and the stores of every token's sixteen sums.
func (f *panelFrame) end(stepBytes, actBytes int) {
	ADDQ(U32(stepBytes), f.p)
	var step Op = U32(actBytes)
	if actBytes < 128 { // a sign-extended byte
		step = Imm(uint64(actBytes))
	}
	for _, b := range f.bases {
		ADDQ(step, b)
	}
	DECQ(f.n)
	JNZ(LabelRef(f.name + "_loop"))
	o := Load(Param("out"), GP64())
	os := Load(Param("outStride"), GP64())
	for t := range f.acc {
		VMOVUPS(f.acc[t], Mem{Base: o})
		if t+1 < len(f.acc) {
			ADDQ(os, o)
		}
	}
	VZEROUPPER()
	RET()
}

// panelGemm emits the AVX-512 VNNI micro-kernel of prompt processing for
// the 32-value block types: sixteen weight rows (a panel, one row per
// 32-bit lane) times `tokens` tokens, with the weights' bytes reused from
// registers across tokens and each token's four bytes broadcast across the
// sixteen rows.
//
//	func gemm<form>x16x<tokens>(panel, x *byte, xStride, nb int, out *float32, outStride int)
//
// Block b of the panel is its chunks (64 bytes each) then the sixteen rows'
// float32 scales. Token t's activations start at x + t·xStride, a block
// (40 bytes) each: the scale, −zero·Σx as an int32, the 32 signed bytes.
// Every row's block sum is exact in int32; per block each token adds
// sum·(dw·dx) to its sixteen float lanes, blocks in order. out gets token
// t's sixteen sums at out + t·outStride (bytes).
func panelGemm(f panelForm, tokens int) {
	name := fmt.Sprintf("gemm%sx16x%d", f.name, tokens)
	k := startPanel(name, "nb", tokens)
	p, at, acc := k.p, k.at, k.acc
	chunks := 8
	if f.nibbles {
		chunks = 4
	}
	blockBytes := 64*chunks + 64
	var mask, levels VecVirtual
	if f.nibbles {
		mask = ZMM()
		c := GP32()
		MOVL(U32(0x0F0F0F0F), c)
		VPBROADCASTD(c, mask)
	}
	if f.levels != nil {
		levels = ZMM()
		VBROADCASTI32X4(levelTable(f.name, f.levels), levels)
	}
	Label(name + "_loop")
	isum := make([]VecVirtual, tokens)
	for t := range isum {
		isum[t] = ZMM()
		VPBROADCASTD(at(t, 4), isum[t])
	}
	use := func(u VecVirtual, xoff int) {
		for t := range isum {
			VPDPBUSDBCST(at(t, 8+xoff), u, isum[t])
		}
	}
	for c := range chunks {
		if !f.nibbles {
			u := ZMM()
			VMOVDQU64(Mem{Base: p, Disp: 64 * c}, u)
			use(u, 4*c)
			continue
		}
		lo, hi := ZMM(), ZMM()
		VMOVDQU64(Mem{Base: p, Disp: 64 * c}, lo)
		VPSRLW(Imm(4), lo, hi)
		VPANDD(mask, lo, lo)
		VPANDD(mask, hi, hi)
		if levels != nil {
			VPSHUFB(lo, levels, lo)
			VPSHUFB(hi, levels, hi)
		}
		use(lo, 4*c)
		use(hi, 16+4*c)
	}
	dw := ZMM()
	VMOVUPS(Mem{Base: p, Disp: 64 * chunks}, dw)
	for t := range isum {
		s, d := ZMM(), ZMM()
		VCVTDQ2PS(isum[t], s)
		VMULPS_BCST(at(t, 0), dw, d)
		VFMADD231PS(s, d, acc[t])
	}
	k.end(blockBytes, 40)
}

// panelGemmQ45_K emits the panel micro-kernel of Q4_K or Q5_K (see
// panelGemm): a panel holds, for each pair of 32-value sub-blocks, the
// rows' 32 bytes of nibbles as eight chunks (low nibbles: the first
// sub-block, high: the second); for Q5_K the rows' 32 bytes of fifth bits
// as eight more, shifted so that bit 0 of each byte is the first
// sub-block's and bit 1 the second's; then for each of the two sub-blocks
// the rows' d·scale and dmin·min as float32.
//
//	func gemmQ<4|5>_Kx16x<tokens>(panel, x *byte, xStride, pairs int, out *float32, outStride int)
//
// Token t's activations are 40-byte sub-blocks: the super-block's scale
// dx, dx·Σx of the sub-block, the 32 signed bytes. Each sub-block adds
// isum·(d·scale·dx) − (dmin·min)·(dx·Σx) to the token's sixteen lanes.
func panelGemmQ45_K(fifth bool, tokens int) {
	name := fmt.Sprintf("gemmQ4_Kx16x%d", tokens)
	chunks := 8 // of nibbles, then of fifth bits
	if fifth {
		name = fmt.Sprintf("gemmQ5_Kx16x%d", tokens)
		chunks = 16
	}
	k := startPanel(name, "pairs", tokens)
	p, at, acc := k.p, k.at, k.acc
	mask, bit4 := ZMM(), ZMM()
	c := GP32()
	MOVL(U32(0x0F0F0F0F), c)
	VPBROADCASTD(c, mask)
	if fifth {
		MOVL(U32(0x10101010), c)
		VPBROADCASTD(c, bit4)
	}
	zero := ZMM() // see panelGemm16
	VPXORD(zero, zero, zero)
	Label(name + "_loop")
	for h := range 2 { // the pair's two sub-blocks: low nibbles, then high
		isum := make([]VecVirtual, tokens)
		for t := range isum {
			isum[t] = ZMM()
			VMOVDQA64(zero, isum[t])
		}
		for j := range 8 {
			u := ZMM()
			if h == 0 {
				VPANDD(Mem{Base: p, Disp: 64 * j}, mask, u)
			} else {
				VMOVDQU64(Mem{Base: p, Disp: 64 * j}, u)
				VPSRLW(Imm(4), u, u)
				VPANDD(mask, u, u)
			}
			if fifth {
				hb := ZMM()
				VMOVDQU64(Mem{Base: p, Disp: 512 + 64*j}, hb)
				VPSLLW(Imm(uint64(4-h)), hb, hb)
				VPTERNLOGD(U8(0xF8), bit4, hb, u) // u | (hb & 0x10)
			}
			for t := range isum {
				VPDPBUSDBCST(at(t, 40*h+8+4*j), u, isum[t])
			}
		}
		dsc, dmin := ZMM(), ZMM()
		VMOVUPS(Mem{Base: p, Disp: 64*chunks + 128*h}, dsc)
		VMOVUPS(Mem{Base: p, Disp: 64*chunks + 128*h + 64}, dmin)
		for t := range isum {
			s, d := ZMM(), ZMM()
			VCVTDQ2PS(isum[t], s)
			VMULPS_BCST(at(t, 40*h), dsc, d)
			VFMADD231PS(s, d, acc[t])
			VFNMADD231PS_BCST(at(t, 40*h+4), dmin, acc[t])
		}
	}
	k.end(64*chunks+256, 80)
}

// panelGemm16 emits the panel micro-kernel of a K-quant with a scale per
// sixteen values, Q6_K, Q3_K or Q2_K (see panelGemm):
//
//	func gemm<T>x16x<tokens>(panel, x *byte, xStride, halves int, out *float32, outStride int)
//
// Token t's activations are 48-byte groups of 32 values: the
// super-block's scale dx, for each sixteen values −zero·Σx as int32 (Q6_K,
// Q3_K) or dx·Σx as float32 (Q2_K), four bytes unused, the 32 signed
// bytes. A panel holds, for each half super-block (128 values), the rows'
// bytes as 64-byte chunks, then the d·scale of each sixteen values as
// float32 (sixteen rows each), and for Q2_K then dmin·min of each
// sixteen. Group g (values 32g..32g+31 of the half) reads chunk j of its
// bits for values 4j..4j+3:
//
//   - Q6_K: sixteen chunks of low nibbles (g = 0, 2 from the first eight,
//     1, 3 from the next; low nibbles for g < 2) and eight of high bit
//     pairs (pair g): the unsigned value w+32.
//   - Q3_K: eight chunks of 2-bit values (pair g) and eight of high bits,
//     packed shifted so that bit g of each byte is group g's: w+4.
//   - Q2_K: eight chunks of 2-bit values (pair g), unsigned, with a
//     minimum per sixteen.
func panelGemm16(typ string, tokens int) {
	name := fmt.Sprintf("gemm%sx16x%d", typ, tokens)
	k := startPanel(name, "halves", tokens)
	p, at, acc := k.p, k.at, k.acc
	splat32 := func(v uint32) VecVirtual {
		z, k := ZMM(), GP32()
		MOVL(U32(v), k)
		VPBROADCASTD(k, z)
		return z
	}
	var low, high VecVirtual
	scales, bits, mins := 1536, 1024, false // bits: where the high bits start
	switch typ {
	case "Q6_K":
		low, high = splat32(0x0F0F0F0F), splat32(0x30303030)
	case "Q3_K":
		low, high, scales, bits = splat32(0x03030303), splat32(0x04040404), 1024, 512
	case "Q2_K":
		low, scales, mins = splat32(0x03030303), 512, true
	}
	// unpack gives group g's unsigned values 4j..4j+3 of the sixteen rows.
	unpack := func(g, j int) VecVirtual {
		u := ZMM()
		if typ == "Q6_K" {
			ql := Mem{Base: p, Disp: 64 * j}
			if g%2 == 1 {
				ql.Disp += 512
			}
			if g < 2 {
				VPANDD(ql, low, u)
			} else {
				VMOVDQU64(ql, u)
				VPSRLW(Imm(4), u, u)
				VPANDD(low, u, u)
			}
		} else {
			q := Mem{Base: p, Disp: 64 * j}
			if g == 0 {
				VPANDD(q, low, u)
			} else {
				VMOVDQU64(q, u)
				VPSRLW(Imm(uint64(2*g)), u, u)
				VPANDD(low, u, u)
			}
		}
		if high == nil {
			return u
		}
		// The high bits to where they join the value: bits 4-5 of Q6_K's
		// pair g, bit 2 from bit g of Q3_K's.
		hb := ZMM()
		VMOVDQU64(Mem{Base: p, Disp: bits + 64*j}, hb)
		shift := 4 - 2*g // Q6_K
		if typ == "Q3_K" {
			shift = 2 - g
		}
		switch {
		case shift > 0:
			VPSLLW(Imm(uint64(shift)), hb, hb)
		case shift < 0:
			VPSRLW(Imm(uint64(-shift)), hb, hb)
		}
		VPTERNLOGD(U8(0xF8), high, hb, u) // u | (hb & high)
		return u
	}
	// avo takes VPXORD of a register with itself for a read of it: zeroing
	// the sums that way would keep every one of them live around the loop.
	zero := ZMM()
	VPXORD(zero, zero, zero)
	Label(name + "_loop")
	for g := range 4 {
		for s := range 2 { // the group's two sixteens, each with its scale
			isum := make([]VecVirtual, tokens)
			for t := range isum {
				isum[t] = ZMM()
				if mins {
					VMOVDQA64(zero, isum[t])
				} else {
					VPBROADCASTD(at(t, 48*g+4+4*s), isum[t])
				}
			}
			for jj := range 4 {
				j := 4*s + jj
				u := unpack(g, j)
				for t := range isum {
					VPDPBUSDBCST(at(t, 48*g+16+4*j), u, isum[t])
				}
			}
			dsc := ZMM()
			VMOVUPS(Mem{Base: p, Disp: scales + 64*(2*g+s)}, dsc)
			var dmin VecVirtual
			if mins {
				dmin = ZMM()
				VMOVUPS(Mem{Base: p, Disp: scales + 512 + 64*(2*g+s)}, dmin)
			}
			for t := range isum {
				f, d := ZMM(), ZMM()
				VCVTDQ2PS(isum[t], f)
				VMULPS_BCST(at(t, 48*g), dsc, d)
				VFMADD231PS(f, d, acc[t])
				if mins {
					VFNMADD231PS_BCST(at(t, 48*g+4+4*s), dmin, acc[t])
				}
			}
		}
	}
	step := 2048 // Q6_K: 16 + 8 chunks and the scales
	if typ != "Q6_K" {
		step = 1536 // 8 + 8 chunks and the scales, or 8 chunks, scales and minimums
	}
	k.end(step, 4*48)
}

// hmaxPS is the largest of a ZMM's sixteen float32 lanes, in lane 0 of
// an XMM.
func hmaxPS(v VecVirtual) VecVirtual {
	y := YMM()
	VEXTRACTF64X4(Imm(1), v, y)
	VMAXPS(y, v.AsY(), y)
	h, s := XMM(), XMM()
	VEXTRACTF128(Imm(1), y, h)
	VMAXPS(h, y.AsX(), h)
	VPERMILPS(Imm(0x4E), h, s)
	VMAXPS(s, h, h)
	VPERMILPS(Imm(0xB1), h, s)
	VMAXPS(s, h, h)
	return h
}

// hsumD is the sum of a ZMM's sixteen int32 lanes, in lane 0 of an XMM.
func hsumD(v VecVirtual) VecVirtual {
	y := YMM()
	VEXTRACTI64X4(Imm(1), v, y)
	VPADDD(y, v.AsY(), y)
	h, s := XMM(), XMM()
	VEXTRACTI128(Imm(1), y, h)
	VPADDD(h, y.AsX(), h)
	VPSHUFD(Imm(0x4E), h, s)
	VPADDD(s, h, h)
	VPSHUFD(Imm(0xB1), h, s)
	VPADDD(s, h, h)
	return h
}

// quantizeQ8 emits the AVX-512 quantizer of activations into 32-value
// blocks of 40 bytes: the scale d = max|x|/127, the int32 sum of the
// quantized values, the 32 values round(x/d) as signed bytes (ties to
// even, as roundToInt). It computes exactly what quantizeQ8Go computes
// (the same IEEE divisions and products, the same rounding), leaving the
// sum for the caller to turn into what its kernels want.
//
//	func quantizeQ8AVX512(x *float32, dst *byte, nb int)
func quantizeQ8() {
	TEXT("quantizeQ8AVX512", NOSPLIT, "func(x *float32, dst *byte, nb int)")
	x := Load(Param("x"), GP64())
	dst := Load(Param("dst"), GP64())
	n := Load(Param("nb"), GP64())
	k := GP32()
	abs, c127, one := ZMM(), XMM(), XMM()
	MOVL(U32(0x7FFFFFFF), k)
	VPBROADCASTD(k, abs)
	MOVL(U32(math.Float32bits(127)), k)
	VMOVD(k, c127)
	MOVL(U32(math.Float32bits(1)), k)
	VMOVD(k, one)
	Label("quantizeQ8_loop")
	v0, v1 := ZMM(), ZMM()
	VMOVUPS(Mem{Base: x}, v0)
	VMOVUPS(Mem{Base: x, Disp: 64}, v1)
	m, a := ZMM(), ZMM()
	VANDPS(abs, v0, m)
	VANDPS(abs, v1, a)
	VMAXPS(a, m, m)
	h := hmaxPS(m) // max|x|
	d := XMM()
	VDIVSS(c127, h, d)
	VMOVSS(d, Mem{Base: dst})
	id, nz := XMM(), XMM()
	VDIVSS(d, one, id)
	VXORPS(nz, nz, nz)
	VCMPSS(Imm(4), nz, d, nz) // d ≠ 0: all ones
	VANDPS(nz, id, id)
	idv := ZMM()
	VBROADCASTSS(id, idv)
	VMULPS(idv, v0, v0)
	VMULPS(idv, v1, v1)
	VCVTPS2DQ(v0, v0)
	VCVTPS2DQ(v1, v1)
	// The sum is of the bytes as stored: an infinite or NaN input's lane
	// (0x80000000) counts as 0, as in the Go twin.
	b0, b1 := XMM(), XMM()
	VPMOVDB(v0, b0)
	VPMOVDB(v1, b1)
	VMOVDQU(b0, Mem{Base: dst, Disp: 8})
	VMOVDQU(b1, Mem{Base: dst, Disp: 24})
	VPMOVSXBD(b0, v0)
	VPMOVSXBD(b1, v1)
	VPADDD(v1, v0, v0)
	VMOVD(hsumD(v0), Mem{Base: dst, Disp: 4})
	ADDQ(Imm(128), x)
	ADDQ(Imm(40), dst)
	DECQ(n)
	JNZ(LabelRef("quantizeQ8_loop"))
	VZEROUPPER()
	RET()
}

// decodeHalf emits the decoder of n (a multiple of eight) 16-bit floats to
// float32, exact: F16C's conversion for F16, a shift into the high half
// for BF16.
//
//	func decode<F16|BF16>AVX2(dst *float32, src *byte, n int)
func decodeHalf(name string) {
	TEXT("decode"+name+"AVX2", NOSPLIT, "func(dst *float32, src *byte, n int)")
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	n := Load(Param("n"), GP64())
	SHRQ(Imm(3), n)
	Label("decode" + name + "_loop")
	v := YMM()
	if name == "F16" {
		VCVTPH2PS(Mem{Base: src}, v)
	} else {
		VPMOVZXWD(Mem{Base: src}, v)
		VPSLLD(Imm(16), v, v)
	}
	VMOVUPS(v, Mem{Base: dst})
	ADDQ(Imm(16), src)
	ADDQ(Imm(32), dst)
	DECQ(n)
	JNZ(LabelRef("decode" + name + "_loop"))
	VZEROUPPER()
	RET()
}

// quantizeQ8K emits the AVX-512 twin of quantizeQ8K (ggml's
// quantize_row_q8_K_ref) over nb blocks of 256 values into 292-byte
// q8KBlocks (d, qs[256], bsums[16]): the scale comes from the first value
// of largest magnitude mx, iscale = −127/mx, q = min(127, round(iscale·x))
// ties to even, d = 1/iscale; an all-zero block is all zeros.
//
//	func quantizeQ8KAVX512(x *float32, dst *byte, nb int)
func quantizeQ8K() {
	TEXT("quantizeQ8KAVX512", NOSPLIT, "func(x *float32, dst *byte, nb int)")
	x := Load(Param("x"), GP64())
	dst := Load(Param("dst"), GP64())
	n := Load(Param("nb"), GP64())
	k := GP32()
	abs, c127, cm127, one := ZMM(), ZMM(), XMM(), XMM()
	MOVL(U32(0x7FFFFFFF), k)
	VPBROADCASTD(k, abs)
	MOVL(U32(127), k)
	VPBROADCASTD(k, c127)
	MOVL(U32(math.Float32bits(-127)), k)
	VMOVD(k, cm127)
	MOVL(U32(math.Float32bits(1)), k)
	VMOVD(k, one)
	Label("quantizeQ8K_loop")
	// amax = max|x| over the block.
	m := ZMM()
	VANDPS(Mem{Base: x}, abs, m)
	for i := 1; i < 16; i++ {
		a := ZMM()
		VANDPS(Mem{Base: x, Disp: 64 * i}, abs, a)
		VMAXPS(a, m, m)
	}
	h := hmaxPS(m)
	amax := ZMM()
	VBROADCASTSS(h, amax)
	// An all-zero block (or one of NaNs): zeros, as the Go twin.
	zero := XMM()
	VXORPS(zero, zero, zero)
	VUCOMISS(zero, h)
	JNE(LabelRef("quantizeQ8K_find"))
	Comment("all zero")
	z := ZMM()
	VPXORD(z, z, z)
	for off := 0; off < 292-64; off += 64 {
		VMOVDQU64(z, Mem{Base: dst, Disp: off})
	}
	VMOVDQU64(z, Mem{Base: dst, Disp: 292 - 64})
	JMP(LabelRef("quantizeQ8K_next"))
	// mx: the first value whose magnitude is amax.
	Label("quantizeQ8K_find")
	i, p := GP64(), GP64()
	XORQ(i, i)
	MOVQ(x, p)
	Label("quantizeQ8K_scan")
	a := ZMM()
	VANDPS(Mem{Base: p}, abs, a)
	VCMPPS(Imm(0), amax, a, K1) // equal
	KMOVW(K1, k)
	TESTL(k, k)
	JNZ(LabelRef("quantizeQ8K_found"))
	ADDQ(Imm(64), p)
	INCQ(i)
	CMPQ(i, Imm(16))
	JNE(LabelRef("quantizeQ8K_scan"))
	MOVQ(x, p) // not found (NaNs): the first value
	MOVL(U32(1), k)
	Label("quantizeQ8K_found")
	lane := GP32()
	TZCNTL(k, lane)
	mx := XMM()
	VMOVSS(Mem{Base: p, Index: lane.As64(), Scale: 4}, mx)
	iscale, d := XMM(), XMM()
	VDIVSS(mx, cm127, iscale)
	VDIVSS(iscale, one, d)
	VMOVSS(d, Mem{Base: dst})
	is := ZMM()
	VBROADCASTSS(iscale, is)
	for j := range 16 {
		q := ZMM()
		VMULPS(Mem{Base: x, Disp: 64 * j}, is, q)
		VCVTPS2DQ(q, q)
		VPMINSD(c127, q, q)
		b := XMM()
		VPMOVDB(q, b)
		VMOVDQU(b, Mem{Base: dst, Disp: 4 + 16*j})
		// The group's sum from the bytes as stored (see quantizeQ8).
		VPMOVSXBD(b, q)
		VPEXTRW(Imm(0), hsumD(q), Mem{Base: dst, Disp: 260 + 2*j})
	}
	Label("quantizeQ8K_next")
	ADDQ(U32(1024), x)
	ADDQ(U32(292), dst)
	DECQ(n)
	JNZ(LabelRef("quantizeQ8K_loop"))
	VZEROUPPER()
	RET()
}

// gatherPanel emits the packer of panels: it runs a program of n entries
// of five int32s (srcOff, dstOff, shift, mask, xor), each gathering the
// dword at src + srcOff of sixteen rows rowStride bytes apart (the lanes
// set in lanes; the others are 0), and storing ((v >> shift) & mask) ^ xor
// to dst + dstOff.
//
//	func gatherPanel(dst, src *byte, rowStride int, prog *int32, n int, lanes int)
func gatherPanel() {
	TEXT("gatherPanel", NOSPLIT, "func(dst, src *byte, rowStride int, prog *int32, n int, lanes int)")
	dst := Load(Param("dst"), GP64())
	src := Load(Param("src"), GP64())
	rs, lanes := GP64(), GP64()
	Load(Param("rowStride"), rs)
	prog := Load(Param("prog"), GP64())
	n := Load(Param("n"), GP64())
	Load(Param("lanes"), lanes)
	iota := GLOBL("laneIndex", RODATA|NOPTR)
	for i := 0; i < 16; i++ {
		DATA(4*i, U32(uint32(i)))
	}
	idx := ZMM()
	VPBROADCASTD(rs.As32(), idx)
	VPMULLD(iota, idx, idx)
	Label("gatherPanel_loop")
	base, off := GP64(), GP64()
	MOVLQSX(Mem{Base: prog}, base)
	ADDQ(src, base)
	KMOVW(lanes.As32(), K1)
	v, c := ZMM(), ZMM()
	VPXORD(v, v, v)
	VPGATHERDD(Mem{Base: base, Index: idx, Scale: 1}, K1, v)
	VPBROADCASTD(Mem{Base: prog, Disp: 8}, c)
	VPSRLVD(c, v, v)
	VPANDD_BCST(Mem{Base: prog, Disp: 12}, v, v)
	VPXORD_BCST(Mem{Base: prog, Disp: 16}, v, v)
	MOVLQSX(Mem{Base: prog, Disp: 4}, off)
	VMOVDQU32(v, Mem{Base: dst, Index: off, Scale: 1})
	ADDQ(Imm(20), prog)
	DECQ(n)
	JNZ(LabelRef("gatherPanel_loop"))
	VZEROUPPER()
	RET()
}

// splatF32 is a 32-byte constant of eight float32 v, made once by name.
func splatF32(name string, v float32) Mem {
	if m, ok := splats[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := 0; i < 8; i++ {
		DATA(4*i, U32(math.Float32bits(v)))
	}
	splats[name] = m
	return m
}

// expCore emits e^x for the eight lanes of x (AVX2 + FMA): x = n·ln2 + r
// with n = round(x·log2 e), r from ln2 in two parts, e^r by Cephes'
// degree-6 polynomial (about 1 ulp), times 2^n through the exponent bits.
// Below ln(FLT_MIN) the result is 0 (no subnormals); above ln(FLT_MAX) it
// is +Inf; a NaN stays a NaN. lo and hi hold ln(FLT_MIN) and ln(FLT_MAX)
// in every lane. 2^n is applied in two halves so that n = 128 (the top
// of the range) and n = −126 both stay within normal exponents.
func expCore(x, lo, hi VecVirtual) VecVirtual {
	keep := YMM()
	VCMPPS(Imm(5), lo, x, keep) // x not below lo (a NaN is kept)
	c := YMM()
	VMAXPS(x, lo, c) // a NaN stays: VMAXPS and VMINPS give their second source then
	VMINPS(c, hi, c)
	n := YMM()
	VMULPS(splatF32("log2e", 1.44269504088896341), c, n)
	VROUNDPS(Imm(0), n, n) // nearest, ties to even
	r := YMM()
	VMOVAPS(c, r)
	VFNMADD231PS(splatF32("ln2hi", 0.693359375), n, r)
	VFNMADD231PS(splatF32("ln2lo", -2.12194440e-4), n, r)
	p := YMM()
	VMOVAPS(splatF32("expP0", 1.9875691500e-4), p)
	for _, k := range []struct {
		name string
		v    float32
	}{{"expP1", 1.3981999507e-3}, {"expP2", 8.3334519073e-3}, {"expP3", 4.1665795894e-2}, {"expP4", 1.6666665459e-1}, {"expP5", 5.0000001201e-1}} {
		VFMADD213PS(splatF32(k.name, k.v), r, p) // p = p·r + c
	}
	r2 := YMM()
	VMULPS(r, r, r2)
	VFMADD213PS(r, r2, p) // p·r² + r
	VADDPS(splatF32("one", 1), p, p)
	n1, n2 := YMM(), YMM()
	VCVTPS2DQ(n, n1)
	VPSRAD(Imm(1), n1, n2)
	VPSUBD(n2, n1, n1) // n = n1 + n2, each within [−63, 64]
	for _, h := range []VecVirtual{n1, n2} {
		VPADDD(splatF32("bias127", math.Float32frombits(127)), h, h)
		VPSLLD(Imm(23), h, h)
		VMULPS(h, p, p)
	}
	VANDPS(keep, p, p)
	return p
}

// expKernels emits
//
//	func expShiftAVX2(dst, src *float32, shift float32, n int)   // dst = e^(src−shift)
//	func siluAVX2(dst, src *float32, n int)                      // dst = src/(1+e^−src)
//
// over n values, a multiple of eight.
func expKernels() {
	for _, silu := range []bool{false, true} {
		name := "expShiftAVX2"
		sig := "func(dst, src *float32, shift float32, n int)"
		if silu {
			name, sig = "siluAVX2", "func(dst, src *float32, n int)"
		}
		TEXT(name, NOSPLIT, sig)
		dst := Load(Param("dst"), GP64())
		src := Load(Param("src"), GP64())
		n := Load(Param("n"), GP64())
		SHRQ(Imm(3), n)
		var shift VecVirtual
		if !silu {
			shift = YMM()
			VBROADCASTSS(Load(Param("shift"), XMM()), shift)
		}
		lo, hi := YMM(), YMM()
		VMOVUPS(splatF32("expLo", -87.33654), lo)
		VMOVUPS(splatF32("expHi", 88.72284), hi)
		Label(name + "_loop")
		x := YMM()
		VMOVUPS(Mem{Base: src}, x)
		var y VecVirtual
		if silu {
			m := YMM()
			VXORPS(splatF32("signBit", float32(math.Copysign(0, -1))), x, m) // −x
			e := expCore(m, lo, hi)
			VADDPS(splatF32("one", 1), e, e)
			y = YMM()
			VDIVPS(e, x, y)
		} else {
			VSUBPS(shift, x, x)
			y = expCore(x, lo, hi)
		}
		VMOVUPS(y, Mem{Base: dst})
		ADDQ(Imm(32), src)
		ADDQ(Imm(32), dst)
		DECQ(n)
		JNZ(LabelRef(name + "_loop"))
		VZEROUPPER()
		RET()
	}
}

// dotQ6_K512 emits the AVX-512 form of dotQ6_K for one token: a half
// super-block's 128 values in two 64-byte registers (runs 0 and 1 from
// the low nibbles of ql's 64 bytes, runs 2 and 3 from the high ones, qh's
// bit pairs shifted into place per 256-bit half with VPSLLVW/VPSRLVW), the
// 16-value groups' scales spread to their 128-bit lanes with VPERMW. The
// integer sums are dotQ6_K's, so the result is the Go twin's bit for bit.
//
//	func dotQ6_Kx1AVX512(w, x *byte, stride, nb int, out *float32)
func dotQ6_K512() {
	fn := "dotQ6_Kx1AVX512"
	w, n, xs := rowKernel(fn, 1)
	x := xs[0]
	o := zeroOut(1)
	words := func(name string, v func(i int) uint16) Mem {
		m := GLOBL(name, RODATA|NOPTR)
		for i := 0; i < 32; i++ {
			DATA(2*i, U16(v(i)))
		}
		return m
	}
	shiftA := words("q6ShiftA", func(i int) uint16 { return [2]uint16{4, 2}[i/16] }) // runs 0, 1: qh << 4, << 2
	shiftB := words("q6ShiftB", func(i int) uint16 { return [2]uint16{0, 2}[i/16] }) // runs 2, 3: qh, qh >> 2
	// VPERMW takes its indexes in a register.
	spreadA, spreadB := ZMM(), ZMM()
	VMOVDQU64(words("q6SpreadA", func(i int) uint16 { return uint16(i / 8) }), spreadA)
	VMOVDQU64(words("q6SpreadB", func(i int) uint16 { return uint16(4 + i/8) }), spreadB)
	low, bits45 := ZMM(), ZMM()
	k := GP32()
	MOVL(U32(0x0F0F0F0F), k)
	VPBROADCASTD(k, low)
	MOVL(U32(0x30303030), k)
	VPBROADCASTD(k, bits45)
	Label(fn + "_loop")
	CMPQ(n, Imm(0))
	JE(LabelRef(fn + "_done"))
	isum := ZMM()
	VPXORD(isum, isum, isum)
	for half := 0; half < 2; half++ {
		ql, qh := ZMM(), ZMM()
		VMOVDQU64(Mem{Base: w, Disp: 64 * half}, ql)
		VBROADCASTI64X4(Mem{Base: w, Disp: 128 + 32*half}, qh)
		sc := ZMM()
		VPMOVSXBW(Mem{Base: w, Disp: 192 + 8*half}, sc.AsX())
		for r, run := range []struct {
			shift  Mem
			spread VecVirtual
		}{{shiftA, spreadA}, {shiftB, spreadB}} {
			q, h := ZMM(), ZMM()
			if r == 0 {
				VPANDD(ql, low, q)
				VPSLLVW(run.shift, qh, h)
			} else {
				VPSRLW(Imm(4), ql, q)
				VPANDD(low, q, q)
				VPSRLVW(run.shift, qh, h)
			}
			VPTERNLOGD(U8(0xF8), bits45, h, q) // q | (h & 0x30)
			s := ZMM()
			VPERMW(sc, run.spread, s)
			p := ZMM()
			VPMADDUBSW(Mem{Base: x, Disp: 4 + 128*half + 64*r}, q, p)
			VPMADDWD(s, p, p)
			VPADDD(p, isum, isum)
		}
	}
	// isum −= 32·Σ_g scale_g·bsum_g, then the sum of the lanes.
	y := YMM()
	VEXTRACTI64X4(Imm(1), isum, y)
	VPADDD(y, isum.AsY(), y)
	sc16, bs := YMM(), YMM()
	VPMOVSXBW(Mem{Base: w, Disp: 192}, sc16)
	VMOVDQU(Mem{Base: x, Disp: 260}, bs)
	VPMADDWD(bs, sc16, bs)
	VPSLLD(Imm(5), bs, bs)
	VPSUBD(bs, y, y)
	h := XMM()
	VEXTRACTI128(Imm(1), y, h)
	VPADDD(y.AsX(), h, h)
	VPHADDD(h, h, h)
	VPHADDD(h, h, h)
	VCVTDQ2PS(h, h)
	d := XMM()
	s := GP32()
	MOVWLZX(Mem{Base: w, Disp: 208}, s)
	VMOVD(s, d)
	VCVTPH2PS(d, d)
	// out += (f16(d) · dx) · isum, as dotQ6_K.
	f := XMM()
	VMULSS(Mem{Base: x}, d, f)
	VMULSS(h, f, f)
	VADDSS(Mem{Base: o}, f, f)
	MOVSS(f, Mem{Base: o})
	nextBlock(fn, w, n, xs, 210, q8KBlockSize)
	VZEROUPPER()
	RET()
}

// VDPBF16PS emits AVX512-BF16's VDPBF16PS zmm(acc), zmm(w), zmm(x): each
// float32 lane of acc += w's two bfloat16 values times x's, the odd pair
// first. Neither the Go assembler nor avo knows the instruction, so it is
// encoded here (EVEX.512.F3.0F38.W0 52 /r, register operands only) and
// written as bytes; the registers are physical ones for that reason.
func VDPBF16PS(acc, w, x int) {
	inv := func(v, bit int) byte { return byte(^v>>bit) & 1 }
	p0 := inv(acc, 3)<<7 | inv(x, 4)<<6 | inv(x, 3)<<5 | inv(acc, 4)<<4 | 0b10 // R X B R' 00 mm=0F38
	p1 := byte(^w&15)<<3 | 1<<2 | 0b10                                         // W=0 vvvv 1 pp=F3
	p2 := 0b10<<5 | inv(w, 4)<<3                                               // z=0 L'L=512 b=0 V' aaa=0
	modrm := 0xC0 | byte(acc&7)<<3 | byte(x&7)
	Comment(fmt.Sprintf("VDPBF16PS Z%d, Z%d, Z%d", x, w, acc))
	for _, b := range []byte{0x62, p0, p1, p2, 0x52, modrm} {
		Instruction(&ir.Instruction{Opcode: "BYTE", Operands: []Op{U8(b)}})
	}
}

// panelBF16 emits the AVX512-BF16 micro-kernel of prompt processing on
// BF16 weights: sixteen weight rows times `tokens` tokens with bfloat16
// activations, two multiply-adds per lane and instruction, as llama.cpp's
// tinyBLAS computes BF16 products on such CPUs.
//
//	func gemmBF16x16x<tokens>(panel, x *byte, xStride, nb int, out *float32, outStride int)
//
// Step s of the panel (1024 bytes) is sixteen vectors, the sixteen rows'
// values 32s+2p and 32s+2p+1 side by side in vector p. Token t's
// activations start at x + t·xStride, bfloat16 values in order; each pair
// is broadcast across the rows. out gets token t's sixteen sums at
// out + t·outStride (bytes).
func panelBF16(tokens int) {
	name := fmt.Sprintf("gemmBF16x16x%d", tokens)
	TEXT(name, NOSPLIT, "func(panel, x *byte, xStride, nb int, out *float32, outStride int)")
	Load(Param("panel"), RSI)
	Load(Param("x"), RDI)
	Load(Param("xStride"), RDX)
	Load(Param("nb"), RCX)
	// Token t's activations at bases[t/3] + (t%3)·xStride.
	bases := []Register{RDI, R8, R9}
	LEAQ(Mem{Base: RDI, Index: RDX, Scale: 2}, R8)
	ADDQ(RDX, R8)
	LEAQ(Mem{Base: R8, Index: RDX, Scale: 2}, R9)
	ADDQ(RDX, R9)
	zmm := []VecPhysical{Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7, Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15,
		Z16, Z17, Z18, Z19, Z20, Z21, Z22, Z23, Z24, Z25, Z26, Z27, Z28, Z29, Z30, Z31}
	for t := range tokens { // accumulators Z0–Z7
		VPXORD(zmm[t], zmm[t], zmm[t])
	}
	Label(name + "_loop")
	for p := range 16 {
		w := 8 + p%2 // weights in Z8 and Z9 by turns
		VMOVDQU32(Mem{Base: RSI, Disp: 64 * p}, zmm[w])
		for t := range tokens {
			m := Mem{Base: bases[t/3], Disp: 4 * p}
			if t%3 > 0 {
				m.Index, m.Scale = RDX, uint8(t%3)
			}
			x := 16 + t + 8*(p%2) // broadcasts in Z16–Z31
			VPBROADCASTD(m, zmm[x])
			VDPBF16PS(t, w, x)
		}
	}
	ADDQ(U32(1024), RSI)
	for _, b := range bases[:(tokens+2)/3] {
		ADDQ(Imm(64), b)
	}
	DECQ(RCX)
	JNZ(LabelRef(name + "_loop"))
	Load(Param("out"), R10)
	Load(Param("outStride"), R11)
	for t := range tokens {
		VMOVUPS(zmm[t], Mem{Base: R10})
		if t+1 < tokens {
			ADDQ(R11, R10)
		}
	}
	VZEROUPPER()
	RET()
}

// panelF16 emits the AVX-512 micro-kernel of prompt processing on F16
// weights: sixteen weight rows times `tokens` tokens of float32
// activations, the weights widened in registers (VCVTPH2PS) and each
// activation broadcast from memory into a fused multiply-add.
//
//	func gemmF16x16x<tokens>(panel, x *byte, xStride, nb int, out *float32, outStride int)
//
// The panel is laid out as panelBF16's: vector p of step s holds the
// sixteen rows' values 32s+2p and 32s+2p+1. Each of the sixteen sums is
// its products added in order, one fused multiply-add each.
func panelF16(tokens int) {
	name := fmt.Sprintf("gemmF16x16x%d", tokens)
	k := startPanel(name, "nb", tokens)
	Label(name + "_loop")
	for p := range 16 {
		pair := ZMM()
		VMOVDQU32(Mem{Base: k.p, Disp: 64 * p}, pair)
		lo, hi := YMM(), YMM()
		VPMOVDW(pair, lo) // the first value of each pair
		VPSRLD(Imm(16), pair, pair)
		VPMOVDW(pair, hi)
		wlo, whi := ZMM(), ZMM()
		VCVTPH2PS(lo, wlo)
		VCVTPH2PS(hi, whi)
		for t := range tokens {
			VFMADD231PS_BCST(k.at(t, 8*p), wlo, k.acc[t])
			VFMADD231PS_BCST(k.at(t, 8*p+4), whi, k.acc[t])
		}
	}
	k.end(1024, 128)
}
