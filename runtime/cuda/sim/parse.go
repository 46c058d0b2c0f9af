package sim

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The PTX the simulator reads: what nvcc emits for lqc's kernels. A
// module is directives (.version, .target, .address_size), module-scope
// .shared variables, and .entry functions whose bodies declare registers
// (.reg), shared and local arrays, labels and instructions. Anything else
// is refused with its line, so a kernel never runs half-understood.

type token struct {
	text string
	line int
}

// lex splits PTX into tokens: names (with their dots and %, $ prefixes),
// numbers, strings and punctuation; comments are dropped.
func lex(src string) ([]token, error) {
	var out []token
	line := 1
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated comment", line)
			}
			line += strings.Count(src[i:i+2+end], "\n")
			i += end + 4
		case c == '"':
			end := strings.IndexByte(src[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("line %d: unterminated string", line)
			}
			out = append(out, token{src[i : i+end+2], line})
			i += end + 2
		case isNameStart(c) || c >= '0' && c <= '9':
			j := i + 1
			for j < len(src) && isNameChar(src[j]) {
				j++
			}
			out = append(out, token{src[i:j], line})
			i = j
		case strings.ContainsRune("(){}[],;:@!|+-<>=", rune(c)):
			out = append(out, token{string(c), line})
			i++
		default:
			return nil, fmt.Errorf("line %d: unexpected character %q", line, c)
		}
	}
	return out, nil
}

func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '$' || c == '%' || c == '.'
}

