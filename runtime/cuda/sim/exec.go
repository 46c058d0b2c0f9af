package sim

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/x448/float16"

	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// thread states between sync points.
const (
	running = iota
	atBarrier
	atShuffle
	exited
)

type thread struct {
	regs  []uint64
	pc    int
	state int
	tid   [3]uint32
	lane  int
	local []byte
}

type block struct {
	k       *kernel
	dev     *Device
	ctaid   [3]uint32
	grid    driver.Dim3
	dim     driver.Dim3
	shared  []byte
	params  []byte
	threads []*thread
	last    *alloc // the allocation the last global access hit
}

// limit on the instructions one thread runs between two sync points: a
// kernel stuck in a loop fails instead of hanging the test.
const maxSteps = 1 << 30

// newBlock is a block's state for launches of sk with dim threads,
// reused from one block of the grid to the next by one worker.
func (sk *simKernel) newBlock(grid, dim driver.Dim3, dynShared int, params []byte) *block {
	k := sk.k
	bl := &block{k: k, dev: sk.dev, grid: grid, dim: dim, params: params, shared: make([]byte, k.sharedN+dynShared)}
	bx, by := int(max(dim.X, 1)), int(max(dim.Y, 1))
	for i := range dim.Count() {
		bl.threads = append(bl.threads, &thread{regs: make([]uint64, len(k.regs)), lane: i % 32,
			tid: [3]uint32{uint32(i % bx), uint32(i / bx % by), uint32(i / (bx * by))}, local: make([]byte, k.localN)})
	}
	return bl
}

// runBlock runs block number b of the grid on bl's state, cleared first:
// registers, shared and local memory start at zero in every block.
func (bl *block) runBlock(b int) error {
	k := bl.k
	gx, gy := int(max(bl.grid.X, 1)), int(max(bl.grid.Y, 1))
	bl.ctaid = [3]uint32{uint32(b % gx), uint32(b / gx % gy), uint32(b / (gx * gy))}
	clear(bl.shared)
	for _, t := range bl.threads {
		clear(t.regs)
		clear(t.local)
		t.pc, t.state = 0, running
	}
	n := len(bl.threads)
	for {
		for _, t := range bl.threads {
			if t.state == running {
				if err := bl.run(t); err != nil {
					return fmt.Errorf("cuda-sim: %s: block (%d,%d,%d) thread (%d,%d,%d): %w", k.name,
						bl.ctaid[0], bl.ctaid[1], bl.ctaid[2], t.tid[0], t.tid[1], t.tid[2], err)
				}
			}
		}
		done, progress := true, false
		for w := 0; w < n; w += 32 {
			warp := bl.threads[w:min(w+32, n)]
			ok, err := bl.shuffle(warp)
			if err != nil {
				return fmt.Errorf("cuda-sim: %s: block (%d,%d,%d) warp %d: %w", k.name, bl.ctaid[0], bl.ctaid[1], bl.ctaid[2], w/32, err)
			}
			progress = progress || ok
		}
		waiting := 0
		for _, t := range bl.threads {
			switch t.state {
			case atBarrier:
				waiting++
				done = false
			case atShuffle, running:
				done = false
			}
		}
		if done {
			return nil
		}
		if progress {
			continue
		}
		// Every live thread at a barrier: it opens.
		live := 0
		for _, t := range bl.threads {
			if t.state != exited {
				live++
			}
		}
		if waiting == live {
			for _, t := range bl.threads {
				if t.state == atBarrier {
					t.state = running
					t.pc++
				}
			}
			continue
		}
		return fmt.Errorf("cuda-sim: %s: block (%d,%d,%d): %w: threads wait at different sync points (%s)", k.name,
			bl.ctaid[0], bl.ctaid[1], bl.ctaid[2], errDeadlock, bl.where())
	}
}

// where lists the lines the waiting threads are at.
func (bl *block) where() string {
	seen := map[int]int{}
	for _, t := range bl.threads {
		if t.state == atBarrier || t.state == atShuffle {
			seen[bl.k.code[t.pc].line]++
		}
	}
	return fmt.Sprint(seen)
}

