package cuda

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// warpsPerBlock is how many rows (one warp each) a block of the warp-per-
// row kernels takes.
const warpsPerBlock = 4

// linearTokens is the kernels' LINEAR_TOKENS: the tokens one warp
// multiplies each decoded group of weights with.
const linearTokens = 4

// Run dispatches one op to its kernel.
func (b *Backend) Run(op string, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
	defer keepUntilLaunched(out, in) // the kernels see addresses only
	b.mu.Lock()
	err := b.err
	b.mu.Unlock()
	if err != nil {
		return err
	}
	switch op {
	case "Linear":
		var bias *lqrt.Tensor
		if len(in) == 3 {
			bias = in[2]
		}
		return b.linear(out, in[0], in[1], bias, 1, false, 0, attrs.Bool("exact"))
	case "Embedding":
		return b.embedding(out, in[0], in[1])
	case "RMSNorm", "LayerNorm":
		return b.norm(op, out, in, float32(attrs.Float("eps")))
	case "Add", "Mul":
		return b.binary(op, out, in[0], in[1])
	case "SiLU":
		return b.unary("silu_f32", out, in[0])
	case "GELU":
		if attrs.Str("approximate") == "none" {
			return b.unary("gelu_erf_f32", out, in[0])
		}
		return b.unary("gelu_f32", out, in[0])
	case "Relu":
		return b.unary("relu_f32", out, in[0])
	case "Scale":
		return b.scale(out, in[0], float32(attrs.Float("scale")))
	case "Softcap":
		return b.scale2("softcap_f32", out, in[0], float32(attrs.Float("cap")))
	case "Softmax":
		return b.softmax(out, in[0])
	case "CausalMask":
		return b.causalMask(out, in[0], int(attrs.Int("window")), attrs.Bool("zero"))
	case "MatMul":
		return b.matmul(out, in[0], in[1], attrs.Bool("transpose_b"))
	case "RoPE":
		return b.rope(out, attrs, in)
	case "KVCache":
		return b.kvCache(out, in[0], in[1], int(attrs.Int("pos")))
	case "Permute":
		return b.permute(out, in[0], attrs.Ints("perm"))
	case "Slice":
		return b.slice(out, in[0], int(attrs.Int("axis")), int(attrs.Int("start")))
	case "Concat":
		return b.concat(out, in)
	case "LowRank":
		start, end := int(attrs.Int("start")), int(attrs.Int("end"))
		add := attrs.Has("end")
		if !add { // the IR's op: the update itself
			start, end = 0, out.Len()/out.Shape[len(out.Shape)-1]
		}
		return b.lowRank(out, in[0], in[1], in[2], attrs.Float("scale"), start, end, add)
	case "FlashAttention":
		return b.flashAttention(out, nil, attrs, in)
	}
	if ok, err := b.runTraining(op, attrs, out, in); ok {
		return err
	}
	return fmt.Errorf("cuda: no kernel for op %s", op)
}

// dense2 is dense for an output and an input.
func dense2(what string, out, in *lqrt.Tensor) (driver.Ptr, driver.Ptr, error) {
	o, err := dense(out, what)
	if err != nil {
		return 0, 0, err
	}
	x, err := dense(in, what)
	return o, x, err
}

// dense is t's device address, which must be dense float32.
func dense(t *lqrt.Tensor, what string) (driver.Ptr, error) {
	if t.Type != quant.F32 || t.Stride0 != 0 {
		return 0, fmt.Errorf("cuda: %s: want dense F32, have %v%v", what, t.Type, t.Shape)
	}
	return ptr(t)
}

func (b *Backend) unary(kernel string, out, x *lqrt.Tensor) error {
	o, xp, err := dense2(kernel, out, x)
	if err != nil {
		return err
	}
	return b.launchN(kernel, out.Len(), o, xp, int32(out.Len()))
}

func (b *Backend) scale(out, x *lqrt.Tensor, s float32) error {
	return b.scale2("scale_f32", out, x, s)
}

