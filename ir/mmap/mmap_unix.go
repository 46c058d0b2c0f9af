//go:build unix

package mmap

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return unix.Munmap(b) }, nil
}

// Release drops the resident pages wholly inside b, a slice of a mapping
// made by Map. The bytes stay readable: the kernel pages them in again
// from the file (usually from its cache) if they are touched.
func Release(b []byte) {
	if len(b) == 0 {
		return
	}
	s, e := interior(b, uintptr(unsafe.Pointer(&b[0])))
	if e > s {
		_ = unix.Madvise(b[s:e], unix.MADV_DONTNEED)
	}
}

// WillNeed asks the kernel to start reading b's pages ahead of use.
func WillNeed(b []byte) {
	if len(b) == 0 {
		return
	}
	s, e := interior(b, uintptr(unsafe.Pointer(&b[0])))
	if e > s {
		_ = unix.Madvise(b[s:e], unix.MADV_WILLNEED)
	}
}