// shuffle performs a warp's shfl.sync once every live lane has reached
// it, and reports whether it did.
func (bl *block) shuffle(warp []*thread) (bool, error) {
	pc := -1
	for _, t := range warp {
		switch t.state {
		case running, atBarrier:
			return false, nil
		case atShuffle:
			if pc >= 0 && t.pc != pc {
				return false, fmt.Errorf("lanes at different shfl.sync (lines %d and %d)", bl.k.code[pc].line, bl.k.code[t.pc].line)
			}
			pc = t.pc
		}
	}
	if pc < 0 {
		return false, nil
	}
	in := &bl.k.code[pc]
	var vals [32]uint32
	var live [32]bool
	for _, t := range warp {
		if t.state == atShuffle {
			vals[t.lane] = uint32(bl.src(t, &in.args[1], tU32))
			live[t.lane] = true
		}
	}
	for _, t := range warp {
		if t.state != atShuffle {
			continue
		}
		b := uint32(bl.src(t, &in.args[2], tU32))
		c := uint32(bl.src(t, &in.args[3], tU32))
		mask := uint32(bl.src(t, &in.args[4], tU32))
		lane := uint32(t.lane)
		segmask := (c >> 8) & 0x1f
		maxLane := (lane & segmask) | (c & 0x1f &^ segmask)
		minLane := lane & segmask
		var j uint32
		var ok bool
		switch in.mode {
		case "up":
			j = lane - b
			ok = int32(j) >= int32(maxLane)
		case "down":
			j = lane + b
			ok = j <= maxLane
		case "bfly":
			j = lane ^ b
			ok = j <= maxLane
		case "idx":
			j = minLane | (b & 0x1f &^ segmask)
			ok = j <= maxLane
		default:
			return false, fmt.Errorf("line %d: shfl mode %q", in.line, in.mode)
		}
		if !ok {
			j = lane
		}
		if mask&(1<<lane) == 0 || mask&(1<<j) == 0 || !live[j] {
			return false, fmt.Errorf("line %d: lane %d reads lane %d, which is not in the member mask %#x or has exited", in.line, lane, j, mask)
		}
		d := in.args[0]
		t.regs[d.reg] = uint64(vals[j])
		if d.reg2 >= 0 {
			t.regs[d.reg2] = b2u(ok)
		}
		t.state = running
		t.pc++
	}
	return true, nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// run executes t until it reaches a sync point or exits.
func (bl *block) run(t *thread) error {
	code := bl.k.code
	for steps := 0; ; steps++ {
		if steps > maxSteps {
			return fmt.Errorf("more than %d instructions without a sync point", maxSteps)
		}
		if t.pc >= len(code) {
			t.state = exited
			return nil
		}
		in := &code[t.pc]
		if in.guard >= 0 && (t.regs[in.guard] != 0) == in.neg {
			t.pc++
			continue
		}
		switch in.opc {
		case opBar, opBarrier:
			t.state = atBarrier
			return nil
		case opShfl:
			t.state = atShuffle
			return nil
		case opRet, opExit:
			t.state = exited
			return nil
		case opBra:
			t.pc = in.target
			continue
		}
		if err := bl.exec(t, in); err != nil {
			return fmt.Errorf("ptx line %d (%s): %w", in.line, in.text, err)
		}
		t.pc++
	}
}

// src reads operand o as type ty: its bits, zero-extended (a signed
// value is sign-extended by the caller where it matters).
func (bl *block) src(t *thread, o *operand, ty ptype) uint64 {
	switch o.kind {
	case opReg:
		v := t.regs[o.reg]
		if o.not {
			v ^= 1
		}
		return v & mask(ty)
	case opImm:
		if o.fimm {
			f := math.Float64frombits(o.imm)
			switch ty {
			case tF32:
				return uint64(math.Float32bits(float32(f)))
			case tF16:
				return uint64(float16.Fromfloat32(float32(f)).Bits())
			case tF64:
				return o.imm
			}
			// A float literal as a bit type's operand (mov.b32 %r,
			// 0f3F800000) is its bit pattern.
			if ty.bits() == 64 {
				return o.imm
			}
			return uint64(math.Float32bits(float32(f))) & mask(ty)
		}
		if ty == tF32 {
			return uint64(math.Float32bits(float32(int64(o.imm))))
		}
		if ty == tF64 {
			return math.Float64bits(float64(int64(o.imm)))
		}
		return o.imm & mask(ty)
	case opSpecial:
		return uint64(bl.special(t, o.spec))
	case opSym:
		if o.symIn == symShared || o.symIn == symLocal {
			return uint64(o.symOff)
		}
	}
	return 0
}

func (bl *block) special(t *thread, s special) uint32 {
	switch s {
	case spTidX, spTidY, spTidZ:
		return t.tid[s-spTidX]
	case spNtidX:
		return max(bl.dim.X, 1)
	case spNtidY:
		return max(bl.dim.Y, 1)
	case spNtidZ:
		return max(bl.dim.Z, 1)
	case spCtaidX, spCtaidY, spCtaidZ:
		return bl.ctaid[s-spCtaidX]
	case spNctaidX:
		return max(bl.grid.X, 1)
	case spNctaidY:
		return max(bl.grid.Y, 1)
	case spNctaidZ:
		return max(bl.grid.Z, 1)
	case spLaneid:
		return uint32(t.lane)
	case spWarpid:
		return (t.tid[0] + t.tid[1]*max(bl.dim.X, 1) + t.tid[2]*max(bl.dim.X, 1)*max(bl.dim.Y, 1)) / 32
	}
	return 0
}

func mask(ty ptype) uint64 { return typeInfo[ty].mask }

// sext sign-extends the low bits of v.
func sext(v uint64, b int) int64 {
	if b == 64 {
		return int64(v)
	}
	return int64(v<<(64-b)) >> (64 - b)
}

// set writes v (bits of type ty) to register r: signed types
// sign-extended, so a narrow load reads back right at any width.
func set(t *thread, r int, v uint64, ty ptype) {
	if ty.signed() {
		t.regs[r] = uint64(sext(v, ty.bits()))
	} else {
		t.regs[r] = v & mask(ty)
	}
}

func f32bits(f float32) uint32 { return math.Float32bits(f) }

func putLE(b []byte, v uint64, n int) {
	switch n {
	case 1:
		b[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(b, v)
	}
}

func getLE(b []byte, n int) uint64 {
	switch n {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	}
	return binary.LittleEndian.Uint64(b)
}

// memory returns the n bytes at addr in the instruction's state space.
func (bl *block) memory(t *thread, sp space, addr uint64, n int) ([]byte, error) {
	switch sp {
	case spaceGeneric:
		switch {
		case addr >= sharedBase && addr < sharedBase+windowSize:
			return bl.memory(t, spaceShared, addr-sharedBase, n)
		case addr >= localBase && addr < localBase+windowSize:
			return bl.memory(t, spaceLocal, addr-localBase, n)
		}
		return bl.memory(t, spaceGlobal, addr, n)
	case spaceGlobal, spaceConst:
		// Accesses cluster: try the allocation the last one hit first.
		if a := bl.last; a != nil && addr >= a.base && addr-a.base+uint64(n) <= uint64(len(a.data)) {
			off := addr - a.base
			return a.data[off : off+uint64(n)], nil
		}
		a, off, ok := bl.dev.find(addr, n)
		if !ok {
			return nil, fmt.Errorf("%d bytes at %#x: outside every allocation", n, addr)
		}
		bl.last = a
		return a.data[off : off+n], nil
	case spaceShared:
		if addr+uint64(n) > uint64(len(bl.shared)) {
			return nil, fmt.Errorf("%d bytes at shared %#x: beyond the block's %d bytes of shared memory", n, addr, len(bl.shared))
		}
		return bl.shared[addr : addr+uint64(n)], nil
	case spaceLocal:
		if addr+uint64(n) > uint64(len(t.local)) {
			return nil, fmt.Errorf("%d bytes at local %#x: beyond the thread's %d bytes", n, addr, len(t.local))
		}
		return t.local[addr : addr+uint64(n)], nil
	case spaceParam:
		if addr+uint64(n) > uint64(len(bl.params)) {
			return nil, fmt.Errorf("%d bytes at parameter offset %d: beyond the %d bytes of parameters", n, addr, len(bl.params))
		}
		return bl.params[addr : addr+uint64(n)], nil
	}
	return nil, fmt.Errorf("state space %d", sp)
}

// address evaluates [base+off] for an instruction in space sp.
func (bl *block) address(t *thread, o *operand, sp space) (uint64, error) {
	if o.kind != opAddr {
		return 0, fmt.Errorf("not an address")
	}
	if o.reg >= 0 {
		return t.regs[o.reg] + uint64(o.off), nil
	}
	off := uint64(o.symOff + o.off)
	switch o.symIn {
	case symParam:
		if sp == spaceParam || sp == spaceGeneric {
			return off, nil
		}
	case symShared:
		if sp == spaceGeneric {
			return sharedBase + off, nil
		}
		return off, nil
	case symLocal:
		if sp == spaceGeneric {
			return localBase + off, nil
		}
		return off, nil
	}
	return 0, fmt.Errorf("unknown symbol %s", o.sym)
}

func (bl *block) exec(t *thread, in *inst) error {
	ty := in.typ()
	args := in.args
	switch in.opc {
	case opLd, opSt:
		addrArg, valArg := 1, 0
		if in.opc == opSt {
			addrArg, valArg = 0, 1
		}
		addr, err := bl.address(t, &args[addrArg], in.space)
		if err != nil {
			return err
		}
		size := ty.bits() / 8
		mem, err := bl.memory(t, in.space, addr, size*in.vec)
		if err != nil {
			return err
		}
		regs := []int{args[valArg].reg}
		if args[valArg].kind == opVec {
			regs = args[valArg].vec
		}
		if len(regs) != in.vec {
			return fmt.Errorf("%d registers for %d elements", len(regs), in.vec)
		}
		for i, r := range regs {
			if in.opc == opLd {
				set(t, r, getLE(mem[i*size:], size), ty)
			} else if args[valArg].kind == opImm {
				putLE(mem[i*size:], bl.src(t, &args[valArg], ty), size)
			} else {
				putLE(mem[i*size:], t.regs[r], size)
			}
		}
	case opMov:
		switch {
		case args[0].kind == opVec: // unpack
			v := bl.src(t, &args[1], ty)
			w := ty.bits() / len(args[0].vec)
			for i, r := range args[0].vec {
				t.regs[r] = v >> (i * w) & (1<<w - 1)
			}
		case args[1].kind == opVec: // pack
			w := ty.bits() / len(args[1].vec)
			var v uint64
			for i, r := range args[1].vec {
				v |= (t.regs[r] & (1<<w - 1)) << (i * w)
			}
			set(t, args[0].reg, v, ty)
		default:
			set(t, args[0].reg, bl.src(t, &args[1], ty), ty)
		}
	case opCvta:
		v := bl.src(t, &args[1], ty)
		var base uint64
		for _, m := range in.mods {
			switch m {
			case "shared":
				base = sharedBase
			case "local":
				base = localBase
			}
		}
		if in.mode == "to" {
			v -= base
		} else {
			v += base
		}
		set(t, args[0].reg, v, ty)
	case opCvt:
		return bl.cvt(t, in)
	case opSetp:
		return bl.setp(t, in)
	case opSelp:
		if bl.src(t, &args[3], tPred) != 0 {
			set(t, args[0].reg, bl.src(t, &args[1], ty), ty)
		} else {
			set(t, args[0].reg, bl.src(t, &args[2], ty), ty)
		}
	case opAnd, opOr, opXor:
		x, y := bl.src(t, &args[1], ty), bl.src(t, &args[2], ty)
		var v uint64
		switch in.opc {
		case opAnd:
			v = x & y
		case opOr:
			v = x | y
		default:
			v = x ^ y
		}
		set(t, args[0].reg, v, ty)
	case opNot:
		set(t, args[0].reg, ^bl.src(t, &args[1], ty), ty)
	case opShl, opShr:
		v, n := bl.src(t, &args[1], ty), bl.src(t, &args[2], tU32)
		w := uint64(ty.bits())
		switch {
		case in.opc == opShl && n >= w:
			v = 0
		case in.opc == opShl:
			v <<= n
		case ty.signed():
			v = uint64(sext(v, int(w)) >> min(n, w-1))
		case n >= w:
			v = 0
		default:
			v >>= n
		}
		set(t, args[0].reg, v, ty)
	case opPopc:
		set(t, args[0].reg, uint64(bits.OnesCount64(bl.src(t, &args[1], ty))), tU32)
	case opClz:
		set(t, args[0].reg, uint64(bits.LeadingZeros64(bl.src(t, &args[1], ty))-(64-ty.bits())), tU32)
	case opBrev:
		set(t, args[0].reg, bits.Reverse64(bl.src(t, &args[1], ty))>>(64-ty.bits()), ty)
	case opBfe:
		v, pos, n := bl.src(t, &args[1], ty), bl.src(t, &args[2], tU32)&0xff, bl.src(t, &args[3], tU32)&0xff
		w := uint64(ty.bits())
		var r uint64
		if n > 0 && pos < w {
			r = v >> pos & (1<<min(n, w-pos) - 1)
			if ty.signed() && r>>(min(n, w-pos)-1)&1 == 1 {
				r |= ^uint64(0) << min(n, w-pos)
			}
		} else if ty.signed() && n > 0 && sext(v, int(w)) < 0 {
			r = ^uint64(0)
		}
		set(t, args[0].reg, r, ty)
	case opAtom, opRed:
		return bl.atomic(t, in)
	case opDp4a:
		// dp4a.atype.btype d, a, b, c: c + the four products of a's and
		// b's bytes, each byte signed or not as its type says, mod 2³².
		if len(in.types) != 2 {
			return fmt.Errorf("dp4a needs two types")
		}
		a, b := uint32(bl.src(t, &args[1], tU32)), uint32(bl.src(t, &args[2], tU32))
		acc := int32(bl.src(t, &args[3], tU32))
		for i := range 4 {
			x, y := int32(a>>(8*i)&0xff), int32(b>>(8*i)&0xff)
			if in.types[0].signed() {
				x = int32(int8(x))
			}
			if in.types[1].signed() {
				y = int32(int8(y))
			}
			acc += x * y
		}
		set(t, args[0].reg, uint64(uint32(acc)), tU32)
	case opPrmt:
		// prmt d, a, b, c: byte i of d is byte c[4i+2:4i] of {b, a}
		// (a's bytes 0–3, b's 4–7), or with c's bit 4i+3 set that byte's
		// sign spread over all eight bits. Only the generic form.
		if len(in.mods) > 0 {
			return fmt.Errorf("prmt.%s: only the generic form is implemented", in.mods[0])
		}
		src := bl.src(t, &args[1], tU32) | bl.src(t, &args[2], tU32)<<32
		c := bl.src(t, &args[3], tU32)
		var d uint64
		for i := range 4 {
			sel := c >> (4 * i) & 0xf
			b := src >> (8 * (sel & 7)) & 0xff
			if sel&8 != 0 {
				b = 0
				if src>>(8*(sel&7)+7)&1 != 0 {
					b = 0xff
				}
			}
			d |= b << (8 * i)
		}
		set(t, args[0].reg, d, tU32)
	case opBfi:
		// bfi f, a, b, pos, len: b with len bits from pos replaced by a's
		// low bits (those past the type's width dropped).
		a, base := bl.src(t, &args[1], ty), bl.src(t, &args[2], ty)
		pos, n := bl.src(t, &args[3], tU32)&0xff, bl.src(t, &args[4], tU32)&0xff
		w := uint64(ty.bits())
		if pos < w && n > 0 {
			n = min(n, w-pos)
			field := (uint64(1)<<n - 1) << pos
			base = base&^field | a<<pos&field
		}
		set(t, args[0].reg, base, ty)
	case opMembar, opFence:
	default:
		if ty.float() {
			return bl.float(t, in)
		}
		return bl.integer(t, in)
	}
	return nil
}

// atomic performs atom (d = old value) and red: a read-modify-write of
// memory no other thread's can interleave with.
func (bl *block) atomic(t *thread, in *inst) error {
	ty := in.typ()
	args := in.args
	addrArg := 1
	if in.opc == opRed {
		addrArg = 0
	}
	addr, err := bl.address(t, &args[addrArg], in.space)
	if err != nil {
		return err
	}
	size := ty.bits() / 8
	mem, err := bl.memory(t, in.space, addr, size)
	if err != nil {
		return err
	}
	b := bl.src(t, &args[addrArg+1], ty)
	var c uint64
	if len(args) > addrArg+2 {
		c = bl.src(t, &args[addrArg+2], ty)
	}
	op := ""
	for _, m := range in.mods {
		switch m {
		case "add", "min", "max", "exch", "cas", "and", "or", "xor", "inc", "dec":
			op = m
		}
	}
	bl.dev.atomMu.Lock()
	defer bl.dev.atomMu.Unlock()
	old := getLE(mem, size)
	var v uint64
	w := ty.bits()
	switch op {
	case "add":
		switch ty {
		case tF32:
			v = uint64(math.Float32bits(math.Float32frombits(uint32(old)) + math.Float32frombits(uint32(b))))
		case tF64:
			v = math.Float64bits(math.Float64frombits(old) + math.Float64frombits(b))
		default:
			v = old + b
		}
	case "min", "max":
		less := old < b
		if ty.signed() {
			less = sext(old, w) < sext(b, w)
		}
		if ty.float() {
			return fmt.Errorf("atom.%s on %v: not implemented", op, ty)
		}
		if less == (op == "min") {
			v = old
		} else {
			v = b
		}
	case "exch":
		v = b
	case "cas":
		v = old
		if old == b {
			v = c
		}
	case "and":
		v = old & b
	case "or":
		v = old | b
	case "xor":
		v = old ^ b
	case "inc": // ((old >= b) ? 0 : old+1), unsigned 32-bit
		v = old + 1
		if old >= b {
			v = 0
		}
	case "dec": // ((old == 0 || old > b) ? b : old-1)
		v = old - 1
		if old == 0 || old > b {
			v = b
		}
	default:
		return fmt.Errorf("%s: no operation among %v", in.op, in.mods)
	}
	putLE(mem, v&mask(ty), size)
	if in.opc == opAtom {
		set(t, args[0].reg, old, ty)
	}
	return nil
}

func (bl *block) integer(t *thread, in *inst) error {
	ty := in.typ()
	args := in.args
	w := ty.bits()
	x := bl.src(t, &args[1], ty)
	var y, z uint64
	if len(args) > 2 {
		y = bl.src(t, &args[2], ty)
	}
	if len(args) > 3 {
		z = bl.src(t, &args[3], ty)
	}
	sx, sy := sext(x, w), sext(y, w)
	wideTy := widened(ty)
	product := func() (lo, hi uint64) {
		if ty.signed() {
			p := new128(sx).mul(new128(sy))
			return p.lo, p.hi
		}
		hi, lo = bits.Mul64(x, y)
		return lo, hi
	}
	var v uint64
	outTy := ty
	switch in.opc {
	case opAdd:
		v = x + y
	case opSub:
		v = x - y
	case opMul, opMad:
		lo, hi := product()
		switch {
		case in.wide:
			v, outTy = lo, wideTy // the full 2w-bit product of w-bit operands
		case in.hi:
			v = lo>>w | hi<<(64-w)
			if w == 64 {
				v = hi
			}
		default:
			v = lo
		}
		if in.opc == opMad {
			if in.wide {
				z = bl.src(t, &args[3], wideTy)
			}
			v += z
		}
	case opDiv, opRem:
		if y == 0 {
			v = mask(ty) // what the hardware gives
			if in.opc == opRem {
				v = x
			}
			break
		}
		switch {
		case ty.signed() && in.opc == opDiv:
			v = uint64(sx / sy)
		case ty.signed():
			v = uint64(sx % sy)
		case in.opc == opDiv:
			v = x / y
		default:
			v = x % y
		}
	case opMin, opMax:
		less := x < y
		if ty.signed() {
			less = sx < sy
		}
		if less == (in.opc == opMin) {
			v = x
		} else {
			v = y
		}
	case opNeg:
		v = -x
	case opAbs:
		v = x
		if sx < 0 {
			v = uint64(-sx)
		}
	default:
		return fmt.Errorf("%s on %v: not implemented", in.op, ty)
	}
	if outTy == tNone {
		return fmt.Errorf("%s.wide on %d-bit values", in.op, w)
	}
	set(t, args[0].reg, v&mask(outTy), outTy)
	return nil
}

// widened is the type of a .wide product of ty operands, or tNone.
func widened(ty ptype) ptype {
	switch ty {
	case tU16:
		return tU32
	case tS16:
		return tS32
	case tU32:
		return tU64
	case tS32:
		return tS64
	}
	return tNone
}

// int128 is a signed 128-bit product's two halves.
type int128 struct{ lo, hi uint64 }

func new128(v int64) int128 {
	h := uint64(0)
	if v < 0 {
		h = math.MaxUint64
	}
	return int128{uint64(v), h}
}

func (a int128) mul(b int128) int128 {
	hi, lo := bits.Mul64(a.lo, b.lo)
	hi += a.hi*b.lo + a.lo*b.hi
	return int128{lo, hi}
}

// fval reads a float operand as float64 (exact for f16 and f32).
func (bl *block) fval(t *thread, o *operand, ty ptype, ftz bool) float64 {
	v := bl.src(t, o, ty)
	switch ty {
	case tF16:
		return float64(float16.Frombits(uint16(v)).Float32())
	case tF32:
		f := math.Float32frombits(uint32(v))
		if ftz && isSubnormal32(f) {
			f = float32(math.Copysign(0, float64(f)))
		}
		return float64(f)
	}
	return math.Float64frombits(v)
}

func isSubnormal32(f float32) bool {
	b := math.Float32bits(f)
	return b&0x7f800000 == 0 && b&0x7fffff != 0
}

// fbits rounds f to the type, flushing and saturating as asked.
func fbits(f float64, ty ptype, ftz, sat bool) uint64 {
	if sat {
		switch {
		case math.IsNaN(f):
			f = 0
		case f < 0:
			f = 0
		case f > 1:
			f = 1
		}
	}
	switch ty {
	case tF16:
		return uint64(float16.Fromfloat32(float32(f)).Bits())
	case tF32:
		r := float32(f)
		if ftz && isSubnormal32(r) {
			r = float32(math.Copysign(0, float64(r)))
		}
		return uint64(math.Float32bits(r))
	}
	return math.Float64bits(f)
}

func (bl *block) float(t *thread, in *inst) error {
	ty := in.typ()
	args := in.args
	x := bl.fval(t, &args[1], ty, in.ftz)
	var y, z float64
	if len(args) > 2 {
		y = bl.fval(t, &args[2], ty, in.ftz)
	}
	if len(args) > 3 {
		z = bl.fval(t, &args[3], ty, in.ftz)
	}
	// f32 sums and quotients are rounded once, in float32; a product of
	// two f32 values is exact in float64. fma rounds in float64 and then
	// to f32, which differs from one rounding only on exact ties.
	var v float64
	switch in.opc {
	case opAdd:
		v = x + y
		if ty == tF32 {
			v = float64(float32(x) + float32(y))
		}
	case opSub:
		v = x - y
		if ty == tF32 {
			v = float64(float32(x) - float32(y))
		}
	case opMul:
		v = x * y
	case opFma, opMad:
		v = math.FMA(x, y, z)
	case opDiv:
		if ty == tF32 {
			v = float64(float32(x) / float32(y))
		} else {
			v = x / y
		}
	case opRcp:
		if ty == tF32 {
			v = float64(1 / float32(x))
		} else {
			v = 1 / x
		}
	case opSqrt:
		v = math.Sqrt(x)
	case opRsqrt:
		v = 1 / math.Sqrt(x)
	case opEx2:
		v = math.Exp2(x)
	case opLg2:
		v = math.Log2(x)
	case opSin:
		v = math.Sin(x)
	case opCos:
		v = math.Cos(x)
	case opNeg:
		v = -x
	case opAbs:
		v = math.Abs(x)
	case opMin, opMax:
		// PTX: a NaN operand yields the other; −0 is below +0.
		switch {
		case math.IsNaN(x):
			v = y
		case math.IsNaN(y):
			v = x
		case in.opc == opMin:
			v = math.Min(x, y)
		default:
			v = math.Max(x, y)
		}
	default:
		return fmt.Errorf("%s on %v: not implemented", in.op, ty)
	}
	set(t, args[0].reg, fbits(v, ty, in.ftz, in.sat), ty)
	return nil
}

func (bl *block) setp(t *thread, in *inst) error {
	ty := in.typ()
	args := in.args
	var r bool
	if ty.float() {
		x, y := bl.fval(t, &args[1], ty, in.ftz), bl.fval(t, &args[2], ty, in.ftz)
		nan := math.IsNaN(x) || math.IsNaN(y)
		switch in.cmp {
		case "eq":
			r = !nan && x == y
		case "ne":
			r = !nan && x != y
		case "lt":
			r = !nan && x < y
		case "le":
			r = !nan && x <= y
		case "gt":
			r = !nan && x > y
		case "ge":
			r = !nan && x >= y
		case "equ":
			r = nan || x == y
		case "neu":
			r = nan || x != y
		case "ltu":
			r = nan || x < y
		case "leu":
			r = nan || x <= y
		case "gtu":
			r = nan || x > y
		case "geu":
			r = nan || x >= y
		case "num":
			r = !nan
		case "nan":
			r = nan
		default:
			return fmt.Errorf("setp.%s on %v", in.cmp, ty)
		}
	} else {
		x, y := bl.src(t, &args[1], ty), bl.src(t, &args[2], ty)
		sx, sy := sext(x, ty.bits()), sext(y, ty.bits())
		lt, le := x < y, x <= y
		if ty.signed() {
			lt, le = sx < sy, sx <= sy
		}
		switch in.cmp {
		case "eq":
			r = x == y
		case "ne":
			r = x != y
		case "lt":
			r = lt
		case "le":
			r = le
		case "gt":
			r = !le
		case "ge":
			r = !lt
		case "lo":
			r = x < y
		case "ls":
			r = x <= y
		case "hi":
			r = x > y
		case "hs":
			r = x >= y
		default:
			return fmt.Errorf("setp.%s on %v", in.cmp, ty)
		}
	}
	q := !r
	if in.boolOp != "" {
		c := bl.src(t, &args[3], tPred) != 0
		switch in.boolOp {
		case "and":
			r, q = r && c, q && c
		case "or":
			r, q = r || c, q || c
		case "xor":
			r, q = r != c, q != c
		}
	}
	t.regs[args[0].reg] = b2u(r)
	if args[0].reg2 >= 0 {
		t.regs[args[0].reg2] = b2u(q)
	}
	return nil
}

func (bl *block) cvt(t *thread, in *inst) error {
	if len(in.types) != 2 {
		return fmt.Errorf("cvt needs a destination and a source type")
	}
	dt, st := in.types[0], in.types[1]
	args := in.args
	switch {
	case st.float():
		f := bl.fval(t, &args[1], st, in.ftz)
		if dt.float() {
			if dt == tF32 && st == tF64 || dt == tF16 {
				f = roundTo(f, in.mode, dt)
			}
			set(t, args[0].reg, fbits(f, dt, in.ftz, in.sat), dt)
			return nil
		}
		// Float to integer: round as the mode says, saturate, NaN → 0.
		switch in.mode {
		case "rni", "rn":
			f = math.RoundToEven(f)
		case "rmi", "rm":
			f = math.Floor(f)
		case "rpi", "rp":
			f = math.Ceil(f)
		default:
			f = math.Trunc(f)
		}
		w := dt.bits()
		var v uint64
		switch {
		case math.IsNaN(f):
		case dt.signed():
			lo, hi := -math.Ldexp(1, w-1), math.Ldexp(1, w-1)-1
			v = uint64(int64(math.Max(lo, math.Min(hi, f))))
		default:
			hi := math.Ldexp(1, w) - 1
			v = uint64(math.Max(0, math.Min(hi, f)))
		}
		set(t, args[0].reg, v&mask(dt), dt)
	default:
		raw := bl.src(t, &args[1], st)
		var i int64
		if st.signed() {
			i = sext(raw, st.bits())
		} else {
			i = int64(raw)
		}
		if dt.float() {
			var f float64
			if st.signed() || st.bits() < 64 {
				f = float64(i)
			} else {
				f = float64(raw)
			}
			if dt == tF32 {
				f = float64(float32(f)) // an exact int64 → float32 rounding in two steps can only differ past 2^53
			}
			set(t, args[0].reg, fbits(f, dt, in.ftz, in.sat), dt)
			return nil
		}
		v := uint64(i)
		if in.sat {
			w := dt.bits()
			switch {
			case dt.signed():
				lo, hi := -int64(1)<<(w-1), int64(1)<<(w-1)-1
				if w == 64 {
					lo, hi = math.MinInt64, math.MaxInt64
				}
				v = uint64(max(lo, min(hi, i)))
			case st.signed() && i < 0:
				v = 0
			case w < 64 && uint64(i) > mask(dt):
				v = mask(dt)
			}
		}
		set(t, args[0].reg, v&mask(dt), dt)
	}
	return nil
}

// roundTo rounds f toward the narrower float type dt by mode (rn, rz, rm,
// rp); nearest-even needs nothing, the conversion itself does it.
func roundTo(f float64, mode string, dt ptype) float64 {
	if mode == "" || mode == "rn" {
		return f
	}
	var r float64
	switch dt {
	case tF16:
		r = float64(float16.Fromfloat32(float32(f)).Float32())
	default:
		r = float64(float32(f))
	}
	step := func(up bool) float64 {
		switch dt {
		case tF16:
			b := float16.Fromfloat32(float32(r)).Bits()
			if (r > 0) == up {
				b++
			} else {
				b--
			}
			return float64(float16.Frombits(b).Float32())
		}
		dir := float32(math.Inf(-1))
		if up {
			dir = float32(math.Inf(1))
		}
		return float64(math.Nextafter32(float32(r), dir))
	}
	switch {
	case r == f || math.IsNaN(f) || math.IsInf(f, 0):
		return r
	case mode == "rz" && math.Abs(r) > math.Abs(f):
		return step(r < 0)
	case mode == "rm" && r > f:
		return step(false)
	case mode == "rp" && r < f:
		return step(true)
	}
	return r
}