// scale2 runs an elementwise kernel with one float parameter.
func (b *Backend) scale2(kernel string, out, x *lqrt.Tensor, s float32) error {
	o, xp, err := dense2(kernel, out, x)
	if err != nil {
		return err
	}
	return b.launchN(kernel, out.Len(), o, xp, s, int32(out.Len()))
}

// softmax normalizes the last axis, one block per row.
func (b *Backend) softmax(out, x *lqrt.Tensor) error {
	o, xp, err := dense2("Softmax", out, x)
	if err != nil {
		return err
	}
	n := x.Shape[len(x.Shape)-1]
	if n == 0 {
		return nil
	}
	return b.launch("softmax_f32", driver.Dim3{X: uint32(x.Len() / n)}, driver.Dim3{X: uint32(blockFor(n))}, o, xp, int32(n))
}

// blockFor is the block size for a row of n values: a warp per 32, at
// most 256 threads.
func blockFor(n int) int { return min(256, max(32, (n+31)/32*32)) }

// causalMask hides the scores of the keys each query may not see.
func (b *Backend) causalMask(out, x *lqrt.Tensor, window int, zero bool) error {
	if len(x.Shape) < 2 {
		return fmt.Errorf("cuda: CausalMask of %v: want [..., T, S]", x.Shape)
	}
	o, xp, err := dense2("CausalMask", out, x)
	if err != nil {
		return err
	}
	T, S := x.Shape[len(x.Shape)-2], x.Shape[len(x.Shape)-1]
	z := int32(0)
	if zero {
		z = 1
	}
	return b.launchN("causal_mask_f32", x.Len(), o, xp, int32(x.Len()), int32(T), int32(S), int32(window), z)
}

// matmul is batched a·b (or a·bᵀ) over 3-D float32 operands, b's
// batches shared by groups of a's (grouped-query attention); b may be a
// view of the KV cache (rows strided by the context).
func (b *Backend) matmul(out, a, bt *lqrt.Tensor, transB bool) error {
	if len(a.Shape) != 3 || len(bt.Shape) != 3 || a.Type != quant.F32 || bt.Type != quant.F32 {
		return fmt.Errorf("cuda: MatMul of %v%v and %v%v: want 3-D float32 operands", a.Type, a.Shape, bt.Type, bt.Shape)
	}
	B, M, K := a.Shape[0], a.Shape[1], a.Shape[2]
	Bk, N := bt.Shape[0], out.Shape[2]
	if Bk == 0 || B%Bk != 0 {
		return fmt.Errorf("cuda: MatMul batch %d is not a multiple of %d", B, Bk)
	}
	o, err := dense(out, "MatMul")
	if err != nil {
		return err
	}
	ap, err := ptr(a)
	if err != nil {
		return err
	}
	bp, err := ptr(bt)
	if err != nil {
		return err
	}
	tr := int32(0)
	if transB {
		tr = 1
	}
	return b.launchN("matmul_f32", B*M*N, o, ap, bp, int32(B), int32(M), int32(K), int32(N), int32(B/Bk),
		int32(a.Step0()), int32(bt.Step0()), tr)
}

// binary is Add or Mul with b broadcast along a's leading dimensions.
func (b *Backend) binary(op string, out, x, y *lqrt.Tensor) error {
	xs, ys := x.Shape, y.Shape
	if len(ys) > len(xs) || !slices.Equal(xs[len(xs)-len(ys):], ys) || !slices.Equal(out.Shape, xs) {
		return fmt.Errorf("cuda: %s of %v and %v: only a trailing broadcast has a kernel", op, xs, ys)
	}
	o, xp, err := dense2(op, out, x)
	if err != nil {
		return err
	}
	yp, err := ptr(y)
	if err != nil || y.Type != quant.F32 {
		return fmt.Errorf("cuda: %s: want an F32 operand, have %v%v", op, y.Type, y.Shape)
	}
	kernel := "add_f32"
	if op == "Mul" {
		kernel = "mul_f32"
	}
	return b.launchN(kernel, out.Len(), o, xp, yp, int32(out.Len()), int32(max(y.Len(), 1)))
}

