package runtime

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
)

// Adapter is a LoRA adapter loaded beside a model's weights, unmerged:
// each adapted matrix product gains scale·(x·Aᵀ)·Bᵀ. Sessions choose their
// adapters per request (Session.SetAdapters), so one loaded base serves
// any mix of them.
type Adapter struct {
	Name  string
	m     *Model
	loras map[string]*loraTensors // by weight name
}

type loraTensors struct {
	a, b  *Tensor // [r, in], [out, r]
	scale float64
}

// LoadAdapter makes a available to sessions of m. DoRA and whole-weight
// replacements need the weights themselves changed: fuse those instead.
func (m *Model) LoadAdapter(a *ir.Adapter) (*Adapter, error) {
	if err := a.Check(m.IR); err != nil {
		return nil, err
	}
	if len(a.Replace) > 0 {
		return nil, fmt.Errorf("%s: the adapter replaces whole weights (modules_to_save); merge it with --fuse-lora", a.Name)
	}
	ad := &Adapter{Name: a.Name, m: m, loras: map[string]*loraTensors{}}
	for _, name := range a.Names() {
		l := a.LoRA[name]
		if l.Magnitude != nil {
			return nil, fmt.Errorf("%s: DoRA rescales whole rows of the weights; merge it with --fuse-lora", a.Name)
		}
		A, err := m.Backend.Weight(l.A)
		if err != nil {
			return nil, err
		}
		B, err := m.Backend.Weight(l.B)
		if err != nil {
			return nil, err
		}
		ad.loras[name] = &loraTensors{a: A, b: B, scale: l.Scale}
	}
	return ad, nil
}

// Applied is an adapter with the scale a request applies it at.
type Applied struct {
	*Adapter
	Scale float64
}

// SetAdapters chooses the adapters the session's next evaluations apply;
// none restores the base model. The KV cache is kept: a caller switching
// adapters mid-sequence gets what it asked for.
func (s *Session) SetAdapters(as ...Applied) error {
	for _, a := range as {
		if a.m != s.m {
			return fmt.Errorf("adapter %s was loaded for another model", a.Name)
		}
	}
	s.adapters = append([]Applied(nil), as...)
	return nil
}

// applyAdapters adds the session's low-rank updates of node n (a Linear)
// to rows [start, end) of out, computed from the same rows of x.
func (s *Session) applyAdapters(n *ir.Node, x, out *Tensor, start, end int) error {
	w := n.Inputs[1].Weight
	if len(s.adapters) == 0 || w == nil {
		return nil
	}
	for _, a := range s.adapters {
		l := a.loras[w.Name]
		if l == nil || a.Scale == 0 {
			continue
		}
		attrs := ir.Attrs{"scale": l.scale * a.Scale, "start": int64(start), "end": int64(end)}
		if err := s.m.Backend.Run("LowRank", attrs, out, []*Tensor{x, l.a, l.b}); err != nil {
			return err
		}
	}
	return nil
}
