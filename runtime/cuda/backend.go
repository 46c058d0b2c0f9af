// Package cuda is lqc's CUDA backend: runtime.Backend on an NVIDIA GPU
// through the driver API (package driver), or on the PTX simulator
// (package sim) with the very same kernels. The kernels are CUDA C
// compiled ahead to PTX (kernels/kernels.ptx, `make ptx`), embedded and
// JIT-compiled by the driver for the GPU at hand.
//
// Tensors live in device memory; token ids and positions keep a host copy
// as well, since the host computes RoPE's angles from them (in float64,
// as the CPU backend does) and checks ids against the vocabulary. Device
// memory goes back when the Go value holding it is collected.
package cuda

import (
	_ "embed"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

//go:embed kernels/kernels.ptx
var kernelsPTX string

// Backend runs the IR's ops with CUDA kernels.
type Backend struct {
	drv driver.Driver
	mod driver.Module

	mu      sync.Mutex
	kernels map[string]driver.Kernel
	factors map[*devWeight][]float32 // RoPE frequency factors, read back once
	err     error                    // the first failed allocation, reported by the next Run
}

// buffer is device memory, freed when no tensor refers to it any more.
type buffer struct {
	ptr  driver.Ptr
	size int64
}

// devTensor is a tensor's data on the device: a buffer (shared by views)
// and, for I32 tensors, the values on the host as well.
type devTensor struct {
	buf  *buffer
	host []int32
}

// devWeight is a weight matrix or vector as uploaded: its encoded rows.
type devWeight struct {
	buf      *buffer
	typ      quant.Type
	rows     int
	rowLen   int
	rowBytes int
}

// New is the backend on drv, the kernels loaded.
func New(drv driver.Driver) (*Backend, error) {
	mod, err := drv.Load(kernelsPTX)
	if err != nil {
		return nil, fmt.Errorf("%s: loading the kernels: %w", drv.Name(), err)
	}
	return &Backend{drv: drv, mod: mod, kernels: map[string]driver.Kernel{}, factors: map[*devWeight][]float32{}}, nil
}

func (b *Backend) Name() string {
	if b.drv.Name() == "cuda-sim" {
		return "cuda-sim (PTX simulator)"
	}
	return "cuda (" + b.drv.Device().Name + ")"
}

func (b *Backend) Close() error { return b.drv.Close() }

func (b *Backend) alloc(n int64) (*buffer, error) {
	p, err := b.drv.Alloc(max(n, 4))
	if err != nil {
		return nil, err
	}
	buf := &buffer{ptr: p, size: n}
	drv := b.drv
	runtime.AddCleanup(buf, func(p driver.Ptr) { drv.Free(p) }, p)
	return buf, nil
}

// keepUntilLaunched keeps scratch buffers (or tensors) alive up to this
// call: a kernel receives only their addresses, and the collector would
// otherwise free a buffer, through its cleanup, once its last Go use is
// behind, possibly before the kernel that reads it is launched. Launches
// are in order on one stream, so a buffer freed after its kernel is
// queued is reused only by later kernels.
func keepUntilLaunched(xs ...any) {
	for _, x := range xs {
		runtime.KeepAlive(x)
	}
}

// Alloc returns a device tensor; a failed allocation is reported by the
// next Run (the interface gives Alloc no error of its own).
func (b *Backend) Alloc(t quant.Type, shape []int) *lqrt.Tensor {
	out := &lqrt.Tensor{Type: t, Shape: slices.Clone(shape)}
	n := int64(out.Len()) * int64(elemSize(t))
	buf, err := b.alloc(n)
	if err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = fmt.Errorf("cuda: allocating %v%v: %w", t, shape, err)
		}
		b.mu.Unlock()
		return out
	}
	out.Data = &devTensor{buf: buf}
	return out
}

func elemSize(t quant.Type) int {
	switch t {
	case quant.F16, quant.BF16:
		return 2
	case quant.I8, quant.Bool:
		return 1
	case quant.I64:
		return 8
	}
	return 4
}

// Weight uploads w in chunks of rows, never holding it whole on the host.
// Float vectors (norm gains, biases), and float matrices whose rows are
// not whole 32-value blocks or are BF16, go up as F32.
func (b *Backend) Weight(w *ir.Tensor) (*lqrt.Tensor, error) {
	shape := make([]int, len(w.Shape))
	for i, d := range w.Shape {
		shape[i] = int(d)
	}
	typ := w.Type
	rows, rowLen := int(w.Rows()), int(w.RowLen())
	asF32 := typ.IsFloat() && typ != quant.F32 && (len(shape) < 2 || rowLen%32 != 0 || typ == quant.BF16)
	if asF32 {
		typ = quant.F32
	}
	// Block types upload as their encoded rows; the kernels decode them.
	if !typ.Quantized() && typ != quant.F32 && typ != quant.F16 && typ != quant.I32 {
		return nil, fmt.Errorf("cuda: weight %s of type %v", w.Name, w.Type)
	}
	rowBytes := int(typ.RowSize(int64(rowLen)))
	buf, err := b.alloc(int64(rows) * int64(rowBytes))
	if err != nil {
		return nil, fmt.Errorf("cuda: uploading %s: %w", w.Name, err)
	}
	chunk := max(1, (16<<20)/max(rowBytes, 1))
	var raw []byte
	var f []float32
	for r := 0; r < rows; r += chunk {
		n := min(chunk, rows-r)
		var part []byte
		if asF32 {
			f = slices.Grow(f[:0], n*rowLen)[:n*rowLen]
			if err := w.ReadRowsF32(f, int64(r), int64(n)); err != nil {
				return nil, err
			}
			part = f32Bytes(f)
		} else {
			raw = slices.Grow(raw[:0], n*rowBytes)[:n*rowBytes]
			if err := w.ReadRows(raw, int64(r), int64(n)); err != nil {
				return nil, err
			}
			part = raw
		}
		if err := b.drv.CopyIn(buf.ptr+driver.Ptr(r*rowBytes), part); err != nil {
			return nil, fmt.Errorf("cuda: uploading %s: %w", w.Name, err)
		}
	}
	return &lqrt.Tensor{Type: typ, Shape: shape, Data: &devWeight{buf: buf, typ: typ, rows: rows, rowLen: rowLen, rowBytes: rowBytes}}, nil
}

