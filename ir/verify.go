package ir

import (
	"errors"
	"fmt"
)

// Verify checks the graph's invariants: every op is known, every input is
// defined before it is used (inputs, weights, earlier nodes), every value
// is defined once, outputs carry the types and shapes their op infers
// from the inputs, weights are well-formed and uniquely named, and the
// graph outputs are defined. It reports all problems found, joined.
func (g *Graph) Verify() error {
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	defined := map[*Value]bool{}
	define := func(v *Value, where string) {
		if defined[v] {
			bad("%s: value %s defined twice", where, v.Ref())
		}
		defined[v] = true
	}
	for _, v := range g.Inputs {
		if v.Weight != nil || v.Def != nil {
			bad("input %s is not a plain input", v.Ref())
		}
		define(v, "inputs")
	}
	names := map[string]bool{}
	for _, w := range g.Weights {
		if w.Weight == nil {
			bad("weight value %s has no tensor", w.Ref())
			continue
		}
		if names[w.Weight.Name] {
			bad("weight %s appears twice", w.Weight.Name)
		}
		names[w.Weight.Name] = true
		if err := w.Weight.check(); err != nil {
			bad("%v", err)
		}
		define(w, "weights")
	}
	for i, n := range g.Nodes {
		where := fmt.Sprintf("node %d (%s)", i, n.Op)
		def, ok := ops[n.Op]
		if !ok {
			bad("%s: unknown op", where)
			continue
		}
		missing := false
		for _, in := range n.Inputs {
			if in == nil || !defined[in] {
				ref := "<nil>"
				if in != nil {
					ref = in.Ref()
				}
				bad("%s: input %s is not defined before use", where, ref)
				missing = true
			}
		}
		if !missing {
			sigs, err := def.infer(n)
			switch {
			case err != nil:
				bad("%s: %v", where, err)
			case len(sigs) != len(n.Outputs):
				bad("%s: has %d outputs, op defines %d", where, len(n.Outputs), len(sigs))
			default:
				for j, o := range n.Outputs {
					if o.Type() != sigs[j].Type || !o.Shape().Equal(sigs[j].Shape) {
						bad("%s: output %s is %v%v, inputs give %v%v", where, o.Ref(), o.Type(), o.Shape(), sigs[j].Type, sigs[j].Shape)
					}
				}
			}
		}
		for _, o := range n.Outputs {
			if o.Def != n {
				bad("%s: output %s does not name its node", where, o.Ref())
			}
			define(o, where)
		}
	}
	if len(g.Outputs) == 0 {
		bad("graph has no outputs")
	}
	for _, o := range g.Outputs {
		if !defined[o] {
			bad("graph output %s is never defined", o.Ref())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("graph %s is invalid: %w", g.Name, errors.Join(errs...))
	}
	return nil
}
