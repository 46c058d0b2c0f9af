// Command neon generates lqc's arm64 kernels (runtime/cpu/dot_arm64.s and
// its Go declarations):
//
//	cd runtime/cpu && go generate
//
// The Go assembler knows only some of AArch64's SIMD instructions (not
// SDOT, SMULL, SCVTF or the float arithmetic on vectors), so this program
// encodes those itself and writes each as a WORD with the instruction in
// a comment; what the assembler knows (loads, stores, scalar moves,
// branches) it writes as it is.
//
// The integer kernels come twice: with the dot-product extension (SDOT,
// FEAT_DotProd, ARMv8.2 on: names ending in SDOT) and without it (SMULL,
// SADDLP and ADDP on ARMv8.0: names ending in NEON), as ggml's NEON paths
// do. Each computes what its portable twin in dot.go computes, bit for
// bit: the integer products of a block are summed exactly, and the float
// steps happen in the twin's order (the K-quant kernels return integer
// sums and leave the float steps to the Go code the twin shares).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"strings"
)

const (
	q8BlockSize  = 40  // sizeof(q8Block): d, s float32; qs [32]int8
	q8KBlockSize = 292 // sizeof(q8KBlock): d float32; qs [256]int8; bsums [16]int16
)

// v is a SIMD register, V0–V31.
type v uint32

// Registers with a fixed role in every kernel.
const (
	vNibbles v = 28 // sixteen 0x0F bytes
	vConst   v = 29 // the type's constant: 8 (Q4_0), the IQ4_NL grid, 0x30 (Q6_K)
	vConst2  v = 30 // 32 (Q6_K)
	vTmp1    v = 26 // scratch of the SMULL path
	vTmp2    v = 27
)

type gen struct {
	text  strings.Builder
	stubs strings.Builder
	sdot  bool // the dot-product extension is there
}

func (g *gen) op(format string, args ...any) {
	fmt.Fprintf(&g.text, "\t"+format+"\n", args...)
}

func (g *gen) label(name string) { fmt.Fprintf(&g.text, "%s:\n", name) }

// word writes one encoded instruction.
func (g *gen) word(w uint32, asm string, args ...any) {
	fmt.Fprintf(&g.text, "\tWORD $0x%08x // %s\n", w, fmt.Sprintf(asm, args...))
}

func dnm(base uint32, d, n, m v) uint32 { return base | uint32(m)<<16 | uint32(n)<<5 | uint32(d) }