func (b *Backend) norm(op string, out *lqrt.Tensor, in []*lqrt.Tensor, eps float32) error {
	o, xp, err := dense2(op, out, in[0])
	if err != nil {
		return err
	}
	d := in[0].Shape[len(in[0].Shape)-1]
	rows := in[0].Len() / d
	w, err := ptr(in[1])
	if err != nil {
		return err
	}
	grid, block := driver.Dim3{X: uint32(rows)}, driver.Dim3{X: 256}
	if rows == 0 {
		return nil
	}
	if op == "RMSNorm" {
		return b.launch("rms_norm_f32", grid, block, o, xp, w, int32(d), eps)
	}
	bias, err := ptr(in[2])
	if err != nil {
		return err
	}
	return b.launch("layer_norm_f32", grid, block, o, xp, w, bias, int32(d), eps)
}

// linearKernels are the weight types with a matrix kernel.
var linearKernels = map[quant.Type]string{}

// linearQ8Kernels are the weight types with a kernel on 8-bit
// activations, used unless a Linear is marked exact.
var linearQ8Kernels = map[quant.Type]string{quant.Q4_0: "linear_q8_q4_0", quant.Q8_0: "linear_q8_q8_0"}

// embeddingKernels are the weight types with an embedding-rows kernel.
var embeddingKernels = map[quant.Type]string{}

// linearTKernels are the weight types with a transposed-product kernel
// (training's dX = dY·W).
var linearTKernels = map[quant.Type]string{}

// The kernels are named by type: linear_q4_K, linear_t_q4_K, get_rows_q4_K, …
func init() {
	for _, t := range []quant.Type{quant.F32, quant.F16, quant.Q8_0, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1,
		quant.Q2_K, quant.Q3_K, quant.Q4_K, quant.Q5_K, quant.Q6_K, quant.IQ4_NL, quant.IQ4_XS} {
		name := strings.ToLower(t.String())
		if strings.HasSuffix(name, "_k") {
			name = strings.TrimSuffix(name, "_k") + "_K"
		}
		linearKernels[t] = "linear_" + name
		linearTKernels[t] = "linear_t_" + name
		embeddingKernels[t] = "get_rows_" + name
	}
}

// linear is out = alpha·x·Wᵀ (+ bias) (+ out when accumulate), over the
// rows of x from row0 on (out's rows likewise); exact keeps float32
// activations where a kernel on 8-bit ones exists.
func (b *Backend) linear(out, x, w, bias *lqrt.Tensor, alpha float32, accumulate bool, row0 int, exact bool) error {
	wd, err := matrixOf(w, "Linear")
	if err != nil {
		return err
	}
	in, nout := wd.rowLen, wd.rows
	T := x.Len()/in - row0
	if out.Len()/nout-row0 < T {
		T = out.Len()/nout - row0
	}
	o, xp, err := dense2("Linear", out, x)
	if err != nil {
		return err
	}
	o += driver.Ptr(4 * row0 * nout)
	xp += driver.Ptr(4 * row0 * in)
	var bp driver.Ptr
	if bias != nil {
		if bp, err = ptr(bias); err != nil {
			return err
		}
	}
	acc := int32(0)
	if accumulate {
		acc = 1
	}
	if T <= 0 {
		return nil
	}
	grid := driver.Dim3{X: uint32((nout + warpsPerBlock - 1) / warpsPerBlock), Y: uint32(T)}
	block := driver.Dim3{X: 32 * warpsPerBlock}
	if wd.typ == quant.F32 && in%32 != 0 {
		return b.launch("linear_f32_any", grid, block, o, xp, wd.ptr, bp, int32(in), int32(nout), alpha, acc)
	}
	// The typed kernels take linearTokens tokens per warp.
	grid.Y = uint32((T + linearTokens - 1) / linearTokens)
	if q8, ok := linearQ8Kernels[wd.typ]; ok && !exact {
		// ggml's way: the activations quantized to 8 bits per block, the
		// products on integers (what the CPU backend computes too).
		xq, err := b.alloc(int64(T * in))
		if err != nil {
			return err
		}
		ds, err := b.alloc(int64(T * in / 32 * 8))
		if err != nil {
			return err
		}
		blocks := T * in / 32
		if err := b.launch("quantize_q8", driver.Dim3{X: uint32((blocks + warpsPerBlock - 1) / warpsPerBlock)}, block,
			xq.ptr, ds.ptr, xp, int32(blocks)); err != nil {
			return err
		}
		err = b.launch(q8, grid, block, o, xq.ptr, ds.ptr, wd.ptr, bp, int32(in), int32(nout), int32(wd.rowBytes), int32(T), alpha, acc)
		keepUntilLaunched(xq, ds)
		return err
	}
	kernel, ok := linearKernels[wd.typ]
	if !ok || in%32 != 0 {
		return fmt.Errorf("cuda: Linear on %v weights [%d, %d]: no kernel", wd.typ, nout, in)
	}
	return b.launch(kernel, grid, block, o, xp, wd.ptr, bp, int32(in), int32(nout), int32(wd.rowBytes), int32(T), alpha, acc)
}

