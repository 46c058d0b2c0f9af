//go:build !amd64

package cpu

// gemmKernels are the micro-kernels this CPU can run: none but the
// portable twin here.
func gemmKernels() map[string]*gemmKernel { return nil }
