//go:build linux && !nocuda

package libcuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// Where libcuda is looked for, after $LQC_CUDA_LIB and the loader's own
// search path: the distributions' folders, NVIDIA's container toolkit,
// the CUDA toolkit's stubs' neighbours, and WSL.
var searchDirs = []string{
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu",
	"/usr/lib64",
	"/usr/lib",
	"/usr/local/nvidia/lib64",
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/compat",
	"/usr/lib/wsl/lib",
}

const libName = "libcuda.so.1"

// symbols the driver needs: the _v2 names are the 64-bit-size API every
// driver since CUDA 4 exports.
var symbols = []string{
	"cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
	"cuDeviceGetAttribute", "cuDeviceTotalMem_v2", "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease_v2",
	"cuCtxSetCurrent", "cuCtxSynchronize", "cuMemAlloc_v2", "cuMemFree_v2", "cuMemGetInfo_v2", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2",
	"cuModuleLoadDataEx", "cuModuleGetFunction", "cuLaunchKernel", "cuGetErrorName", "cuGetErrorString",
}

// device attributes (cuda.h's CUdevice_attribute).
const (
	attrComputeMajor = 75
	attrComputeMinor = 76
)

const errOutOfMemory = 2 // CUDA_ERROR_OUT_OF_MEMORY

// lib is the loaded library: one per process, initialised once.
type lib struct {
	path string
	fn   map[string]uintptr
}

var (
	loadOnce sync.Once
	loaded   *lib
	loadErr  error
)

// candidates are the paths tried, in order.
func candidates() []string {
	var c []string
	if p := os.Getenv("LQC_CUDA_LIB"); p != "" {
		c = append(c, p)
	}
	c = append(c, libName) // the loader's search path (LD_LIBRARY_PATH, ld.so.cache)
	for _, d := range searchDirs {
		c = append(c, filepath.Join(d, libName))
	}
	if ms, _ := filepath.Glob("/usr/local/cuda-*/compat/" + libName); len(ms) > 0 {
		c = append(c, ms...)
	}
	return c
}

func load() (*lib, error) {
	loadOnce.Do(func() { loaded, loadErr = loadFrom(candidates()) })
	return loaded, loadErr
}