func isNameChar(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

// ptype is a PTX scalar type.
type ptype uint8

const (
	tNone ptype = iota
	tPred
	tB8
	tU8
	tS8
	tB16
	tU16
	tS16
	tF16
	tB32
	tU32
	tS32
	tF32
	tB64
	tU64
	tS64
	tF64
)

var typeNames = map[string]ptype{
	"pred": tPred, "b8": tB8, "u8": tU8, "s8": tS8, "b16": tB16, "u16": tU16, "s16": tS16, "f16": tF16,
	"b32": tU32, "u32": tU32, "s32": tS32, "f32": tF32, "b64": tU64, "u64": tU64, "s64": tS64, "f64": tF64,
}

// typeInfo is what the interpreter asks of a type, by table lookup.
var typeInfo = func() (info [tF64 + 1]struct {
	bits          int
	mask          uint64
	signed, float bool
}) {
	for t := range info {
		b := 64
		switch ptype(t) {
		case tPred:
			b = 1
		case tB8, tU8, tS8:
			b = 8
		case tB16, tU16, tS16, tF16:
			b = 16
		case tB32, tU32, tS32, tF32:
			b = 32
		}
		info[t].bits = b
		info[t].mask = math.MaxUint64 >> (64 - b)
		switch ptype(t) {
		case tS8, tS16, tS32, tS64:
			info[t].signed = true
		case tF16, tF32, tF64:
			info[t].float = true
		}
	}
	return info
}()

// bits is the type's width.
func (t ptype) bits() int    { return typeInfo[t].bits }
func (t ptype) signed() bool { return typeInfo[t].signed }
func (t ptype) float() bool  { return typeInfo[t].float }

// operand kinds.
const (
	opReg = iota
	opImm
	opAddr // [base+off]: base a register, a symbol or nothing
	opVec  // {a, b, ...}: registers
	opSym  // a name: a label, a shared variable or a parameter
	opSpecial
)

type operand struct {
	kind int
	reg  int    // register index (opReg, opAddr with a register base)
	reg2 int    // the predicate after '|' in shfl's destination, or -1
	imm  uint64 // immediate bits; for opImm with float set, a float64's bits
	// fimm marks an immediate written as a float (0f…, 0d…).
	fimm bool
	sym  string // opSym, and opAddr with a symbol base
	off  int64  // opAddr
	vec  []int  // opVec
	spec special
	not  bool // !p: a negated predicate source

	// Resolved once the kernel is parsed: what sym names.
	symIn  symKind
	symOff int64 // its offset in that space
}

type symKind uint8

const (
	symNone symKind = iota
	symParam
	symShared
	symLocal
)

type special uint8

const (
	spTidX special = iota
	spTidY
	spTidZ
	spNtidX
	spNtidY
	spNtidZ
	spCtaidX
	spCtaidY
	spCtaidZ
	spNctaidX
	spNctaidY
	spNctaidZ
	spLaneid
	spWarpid
)

var specials = map[string]special{
	"%tid.x": spTidX, "%tid.y": spTidY, "%tid.z": spTidZ, "%ntid.x": spNtidX, "%ntid.y": spNtidY, "%ntid.z": spNtidZ,
	"%ctaid.x": spCtaidX, "%ctaid.y": spCtaidY, "%ctaid.z": spCtaidZ, "%nctaid.x": spNctaidX, "%nctaid.y": spNctaidY,
	"%nctaid.z": spNctaidZ, "%laneid": spLaneid, "%warpid": spWarpid,
}

// inst is one decoded instruction.
type inst struct {
	op    string   // "add", "ld", …
	opc   opcode   // op, decoded
	ty    ptype    // the first type, or tNone
	mods  []string // the suffixes that are not types
	types []ptype  // the type suffixes, in order
	guard int      // predicate register, or -1
	neg   bool     // @!p
	args  []operand
	line  int
	text  string

	target int // bra: the index of the labelled instruction

	// Decoded from mods once, for the interpreter.
	space  space  // ld, st, cvta
	vec    int    // .v2, .v4: elements; 1 otherwise
	cmp    string // setp's comparison
	boolOp string // setp's and/or/xor with a third predicate
	mode   string // shfl's bfly/down/up/idx; cvt's and cvta's rounding or direction
	ftz    bool
	sat    bool
	wide   bool // mul/mad .wide
	hi     bool // mul/mad .hi
}

type space uint8

const (
	spaceGeneric space = iota
	spaceGlobal
	spaceShared
	spaceLocal
	spaceParam
	spaceConst
)

var cmpOps = map[string]bool{"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true, "lo": true, "ls": true,
	"hi": true, "hs": true, "equ": true, "neu": true, "ltu": true, "leu": true, "gtu": true, "geu": true, "num": true, "nan": true}

// decode fills the decoded fields from mods.
func (in *inst) decode() {
	in.vec = 1
	for _, m := range in.mods {
		switch m {
		case "global":
			in.space = spaceGlobal
		case "shared":
			in.space = spaceShared
		case "local":
			in.space = spaceLocal
		case "param":
			in.space = spaceParam
		case "const":
			in.space = spaceConst
		case "v2":
			in.vec = 2
		case "v4":
			in.vec = 4
		case "ftz":
			in.ftz = true
		case "sat":
			in.sat = true
		case "wide":
			in.wide = true
		case "hi":
			in.hi = in.op == "mul" || in.op == "mad"
		case "and", "or", "xor":
			if in.op == "setp" {
				in.boolOp = m
			}
		case "bfly", "down", "up", "idx", "rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi", "to":
			in.mode = m
		}
		if in.op == "setp" && cmpOps[m] {
			in.cmp = m
		}
	}
}

func (in *inst) has(mod string) bool {
	for _, m := range in.mods {
		if m == mod {
			return true
		}
	}
	return false
}

// typ is the instruction's (first) type.
func (in *inst) typ() ptype { return in.ty }

type param struct {
	name   string
	size   int
	offset int
}

// array is a .shared or .local array: its place in its space.
type array struct {
	size, align, offset int
}

type kernel struct {
	name    string
	params  []param
	paramSz int
	regs    map[string]int
	code    []inst
	labels  map[string]int
	shared  map[string]array // module-scope and the kernel's own
	sharedN int              // bytes of static shared memory
	local   map[string]array
	localN  int
}

type module struct {
	kernels map[string]*kernel
}

type parser struct {
	toks []token
	pos  int
	mod  *module
	// Module-scope shared variables, laid out before each kernel's own.
	shared  map[string]array
	sharedN int
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos].text
	}
	return ""
}