// lowRank adds scale·(x·Aᵀ)·Bᵀ to rows [start, end) of out (or, without
// add, writes it there).
func (b *Backend) lowRank(out, x, A, B *lqrt.Tensor, scale float64, start, end int, add bool) error {
	ad, err := matrixOf(A, "LowRank")
	if err != nil {
		return err
	}
	rows := end - start
	if rows <= 0 {
		return nil
	}
	// t = scale·x[start:end]·Aᵀ, then out[start:end] += t·Bᵀ.
	xs := &lqrt.Tensor{Type: quant.F32, Shape: []int{end, ad.rowLen}, Data: x.Data}
	t := b.Alloc(quant.F32, []int{end, ad.rows})
	if err := b.linear(t, xs, A, nil, float32(scale), false, start, true); err != nil {
		return err
	}
	err = b.linear(out, t, B, nil, 1, add, start, true)
	keepUntilLaunched(t)
	return err
}

func (b *Backend) embedding(out, table, ids *lqrt.Tensor) error {
	wd, ok := table.Data.(*devWeight)
	if !ok {
		return fmt.Errorf("cuda: Embedding: the table is not uploaded")
	}
	idt, ok := ids.Data.(*devTensor)
	if !ok || idt.host == nil {
		return fmt.Errorf("cuda: Embedding: token ids not written from the host")
	}
	for _, id := range idt.host {
		if id < 0 || int(id) >= wd.rows {
			return fmt.Errorf("token id %d is outside the vocabulary of %d", id, wd.rows)
		}
	}
	kernel, ok := embeddingKernels[wd.typ]
	if !ok {
		return fmt.Errorf("cuda: Embedding from %v rows: no kernel", wd.typ)
	}
	o, err := dense(out, "Embedding")
	if err != nil {
		return err
	}
	if len(idt.host) == 0 {
		return nil
	}
	return b.launch(kernel, driver.Dim3{X: uint32(len(idt.host))}, driver.Dim3{X: 128}, o, wd.buf.ptr, idt.buf.ptr, int32(wd.rowLen), int32(wd.rowBytes))
}

// copyRows copies rows of n floats: out[r·outStride + outOff + c] =
// x[r·inStride + inOff + c].
func (b *Backend) copyRows(out, x driver.Ptr, rows, n, outStride, outOff, inStride, inOff int) error {
	return b.launchN("copy_rows_f32", rows*n, out, x, int32(rows), int32(n), int32(outStride), int32(outOff), int32(inStride), int32(inOff))
}