// loadFrom opens the first of paths that loads and initialises it.
func loadFrom(paths []string) (*lib, error) {
	for _, path := range paths {
		h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			continue
		}
		l := &lib{path: path, fn: map[string]uintptr{}}
		for _, s := range symbols {
			p, err := purego.Dlsym(h, s)
			if err != nil {
				return nil, fmt.Errorf("cuda: %s lacks %s: not an NVIDIA driver, or one too old", path, s)
			}
			l.fn[s] = p
		}
		if err := l.check("cuInit", l.call("cuInit", 0)); err != nil {
			return nil, fmt.Errorf("cuda: %s: %w", path, err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("cuda: no NVIDIA driver: %s not found (looked for $LQC_CUDA_LIB, then the loader's path, then %s)",
		libName, strings.Join(searchDirs, ", "))
}

// out is a pinned heap value for the driver to write a result into: the
// driver writes through an address the Go compiler cannot see, which
// must not be on a goroutine stack that may move.
func out[T any](pin *runtime.Pinner) *T {
	p := new(T)
	pin.Pin(p)
	return p
}

// addr is p as a call argument.
func addr[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }

func (l *lib) call(name string, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(l.fn[name], args...)
	return uintptr(int32(r))
}

// check turns a CUresult into a Go error with the driver's name and
// description of it.
func (l *lib) check(what string, r uintptr) error {
	if r == 0 {
		return nil
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	name, desc := out[*byte](&pin), out[*byte](&pin)
	l.call("cuGetErrorName", r, addr(name))
	l.call("cuGetErrorString", r, addr(desc))
	return &Error{Call: what, Code: int(r), Name: cstring(*name), Desc: cstring(*desc)}
}

// Error is a failed driver call.
type Error struct {
	Call       string
	Code       int
	Name, Desc string
}

func (e *Error) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("%s: CUDA error %d", e.Call, e.Code)
	}
	return fmt.Sprintf("%s: %s (%s)", e.Call, e.Name, e.Desc)
}

func cstring(p *byte) string {
	if p == nil {
		return ""
	}
	var b []byte
	for q := unsafe.Pointer(p); *(*byte)(q) != 0; q = unsafe.Add(q, 1) {
		b = append(b, *(*byte)(q))
	}
	return string(b)
}

// Devices lists the GPUs the driver sees.
func Devices() ([]driver.DeviceInfo, error) {
	l, err := load()
	if err != nil {
		return nil, err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	n := out[int32](&pin)
	if err := l.check("cuDeviceGetCount", l.call("cuDeviceGetCount", addr(n))); err != nil {
		return nil, err
	}
	var infos []driver.DeviceInfo
	for i := range int(*n) {
		info, err := l.info(i)
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func (l *lib) info(ordinal int) (driver.DeviceInfo, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	dev, major, minor, version := out[int32](&pin), out[int32](&pin), out[int32](&pin), out[int32](&pin)
	mem := out[uint64](&pin)
	name := out[[256]byte](&pin)
	if err := l.check("cuDeviceGet", l.call("cuDeviceGet", addr(dev), uintptr(ordinal))); err != nil {
		return driver.DeviceInfo{}, err
	}
	for _, c := range []struct {
		what string
		args []uintptr
	}{
		{"cuDeviceGetName", []uintptr{addr(name), uintptr(len(name)), uintptr(*dev)}},
		{"cuDeviceGetAttribute", []uintptr{addr(major), attrComputeMajor, uintptr(*dev)}},
		{"cuDeviceGetAttribute", []uintptr{addr(minor), attrComputeMinor, uintptr(*dev)}},
		{"cuDeviceTotalMem_v2", []uintptr{addr(mem), uintptr(*dev)}},
		{"cuDriverGetVersion", []uintptr{addr(version)}},
	} {
		if err := l.check(c.what, l.call(c.what, c.args...)); err != nil {
			return driver.DeviceInfo{}, err
		}
	}
	return driver.DeviceInfo{Name: cstring(&name[0]), Memory: int64(*mem), Major: int(*major), Minor: int(*minor),
		Driver: fmt.Sprintf("%d.%d", *version/1000, *version%1000/10)}, nil
}

// Open makes a context on GPU ordinal (its primary context, which the
// CUDA runtime and cuBLAS share).
func Open(ordinal int) (driver.Driver, error) {
	l, err := load()
	if err != nil {
		return nil, err
	}
	info, err := l.info(ordinal)
	if err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	if info.Major < 7 || info.Major == 7 && info.Minor < 5 {
		return nil, fmt.Errorf("cuda: GPU %d (%s) has compute capability %d.%d; lqc's kernels need 7.5 (Turing) or newer", ordinal, info.Name, info.Major, info.Minor)
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	dev, pctx := out[int32](&pin), out[uintptr](&pin)
	if err := l.check("cuDeviceGet", l.call("cuDeviceGet", addr(dev), uintptr(ordinal))); err != nil {
		return nil, err
	}
	if err := l.check("cuDevicePrimaryCtxRetain", l.call("cuDevicePrimaryCtxRetain", addr(pctx), uintptr(*dev))); err != nil {
		return nil, fmt.Errorf("cuda: GPU %d: %w", ordinal, err)
	}
	return &ctx{lib: l, info: info, dev: *dev, ctx: *pctx, free: map[int64][]driver.Ptr{}, size: map[driver.Ptr]int64{}}, nil
}

// ctx is a context on one GPU. The driver binds contexts to OS threads
// and goroutines move between them, so every call locks the goroutine to
// its thread and makes the context current first; mu keeps calls (and
// the allocator's free lists) in order.
type ctx struct {
	lib  *lib
	info driver.DeviceInfo
	dev  int32
	ctx  uintptr

	mu sync.Mutex
	// free holds freed allocations by rounded size, for reuse:
	// cuMemAlloc and cuMemFree synchronise the device and cost far more
	// than a kernel.
	free   map[int64][]driver.Ptr
	size   map[driver.Ptr]int64
	cached int64
}

// enter locks the calling goroutine to its thread with the context current.
func (d *ctx) enter() (leave func(), err error) {
	d.mu.Lock()
	runtime.LockOSThread()
	leave = func() { runtime.UnlockOSThread(); d.mu.Unlock() }
	if err := d.lib.check("cuCtxSetCurrent", d.lib.call("cuCtxSetCurrent", d.ctx)); err != nil {
		leave()
		return nil, err
	}
	return leave, nil
}

func (d *ctx) Name() string              { return "cuda" }
func (d *ctx) Device() driver.DeviceInfo { return d.info }

// roundSize is the allocator's size class: 512-byte steps up to 1 MiB,
// then 2 MiB steps (the driver's own granularity for large blocks).
func roundSize(n int64) int64 {
	if n <= 1<<20 {
		return (n + 511) &^ 511
	}
	return (n + 2<<20 - 1) &^ (2<<20 - 1)
}

func (d *ctx) Alloc(n int64) (driver.Ptr, error) {
	leave, err := d.enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	n = roundSize(n)
	if list := d.free[n]; len(list) > 0 {
		p := list[len(list)-1]
		d.free[n] = list[:len(list)-1]
		d.cached -= n
		return p, nil
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	p := out[uint64](&pin)
	r := d.lib.call("cuMemAlloc_v2", addr(p), uintptr(n))
	if r == errOutOfMemory && d.cached > 0 {
		d.releaseCached()
		r = d.lib.call("cuMemAlloc_v2", addr(p), uintptr(n))
	}
	if err := d.lib.check("cuMemAlloc", r); err != nil {
		free, total := out[uint64](&pin), out[uint64](&pin)
		if d.lib.call("cuMemGetInfo_v2", addr(free), addr(total)) == 0 {
			return 0, fmt.Errorf("%w: %s needed, %s free of %s on %s", err, mib(n), mib(int64(*free)), mib(int64(*total)), d.info.Name)
		}
		return 0, fmt.Errorf("%w: %s needed", err, mib(n))
	}
	d.size[driver.Ptr(*p)] = n
	return driver.Ptr(*p), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// releaseCached gives the cached blocks back to the driver.
func (d *ctx) releaseCached() {
	sizes := make([]int64, 0, len(d.free))
	for s := range d.free {
		sizes = append(sizes, s)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] > sizes[j] })
	for _, s := range sizes {
		for _, p := range d.free[s] {
			d.lib.call("cuMemFree_v2", uintptr(p))
			delete(d.size, p)
		}
		delete(d.free, s)
	}
	d.cached = 0
}

// Free keeps the block for the next allocation of its size class.
func (d *ctx) Free(p driver.Ptr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.size[p]
	if !ok {
		return fmt.Errorf("cuda: freeing %#x, which was not allocated", uint64(p))
	}
	d.free[n] = append(d.free[n], p)
	d.cached += n
	return nil
}

func (d *ctx) CopyIn(dst driver.Ptr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	var pin runtime.Pinner
	pin.Pin(&src[0])
	defer pin.Unpin()
	return d.lib.check("cuMemcpyHtoD", d.lib.call("cuMemcpyHtoD_v2", uintptr(dst), uintptr(unsafe.Pointer(&src[0])), uintptr(len(src))))
}

func (d *ctx) CopyOut(dst []byte, src driver.Ptr) error {
	if len(dst) == 0 {
		return nil
	}
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	var pin runtime.Pinner
	pin.Pin(&dst[0])
	defer pin.Unpin()
	return d.lib.check("cuMemcpyDtoH", d.lib.call("cuMemcpyDtoH_v2", uintptr(unsafe.Pointer(&dst[0])), uintptr(src), uintptr(len(dst))))
}

// JIT options for cuModuleLoadDataEx (cuda.h's CUjit_option): the
// compiler's log, so a PTX the driver refuses says why.
const (
	jitErrorLogBuffer          = 5
	jitErrorLogBufferSizeBytes = 6
)

func (d *ctx) Load(ptx string) (driver.Module, error) {
	leave, err := d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	src := append([]byte(ptx), 0)
	logBuf := make([]byte, 8192)
	opts := []int32{jitErrorLogBuffer, jitErrorLogBufferSizeBytes}
	vals := []uintptr{uintptr(unsafe.Pointer(&logBuf[0])), uintptr(len(logBuf))}
	var pin runtime.Pinner
	for _, p := range []any{&src[0], &logBuf[0], &opts[0], &vals[0]} {
		pin.Pin(p)
	}
	defer pin.Unpin()
	mod := out[uintptr](&pin)
	r := d.lib.call("cuModuleLoadDataEx", addr(mod), uintptr(unsafe.Pointer(&src[0])),
		uintptr(len(opts)), uintptr(unsafe.Pointer(&opts[0])), uintptr(unsafe.Pointer(&vals[0])))
	if err := d.lib.check("cuModuleLoadDataEx", r); err != nil {
		if log := strings.TrimSpace(cstring(&logBuf[0])); log != "" {
			err = fmt.Errorf("%w: %s", err, strings.ReplaceAll(log, "\n", "; "))
		}
		return nil, err
	}
	return &module{d: d, mod: *mod}, nil
}

type module struct {
	d   *ctx
	mod uintptr
}

func (m *module) Kernel(name string) (driver.Kernel, error) {
	leave, err := m.d.enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	var pin runtime.Pinner
	defer pin.Unpin()
	cname := append([]byte(name), 0)
	pin.Pin(&cname[0])
	fn := out[uintptr](&pin)
	r := m.d.lib.call("cuModuleGetFunction", addr(fn), m.mod, uintptr(unsafe.Pointer(&cname[0])))
	if err := m.d.lib.check("cuModuleGetFunction "+name, r); err != nil {
		return nil, err
	}
	return &kernel{d: m.d, fn: *fn, name: name}, nil
}

type kernel struct {
	d    *ctx
	fn   uintptr
	name string
}

// Launch passes each argument through kernelParams: an array of
// pointers, each to an argument's value.
func (k *kernel) Launch(grid, block driver.Dim3, shared int, args ...any) error {
	vals := make([]uint64, len(args))
	ptrs := make([]uintptr, max(len(args), 1))
	for i, a := range args {
		switch x := a.(type) {
		case driver.Ptr:
			vals[i] = uint64(x)
		case uint64:
			vals[i] = x
		case int64:
			vals[i] = uint64(x)
		case int32:
			vals[i] = uint64(uint32(x))
		case uint32:
			vals[i] = uint64(x)
		case float32:
			vals[i] = uint64(*(*uint32)(unsafe.Pointer(&x)))
		default:
			return fmt.Errorf("cuda: %s parameter %d: a %T", k.name, i, a)
		}
		ptrs[i] = uintptr(unsafe.Pointer(&vals[i])) // little-endian: the low bytes come first
	}
	leave, err := k.d.enter()
	if err != nil {
		return err
	}
	defer leave()
	var pin runtime.Pinner
	if len(vals) > 0 {
		pin.Pin(&vals[0])
	}
	pin.Pin(&ptrs[0])
	defer pin.Unpin()
	dim := func(v uint32) uintptr { return uintptr(max(v, 1)) }
	r := k.d.lib.call("cuLaunchKernel", k.fn, dim(grid.X), dim(grid.Y), dim(grid.Z), dim(block.X), dim(block.Y), dim(block.Z),
		uintptr(shared), 0, uintptr(unsafe.Pointer(&ptrs[0])), 0)
	return k.d.lib.check("cuLaunchKernel "+k.name, r)
}

func (d *ctx) Sync() error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	return d.lib.check("cuCtxSynchronize", d.lib.call("cuCtxSynchronize"))
}

func (d *ctx) Close() error {
	leave, err := d.enter()
	if err != nil {
		return err
	}
	defer leave()
	d.releaseCached()
	return d.lib.check("cuDevicePrimaryCtxRelease", d.lib.call("cuDevicePrimaryCtxRelease_v2", uintptr(d.dev)))
}