func (p *parser) line() int {
	if p.pos < len(p.toks) {
		return p.toks[p.pos].line
	}
	if len(p.toks) > 0 {
		return p.toks[len(p.toks)-1].line
	}
	return 0
}

func (p *parser) next() string {
	t := p.peek()
	p.pos++
	return t
}

func (p *parser) errorf(format string, a ...any) error {
	return fmt.Errorf("ptx line %d: %s", p.line(), fmt.Sprintf(format, a...))
}

func (p *parser) expect(t string) error {
	if got := p.next(); got != t {
		p.pos--
		return p.errorf("want %q, have %q", t, got)
	}
	return nil
}

// parse reads a PTX module.
func parse(src string) (*module, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, fmt.Errorf("ptx %w", err)
	}
	p := &parser{toks: toks, mod: &module{kernels: map[string]*kernel{}}, shared: map[string]array{}}
	for p.pos < len(p.toks) {
		switch t := p.next(); t {
		case ".version", ".target":
			// .target lists comma-separated names.
			p.next()
			for p.peek() == "," {
				p.next()
				p.next()
			}
		case ".address_size":
			if n := p.next(); n != "64" {
				return nil, p.errorf(".address_size %s: the simulator runs 64-bit PTX", n)
			}
		case ".visible", ".weak", ".extern":
			// The linkage of the declaration that follows.
		case ".entry":
			if err := p.entry(); err != nil {
				return nil, err
			}
		case ".shared":
			name, a, err := p.array(p.sharedN)
			if err != nil {
				return nil, err
			}
			p.shared[name] = a
			p.sharedN = a.offset + a.size
		case ".func":
			return nil, p.errorf(".func: the simulator runs kernels without calls (inline device functions)")
		default:
			return nil, p.errorf("unexpected %q at module scope", t)
		}
	}
	return p.mod, nil
}

// array reads "[.align N] .type name[count];" after .shared or .local,
// placed at the first suitably aligned offset from at.
func (p *parser) array(at int) (string, array, error) {
	a := array{align: 1}
	if p.peek() == ".align" {
		p.next()
		n, err := strconv.Atoi(p.next())
		if err != nil {
			return "", a, p.errorf(".align: %v", err)
		}
		a.align = n
	}
	t, ok := typeNames[strings.TrimPrefix(p.next(), ".")]
	if !ok || t == tPred {
		return "", a, p.errorf("array type")
	}
	name := p.next()
	count := 1
	if p.peek() == "[" {
		p.next()
		n, err := strconv.Atoi(p.next())
		if err != nil {
			return "", a, p.errorf("array size: %v", err)
		}
		count = n
		if err := p.expect("]"); err != nil {
			return "", a, err
		}
	}
	if err := p.expect(";"); err != nil {
		return "", a, err
	}
	a.size = count * t.bits() / 8
	a.offset = (at + a.align - 1) / a.align * a.align
	return name, a, nil
}