func f32Bytes(f []float32) []byte {
	out := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// ptr is where t's data starts on the device.
func ptr(t *lqrt.Tensor) (driver.Ptr, error) {
	switch d := t.Data.(type) {
	case *devTensor:
		return d.buf.ptr, nil
	case *devWeight:
		return d.buf.ptr, nil
	}
	return 0, fmt.Errorf("cuda: a %v%v tensor that is not on the device", t.Type, t.Shape)
}

func (b *Backend) View(t *lqrt.Tensor, shape []int) *lqrt.Tensor {
	return &lqrt.Tensor{Type: t.Type, Shape: slices.Clone(shape), Stride0: t.Stride0, Data: t.Data}
}

func (b *Backend) WriteI32(t *lqrt.Tensor, src []int32) error {
	d, ok := t.Data.(*devTensor)
	if !ok {
		return fmt.Errorf("cuda: WriteI32 into a tensor not on the device")
	}
	d.host = slices.Clone(src)
	raw := make([]byte, 4*len(src))
	for i, v := range src {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	return b.drv.CopyIn(d.buf.ptr, raw)
}

func (b *Backend) ReadF32(t *lqrt.Tensor, dst []float32) error {
	raw, err := b.Read(t)
	if err != nil {
		return err
	}
	if t.Type != quant.F32 || len(raw) < 4*len(dst) {
		return fmt.Errorf("cuda: ReadF32 of a %v%v tensor", t.Type, t.Shape)
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return nil
}

func (b *Backend) Write(t *lqrt.Tensor, src []byte) error {
	p, err := ptr(t)
	if err != nil {
		return err
	}
	if d, ok := t.Data.(*devTensor); ok && t.Type == quant.I32 {
		d.host = make([]int32, len(src)/4)
		for i := range d.host {
			d.host[i] = int32(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
	return b.drv.CopyIn(p, src)
}

// Read copies t to the host; a strided view (a KV cache) comes back dense.
func (b *Backend) Read(t *lqrt.Tensor) ([]byte, error) {
	if err := b.drv.Sync(); err != nil {
		return nil, err
	}
	p, err := ptr(t)
	if err != nil {
		return nil, err
	}
	es := elemSize(t.Type)
	n := t.Len() * es
	if t.Stride0 == 0 || len(t.Shape) == 0 {
		out := make([]byte, n)
		return out, b.drv.CopyOut(out, p)
	}
	inner := n / t.Shape[0]
	out := make([]byte, n)
	for i := range t.Shape[0] {
		if err := b.drv.CopyOut(out[i*inner:(i+1)*inner], p+driver.Ptr(i*t.Stride0*es)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// kernel is the named kernel of the module, looked up once.
func (b *Backend) kernel(name string) (driver.Kernel, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k, ok := b.kernels[name]; ok {
		return k, nil
	}
	k, err := b.mod.Kernel(name)
	if err != nil {
		return nil, err
	}
	b.kernels[name] = k
	return k, nil
}

// launch runs a kernel over n threads in blocks of 256.
func (b *Backend) launchN(name string, n int, args ...any) error {
	if n == 0 {
		return nil
	}
	return b.launch(name, driver.Dim3{X: uint32((n + 255) / 256)}, driver.Dim3{X: 256}, args...)
}

func (b *Backend) launch(name string, grid, block driver.Dim3, args ...any) error {
	k, err := b.kernel(name)
	if err != nil {
		return err
	}
	if err := k.Launch(grid, block, 0, args...); err != nil {
		return fmt.Errorf("cuda: %s: %w", name, err)
	}
	return nil
}

func (b *Backend) RunOutputs(op string, attrs ir.Attrs, outs []*lqrt.Tensor, in []*lqrt.Tensor) error {
	defer keepUntilLaunched(outs, in)
	switch {
	case len(outs) == 1:
		return b.Run(op, attrs, outs[0], in)
	case op == "FlashAttention" && len(outs) == 2:
		return b.flashAttention(outs[0], outs[1], attrs, in)
	case op == "FlashAttentionGrad" && len(outs) == 3:
		return b.flashAttentionGrad(attrs, outs, in)
	}
	return fmt.Errorf("cuda: no kernel for op %s with %d outputs", op, len(outs))
}