// rope rotates pairs by the positions' angles, computed on the host in
// float64 exactly as the CPU backend does.
// ropeFactors is a frequency-factor weight (Llama 3's rope_freqs) on the
// host, read from the device once: every RoPE needs it there.
func (b *Backend) ropeFactors(t *lqrt.Tensor) ([]float32, error) {
	w, ok := t.Data.(*devWeight)
	b.mu.Lock()
	f, cached := b.factors[w]
	b.mu.Unlock()
	if ok && cached {
		return f, nil
	}
	f = make([]float32, t.Len())
	if err := b.ReadF32(t, f); err != nil {
		return nil, err
	}
	if ok {
		b.mu.Lock()
		b.factors[w] = f
		b.mu.Unlock()
	}
	return f, nil
}

func (b *Backend) rope(out *lqrt.Tensor, attrs ir.Attrs, in []*lqrt.Tensor) error {
	x := in[0]
	o, xp, err := dense2("RoPE", out, x)
	if err != nil {
		return err
	}
	pt, ok := in[1].Data.(*devTensor)
	if !ok || pt.host == nil {
		return fmt.Errorf("cuda: RoPE: positions not written from the host")
	}
	var factors []float32
	if len(in) == 3 {
		if factors, err = b.ropeFactors(in[2]); err != nil {
			return err
		}
	}
	freqScale := 1.0
	if attrs.Has("freq_scale") {
		freqScale = attrs.Float("freq_scale")
	}
	T, H, d := out.Shape[0], out.Shape[1], out.Shape[2]
	nDims, base := int(attrs.Int("n_dims")), attrs.Float("freq_base")
	half := nDims / 2
	cs, sn := make([]float32, T*half), make([]float32, T*half)
	for t := range T {
		for i := range half {
			theta := float64(pt.host[t]) * freqScale * math.Pow(base, -2*float64(i)/float64(nDims))
			if factors != nil {
				theta /= float64(factors[i])
			}
			s, c := math.Sincos(theta)
			if attrs.Bool("inverse") {
				s = -s
			}
			cs[t*half+i], sn[t*half+i] = float32(c), float32(s)
		}
	}
	tables, err := b.alloc(int64(8 * T * half))
	if err != nil {
		return err
	}
	if err := b.drv.CopyIn(tables.ptr, f32Bytes(append(cs, sn...))); err != nil {
		return err
	}
	// The dimensions past n_dims pass through: copy, then rotate in place.
	if err := b.copyRows(o, xp, 1, out.Len(), 0, 0, 0, 0); err != nil {
		return err
	}
	neox := int32(0)
	if attrs.Str("mode") == "neox" {
		neox = 1
	}
	err = b.launchN("rope_f32", T*H*half, o, o, tables.ptr, tables.ptr+driver.Ptr(4*T*half), int32(T), int32(H), int32(d), int32(half), neox)
	keepUntilLaunched(tables)
	return err
}

// kvCache writes x [T, Hkv, d] into the cache [Hkv, ctx, d] at pos; out
// becomes the view of positions [0, pos+T) of each head.
func (b *Backend) kvCache(out, x, cache *lqrt.Tensor, pos int) error {
	T, H, d := x.Shape[0], x.Shape[1], x.Shape[2]
	ctx := cache.Shape[1]
	if pos+T > ctx {
		return fmt.Errorf("cuda: KVCache: positions %d to %d past the cache of %d", pos, pos+T, ctx)
	}
	cp, xp, err := dense2("KVCache", cache, x)
	if err != nil {
		return err
	}
	for h := range H {
		if err := b.copyRows(cp, xp, T, d, d, (h*ctx+pos)*d, H*d, h*d); err != nil {
			return err
		}
	}
	out.Data, out.Stride0 = cache.Data, ctx*d
	return nil
}

func (b *Backend) permute(out, x *lqrt.Tensor, perm []int64) error {
	if len(perm) != 3 || x.Stride0 != 0 {
		return fmt.Errorf("cuda: Permute of %v by %v: only dense 3-D tensors have a kernel", x.Shape, perm)
	}
	s := x.Shape
	strides := []int{s[1] * s[2], s[2], 1}
	o, xp, err := dense2("Permute", out, x)
	if err != nil {
		return err
	}
	os := out.Shape
	return b.launchN("permute3_f32", out.Len(), o, xp, int32(os[0]), int32(os[1]), int32(os[2]),
		int32(strides[perm[0]]), int32(strides[perm[1]]), int32(strides[perm[2]]))
}