func (p *parser) entry() error {
	k := &kernel{name: p.next(), regs: map[string]int{}, labels: map[string]int{}, shared: map[string]array{}, local: map[string]array{}}
	for n, a := range p.shared {
		k.shared[n] = a
	}
	k.sharedN = p.sharedN
	if err := p.expect("("); err != nil {
		return err
	}
	for p.peek() != ")" {
		if err := p.expect(".param"); err != nil {
			return err
		}
		align := 0
		if p.peek() == ".align" {
			p.next()
			align, _ = strconv.Atoi(p.next())
		}
		t, ok := typeNames[strings.TrimPrefix(p.next(), ".")]
		if !ok {
			return p.errorf("parameter type")
		}
		name := p.next()
		size := t.bits() / 8
		if p.peek() == "[" { // a by-value array (a struct)
			p.next()
			n, err := strconv.Atoi(p.next())
			if err != nil {
				return p.errorf("parameter size: %v", err)
			}
			size *= n
			if err := p.expect("]"); err != nil {
				return err
			}
		}
		align = max(align, min(size, 8))
		off := (k.paramSz + align - 1) / align * align
		k.params = append(k.params, param{name, size, off})
		k.paramSz = off + size
		if p.peek() == "," {
			p.next()
		}
	}
	p.next()
	// Performance directives before the body.
	for strings.HasPrefix(p.peek(), ".") {
		switch p.next() {
		case ".maxntid", ".reqntid", ".minnctapersm", ".maxnreg", ".maxnctapersm":
			p.next()
			for p.peek() == "," {
				p.next()
				p.next()
			}
		default:
			p.pos--
			return p.errorf("unexpected %q before %s's body", p.peek(), k.name)
		}
	}
	if err := p.expect("{"); err != nil {
		return err
	}
	depth := 1
	for depth > 0 {
		if p.pos >= len(p.toks) {
			return p.errorf("%s: the body does not end", k.name)
		}
		t := p.peek()
		switch {
		case t == "{":
			p.next()
			depth++
		case t == "}":
			p.next()
			depth--
		case t == ".reg":
			p.next()
			if err := p.regs(k); err != nil {
				return err
			}
		case t == ".shared":
			p.next()
			name, a, err := p.array(k.sharedN)
			if err != nil {
				return err
			}
			k.shared[name] = a
			k.sharedN = a.offset + a.size
		case t == ".local":
			p.next()
			name, a, err := p.array(k.localN)
			if err != nil {
				return err
			}
			k.local[name] = a
			k.localN = a.offset + a.size
		case t == ".pragma":
			p.next()
			p.next()
			if err := p.expect(";"); err != nil {
				return err
			}
		case p.pos+1 < len(p.toks) && p.toks[p.pos+1].text == ":" && !strings.HasPrefix(t, "."):
			k.labels[t] = len(k.code)
			p.pos += 2
		default:
			in, err := p.instruction(k)
			if err != nil {
				return err
			}
			k.code = append(k.code, in)
		}
	}
	// Branch targets must exist; symbols resolve once, not per access.
	for i := range k.code {
		in := &k.code[i]
		if in.op == "bra" {
			target, ok := k.labels[in.args[0].sym]
			if !ok {
				return fmt.Errorf("ptx line %d: %s: no label %s", in.line, k.name, in.args[0].sym)
			}
			in.target = target
		}
		for j := range in.args {
			k.resolve(&in.args[j])
		}
	}
	p.mod.kernels[k.name] = k
	return nil
}

// resolve finds what o's symbol names: a parameter first, then a shared
// or local array (the order address lookups had).
func (k *kernel) resolve(o *operand) {
	if o.sym == "" || (o.kind != opAddr && o.kind != opSym) {
		return
	}
	for _, p := range k.params {
		if p.name == o.sym {
			o.symIn, o.symOff = symParam, int64(p.offset)
			return
		}
	}
	if a, ok := k.shared[o.sym]; ok {
		o.symIn, o.symOff = symShared, int64(a.offset)
	} else if a, ok := k.local[o.sym]; ok {
		o.symIn, o.symOff = symLocal, int64(a.offset)
	}
}

// regs reads ".type name<N>, name2;" declarations.
func (p *parser) regs(k *kernel) error {
	if _, ok := typeNames[strings.TrimPrefix(p.next(), ".")]; !ok {
		return p.errorf("register type")
	}
	for {
		name := p.next()
		if p.peek() == "<" {
			p.next()
			n, err := strconv.Atoi(p.next())
			if err != nil {
				return p.errorf("register count: %v", err)
			}
			if err := p.expect(">"); err != nil {
				return err
			}
			for i := range n {
				p.reg(k, fmt.Sprintf("%s%d", name, i))
			}
		} else {
			p.reg(k, name)
		}
		if p.peek() != "," {
			break
		}
		p.next()
	}
	return p.expect(";")
}

