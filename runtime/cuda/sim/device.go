// Package sim is a CUDA device simulated on the CPU: it implements
// driver.Driver with device memory in host memory and kernels run by
// interpreting their PTX, instruction by instruction, as the PTX ISA
// defines them. lqc's CUDA backend runs on it unchanged (--device
// cuda-sim), so every kernel is checked against the CPU backend on
// machines without a GPU, CI's included.
//
// Blocks of a grid run independently (in parallel on the host's cores).
// Within a block each thread runs until it reaches a synchronizing
// instruction — bar.sync, or shfl.sync, which the lanes of a warp meet
// at together — so that a warp's shuffles see every lane's value at the
// same point, as lockstep execution would give, while divergent code
// between sync points needs no reconvergence stack. A kernel whose
// threads wait at different sync points, or read or write outside every
// allocation, fails with the thread, the PTX line and the address.
package sim

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/lqc-dev/lqc/runtime/cuda/driver"
)

// Address windows: global allocations from globalBase; generic addresses
// of shared and local memory (cvta) in windows of their own.
const (
	globalBase = 1 << 32
	sharedBase = 1 << 48
	localBase  = 2 << 48
	windowSize = 1 << 40
	allocAlign = 256
)

// Device is a simulated GPU. It is safe for concurrent use.
type Device struct {
	mu     sync.RWMutex
	atomMu sync.Mutex // atom and red: read-modify-writes across blocks
	allocs []*alloc   // by address
	next   uint64
	used   int64
	// Memory is the device memory it reports (and enforces).
	Memory int64
}

type alloc struct {
	base uint64
	data []byte
}

// New returns a simulated device with 16 GiB of memory.
func New() *Device { return &Device{next: globalBase, Memory: 16 << 30} }

func (d *Device) Name() string { return "cuda-sim" }

func (d *Device) Device() driver.DeviceInfo {
	return driver.DeviceInfo{Name: "lqc PTX simulator", Memory: d.Memory, Major: 7, Minor: 5, Driver: "sim"}
}

func (d *Device) Alloc(n int64) (driver.Ptr, error) {
	if n < 0 {
		return 0, fmt.Errorf("cuda-sim: allocation of %d bytes", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.used+n > d.Memory {
		return 0, fmt.Errorf("cuda-sim: out of memory: %d bytes in use, %d more asked, %d in all", d.used, n, d.Memory)
	}
	a := &alloc{base: d.next, data: make([]byte, n)}
	// A gap after each allocation makes running off its end a fault.
	d.next += (uint64(n) + 2*allocAlign - 1) / allocAlign * allocAlign
	d.allocs = append(d.allocs, a)
	d.used += n
	return driver.Ptr(a.base), nil
}

func (d *Device) Free(p driver.Ptr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].base >= uint64(p) })
	if i == len(d.allocs) || d.allocs[i].base != uint64(p) {
		return fmt.Errorf("cuda-sim: free of %#x, which is not an allocation", uint64(p))
	}
	d.used -= int64(len(d.allocs[i].data))
	d.allocs = append(d.allocs[:i], d.allocs[i+1:]...)
	return nil
}

// find is the allocation holding [addr, addr+n), and addr's offset in it.
func (d *Device) find(addr uint64, n int) (*alloc, int, bool) {
	i := sort.Search(len(d.allocs), func(i int) bool { return d.allocs[i].base > addr }) - 1
	if i < 0 {
		return nil, 0, false
	}
	a := d.allocs[i]
	off := addr - a.base
	if off+uint64(n) > uint64(len(a.data)) {
		return nil, 0, false
	}
	return a, int(off), true
}

func (d *Device) CopyIn(dst driver.Ptr, src []byte) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	a, off, ok := d.find(uint64(dst), len(src))
	if !ok {
		return fmt.Errorf("cuda-sim: copy of %d bytes to %#x: outside every allocation", len(src), uint64(dst))
	}
	copy(a.data[off:], src)
	return nil
}

func (d *Device) CopyOut(dst []byte, src driver.Ptr) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	a, off, ok := d.find(uint64(src), len(dst))
	if !ok {
		return fmt.Errorf("cuda-sim: copy of %d bytes from %#x: outside every allocation", len(dst), uint64(src))
	}
	copy(dst, a.data[off:])
	return nil
}

func (d *Device) Sync() error  { return nil }
func (d *Device) Close() error { return nil }

// Load parses a PTX module.
func (d *Device) Load(ptx string) (driver.Module, error) {
	m, err := parse(ptx)
	if err != nil {
		return nil, err
	}
	return &simModule{dev: d, m: m}, nil
}

type simModule struct {
	dev *Device
	m   *module
}

func (m *simModule) Kernel(name string) (driver.Kernel, error) {
	k, ok := m.m.kernels[name]
	if !ok {
		return nil, fmt.Errorf("cuda-sim: the module has no kernel %s", name)
	}
	return &simKernel{dev: m.dev, k: k}, nil
}

type simKernel struct {
	dev *Device
	k   *kernel
}

// Launch interprets the kernel on every block of the grid.
func (sk *simKernel) Launch(grid, block driver.Dim3, shared int, args ...any) error {
	k := sk.k
	if len(args) != len(k.params) {
		return fmt.Errorf("cuda-sim: %s takes %d parameters, given %d", k.name, len(k.params), len(args))
	}
	params := make([]byte, k.paramSz)
	for i, a := range args {
		var v uint64
		size := 4
		switch x := a.(type) {
		case driver.Ptr:
			v, size = uint64(x), 8
		case uint64:
			v, size = x, 8
		case int64:
			v, size = uint64(x), 8
		case int32:
			v = uint64(uint32(x))
		case uint32:
			v = uint64(x)
		case float32:
			v = uint64(f32bits(x))
		default:
			return fmt.Errorf("cuda-sim: %s parameter %d: a %T", k.name, i, a)
		}
		if size != k.params[i].size {
			return fmt.Errorf("cuda-sim: %s parameter %d (%s) is %d bytes, given %d", k.name, i, k.params[i].name, k.params[i].size, size)
		}
		putLE(params[k.params[i].offset:], v, size)
	}
	threads := block.Count()
	if threads > 1024 {
		return fmt.Errorf("cuda-sim: %s: %d threads in a block, more than 1024", k.name, threads)
	}
	blocks := grid.Count()
	sk.dev.mu.RLock()
	defer sk.dev.mu.RUnlock()
	var (
		wg       sync.WaitGroup
		next     = make(chan int)
		errMu    sync.Mutex
		firstErr error
	)
	for range min(runtime.GOMAXPROCS(0), blocks) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bl := sk.newBlock(grid, block, shared, params)
			for b := range next {
				if err := bl.runBlock(b); err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	for b := range blocks {
		errMu.Lock()
		failed := firstErr != nil
		errMu.Unlock()
		if failed {
			break
		}
		next <- b
	}
	close(next)
	wg.Wait()
	return firstErr
}

var errDeadlock = errors.New("deadlock")