// slice copies x[..., start:start+len, ...] along axis into out.
func (b *Backend) slice(out, x *lqrt.Tensor, axis, start int) error {
	if axis < 0 {
		axis += len(x.Shape)
	}
	o, xp, err := dense2("Slice", out, x)
	if err != nil {
		return err
	}
	outer, inner := aroundAxis(x.Shape, axis)
	n := out.Shape[axis] * inner
	return b.copyRows(o, xp, outer, n, n, 0, x.Shape[axis]*inner, start*inner)
}

// aroundAxis is the product of shape's dimensions before axis and after
// it.
func aroundAxis(shape []int, axis int) (outer, inner int) {
	outer, inner = 1, 1
	for _, d := range shape[:axis] {
		outer *= d
	}
	for _, d := range shape[axis+1:] {
		inner *= d
	}
	return outer, inner
}

// concat puts the inputs' rows one after the other.
func (b *Backend) concat(out *lqrt.Tensor, in []*lqrt.Tensor) error {
	o, err := dense(out, "Concat")
	if err != nil {
		return err
	}
	at := 0
	for _, t := range in {
		p, err := dense(t, "Concat")
		if err != nil {
			return err
		}
		if err := b.copyRows(o, p, 1, t.Len(), 0, at, 0, 0); err != nil {
			return err
		}
		at += t.Len()
	}
	return nil
}

// flashAttention runs the fused attention kernel: q [B?, H, T, d] against
// k and v [B?, Hkv, S, d] (3-D ones may be KV cache views), an optional
// mask broadcast to [B, H, T, S].
// attention is what the attention kernels share: the operands' shapes
// and device addresses, as FlashAttention's inputs (q, k, v, and a mask
// last when masked) give them.
type attention struct {
	B, H, Hkv, T, S, d, dv int
	kStride, vStride       int
	q, k, v, mask          driver.Ptr
	mst                    [4]int
}

func attentionOf(q, k, v, mask *lqrt.Tensor) (attention, error) {
	r := len(q.Shape)
	a := attention{B: 1}
	if r == 4 {
		a.B = q.Shape[0]
	}
	a.H, a.T, a.d = q.Shape[r-3], q.Shape[r-2], q.Shape[r-1]
	a.Hkv, a.S, a.dv = k.Shape[r-3], k.Shape[r-2], v.Shape[r-1]
	if a.dv > 256 || a.d > 256 || a.Hkv == 0 || a.H%a.Hkv != 0 {
		return a, fmt.Errorf("cuda: FlashAttention with %d heads over %d, head sizes %d and %d: no kernel (sizes ≤ 256)", a.H, a.Hkv, a.d, a.dv)
	}
	// Per-head strides: a 3-D operand may be a cache view with its own.
	a.kStride, a.vStride = a.S*a.d, a.S*a.dv
	if r == 3 {
		a.kStride, a.vStride = k.Step0(), v.Step0()
	}
	var err error
	if a.q, err = dense(q, "FlashAttention"); err != nil {
		return a, err
	}
	if a.k, err = ptr(k); err != nil {
		return a, err
	}
	if a.v, err = ptr(v); err != nil {
		return a, err
	}
	if mask != nil {
		if a.mask, err = ptr(mask); err != nil {
			return a, err
		}
		a.mst = maskStrides(mask.Shape, a.B, a.H, a.T, a.S)
	}
	return a, nil
}

// args are the kernels' trailing arguments, from H to the mask strides.
func (a attention) args(attrs ir.Attrs) []any {
	causal := int32(0)
	if attrs.Bool("causal") {
		causal = 1
	}
	return []any{int32(a.H), int32(a.Hkv), int32(a.T), int32(a.S), int32(a.d), int32(a.dv), int32(a.kStride), int32(a.vStride),
		float32(attrs.Float("scale")), float32(attrs.Float("softcap")), causal, int32(attrs.Int("window")),
		int32(a.mst[0]), int32(a.mst[1]), int32(a.mst[2]), int32(a.mst[3])}
}

