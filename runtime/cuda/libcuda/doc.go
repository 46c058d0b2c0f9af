// Package libcuda is the real CUDA driver behind driver.Driver: libcuda
// loaded at run time with purego, so the binary builds without cgo and
// runs where no GPU is. Building with the tag nocuda leaves it (and
// purego, which makes the binary ask for glibc's dynamic loader) out,
// for a fully static CPU-only binary.
package libcuda
