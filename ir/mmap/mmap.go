// Package mmap maps files read-only, so that lazy tensors can read weights
// in place, and lets consumers drop the resident pages of ranges they are
// done with: converting a model larger than memory then needs only the
// pages of the tensor at hand.
package mmap

import "os"

// Map maps the whole of f read-only. The returned function unmaps it.
func Map(f *os.File) ([]byte, func() error, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return []byte{}, func() error { return nil }, nil
	}
	return mapFile(f, st.Size())
}

// pageSize is the granularity of Release.
var pageSize = os.Getpagesize()

// interior returns the page-aligned part of b.
func interior(b []byte, base uintptr) (start, end int) {
	ps := uintptr(pageSize)
	s := (base + ps - 1) &^ (ps - 1)
	e := (base + uintptr(len(b))) &^ (ps - 1)
	if e <= s {
		return 0, 0
	}
	return int(s - base), int(e - base)
}
