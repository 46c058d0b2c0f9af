package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
)

// progress prints tensor i/N, throughput and ETA on stderr: redrawn in
// place on a terminal, and at most every two seconds otherwise so that CI
// logs stay short.
type progress struct {
	w     io.Writer
	name  string
	tty   bool
	start time.Time
	last  time.Time
	final gguf.Progress
}

func newProgress(w io.Writer, name string) *progress {
	now := time.Now()
	return &progress{w: w, name: name, tty: isTerminal(w), start: now, last: now}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (p *progress) update(pr gguf.Progress) {
	p.final = pr
	now := time.Now()
	if pr.Index < pr.Count && now.Sub(p.last) < 2*time.Second && !p.tty {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(pr.Bytes) / 1e6 / max(el, 1e-9)
	eta := ""
	if pr.Bytes > 0 && pr.Index < pr.Count {
		eta = fmt.Sprintf(" ETA %s", time.Duration(el*float64(pr.Total-pr.Bytes)/float64(pr.Bytes)*1e9).Round(time.Second))
	}
	line := fmt.Sprintf("[%4d/%d] %-32s %8.1f MB/s%s", pr.Index, pr.Count, pr.Name, rate, eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

// finish ends the progress with the conversion's summary: what the
// written file holds, read back from it, and how long the whole command
// took (start is when it began, before any calibration).
func (p *progress) finish(path string, start time.Time) {
	if p.tty {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintln(p.w, conversionSummary(path, time.Since(start)))
}

// conversionSummary is the one line a conversion ends with, as
// llama-quantize's closing lines: file size, bits per weight, tensors per
// type, time and throughput.
func conversionSummary(path string, took time.Duration) string {
	size := int64(0)
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	line := fmt.Sprintf("wrote %s: %.2f MB", filepath.Base(path), float64(size)/1e6)
	if f, err := gguf.Open(path); err == nil {
		in := inspectGGUF(f)
		f.Close()
		types := make([]string, len(in.Types))
		for i, ts := range in.Types {
			types[i] = fmt.Sprintf("%s %d", ts.Type, ts.Tensors)
		}
		line += fmt.Sprintf(", %.2f bpw, %d tensors (%s)", in.BitsPerWeight, len(in.Tensors), strings.Join(types, ", "))
	}
	secs := max(took.Seconds(), 1e-9)
	return line + fmt.Sprintf(", %.2f s, %.1f MB/s", took.Seconds(), float64(size)/1e6/secs)
}

func joinNames(names []string) string { return strings.Join(names, ", ") }
