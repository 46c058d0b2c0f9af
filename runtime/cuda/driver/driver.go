// Package driver is the part of the CUDA driver API lqc's CUDA backend
// uses, as an interface with two implementations: the real driver
// (libcuda.so.1, loaded at run time without cgo) and the PTX simulator
// (package sim), which interprets the same kernels on the CPU so that
// every kernel is tested where there is no GPU.
package driver

import "fmt"

// Ptr is a device address.
type Ptr uint64

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z uint32 }

// Count is the number of blocks or threads the shape holds.
func (d Dim3) Count() int { return int(max(d.X, 1)) * int(max(d.Y, 1)) * int(max(d.Z, 1)) }

// DeviceInfo describes a GPU.
type DeviceInfo struct {
	Name         string
	Memory       int64 // bytes
	Major, Minor int   // compute capability
	Driver       string
}

func (d DeviceInfo) String() string {
	return fmt.Sprintf("%s (compute %d.%d, %.1f GiB, driver %s)", d.Name, d.Major, d.Minor, float64(d.Memory)/(1<<30), d.Driver)
}

// Driver is a CUDA context on one device.
type Driver interface {
	// Name is "cuda" or "cuda-sim".
	Name() string
	// Device describes the device the context runs on.
	Device() DeviceInfo
	Alloc(bytes int64) (Ptr, error)
	Free(p Ptr) error
	// CopyIn copies host bytes to the device; CopyOut back.
	CopyIn(dst Ptr, src []byte) error
	CopyOut(dst []byte, src Ptr) error
	// Load loads a PTX module (JIT-compiled by the real driver).
	Load(ptx string) (Module, error)
	// Sync waits for the work issued so far and reports its first error.
	Sync() error
	Close() error
}

// Module is a loaded PTX module.
type Module interface {
	Kernel(name string) (Kernel, error)
}

// Kernel is an entry point of a module.
type Kernel interface {
	// Launch runs the kernel on grid × block threads with shared bytes of
	// dynamic shared memory. Each argument is a Ptr, int32, uint32,
	// float32, int64 or uint64, in the order and of the sizes of the
	// kernel's parameters.
	Launch(grid, block Dim3, shared int, args ...any) error
}
