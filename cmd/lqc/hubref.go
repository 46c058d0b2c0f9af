package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/lqc-dev/lqc/frontend/hub"
)

// fromHub returns path as it is, or, where it names a Hugging Face repo
// (org/name[@revision]) and no local file, the repo's snapshot folder in
// the Hugging Face cache, downloading what is missing with progress on
// stderr unless quiet.
func fromHub(ctx context.Context, path string, stderr io.Writer, quiet bool) (string, error) {
	if !hub.IsRef(path) {
		return path, nil
	}
	o := hub.Env()
	if !quiet {
		o.Progress = newDownloadProgress(stderr, path).update
	}
	return hub.Resolve(ctx, path, o)
}

// downloadProgress prints each file's bytes, rate and ETA: redrawn in
// place on a terminal, otherwise a line every two seconds and one when a
// file is complete, so that CI logs stay short.
type downloadProgress struct {
	w          io.Writer
	repo, file string
	tty        bool
	start      time.Time
	last       time.Time
	from       int64 // bytes the file already had (a resumed download)
}

func newDownloadProgress(w io.Writer, repo string) *downloadProgress {
	return &downloadProgress{w: w, repo: repo, tty: isTerminal(w)}
}

func (p *downloadProgress) update(file string, done, total int64) {
	now := time.Now()
	if file != p.file {
		p.file, p.start, p.last, p.from = file, now, time.Time{}, done
	}
	complete := total >= 0 && done >= total
	if !complete && !p.tty && now.Sub(p.last) < 2*time.Second {
		return
	}
	if p.tty && !complete && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := float64(done-p.from) / 1e6 / max(el, 1e-9)
	size, eta := "", ""
	if total >= 0 {
		size = fmt.Sprintf("/%.1f", float64(total)/1e6)
		if done > p.from && !complete {
			eta = fmt.Sprintf(" ETA %s", time.Duration(el*float64(total-done)/float64(done-p.from)*1e9).Round(time.Second))
		}
	}
	line := fmt.Sprintf("downloading %s: %-28s %8.1f%s MB %7.1f MB/s%s", p.repo, file, float64(done)/1e6, size, rate, eta)
	switch {
	case p.tty && complete:
		fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	case p.tty:
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	default:
		fmt.Fprintln(p.w, line)
	}
}