func (p *parser) reg(k *kernel, name string) int {
	if i, ok := k.regs[name]; ok {
		return i
	}
	k.regs[name] = len(k.regs)
	return len(k.regs) - 1
}

func (p *parser) instruction(k *kernel) (inst, error) {
	in := inst{guard: -1, line: p.line()}
	start := p.pos
	if p.peek() == "@" {
		p.next()
		if p.peek() == "!" {
			p.next()
			in.neg = true
		}
		r, ok := k.regs[p.next()]
		if !ok {
			return in, p.errorf("guard: not a predicate register")
		}
		in.guard = r
	}
	parts := strings.Split(p.next(), ".")
	in.op = parts[0]
	op, ok := opcodes[in.op]
	if !ok {
		return in, p.errorf("the simulator does not implement %q", in.op)
	}
	in.opc = op
	for _, m := range parts[1:] {
		if t, ok := typeNames[m]; ok {
			in.types = append(in.types, t)
		} else {
			in.mods = append(in.mods, m)
		}
	}
	if len(in.types) > 0 {
		in.ty = in.types[0]
	}
	for p.peek() != ";" {
		if p.pos >= len(p.toks) {
			return in, p.errorf("the instruction does not end")
		}
		op, err := p.operand(k)
		if err != nil {
			return in, err
		}
		in.args = append(in.args, op)
		if p.peek() == "," {
			p.next()
		}
	}
	p.next()
	in.decode()
	var text []string
	for _, t := range p.toks[start : p.pos-1] {
		text = append(text, t.text)
	}
	in.text = strings.Join(text, " ")
	return in, nil
}

func (p *parser) operand(k *kernel) (operand, error) {
	t := p.next()
	switch {
	case t == "[":
		o := operand{kind: opAddr, reg: -1}
		base := p.next()
		if r, ok := k.regs[base]; ok {
			o.reg = r
		} else {
			o.sym = base
		}
		for p.peek() == "+" || p.peek() == "-" {
			sign := int64(1)
			if p.next() == "-" {
				sign = -1
			}
			if p.peek() == "-" {
				p.next()
				sign = -sign
			}
			n, err := strconv.ParseInt(p.next(), 0, 64)
			if err != nil {
				return o, p.errorf("address offset: %v", err)
			}
			o.off += sign * n
		}
		return o, p.expect("]")
	case t == "{":
		o := operand{kind: opVec}
		for p.peek() != "}" {
			r, ok := k.regs[p.next()]
			if !ok {
				return o, p.errorf("vector element: not a register")
			}
			o.vec = append(o.vec, r)
			if p.peek() == "," {
				p.next()
			}
		}
		p.next()
		return o, nil
	case t == "!":
		o, err := p.operand(k)
		o.not = true
		return o, err
	case t == "-" || t[0] >= '0' && t[0] <= '9':
		neg := t == "-"
		if neg {
			t = p.next()
		}
		return immediate(t, neg, p)
	}
	if s, ok := specials[t]; ok {
		return operand{kind: opSpecial, spec: s}, nil
	}
	if r, ok := k.regs[t]; ok {
		o := operand{kind: opReg, reg: r, reg2: -1}
		if p.peek() == "|" {
			p.next()
			r2, ok := k.regs[p.next()]
			if !ok {
				return o, p.errorf("after '|': not a register")
			}
			o.reg2 = r2
		}
		return o, nil
	}
	if strings.HasPrefix(t, "%") {
		return operand{}, p.errorf("undeclared register %s", t)
	}
	return operand{kind: opSym, sym: t}, nil
}

