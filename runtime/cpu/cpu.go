// Package cpu is lqc's CPU backend: kernels for every op of the IR op
// set, working on quantized weights in place (block dot products against
// activations quantized to 8 bits, as ggml does), parallel across cores.
package cpu

import (
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
)

// Backend is the CPU backend.
type Backend struct {
	pool *pool
	free freeBuffers
	// keepPanels: weights stay packed for the panel kernels after their
	// first use (KeepPanels).
	keepPanels bool
}

// KeepPanels makes the backend keep every matrix it multiplies through
// the panel kernels packed, as llama.cpp repacks its CPU weights: the
// memory of the weights again (a little more: scales as float32), for
// products of a few tokens (a batched decoding step, a short prompt) at
// the kernels' full speed instead of paying a packing each time. A
// long-running server wants it; a one-off run does not.
func (b *Backend) KeepPanels() { b.keepPanels = true }

// New returns a CPU backend running on threads cores (0: all).
func New(threads int) *Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Backend{pool: newPool(threads), free: freeBuffers{byLen: map[int][][]float32{}}}
}

// freeBuffers are float32 activation buffers released by the executor,
// by length, for the next Alloc of that length: a training step allocates
// the same shapes window after window, so its activations come from a
// few hot buffers instead of fresh pages the kernel must fault in and
// zero. Buffers of at least FreeMinBytes are kept, at most FreeMaxBytes
// in all; beyond that a released buffer is left to the garbage collector.
// lqc plan models this pool (ir.LiveOptions).
type freeBuffers struct {
	mu    sync.Mutex
	byLen map[int][][]float32
	bytes int
}

const (
	FreeMinBytes = 4 << 10 // smaller ones cost the allocator little
	FreeMaxBytes = 1 << 30
)

// Release implements runtime.Releaser.
func (b *Backend) Release(t *lqrt.Tensor) {
	d, ok := t.Data.([]float32)
	if !ok || 4*len(d) < FreeMinBytes || t.Stride0 != 0 {
		return
	}
	f := &b.free
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.bytes+4*len(d) > FreeMaxBytes {
		return
	}
	f.byLen[len(d)] = append(f.byLen[len(d)], d)
	f.bytes += 4 * len(d)
	t.Data = nil // a use after release fails loudly
}

// reuse returns a released buffer of n values, cleared, or nil.
func (f *freeBuffers) reuse(n int) []float32 {
	f.mu.Lock()
	list := f.byLen[n]
	if len(list) == 0 {
		f.mu.Unlock()
		return nil
	}
	d := list[len(list)-1]
	f.byLen[n] = list[:len(list)-1]
	f.bytes -= 4 * n
	f.mu.Unlock()
	clear(d)
	return d
}

func (b *Backend) Name() string {
	return fmt.Sprintf("cpu (%d threads, %s)", b.pool.threads, simdName())
}

func (b *Backend) Close() error {
	b.pool.close()
	return nil
}

// weight is a weight matrix as kernels see it: encoded rows in place.
type weight struct {
	typ      quant.Type
	rows     int
	rowLen   int
	rowBytes int
	data     []byte
	// panels is the matrix packed for the panel kernels, kept when the
	// backend keeps panels; made once, on first use.
	packOnce sync.Once
	panels   []byte
	// columns is the matrix decoded and transposed (column c's values
	// contiguous), for products that read it a column at a time: a LoRA
	// B factor; made once, on first use.
	columnsOnce sync.Once
	columns     []float32
}

// transposed returns w decoded to float32 with its columns as rows:
// element (r, c) at c·rows + r.
func (w *weight) transposed() ([]float32, error) {
	var err error
	w.columnsOnce.Do(func() {
		cols := make([]float32, w.rows*w.rowLen)
		row := make([]float32, w.rowLen)
		for r := range w.rows {
			if err = w.typ.Decode(row, w.row(r)); err != nil {
				return
			}
			for c, v := range row {
				cols[c*w.rows+r] = v
			}
		}
		w.columns = cols
	})
	if w.columns == nil && err == nil {
		err = fmt.Errorf("cpu: a %v matrix failed to decode", w.typ)
	}
	return w.columns, err
}

func (w *weight) row(r int) []byte { return w.data[r*w.rowBytes : (r+1)*w.rowBytes] }

