// Package runtime executes lqc's IR: it binds a model's graph to a
// Backend, which owns memory and kernels, and runs it token by token with
// a KV cache (Session). The CPU backend is package runtime/cpu; a CUDA
// backend will implement the same interface with kernels loaded through
// the driver API.
package runtime

import (
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/quant"
)

// Tensor is an n-dimensional array owned by a backend. Activations are
// F32 (token ids and positions I32); weights keep their storage type.
type Tensor struct {
	Type  quant.Type
	Shape []int
	// Stride0 is the distance, in elements, between consecutive indices of
	// the first dimension; 0 means the tensor is dense. Views into a KV
	// cache are the only strided tensors.
	Stride0 int
	// Data is the backend's storage (the CPU's: []float32, []int32, or the
	// encoded bytes of a weight).
	Data any
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Step0 is the distance, in elements, between consecutive indices of the
// first dimension: Stride0, or the slice size of a dense tensor.
func (t *Tensor) Step0() int {
	if t.Stride0 != 0 {
		return t.Stride0
	}
	n := 1
	for _, d := range t.Shape[1:] {
		n *= d
	}
	return n
}

// Backend runs the ops of the IR op set (see ir.OpNames) on one device.
type Backend interface {
	// Name identifies the backend ("cpu").
	Name() string
	// Weight makes a model weight available to kernels. The CPU reads
	// mapped bytes in place; a GPU backend uploads them.
	Weight(w *ir.Tensor) (*Tensor, error)
	// Alloc returns an activation tensor; its contents are undefined.
	Alloc(t quant.Type, shape []int) *Tensor
	// Run executes op on the inputs into out, whose shape the executor has
	// bound. KVCache receives the layer's cache tensor [Hkv, ctx, d] as a
	// second input and the first position to write as attrs["pos"]; its
	// out is a view of the cache. Besides the IR's ops the executor issues
	// two of its own: LowRank, a LoRA update added in place to rows
	// [start, end) of out: out += scale·(x·Aᵀ)·Bᵀ with in = [x, A, B]; and
	// Concat, the inputs' rows one after the other (batched decoding).
	Run(op string, attrs ir.Attrs, out *Tensor, in []*Tensor) error
	// RunOutputs runs an op with several outputs (LayerNormalization's
	// statistics, Attention's caches, DynamicQuantizeLinear's parameters).
	RunOutputs(op string, attrs ir.Attrs, outs []*Tensor, in []*Tensor) error
	// View returns t reshaped, sharing its storage (t must be dense).
	View(t *Tensor, shape []int) *Tensor
	// WriteI32 copies host integers into an I32 tensor.
	WriteI32(t *Tensor, src []int32) error
	// ReadF32 copies an F32 tensor to the host.
	ReadF32(t *Tensor, dst []float32) error
	// Write and Read copy a tensor of any element type from and to
	// little-endian bytes (F16 and BF16 as their 16 bits).
	Write(t *Tensor, src []byte) error
	Read(t *Tensor) ([]byte, error)
	// Close releases the backend's resources (worker threads).
	Close() error
}

// Releaser is a backend that reuses the storage of activations: the
// executor of whole graphs (Model.Run, Trainer) hands it each tensor no
// value of the graph reads any more (views included), so a training
// step's thousands of activations recycle a few buffers instead of
// asking the allocator, and the operating system, for fresh memory.
type Releaser interface {
	Release(t *Tensor)
}
