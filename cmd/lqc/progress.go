package main

import (
	"fmt"
	"io"
	"os"
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

func (p *progress) finish() {
	if p.tty {
		fmt.Fprintln(p.w)
	}
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "wrote %s: %d tensors, %.1f MB in %.2fs (%.1f MB/s)\n", p.name, p.final.Count,
		float64(p.final.Total)/1e6, el.Seconds(), float64(p.final.Total)/1e6/max(el.Seconds(), 1e-9))
}

func joinNames(names []string) string { return strings.Join(names, ", ") }