// Weight keeps matrices in their encoded form, mapped in place, and
// decodes vectors (norm gains, biases) to float32 once.
func (b *Backend) Weight(t *ir.Tensor) (*lqrt.Tensor, error) {
	shape := make([]int, len(t.Shape))
	for i, d := range t.Shape {
		shape[i] = int(d)
	}
	if !t.Type.CanConvert() && !t.Type.Quantized() { // integers, bools, F64: constants of imported graphs
		data, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		d, err := fromBytes(t.Type, data)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		return &lqrt.Tensor{Type: t.Type, Shape: shape, Data: d}, nil
	}
	if len(t.Shape) <= 1 {
		v, err := t.Float32s()
		if err != nil {
			return nil, err
		}
		// F16 and BF16 values are exact in float32 and keep their type
		// (generic kernels round results to it); block types become F32.
		typ := quant.F32
		if t.Type == quant.F16 || t.Type == quant.BF16 {
			typ = t.Type
		}
		return &lqrt.Tensor{Type: typ, Shape: shape, Data: v}, nil
	}
	if !t.Type.CanConvert() {
		return nil, fmt.Errorf("tensor %s: the CPU backend has no kernels for %v", t.Name, t.Type)
	}
	data, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	w := &weight{typ: t.Type, rows: int(t.Rows()), rowLen: int(t.RowLen()), rowBytes: int(t.RowBytes()), data: data}
	return &lqrt.Tensor{Type: t.Type, Shape: shape, Data: w}, nil
}

func (b *Backend) Alloc(t quant.Type, shape []int) *lqrt.Tensor {
	out := &lqrt.Tensor{Type: t, Shape: append([]int(nil), shape...)}
	if t == quant.F32 {
		if d := b.free.reuse(out.Len()); d != nil {
			out.Data = d
			return out
		}
	}
	out.Data = allocData(t, out.Len())
	return out
}

func (b *Backend) View(t *lqrt.Tensor, shape []int) *lqrt.Tensor {
	return &lqrt.Tensor{Type: t.Type, Shape: append([]int(nil), shape...), Data: t.Data}
}

func (b *Backend) WriteI32(t *lqrt.Tensor, src []int32) error {
	dst, ok := t.Data.([]int32)
	if !ok || len(dst) != len(src) {
		return fmt.Errorf("cpu: WriteI32 into %v%v", t.Type, t.Shape)
	}
	copy(dst, src)
	return nil
}

func (b *Backend) ReadF32(t *lqrt.Tensor, dst []float32) error {
	src, ok := t.Data.([]float32)
	if !ok || len(src) < len(dst) || t.Stride0 != 0 {
		return fmt.Errorf("cpu: ReadF32 from %v%v", t.Type, t.Shape)
	}
	copy(dst, src)
	return nil
}

func f32s(t *lqrt.Tensor) []float32 { return t.Data.([]float32) }

// RunOutputs runs an op with several outputs (the general tensor ops).
func (b *Backend) RunOutputs(op string, attrs ir.Attrs, outs []*lqrt.Tensor, in []*lqrt.Tensor) error {
	switch {
	case len(outs) == 1:
		return b.Run(op, attrs, outs[0], in)
	case op == "FlashAttention":
		return b.runFlashAttention(attrs, outs[0], outs[1], in)
	case op == "FlashAttentionGrad":
		return b.flashAttentionGrad(attrs, outs, in)
	}
	return b.runGeneric(op, attrs, outs, in)
}

// fast reports whether an op shared by the transformer graphs and
// imported ones has the dense float32 operands and shapes its fast kernel
// takes; otherwise the generic kernel runs it (encoded weight matrices
// decoded first).
func fast(op string, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) bool {
	f32 := func(t *lqrt.Tensor) bool {
		_, ok := t.Data.([]float32)
		return t.Type == quant.F32 && ok
	}
	for _, t := range in {
		if !f32(t) {
			return false
		}
	}
	if !f32(out) {
		return false
	}
	switch op {
	case "Add", "Mul":
		a, bs := in[0].Shape, in[1].Shape
		if len(bs) > len(a) || !slices.Equal(out.Shape, a) {
			return false
		}
		return slices.Equal(a[len(a)-len(bs):], bs)
	case "MatMul":
		return len(in[0].Shape) == 3 && len(in[1].Shape) == 3 && len(out.Shape) == 3
	case "Softmax":
		ax := attrs.Int("axis")
		return !attrs.Has("axis") || ax == -1 || int(ax) == len(out.Shape)-1
	case "Permute":
		return len(out.Shape) == 3 && in[0].Stride0 == 0
	}
	return true
}

// runFlashAttention runs FlashAttention, with its log-sum-exp into lse
// when lse is not nil. A constant operand (a folded mask) arrives as a
// weight: decoded.
func (b *Backend) runFlashAttention(attrs ir.Attrs, out, lse *lqrt.Tensor, in []*lqrt.Tensor) error {
	ops, err := denseOperands(in)
	if err != nil {
		return err
	}
	var mask *lqrt.Tensor
	if len(ops) == 4 {
		mask = ops[3]
	}
	b.flashAttention(out, lse, ops[0], ops[1], ops[2], mask, float32(attrs.Float("scale")), float32(attrs.Float("softcap")), attrs.Bool("causal"), int(attrs.Int("window")))
	return nil
}

