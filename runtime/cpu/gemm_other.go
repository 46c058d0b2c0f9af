//go:build !amd64

package cpu

// gemmKernels are the micro-kernels this CPU can run: none but the
// portable twin here.
func gemmKernels() map[string]*gemmKernel { return map[string]*gemmKernel{} }

// linearPanel: the panel kernels are AVX-512 VNNI only.
func (b *Backend) linearPanel(*weight, []float32, []float32, int, bool) bool { return false }