// immediate parses 12, 0x1F, 0f3F800000 (f32 bits), 0d3FF0000000000000
// (f64 bits) and 1.5.
func immediate(t string, neg bool, p *parser) (operand, error) {
	o := operand{kind: opImm}
	switch {
	case len(t) == 10 && (t[:2] == "0f" || t[:2] == "0F"):
		b, err := strconv.ParseUint(t[2:], 16, 32)
		if err != nil {
			return o, p.errorf("float immediate %s", t)
		}
		f := float64(math.Float32frombits(uint32(b)))
		if neg {
			f = -f
		}
		o.imm, o.fimm = math.Float64bits(f), true
	case len(t) == 18 && (t[:2] == "0d" || t[:2] == "0D"):
		b, err := strconv.ParseUint(t[2:], 16, 64)
		if err != nil {
			return o, p.errorf("double immediate %s", t)
		}
		f := math.Float64frombits(b)
		if neg {
			f = -f
		}
		o.imm, o.fimm = math.Float64bits(f), true
	case strings.ContainsAny(t, ".eE") && !strings.HasPrefix(t, "0x"):
		f, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return o, p.errorf("immediate %s", t)
		}
		if neg {
			f = -f
		}
		o.imm, o.fimm = math.Float64bits(f), true
	default:
		t = strings.TrimSuffix(t, "U")
		u, err := strconv.ParseUint(t, 0, 64)
		if err != nil {
			return o, p.errorf("immediate %s", t)
		}
		if neg {
			u = -u
		}
		o.imm = u
	}
	return o, nil
}

// opcode is an instruction's operation, decoded once from its name so
// that the interpreter dispatches on a small integer.
type opcode uint8

const (
	opLd opcode = iota
	opSt
	opMov
	opCvta
	opCvt
	opAdd
	opSub
	opMul
	opMad
	opFma
	opDiv
	opRem
	opNeg
	opAbs
	opMin
	opMax
	opAnd
	opOr
	opXor
	opNot
	opShl
	opShr
	opSetp
	opSelp
	opBra
	opRet
	opExit
	opBar
	opBarrier
	opShfl
	opEx2
	opLg2
	opRcp
	opSqrt
	opRsqrt
	opSin
	opCos
	opPopc
	opClz
	opBrev
	opBfe
	opBfi
	opPrmt
	opDp4a
	opAtom
	opRed
	opMembar
	opFence
)

// opcodes maps the names the simulator implements to their opcodes.
var opcodes = map[string]opcode{}

func init() {
	for op, name := range opNames {
		opcodes[name] = opcode(op)
	}
}

var opNames = [...]string{
	opLd:      "ld",
	opSt:      "st",
	opMov:     "mov",
	opCvta:    "cvta",
	opCvt:     "cvt",
	opAdd:     "add",
	opSub:     "sub",
	opMul:     "mul",
	opMad:     "mad",
	opFma:     "fma",
	opDiv:     "div",
	opRem:     "rem",
	opNeg:     "neg",
	opAbs:     "abs",
	opMin:     "min",
	opMax:     "max",
	opAnd:     "and",
	opOr:      "or",
	opXor:     "xor",
	opNot:     "not",
	opShl:     "shl",
	opShr:     "shr",
	opSetp:    "setp",
	opSelp:    "selp",
	opBra:     "bra",
	opRet:     "ret",
	opExit:    "exit",
	opBar:     "bar",
	opBarrier: "barrier",
	opShfl:    "shfl",
	opEx2:     "ex2",
	opLg2:     "lg2",
	opRcp:     "rcp",
	opSqrt:    "sqrt",
	opRsqrt:   "rsqrt",
	opSin:     "sin",
	opCos:     "cos",
	opPopc:    "popc",
	opClz:     "clz",
	opBrev:    "brev",
	opBfe:     "bfe",
	opBfi:     "bfi",
	opPrmt:    "prmt",
	opDp4a:    "dp4a",
	opAtom:    "atom",
	opRed:     "red",
	opMembar:  "membar",
	opFence:   "fence",
}