// denseOperands decodes the weights among in (constants folded into a
// graph) to float32 tensors.
func denseOperands(in []*lqrt.Tensor) ([]*lqrt.Tensor, error) {
	ops := make([]*lqrt.Tensor, len(in))
	for i, t := range in {
		ops[i] = t
		if _, w := t.Data.(*weight); w {
			d, err := dense(t)
			if err != nil {
				return nil, err
			}
			ops[i] = &lqrt.Tensor{Type: quant.F32, Shape: t.Shape, Data: d}
		}
	}
	return ops, nil
}

// Run dispatches one op.
func (b *Backend) Run(op string, attrs ir.Attrs, out *lqrt.Tensor, in []*lqrt.Tensor) error {
	if genericOps[op] {
		return b.runGeneric(op, attrs, []*lqrt.Tensor{out}, in)
	}
	switch op {
	case "Add", "Mul", "MatMul", "Softmax", "Permute", "Slice":
		if !fast(op, attrs, out, in) {
			if op == "MatMul" && attrs.Bool("transpose_b") {
				return fmt.Errorf("cpu: MatMul with transpose_b takes 3-D float32 operands")
			}
			return b.runGeneric(op, attrs, []*lqrt.Tensor{out}, in)
		}
	case "GELU":
		if attrs.Str("approximate") == "none" {
			geluErf(f32s(out), f32s(in[0]))
			return nil
		}
	}
	switch op {
	case "Linear":
		var bias []float32
		if len(in) == 3 {
			bias = f32s(in[2])
		}
		return b.linear(f32s(out), f32s(in[0]), in[1], bias, attrs.Bool("exact"))
	case "Embedding":
		return b.embedding(f32s(out), in[0], in[1].Data.([]int32))
	case "RMSNorm":
		rmsNorm(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), float32(attrs.Float("eps")))
	case "LayerNorm":
		layerNorm(b.pool, f32s(out), f32s(in[0]), f32s(in[1]), f32s(in[2]), float32(attrs.Float("eps")))
	case "Add":
		broadcastAdd(f32s(out), f32s(in[0]), f32s(in[1]))
	case "Mul":
		broadcastMul(f32s(out), f32s(in[0]), f32s(in[1]))
	case "SiLU":
		silu(f32s(out), f32s(in[0]))
	case "Softcap":
		softcap(f32s(out), f32s(in[0]), float32(attrs.Float("cap")))
	case "GELU":
		gelu(f32s(out), f32s(in[0]))
	case "Scale":
		scale(f32s(out), f32s(in[0]), float32(attrs.Float("scale")))
	case "Softmax":
		softmax(b.pool, f32s(out), f32s(in[0]), out.Shape[len(out.Shape)-1])
	case "CausalMask":
		causalMask(f32s(out), f32s(in[0]), out.Shape, attrs.Bool("zero"), int(attrs.Int("window")))
	case "RoPE":
		var factors []float32
		if len(in) == 3 {
			factors = f32s(in[2])
		}
		freqScale := 1.0
		if attrs.Has("freq_scale") {
			freqScale = attrs.Float("freq_scale")
		}
		rope(f32s(out), f32s(in[0]), in[1].Data.([]int32), factors, freqScale, out.Shape, int(attrs.Int("n_dims")), attrs.Float("freq_base"),
			attrs.Str("mode") == "neox", attrs.Bool("inverse"))
	case "MatMul":
		return b.matmul(out, in[0], in[1], attrs.Bool("transpose_b"))
	case "Permute":
		return permute(out, in[0], attrs.Ints("perm"))
	case "Slice":
		slice(out, in[0], int(attrs.Int("axis")), int(attrs.Int("start")))
	case "KVCache":
		kvCache(out, in[0], in[1], int(attrs.Int("pos")))
	case "LowRank":
		// The executor's form adds the update to rows [start, end) of out;
		// the IR's op (no range) is the update itself.
		start, end := int(attrs.Int("start")), int(attrs.Int("end"))
		if !attrs.Has("end") {
			clear(f32s(out))
			end = out.Shape[0]
			for _, d := range out.Shape[1 : len(out.Shape)-1] {
				end *= d
			}
		}
		return b.lowRank(f32s(out), in[0], in[1], in[2], attrs.Float("scale"), start, end)
	case "FlashAttention":
		return b.runFlashAttention(attrs, out, nil, in)
	default:
		if kernel, ok := trainingKernels[op]; ok {
			return kernel(b, attrs, out, in)
		}
		return fmt.Errorf("cpu: no kernel for op %s", op)
	}
	return nil
}
