//go:build !unix

package mmap

import (
	"io"
	"os"
)

// Without mmap the file is read into memory.
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}

// Release is a no-op without mmap.
func Release(b []byte) {}

// WillNeed is a no-op without mmap.
func WillNeed(b []byte) {}
