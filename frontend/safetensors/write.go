package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/atomicfile"
	"github.com/lqc-dev/lqc/quant"
)

var dtypeNames = map[quant.Type]string{quant.F32: "F32", quant.F16: "F16", quant.BF16: "BF16"}

// WriteFile writes tensors (F32, F16 or BF16) as a safetensors file,
// streaming one row at a time. The header is padded with spaces to a
// multiple of 8, as the reference writer does. The file appears at path
// only once complete.
func WriteFile(path string, tensors []*ir.Tensor, metadata map[string]string) (err error) {
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range tensors {
		name, ok := dtypeNames[t.Type]
		if !ok {
			return fmt.Errorf("tensor %s: safetensors cannot store %v", t.Name, t.Type)
		}
		header[t.Name] = headerEntry{DType: name, Shape: t.Shape, DataOffsets: []int64{off, off + t.NumBytes()}}
		off += t.NumBytes()
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(hb)%8 != 0 {
		hb = append(hb, ' ')
	}
	return atomicfile.Write(path, func(w *bufio.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(hb)))
		w.Write(n[:])
		w.Write(hb)
		for _, t := range tensors {
			per := max(1, (1<<20)/t.RowBytes()) // rows per ~1 MiB chunk
			buf := make([]byte, min(per, t.Rows())*t.RowBytes())
			for r := int64(0); r < t.Rows(); r += per {
				k := min(per, t.Rows()-r)
				if err := t.ReadRows(buf[:k*t.RowBytes()], r, k); err != nil {
					return err
				}
				if _, err := w.Write(buf[:k*t.RowBytes()]); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
