package gguf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/atomicfile"
)

// Progress reports how far a write has come, once per tensor written.
type Progress struct {
	Index, Count int    // tensors done, tensors in all
	Name         string // the tensor just written
	Bytes, Total int64  // data bytes written so far, and in all
}

// WriteOptions tune WriteFile.
type WriteOptions struct {
	// Alignment of tensor data; 0 means DefaultAlignment. Any other value
	// is written as general.alignment.
	Alignment int
	// Threads produce tensor rows in parallel; 0 means GOMAXPROCS.
	Threads int
	// Progress, when set, is called after each tensor.
	Progress func(Progress)
}

// WriteFile writes a GGUF v3 file with the given metadata and tensors.
//
// Tensors are produced one at a time, in row chunks computed by Threads
// workers and written in order, so memory use does not grow with the
// model. The file is written to a temporary name in the same directory
// and renamed over path only when complete: on any error, or when ctx is
// cancelled, no partial file is left behind.
func WriteFile(ctx context.Context, path string, md ir.Metadata, tensors []*ir.Tensor, opt WriteOptions) (err error) {
	align := uint64(DefaultAlignment)
	md = append(ir.Metadata(nil), md...)
	if opt.Alignment != 0 {
		if opt.Alignment < 0 || opt.Alignment&(opt.Alignment-1) != 0 {
			return fmt.Errorf("alignment %d is not a power of two", opt.Alignment)
		}
		align = uint64(opt.Alignment)
		md.Set("general.alignment", uint32(align))
	}
	seen := map[string]bool{}
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("tensor %s would be written twice", t.Name)
		}
		seen[t.Name] = true
		if len(t.Name) > maxNameLen {
			return fmt.Errorf("tensor name %q is longer than %d bytes", t.Name, maxNameLen)
		}
		if len(t.Shape) > maxDims {
			return fmt.Errorf("tensor %s has %d dimensions, GGUF allows %d", t.Name, len(t.Shape), maxDims)
		}
		if !t.Type.InGGML() {
			return fmt.Errorf("tensor %s has element type %v, which GGUF cannot hold", t.Name, t.Type)
		}
	}

	return atomicfile.Write(path, func(w *bufio.Writer) error {
		if err := writeHeader(w, md, tensors, align); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var total int64
		for _, t := range tensors {
			total += t.NumBytes()
		}
		threads := opt.Threads
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		var done int64
		finished := func(i int) error {
			t := tensors[i]
			t.Release()
			n := t.NumBytes()
			done += n
			if opt.Progress != nil {
				opt.Progress(Progress{Index: i + 1, Count: len(tensors), Name: t.Name, Bytes: done, Total: total})
			}
			return pad(w, uint64(n), align)
		}
		if err := streamTensors(ctx, w, tensors, threads, finished); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

func writeHeader(w io.Writer, md ir.Metadata, tensors []*ir.Tensor, align uint64) error {
	e := &encoder{w: w}
	e.u32(Magic)
	e.u32(Version)
	e.u64(uint64(len(tensors)))
	e.u64(uint64(len(md)))
	for _, kv := range md {
		e.str(kv.Key)
		if err := e.value(kv.Value); err != nil {
			return fmt.Errorf("metadata %s: %w", kv.Key, err)
		}
	}
	var off uint64
	for _, t := range tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for i := len(t.Shape) - 1; i >= 0; i-- { // GGML order: row length first
			e.u64(uint64(t.Shape[i]))
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off = alignUp(off+uint64(t.NumBytes()), align)
	}
	if e.err != nil {
		return e.err
	}
	return pad(w, e.n, align)
}

func pad(w io.Writer, n, align uint64) error {
	var zeros [64]byte
	for p := alignUp(n, align) - n; p > 0; {
		k := min(p, uint64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		p -= k
	}
	return nil
}

// chunkBytes is the target size of the row chunks workers produce: small
// enough that every tensor splits into many chunks and the workers stay
// busy, large enough that handing chunks around costs nothing.
const chunkBytes = 1 << 20

// chunk is a run of rows of one tensor.
type chunk struct {
	tensor   int
	first, n int64
	last     bool // the tensor's final chunk
	buf      []byte
	done     chan error
}

// streamTensors writes the encoded rows of every tensor in order. Chunks
// of rows are produced by threads workers in a sliding window that runs
// across tensor boundaries, so no worker idles while a small tensor
// finishes; they are written as soon as they are next in line. At most
// 2·threads+1 chunks are in memory at once. finished(i) is called after
// tensor i's last byte is written.
func streamTensors(ctx context.Context, w io.Writer, tensors []*ir.Tensor, threads int, finished func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// next yields the chunks in file order.
	ti, row := 0, int64(0)
	next := func() *chunk {
		for ti < len(tensors) && tensors[ti].Rows() == row {
			ti, row = ti+1, 0
		}
		if ti == len(tensors) {
			return nil
		}
		t := tensors[ti]
		per := max(1, chunkBytes/t.RowBytes())
		c := &chunk{tensor: ti, first: row, n: min(per, t.Rows()-row), done: make(chan error, 1)}
		row += c.n
		c.last = row == t.Rows()
		return c
	}

	work := make(chan *chunk)
	defer close(work)
	for range threads {
		go func() {
			for c := range work {
				t := tensors[c.tensor]
				c.done <- t.ReadRows(c.buf, c.first, c.n)
			}
		}()
	}

	var free [][]byte
	var window []*chunk
	limit := 2*threads + 1
	fill := func() error {
		for len(window) < limit {
			c := next()
			if c == nil {
				return nil
			}
			size := int(c.n * tensors[c.tensor].RowBytes())
			if k := len(free); k > 0 && cap(free[k-1]) >= size {
				c.buf, free = free[k-1][:size], free[:k-1]
			} else {
				c.buf = make([]byte, size, max(size, chunkBytes))
			}
			select {
			case work <- c:
			case <-ctx.Done():
				return ctx.Err()
			}
			window = append(window, c)
		}
		return nil
	}
	// Tensors with no rows to stream still count as finished, in order.
	flushEmpty := func(upTo int, from *int) error {
		for ; *from < upTo; *from++ {
			if err := finished(*from); err != nil {
				return err
			}
		}
		return nil
	}
	nextFinished := 0
	for {
		if err := fill(); err != nil {
			return err
		}
		if len(window) == 0 {
			return flushEmpty(len(tensors), &nextFinished)
		}
		c := window[0]
		window = window[1:]
		select {
		case err := <-c.done:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := flushEmpty(c.tensor, &nextFinished); err != nil {
			return err
		}
		if _, err := w.Write(c.buf); err != nil {
			return err
		}
		free = append(free, c.buf)
		if c.last {
			if err := finished(c.tensor); err != nil {
				return err
			}
			nextFinished = c.tensor + 1
		}
	}
}

// encoder writes little-endian GGUF values, keeping the first error and
// counting bytes.
type encoder struct {
	w   io.Writer
	n   uint64
	err error
	buf [8]byte
}

func (e *encoder) write(p []byte) {
	if e.err != nil {
		return
	}
	k, err := e.w.Write(p)
	e.n += uint64(k)
	e.err = err
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.write(e.buf[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.write(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.write(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.write(e.buf[:8])
}
func (e *encoder) str(s string) {
	e.u64(uint64(len(s)))
	if e.err == nil {
		k, err := io.WriteString(e.w, s)
		e.n += uint64(k)
		e.err = err
	}
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// valueType returns the GGUF type of a Go metadata value.
func valueType(v any) (uint32, error) {
	switch v.(type) {
	case uint8:
		return typeUint8, nil
	case int8:
		return typeInt8, nil
	case uint16:
		return typeUint16, nil
	case int16:
		return typeInt16, nil
	case uint32:
		return typeUint32, nil
	case int32:
		return typeInt32, nil
	case float32:
		return typeFloat32, nil
	case bool:
		return typeBool, nil
	case string:
		return typeString, nil
	case uint64:
		return typeUint64, nil
	case int64:
		return typeInt64, nil
	case float64:
		return typeFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool, []string, []uint64, []int64, []float64, []any:
		return typeArray, nil
	}
	return 0, fmt.Errorf("unsupported metadata value type %T", v)
}

func (e *encoder) value(v any) error {
	vt, err := valueType(v)
	if err != nil {
		return err
	}
	e.u32(vt)
	return e.payload(v)
}

func (e *encoder) payload(v any) error {
	switch x := v.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		e.u8(boolByte(x))
	case string:
		e.str(x)
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case []uint8:
		writeArray(e, typeUint8, x, e.u8)
	case []int8:
		writeArray(e, typeInt8, x, func(v int8) { e.u8(uint8(v)) })
	case []uint16:
		writeArray(e, typeUint16, x, e.u16)
	case []int16:
		writeArray(e, typeInt16, x, func(v int16) { e.u16(uint16(v)) })
	case []uint32:
		writeArray(e, typeUint32, x, e.u32)
	case []int32:
		writeArray(e, typeInt32, x, func(v int32) { e.u32(uint32(v)) })
	case []float32:
		writeArray(e, typeFloat32, x, func(v float32) { e.u32(math.Float32bits(v)) })
	case []bool:
		writeArray(e, typeBool, x, func(v bool) { e.u8(boolByte(v)) })
	case []string:
		writeArray(e, typeString, x, e.str)
	case []uint64:
		writeArray(e, typeUint64, x, e.u64)
	case []int64:
		writeArray(e, typeInt64, x, func(v int64) { e.u64(uint64(v)) })
	case []float64:
		writeArray(e, typeFloat64, x, func(v float64) { e.u64(math.Float64bits(v)) })
	case []any:
		// Nested arrays: every element must be an array itself.
		e.u32(typeArray)
		e.u64(uint64(len(x)))
		for _, el := range x {
			if vt, err := valueType(el); err != nil || vt != typeArray {
				return errors.New("nested array elements must be arrays")
			}
			if err := e.payload(el); err != nil {
				return err
			}
		}
	}
	return e.err
}

func writeArray[T any](e *encoder, et uint32, xs []T, put func(T)) {
	e.u32(et)
	e.u64(uint64(len(xs)))
	for _, x := range xs {
		put(x)
	}
}