// maskOf is FlashAttention's optional mask, the input after the first n.
func maskOf(in []*lqrt.Tensor, n int) *lqrt.Tensor {
	if len(in) > n {
		return in[n]
	}
	return nil
}

// flashAttention runs the fused attention, one warp per query row; with
// lse set, each row's log-sum-exp goes there too (training keeps it for
// the backward).
func (b *Backend) flashAttention(out, lse *lqrt.Tensor, attrs ir.Attrs, in []*lqrt.Tensor) error {
	a, err := attentionOf(in[0], in[1], in[2], maskOf(in, 3))
	if err != nil {
		return err
	}
	o, err := dense(out, "FlashAttention")
	if err != nil {
		return err
	}
	var lp driver.Ptr
	if lse != nil {
		if lp, err = dense(lse, "FlashAttention"); err != nil {
			return err
		}
	}
	grid := driver.Dim3{X: uint32((a.H*a.T + warpsPerBlock - 1) / warpsPerBlock), Y: uint32(a.B)}
	return b.launch("flash_attn_f32", grid, driver.Dim3{X: 32 * warpsPerBlock}, append([]any{o, lp, a.q, a.k, a.v, a.mask}, a.args(attrs)...)...)
}

// flashAttentionGrad computes dq, dk, dv from q, k, v, the output o, its
// log-sum-exp and do (and the mask): D = do·o per query row, then dq
// with a warp per query row and dk, dv with a warp per key row, every
// sum in a fixed order.
func (b *Backend) flashAttentionGrad(attrs ir.Attrs, outs, in []*lqrt.Tensor) error {
	a, err := attentionOf(in[0], in[1], in[2], maskOf(in, 6))
	if err != nil {
		return err
	}
	var p [6]driver.Ptr // o, lse, do, dq, dk, dv
	for i, t := range []*lqrt.Tensor{in[3], in[4], in[5], outs[0], outs[1], outs[2]} {
		if p[i], err = dense(t, "FlashAttentionGrad"); err != nil {
			return err
		}
	}
	rows := a.B * a.H * a.T
	if rows == 0 {
		return nil
	}
	D, err := b.alloc(int64(4 * rows))
	if err != nil {
		return err
	}
	block := driver.Dim3{X: 32 * warpsPerBlock}
	warps := func(n int) uint32 { return uint32((n + warpsPerBlock - 1) / warpsPerBlock) }
	if err := b.launch("flash_attn_grad_d_f32", driver.Dim3{X: warps(rows)}, block, D.ptr, p[0], p[2], int32(rows), int32(a.dv)); err != nil {
		return err
	}
	tail := a.args(attrs)
	if err := b.launch("flash_attn_grad_q_f32", driver.Dim3{X: warps(a.H * a.T), Y: uint32(a.B)}, block,
		append([]any{p[3], a.q, a.k, a.v, p[2], p[1], D.ptr, a.mask}, tail...)...); err != nil {
		return err
	}
	err = b.launch("flash_attn_grad_kv_f32", driver.Dim3{X: warps(a.Hkv * a.S), Y: uint32(a.B)}, block,
		append([]any{p[4], p[5], a.q, a.k, a.v, p[2], p[1], D.ptr, a.mask}, tail...)...)
	keepUntilLaunched(D)
	return err
}

// maskStrides are a mask's strides for b, h, t, s of the [B,H,T,S]
// scores it broadcasts to (0 where it repeats).
func maskStrides(shape []int, B, H, T, S int) [4]int {
	var mst [4]int
	full := [4]int{B, H, T, S}
	stride := 1
	for i := len(shape) - 1; i >= 0; i-- {
		ax := 4 - len(shape) + i
		if shape[i] != 1 || full[ax] == 1 {
			mst[ax] = stride
		}
		stride *= shape[i]
	}
	return mst
}