// The encoded instructions (Arm A64: Advanced SIMD three same, three
// different, two-register misc, by element, across lanes).
func (g *gen) sdotV(d, n, m v) {
	g.word(dnm(0x4E809400, d, n, m), "sdot v%d.4s, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) smull(d, n, m v) {
	g.word(dnm(0x0E20C000, d, n, m), "smull v%d.8h, v%d.8b, v%d.8b", d, n, m)
}
func (g *gen) smull2(d, n, m v) {
	g.word(dnm(0x4E20C000, d, n, m), "smull2 v%d.8h, v%d.16b, v%d.16b", d, n, m)
}
func (g *gen) saddlp(d, n v) { g.word(dnm(0x4E602800, d, n, 0), "saddlp v%d.4s, v%d.8h", d, n) }
func (g *gen) addp(d, n, m v) {
	g.word(dnm(0x4EA0BC00, d, n, m), "addp v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) add(d, n, m v) { g.word(dnm(0x4EA08400, d, n, m), "add v%d.4s, v%d.4s, v%d.4s", d, n, m) }
func (g *gen) scvtf(d, n v)  { g.word(dnm(0x4E21D800, d, n, 0), "scvtf v%d.4s, v%d.4s", d, n) }
func (g *gen) fadd(d, n, m v) {
	g.word(dnm(0x4E20D400, d, n, m), "fadd v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) faddp(d, n, m v) {
	g.word(dnm(0x6E20D400, d, n, m), "faddp v%d.4s, v%d.4s, v%d.4s", d, n, m)
}

// faddpScalar: s_d = n[0] + n[1].
func (g *gen) faddpScalar(d, n v) { g.word(dnm(0x7E30D800, d, n, 0), "faddp s%d, v%d.2s", d, n) }

// fmulLane0: d = n · m[0] (m < 16).
func (g *gen) fmulLane0(d, n, m v) {
	if m >= 16 {
		log.Fatalf("fmul by element: v%d is out of reach", m)
	}
	g.word(dnm(0x4F809000, d, n, m), "fmul v%d.4s, v%d.4s, v%d.s[0]", d, n, m)
}
func (g *gen) fmla(d, n, m v) {
	g.word(dnm(0x4E20CC00, d, n, m), "fmla v%d.4s, v%d.4s, v%d.4s", d, n, m)
}
func (g *gen) fcvtl(d, n v)  { g.word(dnm(0x0E217800, d, n, 0), "fcvtl v%d.4s, v%d.4h", d, n) }
func (g *gen) fcvtl2(d, n v) { g.word(dnm(0x4E217800, d, n, 0), "fcvtl2 v%d.4s, v%d.8h", d, n) }
func (g *gen) zip1h(d, n, m v) {
	g.word(dnm(0x4E403800, d, n, m), "zip1 v%d.8h, v%d.8h, v%d.8h", d, n, m)
}
func (g *gen) zip2h(d, n, m v) {
	g.word(dnm(0x4E407800, d, n, m), "zip2 v%d.8h, v%d.8h, v%d.8h", d, n, m)
}

// The instructions the Go assembler knows.
func (g *gen) zero(d v)            { g.op("VEOR V%d.B16, V%d.B16, V%d.B16", d, d, d) }
func (g *gen) and(d, n, m v)       { g.op("VAND V%d.B16, V%d.B16, V%d.B16", m, n, d) }
func (g *gen) orr(d, n, m v)       { g.op("VORR V%d.B16, V%d.B16, V%d.B16", m, n, d) }
func (g *gen) subB(d, n, m v)      { g.op("VSUB V%d.B16, V%d.B16, V%d.B16", m, n, d) }
func (g *gen) ushrB(d, n v, s int) { g.op("VUSHR $%d, V%d.B16, V%d.B16", s, n, d) }
func (g *gen) shlB(d, n v, s int)  { g.op("VSHL $%d, V%d.B16, V%d.B16", s, n, d) }
func (g *gen) tbl(d, table, idx v) { g.op("VTBL V%d.B16, [V%d.B16], V%d.B16", idx, table, d) }
func (g *gen) movi(d v, b int)     { g.op("VMOVI $%d, V%d.B16", b, d) }

// load loads len(regs) consecutive 16-byte registers from (r), moving r
// past them when post is set.
func (g *gen) load(r string, post bool, regs ...v) {
	names := make([]string, len(regs))
	for i, x := range regs {
		names[i] = fmt.Sprintf("V%d.B16", x)
	}
	if post {
		g.op("VLD1.P %d(%s), [%s]", 16*len(regs), r, strings.Join(names, ", "))
	} else {
		g.op("VLD1 (%s), [%s]", r, strings.Join(names, ", "))
	}
}

// dot adds to acc's four int32 lanes the sums of four products of a's and
// b's signed bytes: SDOT, or its ARMv8.0 spelling.
func (g *gen) dot(acc, a, b v) {
	if g.sdot {
		g.sdotV(acc, a, b)
		return
	}
	g.smull(vTmp1, a, b)
	g.smull2(vTmp2, a, b)
	g.saddlp(vTmp1, vTmp1)
	g.saddlp(vTmp2, vTmp2)
	g.addp(vTmp1, vTmp1, vTmp2)
	g.add(acc, acc, vTmp1)
}

func (g *gen) suffix() string {
	if g.sdot {
		return "SDOT"
	}
	return "NEON"
}

func (g *gen) function(name, goSig, frame, doc string) {
	fmt.Fprintf(&g.stubs, "\n// %s\n//\n//go:noescape\nfunc %s%s\n", doc, name, goSig)
	fmt.Fprintf(&g.text, "\n// func %s%s\nTEXT ·%s(SB), NOSPLIT, %s\n", name, goSig, name, frame)
}

const kernelSig = "(w *byte, x *byte, stride int, nb int, out *float32)"

// blockDot: the dot products of a row of 32-value blocks (a float16 scale
// first, then size−2 bytes of weights) with 1 or 4 tokens of q8 blocks,
// token t's at x + t·stride. load puts the block's 32 weights as signed
// bytes into V2 (values 0–15) and V3 (16–31) from the weights at R6.
// Lane accumulators as the twin's lanes: token t's V(16+2t) holds lanes
// 0–3, V(17+2t) lanes 4–7.
func (g *gen) blockDot(typ string, size, tokens int, setup func(), load func()) {
	name := fmt.Sprintf("dot%sx%d%s", typ, tokens, g.suffix())
	g.function(name, kernelSig, "$0-40", fmt.Sprintf("%s: %s · %d token(s) of q8 blocks.", name, typ, tokens))
	g.op("MOVD w+0(FP), R0")
	g.op("MOVD x+8(FP), R1")
	g.op("MOVD stride+16(FP), R2")
	g.op("MOVD nb+24(FP), R3")
	g.op("MOVD out+32(FP), R4")
	setup()
	for t := range tokens {
		g.zero(v(16 + 2*t))
		g.zero(v(17 + 2*t))
	}
	g.op("CBZ R3, %sdone", name)
	g.label(name + "loop")
	g.op("MOVHU (R0), R5")
	g.op("FMOVS R5, F0")
	g.op("FCVTHS F0, F0") // the weights' scale
	g.op("ADD $2, R0, R6")
	load()
	g.op("MOVD R1, R7")
	for t := range tokens {
		if t > 0 {
			g.op("ADD R2, R7, R7")
		}
		g.op("FMOVS (R7), F1")
		g.op("FMULS F0, F1, F1") // dw·dx, as the twin's f16(blk)*xb.d
		g.op("ADD $8, R7, R8")
		g.load("R8", false, 4, 5)
		g.zero(6)
		g.zero(7)
		g.dot(6, 2, 4)
		g.dot(7, 3, 5)
		g.scvtf(6, 6)
		g.scvtf(7, 7)
		g.fmulLane0(6, 6, 1)
		g.fmulLane0(7, 7, 1)
		g.fadd(v(16+2*t), v(16+2*t), 6)
		g.fadd(v(17+2*t), v(17+2*t), 7)
	}
	g.op("ADD $%d, R0, R0", size)
	g.op("ADD $%d, R1, R1", q8BlockSize)
	g.op("SUBS $1, R3, R3")
	g.op("BNE %sloop", name)
	g.label(name + "done")
	for t := range tokens {
		// ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), the twin's lanes.sum.
		g.fadd(6, v(16+2*t), v(17+2*t))
		g.faddp(6, 6, 6)
		g.faddpScalar(6, 6)
		g.op("FMOVS F6, %d(R4)", 4*t)
	}
	g.op("RET")
}

// reduce4 writes to d the lane sums of a, b, c and e: [Σa, Σb, Σc, Σe].
func (g *gen) reduce4(d, a, b, c, e, t1, t2 v) {
	g.addp(t1, a, b)
	g.addp(t2, c, e)
	g.addp(d, t1, t2)
}

const sumsSig = "(w *byte, x *byte, nb int, sums *int32)"

// q4KSums writes, for each of nb Q4_K super-blocks, the eight sums of its
// 32-value sub-blocks' levels times the activations.
func (g *gen) q4KSums() {
	name := "q4KSums" + g.suffix()
	g.function(name, sumsSig, "$0-32", name+": eight sub-block sums per Q4_K super-block against q8_K activations.")
	g.op("MOVD w+0(FP), R0")
	g.op("MOVD x+8(FP), R1")
	g.op("MOVD nb+16(FP), R3")
	g.op("MOVD sums+24(FP), R4")
	g.movi(vNibbles, 15)
	g.op("CBZ R3, %sdone", name)
	g.label(name + "loop")
	g.op("ADD $16, R0, R6")
	g.op("ADD $4, R1, R7")
	for j := range 4 {
		lo, hi := v(16+2*j), v(17+2*j)
		g.load("R6", true, 0, 1)
		g.load("R7", true, 2, 3, 4, 5)
		g.and(6, 0, vNibbles)
		g.and(7, 1, vNibbles)
		g.ushrB(8, 0, 4)
		g.ushrB(9, 1, 4)
		g.zero(lo)
		g.zero(hi)
		g.dot(lo, 6, 2)
		g.dot(lo, 7, 3)
		g.dot(hi, 8, 4)
		g.dot(hi, 9, 5)
	}
	g.reduce4(12, 16, 17, 18, 19, 10, 11)
	g.reduce4(13, 20, 21, 22, 23, 10, 11)
	g.op("VST1.P [V12.S4, V13.S4], 32(R4)")
	g.op("ADD $144, R0, R0")
	g.op("ADD $%d, R1, R1", q8KBlockSize)
	g.op("SUBS $1, R3, R3")
	g.op("BNE %sloop", name)
	g.label(name + "done")
	g.op("RET")
}

// q6KSums writes, for each of nb Q6_K super-blocks, the sixteen sums of
// its 16-value groups' levels (q−32) times the activations, in the order
// of the group scales.
func (g *gen) q6KSums() {
	name := "q6KSums" + g.suffix()
	g.function(name, sumsSig, "$0-32", name+": sixteen group sums per Q6_K super-block against q8_K activations.")
	g.op("MOVD w+0(FP), R0")
	g.op("MOVD x+8(FP), R1")
	g.op("MOVD nb+16(FP), R3")
	g.op("MOVD sums+24(FP), R4")
	g.movi(vNibbles, 15)
	g.movi(vConst, 0x30)
	g.movi(vConst2, 32)
	g.op("CBZ R3, %sdone", name)
	g.label(name + "loop")
	g.op("MOVD R0, R6")      // ql
	g.op("ADD $128, R0, R8") // qh
	g.op("ADD $4, R1, R7")   // the activations
	for range 2 {            // the two halves of 128 values
		g.load("R6", true, 0, 1, 2, 3) // ql[o:o+32] in V0, V1; ql[o+32:o+64] in V2, V3
		g.load("R8", true, 4, 5)       // qh[h:h+32]
		g.load("R7", true, 6, 7, 8, 9)
		g.load("R7", true, 10, 11, 12, 13)
		for acc := v(16); acc < 24; acc++ {
			g.zero(acc)
		}
		for i := range v(2) { // values l = 16i … 16i+15 of each quarter
			a, b, h := 0+i, 2+i, 4+i
			// q1 = ql[o+l]&15 | (qh[h+l]&3)<<4
			g.and(14, a, vNibbles)
			g.shlB(15, h, 4)
			g.level(14, 15)
			g.dot(16+i, 14, 6+i)
			// q2 = ql[o+l+32]&15 | (qh[h+l]>>2&3)<<4
			g.and(14, b, vNibbles)
			g.shlB(15, h, 2)
			g.level(14, 15)
			g.dot(18+i, 14, 8+i)
			// q3 = ql[o+l]>>4 | (qh[h+l]>>4&3)<<4
			g.ushrB(14, a, 4)
			g.level(14, h)
			g.dot(20+i, 14, 10+i)
			// q4 = ql[o+l+32]>>4 | (qh[h+l]>>6)<<4
			g.ushrB(14, b, 4)
			g.ushrB(15, h, 2)
			g.level(14, 15)
			g.dot(22+i, 14, 12+i)
		}
		g.reduce4(24, 16, 17, 18, 19, 14, 15)
		g.reduce4(25, 20, 21, 22, 23, 14, 15)
		g.op("VST1.P [V24.S4, V25.S4], 32(R4)")
	}
	g.op("ADD $210, R0, R0")
	g.op("ADD $%d, R1, R1", q8KBlockSize)
	g.op("SUBS $1, R3, R3")
	g.op("BNE %sloop", name)
	g.label(name + "done")
	g.op("RET")
}

// level makes lo's bytes (the low four bits) into the signed level
// (lo | hi&0x30) − 32.
func (g *gen) level(lo, hi v) {
	g.and(15, hi, vConst)
	g.orr(lo, lo, 15)
	g.subB(lo, lo, vConst2)
}

// floatDot: the dot product of n (a multiple of 8) weights with float32
// activations, two vectors of four lanes fused-multiply-added. load puts
// the next eight weights as float32 into V1 and V2 (from R0, moving it).
func (g *gen) floatDot(name, weights string, load func()) {
	g.function(name, "(w *"+weights+", x *float32, n int) float32", "$0-28", name+": a row of "+weights+" weights · float32 activations (n a multiple of 8).")
	g.op("MOVD w+0(FP), R0")
	g.op("MOVD x+8(FP), R1")
	g.op("MOVD n+16(FP), R2")
	g.zero(16)
	g.zero(17)
	g.zero(31)
	g.op("CBZ R2, %sdone", name)
	g.label(name + "loop")
	load()
	g.load("R1", true, 3, 4)
	g.fmla(16, 1, 3)
	g.fmla(17, 2, 4)
	g.op("SUBS $8, R2, R2")
	g.op("BNE %sloop", name)
	g.label(name + "done")
	g.fadd(16, 16, 17)
	g.faddp(16, 16, 16)
	g.faddpScalar(0, 16)
	g.op("FMOVS F0, ret+24(FP)")
	g.op("RET")
}

// halfDecode widens n (a multiple of 8) 16-bit floats to float32.
func (g *gen) halfDecode(name string, widen func()) {
	g.function(name, "(dst *float32, src *byte, n int)", "$0-24", name+": n (a multiple of 8) 16-bit floats widened to float32.")
	g.op("MOVD dst+0(FP), R0")
	g.op("MOVD src+8(FP), R1")
	g.op("MOVD n+16(FP), R2")
	g.zero(31)
	g.op("CBZ R2, %sdone", name)
	g.label(name + "loop")
	g.load("R1", true, 0)
	widen()
	g.op("VST1.P [V1.S4, V2.S4], 32(R0)")
	g.op("SUBS $8, R2, R2")
	g.op("BNE %sloop", name)
	g.label(name + "done")
	g.op("RET")
}

func main() {
	out := flag.String("out", "dot_arm64.s", "assembly file to write")
	stubs := flag.String("stubs", "dot_stubs_arm64.go", "Go declarations to write")
	pkg := flag.String("pkg", "cpu", "package of the declarations")
	flag.Parse()

	g := &gen{}
	iq4nl := []int8{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
	g.text.WriteString("// Code generated by runtime/cpu/asm/neon. DO NOT EDIT.\n\n//go:build arm64\n\n#include \"textflag.h\"\n\n")
	fmt.Fprintf(&g.stubs, "// Code generated by runtime/cpu/asm/neon. DO NOT EDIT.\n\n//go:build arm64\n\npackage %s\n", *pkg)
	var grid [2]uint64
	for i, x := range iq4nl {
		grid[i/8] |= uint64(uint8(x)) << (8 * (i % 8))
	}
	fmt.Fprintf(&g.text, "// The IQ4_NL grid (kvalues_iq4nl) as signed bytes.\nDATA iq4nlGrid<>+0(SB)/8, $0x%016x\nDATA iq4nlGrid<>+8(SB)/8, $0x%016x\nGLOBL iq4nlGrid<>(SB), RODATA|NOPTR, $16\n", grid[0], grid[1])

	for _, sdot := range []bool{true, false} {
		g.sdot = sdot
		for _, tokens := range []int{1, 4} {
			g.blockDot("Q8_0", 34, tokens, func() {}, func() { g.load("R6", false, 2, 3) })
			g.blockDot("Q4_0", 18, tokens, func() {
				g.movi(vNibbles, 15)
				g.movi(vConst, 8)
			}, func() {
				g.load("R6", false, 8)
				g.and(2, 8, vNibbles)
				g.ushrB(3, 8, 4)
				g.subB(2, 2, vConst)
				g.subB(3, 3, vConst)
			})
			g.blockDot("IQ4_NL", 18, tokens, func() {
				g.movi(vNibbles, 15)
				g.op("MOVD $iq4nlGrid<>(SB), R9")
				g.load("R9", false, vConst)
			}, func() {
				g.load("R6", false, 8)
				g.and(9, 8, vNibbles)
				g.ushrB(10, 8, 4)
				g.tbl(2, vConst, 9)
				g.tbl(3, vConst, 10)
			})
		}
		g.q4KSums()
		g.q6KSums()
	}
	widenF16 := func() { g.fcvtl(1, 0); g.fcvtl2(2, 0) }
	widenBF16 := func() { g.zip1h(1, 31, 0); g.zip2h(2, 31, 0) } // bf16 << 16: a zero half below each
	halves := func(widen func()) func() {
		return func() { g.load("R0", true, 0); widen() }
	}
	g.floatDot("dotF16NEON", "byte", halves(widenF16))
	g.floatDot("dotBF16NEON", "byte", halves(widenBF16))
	g.halfDecode("decodeF16NEON", widenF16)
	g.halfDecode("decodeBF16NEON", widenBF16)
	g.floatDot("dotF32NEON", "float32", func() { g.load("R0", true, 1, 2) })

	src, err := format.Source([]byte(g.stubs.String()))
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, bytes.TrimLeft([]byte(g.text.String()), "\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*stubs, src, 0o644); err != nil {
		log.Fatal(err)
	}
}
