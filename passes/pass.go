// Package passes rewrites models in lqc's IR. Each pass lives in its own
// file behind the Pass interface; a Manager runs a table of passes in
// order and verifies the graph after each one, the way the Go compiler's
// SSA backend checks its function between passes, so a broken rewrite is
// caught where it happens rather than in a file llama.cpp later rejects.
package passes

import (
	"fmt"
	"io"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// Pass is one rewrite of a model.
type Pass interface {
	// Name is how --passes and error messages refer to the pass.
	Name() string
	// Run rewrites m in place and reports what it changed.
	Run(m *ir.Model) (Report, error)
}

// Report says what a pass did.
type Report struct {
	Changed int      // how many nodes or tensors it rewrote
	Notes   []string // what it matched, skipped or fell back on, one line each
}

// Manager runs passes in order.
type Manager struct {
	Passes []Pass
	// Trace, when set, receives one line per pass with what it changed,
	// followed by its notes.
	Trace io.Writer
	// Dump, when set, receives the graph after every pass.
	Dump io.Writer
	// OnNote, when set, receives each note of each pass (fallbacks and
	// warnings a user should see even without Trace).
	OnNote func(pass, note string)
}

// Run verifies m, then runs each pass and verifies again after it.
func (pm *Manager) Run(m *ir.Model) error {
	if err := m.Graph.Verify(); err != nil {
		return fmt.Errorf("before passes: %w", err)
	}
	for _, p := range pm.Passes {
		r, err := p.Run(m)
		if err != nil {
			return fmt.Errorf("pass %s: %w", p.Name(), err)
		}
		if err := m.Graph.Verify(); err != nil {
			return fmt.Errorf("after pass %s: %w", p.Name(), err)
		}
		if pm.OnNote != nil {
			for _, n := range r.Notes {
				pm.OnNote(p.Name(), n)
			}
		}
		if pm.Trace != nil {
			fmt.Fprintf(pm.Trace, "pass %-10s changed %d\n", p.Name(), r.Changed)
			for _, n := range r.Notes {
				fmt.Fprintf(pm.Trace, "  %s\n", n)
			}
		}
		if pm.Dump != nil {
			fmt.Fprintf(pm.Dump, "// after %s\n", p.Name())
			if err := m.Graph.Print(pm.Dump); err != nil {
				return err
			}
		}
	}
	return nil
}

// Names lists the passes in order.
func (pm *Manager) Names() string {
	names := make([]string, len(pm.Passes))
	for i, p := range pm.Passes {
		names[i] = p.Name()
	}
	return strings.Join(names, " → ")
}
