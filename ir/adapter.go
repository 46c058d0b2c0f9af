package ir

import (
	"fmt"
	"sort"
)

// Adapter is a LoRA adapter in lqc's canonical naming: for each weight it
// adapts (by GGUF name), a low-rank update W + Scale·B·A. Frontends make
// one from a PEFT folder or a GGUF adapter; the fusion pass merges it into
// the weights, codegen writes it as a GGUF adapter, and the runtime
// applies it beside the base weights without merging.
type Adapter struct {
	Name string // where it came from, for messages
	Arch string // the architecture it was trained for
	// LoRA holds the low-rank updates by weight name.
	LoRA map[string]*LoRA
	// Replace holds whole weights that replace the base's (PEFT's
	// modules_to_save), by weight name.
	Replace map[string]*Tensor

	closers []func() error
}

// LoRA is one weight's low-rank update.
type LoRA struct {
	A     *Tensor // [r, in]
	B     *Tensor // [out, r], rows in the weight's (canonical) order
	Scale float64 // the factor of B·A: alpha/r, or alpha/√r with rsLoRA
	// Magnitude, for DoRA, is [out, 1]: each output row of W + Scale·B·A
	// is rescaled to this norm.
	Magnitude *Tensor
}

// Rank is the update's rank.
func (l *LoRA) Rank() int64 { return l.A.Shape[0] }

// Names lists the adapted weights in order.
func (a *Adapter) Names() []string {
	names := make([]string, 0, len(a.LoRA))
	for n := range a.LoRA {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// OnClose registers a function Close calls (unmapping the files).
func (a *Adapter) OnClose(f func() error) { a.closers = append(a.closers, f) }

// Close releases what the adapter holds.
func (a *Adapter) Close() error {
	var first error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	a.closers = nil
	return first
}

// Check verifies the adapter against the weights of the model it is
// meant for: same architecture, every adapted weight present with the
// shapes the update needs.
func (a *Adapter) Check(m *Model) error {
	if a.Arch != "" && a.Arch != m.Arch {
		return fmt.Errorf("%s: adapter for %s, but the base model is %s", a.Name, a.Arch, m.Arch)
	}
	for _, name := range a.Names() {
		l := a.LoRA[name]
		w := m.Weight(name)
		if w == nil {
			return fmt.Errorf("%s: the base model has no weight %s to adapt (wrong base model?)", a.Name, name)
		}
		r := l.Rank()
		switch {
		case len(w.Shape) != 2:
			return fmt.Errorf("%s: %s is not a matrix", a.Name, name)
		case len(l.A.Shape) != 2 || l.A.Shape[1] != w.RowLen():
			return fmt.Errorf("%s: %s: lora_A is %v, the weight takes %d inputs", a.Name, name, l.A.Shape, w.RowLen())
		case len(l.B.Shape) != 2 || l.B.Shape[0] != w.Rows() || l.B.Shape[1] != r:
			return fmt.Errorf("%s: %s: lora_B is %v, want [%d %d] for a rank-%d update of %v", a.Name, name, l.B.Shape, w.Rows(), r, r, w.Shape)
		case l.Magnitude != nil && l.Magnitude.NumElements() != w.Rows():
			return fmt.Errorf("%s: %s: DoRA magnitude has %d values for %d output rows", a.Name, name, l.Magnitude.NumElements(), w.Rows())
		}
	}
	for name, t := range a.Replace {
		w := m.Weight(name)
		if w == nil {
			return fmt.Errorf("%s: the base model has no weight %s to replace", a.Name, name)
		}
		if fmt.Sprint(w.Shape) != fmt.Sprint(t.Shape) {
			return fmt.Errorf("%s: replacement %s is %v, the base's is %v", a.Name, name, t.Shape, w.Shape)
		}
	}
	return nil
}
