package sim

import (
	"encoding/binary"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/x448/float16"

	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// run launches the PTX kernel "t" (parameters: out, a u64 pointer) on
// grid × block threads and returns out's n 32-bit words.
func run(t *testing.T, body string, grid, block driver.Dim3, n int) ([]uint32, error) {
	t.Helper()
	src := ".version 7.8\n.target sm_75\n.address_size 64\n.visible .entry t(.param .u64 t_param_0)\n{\n" + body + "\n}\n"
	d := New()
	m, err := d.Load(src)
	if err != nil {
		t.Fatalf("load: %v\n%s", err, src)
	}
	k, err := m.Kernel("t")
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.Alloc(int64(4 * n))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Launch(grid, block, 0, out); err != nil {
		return nil, err
	}
	b := make([]byte, 4*n)
	if err := d.CopyOut(b, out); err != nil {
		t.Fatal(err)
	}
	w := make([]uint32, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w, nil
}

const regs = `.reg .pred %p<8>; .reg .b16 %rs<8>; .reg .b32 %r<32>; .reg .f32 %f<16>; .reg .b64 %rd<16>;
	ld.param.u64 %rd1, [t_param_0]; cvta.to.global.u64 %rd1, %rd1;`

func f32(x float32) uint32 { return math.Float32bits(x) }

// TestInstructions checks single instructions against the results the
// PTX ISA defines for them, edge cases included (signed division and
// shifts, shift amounts past the width, NaN in min and in ordered and
// unordered comparisons, the rounding modes of cvt, saturation).
func TestInstructions(t *testing.T) {
	for _, c := range []struct {
		name, code string
		want       uint32
	}{
		{"mul.wide.s32", "mov.u32 %r1, -3; mul.wide.s32 %rd2, %r1, 5; cvt.u32.u64 %r2, %rd2; shr.u64 %rd3, %rd2, 32; cvt.u32.u64 %r3, %rd3; xor.b32 %r2, %r2, %r3;", uint32(0xfffffff1 ^ 0xffffffff)},
		{"mul.hi.u32", "mov.u32 %r1, 0x80000001; mul.hi.u32 %r2, %r1, 6;", 3},
		{"mul.hi.s32", "mov.u32 %r1, -2; mul.hi.s32 %r2, %r1, 3;", 0xffffffff},
		{"mad.lo.s32", "mov.u32 %r1, 7; mad.lo.s32 %r2, %r1, -3, 100;", 79},
		{"div.s32 truncates", "mov.u32 %r1, -7; div.s32 %r2, %r1, 2;", uint32(0xfffffffd)},
		{"rem.s32 takes the dividend's sign", "mov.u32 %r1, -7; rem.s32 %r2, %r1, 2;", 0xffffffff},
		{"div.u32", "mov.u32 %r1, 0xfffffff9; div.u32 %r2, %r1, 2;", 0x7ffffffc},
		{"shr.s32 fills the sign", "mov.u32 %r1, -8; shr.s32 %r2, %r1, 1;", uint32(0xfffffffc)},
		{"shr.s32 past the width", "mov.u32 %r1, -8; shr.s32 %r2, %r1, 40;", 0xffffffff},
		{"shr.u32 past the width", "mov.u32 %r1, -8; shr.u32 %r2, %r1, 32;", 0},
		{"shl.b32 past the width", "mov.u32 %r1, 1; shl.b32 %r2, %r1, 33;", 0},
		{"min.s32", "mov.u32 %r1, -1; min.s32 %r2, %r1, 1;", 0xffffffff},
		{"min.u32", "mov.u32 %r1, -1; min.u32 %r2, %r1, 1;", 1},
		{"bfe.u32", "mov.u32 %r1, 0xabcd1234; bfe.u32 %r2, %r1, 8, 12;", 0xd12},
		{"bfe.s32", "mov.u32 %r1, 0x00000f00; bfe.s32 %r2, %r1, 8, 4;", 0xffffffff},
		{"bfi.b32", "mov.u32 %r1, 0xffffffff; mov.u32 %r3, 0x5; bfi.b32 %r2, %r3, %r1, 4, 8;", 0xfffff05f},
		{"bfi.b32 past the width", "mov.u32 %r1, 0; mov.u32 %r3, 0xff; bfi.b32 %r2, %r3, %r1, 28, 8;", 0xf0000000},
		{"bfi.b32 len 0", "mov.u32 %r1, 0x1234; mov.u32 %r3, 0xff; bfi.b32 %r2, %r3, %r1, 0, 0;", 0x1234},
		// prmt over a = 0x44332211 (bytes 0–3) and b = 0x88776655 (bytes
		// 4–7): selector 0x3210 is a itself, 0x7654 is b, 0x0123 reverses
		// a, and 0x000f spreads byte 7's sign (0x88: set) over byte 0 and
		// copies byte 0 into the others.
		{"prmt a", "mov.u32 %r1, 0x44332211; mov.u32 %r3, 0x88776655; prmt.b32 %r2, %r1, %r3, 0x3210;", 0x44332211},
		{"prmt b", "mov.u32 %r1, 0x44332211; mov.u32 %r3, 0x88776655; prmt.b32 %r2, %r1, %r3, 0x7654;", 0x88776655},
		{"prmt reversed", "mov.u32 %r1, 0x44332211; mov.u32 %r3, 0x88776655; prmt.b32 %r2, %r1, %r3, 0x0123;", 0x11223344},
		{"prmt sign", "mov.u32 %r1, 0x44332211; mov.u32 %r3, 0x88776655; prmt.b32 %r2, %r1, %r3, 0x000f;", 0x111111ff},
		// dp4a: bytes (−1, 2, −128, 127)·(3, −4, 5, 127) + 10 = −3 − 8 − 640 + 16129 + 10.
		{"dp4a.s32.s32", "mov.u32 %r1, 0x7f8002ff; mov.u32 %r3, 0x7f05fc03; dp4a.s32.s32 %r2, %r1, %r3, 10;", 15488},
		// unsigned a: (255, 2, 128, 127)·(3, −4, 5, 127) = 765 − 8 + 640 + 16129.
		{"dp4a.u32.s32", "mov.u32 %r1, 0x7f8002ff; mov.u32 %r3, 0x7f05fc03; dp4a.u32.s32 %r2, %r1, %r3, 0;", 17526},
		// a negative sum wraps to its two's complement.
		{"dp4a negative", "mov.u32 %r1, 0x000000ff; mov.u32 %r3, 0x00000001; dp4a.s32.s32 %r2, %r1, %r3, 0;", 0xffffffff},
		{"popc", "mov.u32 %r1, 0xf0f0f0f1; popc.b32 %r2, %r1;", 17},
		{"clz", "mov.u32 %r1, 0x00010000; clz.b32 %r2, %r1;", 15},
		{"brev", "mov.u32 %r1, 1; brev.b32 %r2, %r1;", 0x80000000},
		{"selp", "mov.u32 %r1, 3; setp.gt.s32 %p1, %r1, 2; selp.b32 %r2, 10, 20, %p1;", 10},
		{"setp.and with a negated predicate", "mov.u32 %r1, 3; setp.ne.s32 %p2, %r1, 0; setp.gt.and.s32 %p1, %r1, 2, !%p2; selp.b32 %r2, 1, 0, %p1;", 0},
		{"setp.lo is unsigned", "mov.u32 %r1, -1; setp.lo.s32 %p1, %r1, 1; selp.b32 %r2, 1, 0, %p1;", 0},
		{"div.rn.f32", "mov.f32 %f1, 0f3F800000; div.rn.f32 %f2, %f1, 0f40400000; mov.b32 %r2, %f2;", f32(float32(1) / 3)},
		{"fma.rn.f32 rounds once", "mov.f32 %f1, 0f3F800001; fma.rn.f32 %f2, %f1, %f1, 0fBF800002; mov.b32 %r2, %f2;", f32(float32(math.FMA(float64(math.Float32frombits(0x3F800001)), float64(math.Float32frombits(0x3F800001)), -float64(math.Float32frombits(0x3F800002)))))},
		{"min.f32 with NaN gives the number", "mov.f32 %f1, 0f7FC00000; min.f32 %f2, %f1, 0f40000000; mov.b32 %r2, %f2;", f32(2)},
		{"setp.lt.f32 with NaN is false", "mov.f32 %f1, 0f7FC00000; setp.lt.f32 %p1, %f1, 0f40000000; selp.b32 %r2, 1, 0, %p1;", 0},
		{"setp.ltu.f32 with NaN is true", "mov.f32 %f1, 0f7FC00000; setp.ltu.f32 %p1, %f1, 0f40000000; selp.b32 %r2, 1, 0, %p1;", 1},
		{"cvt.rzi.s32.f32", "mov.f32 %f1, 0fC02CCCCD; cvt.rzi.s32.f32 %r2, %f1;", uint32(0xfffffffe)},
		{"cvt.rni.s32.f32 to even", "mov.f32 %f1, 0f40200000; cvt.rni.s32.f32 %r2, %f1;", 2},
		{"cvt.rmi.s32.f32", "mov.f32 %f1, 0fC0200000; cvt.rmi.s32.f32 %r2, %f1;", uint32(0xfffffffd)},
		{"cvt.rzi.u8.f32 saturates", "mov.f32 %f1, 0f43960000; cvt.rzi.u8.f32 %r2, %f1;", 255},
		{"cvt.rzi.s32.f32 of NaN", "mov.f32 %f1, 0f7FC00000; cvt.rzi.s32.f32 %r2, %f1;", 0},
		{"cvt.rn.f32.s32", "mov.u32 %r1, 16777217; cvt.rn.f32.s32 %f2, %r1; mov.b32 %r2, %f2;", f32(16777216)},
		{"cvt.f32.f16", "mov.b16 %rs1, 0x3C01; cvt.f32.f16 %f2, %rs1; mov.b32 %r2, %f2;", f32(float16.Frombits(0x3C01).Float32())},
		{"cvt.rn.f16.f32", "mov.f32 %f1, 0f3DCCCCCD; cvt.rn.f16.f32 %rs1, %f1; cvt.u32.u16 %r2, %rs1;", uint32(float16.Fromfloat32(0.1).Bits())},
		{"cvt.rz.f16.f32", "mov.f32 %f1, 0f3F7FFFFF; cvt.rz.f16.f32 %rs1, %f1; cvt.u32.u16 %r2, %rs1;", 0x3BFF},
		{"cvt.s64.s32 and back", "mov.u32 %r1, -5; cvt.s64.s32 %rd2, %r1; shr.s64 %rd2, %rd2, 1; cvt.u32.u64 %r2, %rd2;", uint32(0xfffffffd)},
		{"ld.global.s8 sign-extends", "mov.u32 %r3, 0xff; st.global.u8 [%rd1+4], %r3; ld.global.s8 %r2, [%rd1+4];", 0xffffffff},
		{"mov.b32 packs and unpacks", "mov.u32 %r1, 0x12345678; mov.b32 {%rs1, %rs2}, %r1; mov.b32 %r2, {%rs2, %rs1};", 0x56781234},
		{"ex2.approx.f32", "ex2.approx.f32 %f2, 0f3F000000; mov.b32 %r2, %f2;", f32(float32(math.Sqrt2))},
		{"sqrt.rn.f32", "sqrt.rn.f32 %f2, 0f40000000; mov.b32 %r2, %f2;", f32(float32(math.Sqrt2))},
		{"neg.f32 of NaN stays NaN", "mov.f32 %f1, 0f7FC00000; neg.f32 %f2, %f1; setp.nan.f32 %p1, %f2, %f2; selp.b32 %r2, 1, 0, %p1;", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := run(t, regs+c.code+" st.global.u32 [%rd1], %r2; ret;", driver.Dim3{X: 1}, driver.Dim3{X: 1}, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != c.want {
				t.Errorf("%#x, want %#x", got[0], c.want)
			}
		})
	}
}

// TestShuffle: shfl.sync in each mode, against the PTX ISA's definition
// of the source lane and the predicate (clamp c = 0x1f for down, bfly
// and idx, 0 for up).
func TestShuffle(t *testing.T) {
	for _, c := range []struct {
		mode string
		b, c uint32
	}{{"bfly", 5, 0x1f}, {"down", 3, 0x1f}, {"up", 3, 0}, {"idx", 7, 0x1f}, {"bfly", 1, 0x81f}, {"idx", 9, 0x181f}} {
		t.Run(c.mode, func(t *testing.T) {
			body := regs + `mov.u32 %r1, %laneid; mul.lo.u32 %r3, %r1, 10;
	shfl.sync.` + c.mode + `.b32 %r2|%p1, %r3, ` + itoa(c.b) + `, ` + itoa(c.c) + `, -1;
	selp.b32 %r4, 1, 0, %p1; shl.b32 %r4, %r4, 16; or.b32 %r2, %r2, %r4;
	mul.wide.u32 %rd2, %r1, 4; add.s64 %rd2, %rd1, %rd2; st.global.u32 [%rd2], %r2; ret;`
			got, err := run(t, body, driver.Dim3{X: 1}, driver.Dim3{X: 32}, 32)
			if err != nil {
				t.Fatal(err)
			}
			for lane := uint32(0); lane < 32; lane++ {
				segmask := (c.c >> 8) & 0x1f
				maxLane := (lane & segmask) | (c.c & 0x1f &^ segmask)
				minLane := lane & segmask
				var j uint32
				var ok bool
				switch c.mode {
				case "up":
					j = lane - c.b
					ok = int32(j) >= int32(maxLane)
				case "down":
					j = lane + c.b
					ok = j <= maxLane
				case "bfly":
					j = lane ^ c.b
					ok = j <= maxLane
				case "idx":
					j = minLane | (c.b & 0x1f &^ segmask)
					ok = j <= maxLane
				}
				if !ok {
					j = lane
				}
				want := j * 10
				if ok {
					want |= 1 << 16
				}
				if got[lane] != want {
					t.Errorf("lane %d: %#x, want %#x", lane, got[lane], want)
				}
			}
		})
	}
}

func itoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// TestBarrier: a block of 96 threads sums its thread indices through
// shared memory; bar.sync must hold every thread until all have written.
func TestBarrier(t *testing.T) {
	body := regs + `.shared .align 4 .b8 s[384];
	mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 2; mov.u32 %r3, s; add.s32 %r4, %r3, %r2;
	st.shared.u32 [%r4], %r1;
	bar.sync 0;
	setp.ne.s32 %p1, %r1, 0; @%p1 bra DONE;
	mov.u32 %r5, 0; mov.u32 %r6, 0;
LOOP:
	shl.b32 %r7, %r6, 2; add.s32 %r7, %r3, %r7; ld.shared.u32 %r8, [%r7]; add.s32 %r5, %r5, %r8;
	add.s32 %r6, %r6, 1; setp.lt.u32 %p2, %r6, 96; @%p2 bra LOOP;
	st.global.u32 [%rd1], %r5;
DONE:
	ret;`
	got, err := run(t, body, driver.Dim3{X: 3}, driver.Dim3{X: 96}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 95*96/2 {
		t.Errorf("sum %d, want %d", got[0], 95*96/2)
	}
}

// TestAtomics: atom and red against the PTX ISA's definitions, and their
// atomicity: 4 blocks × 64 threads each add 1 to one word, and each
// thread's atom.add returns a distinct old value.
func TestAtomics(t *testing.T) {
	for _, c := range []struct {
		name, code string
		want       [2]uint32 // the old value returned, the word after
	}{
		{"atom.add.u32", "mov.u32 %r3, 5; st.global.u32 [%rd1+4], %r3; atom.global.add.u32 %r2, [%rd1+4], 7;", [2]uint32{5, 12}},
		{"atom.add.f32", "mov.b32 %r3, 0f3FC00000; st.global.u32 [%rd1+4], %r3; atom.global.add.f32 %f2, [%rd1+4], 0f40100000; mov.b32 %r2, %f2;",
			[2]uint32{f32(1.5), f32(3.75)}},
		{"atom.min.s32", "mov.u32 %r3, -3; st.global.u32 [%rd1+4], %r3; atom.global.min.s32 %r2, [%rd1+4], 2;", [2]uint32{0xfffffffd, 0xfffffffd}},
		{"atom.max.u32", "mov.u32 %r3, 0xfffffffd; st.global.u32 [%rd1+4], %r3; atom.global.max.u32 %r2, [%rd1+4], 2;", [2]uint32{0xfffffffd, 0xfffffffd}},
		{"atom.cas.b32 equal", "mov.u32 %r3, 9; st.global.u32 [%rd1+4], %r3; atom.global.cas.b32 %r2, [%rd1+4], 9, 4;", [2]uint32{9, 4}},
		{"atom.cas.b32 unequal", "mov.u32 %r3, 9; st.global.u32 [%rd1+4], %r3; atom.global.cas.b32 %r2, [%rd1+4], 8, 4;", [2]uint32{9, 9}},
		{"atom.exch.b32", "mov.u32 %r3, 9; st.global.u32 [%rd1+4], %r3; atom.global.exch.b32 %r2, [%rd1+4], 1;", [2]uint32{9, 1}},
		{"atom.inc.u32 wraps at b", "mov.u32 %r3, 3; st.global.u32 [%rd1+4], %r3; atom.global.inc.u32 %r2, [%rd1+4], 3;", [2]uint32{3, 0}},
		{"atom.dec.u32 from 0", "mov.u32 %r3, 0; st.global.u32 [%rd1+4], %r3; atom.global.dec.u32 %r2, [%rd1+4], 6;", [2]uint32{0, 6}},
		{"red.add.u32", "mov.u32 %r3, 40; st.global.u32 [%rd1+4], %r3; red.global.add.u32 [%rd1+4], 2; mov.u32 %r2, 0;", [2]uint32{0, 42}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := run(t, regs+c.code+" st.global.u32 [%rd1], %r2; ret;", driver.Dim3{X: 1}, driver.Dim3{X: 1}, 2)
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != c.want[0] || got[1] != c.want[1] {
				t.Errorf("old %#x, then %#x; want %#x, %#x", got[0], got[1], c.want[0], c.want[1])
			}
		})
	}
	// 256 threads: the counter reaches 256 and every old value 0…255
	// is returned once (marked in a bitmap of 256 words).
	body := regs + `atom.global.add.u32 %r2, [%rd1], 1;
	cvt.u64.u32 %rd2, %r2; shl.b64 %rd2, %rd2, 2; add.s64 %rd2, %rd1, %rd2;
	atom.global.add.u32 %r3, [%rd2+4], 1; ret;`
	got, err := run(t, body, driver.Dim3{X: 4}, driver.Dim3{X: 64}, 257)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 256 {
		t.Errorf("counter %d, want 256", got[0])
	}
	for i, n := range got[1:] {
		if n != 1 {
			t.Fatalf("old value %d returned %d times", i, n)
		}
	}
}

// TestFaults: an access outside every allocation, and threads waiting at
// different sync points, fail naming the thread and the PTX line.
func TestFaults(t *testing.T) {
	_, err := run(t, regs+"ld.global.u32 %r2, [%rd1+4096]; ret;", driver.Dim3{X: 1}, driver.Dim3{X: 1}, 1)
	if err == nil || !strings.Contains(err.Error(), "outside every allocation") || !strings.Contains(err.Error(), "ptx line") {
		t.Errorf("out of bounds: %v", err)
	}
	body := regs + `mov.u32 %r1, %tid.x; setp.eq.s32 %p1, %r1, 0; @%p1 bra A;
	bar.sync 0; ret;
A:	shfl.sync.bfly.b32 %r2, %r1, 1, 31, -1; ret;`
	_, err = run(t, body, driver.Dim3{X: 1}, driver.Dim3{X: 32}, 1)
	if err == nil || !strings.Contains(err.Error(), "exited") && !strings.Contains(err.Error(), "different sync points") {
		t.Errorf("divergent sync: %v", err)
	}
}

// TestKernelsParse: every kernel of the committed PTX loads.
func TestKernelsParse(t *testing.T) {
	src, err := os.ReadFile("../kernels/kernels.ptx")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parse(string(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"add_f32", "rms_norm_f32", "linear_q4_0", "get_rows_q8_0", "flash_attn_f32", "rope_f32", "permute3_f32"} {
		if m.kernels[name] == nil {
			t.Errorf("no kernel %s", name)
		}
	}
}
