package ir

import (
	"fmt"
	"sort"
	"strings"
)

// Einsum is a parsed einsum equation: each operand's axes and the
// output's as label numbers, an ellipsis expanded into labels of its own
// (numbered after the 52 letters), so that kernels only see labelled axes.
type Einsum struct {
	Inputs [][]int
	Output []int
	Labels int // labels are 0 … Labels-1
}

const ellipsisLabel0 = 52

// einsumTerm returns a term's labels, -1 standing for its ellipsis.
func einsumTerm(term string) ([]int, error) {
	var labels []int
	hasEll := false
	for rest := term; rest != ""; {
		if strings.HasPrefix(rest, "...") {
			if hasEll {
				return nil, fmt.Errorf("term %q has two ellipses", term)
			}
			hasEll, rest = true, rest[3:]
			labels = append(labels, -1)
			continue
		}
		switch c := rest[0]; {
		case c >= 'a' && c <= 'z':
			labels = append(labels, int(c-'a'))
		case c >= 'A' && c <= 'Z':
			labels = append(labels, 26+int(c-'A'))
		default:
			return nil, fmt.Errorf("bad label %q in term %q", c, term)
		}
		rest = rest[1:]
	}
	return labels, nil
}

// expandEllipsis replaces -1 in labels by the last n of ell ellipsis labels.
func expandEllipsis(labels []int, n, ell int) []int {
	var out []int
	for _, l := range labels {
		if l != -1 {
			out = append(out, l)
			continue
		}
		for k := ell - n; k < ell; k++ {
			out = append(out, ellipsisLabel0+k)
		}
	}
	return out
}

// ParseEinsum parses eq ("ij,jk->ik", "...ij,...jk", or an implicit
// output: the ellipsis, then the letters used once in alphabetical order)
// for operands of the given ranks.
func ParseEinsum(eq string, ranks []int) (*Einsum, error) {
	eq = strings.ReplaceAll(eq, " ", "")
	lhs, rhs, explicit := strings.Cut(eq, "->")
	terms := strings.Split(lhs, ",")
	if len(terms) != len(ranks) {
		return nil, fmt.Errorf("equation %q has %d operands, %d given", eq, len(terms), len(ranks))
	}
	raw := make([][]int, len(terms))
	ellRank := make([]int, len(terms))
	ell := 0
	for i, t := range terms {
		labels, err := einsumTerm(t)
		if err != nil {
			return nil, err
		}
		named, has := 0, false
		for _, l := range labels {
			if l == -1 {
				has = true
			} else {
				named++
			}
		}
		if has && named > ranks[i] || !has && named != ranks[i] {
			return nil, fmt.Errorf("term %q does not fit an operand of rank %d", t, ranks[i])
		}
		if has {
			ellRank[i] = ranks[i] - named
		}
		raw[i] = labels
		ell = max(ell, ellRank[i])
	}
	e := &Einsum{Labels: ellipsisLabel0 + ell}
	count := map[int]int{}
	for i, labels := range raw {
		in := expandEllipsis(labels, ellRank[i], ell)
		e.Inputs = append(e.Inputs, in)
		for _, l := range in {
			count[l]++
		}
	}
	if explicit {
		labels, err := einsumTerm(rhs)
		if err != nil {
			return nil, err
		}
		e.Output = expandEllipsis(labels, ell, ell)
		seen := map[int]bool{}
		for _, l := range e.Output {
			if count[l] == 0 || seen[l] {
				return nil, fmt.Errorf("output of %q names a label that is not in the inputs, or twice", eq)
			}
			seen[l] = true
		}
		return e, nil
	}
	for k := range ell {
		e.Output = append(e.Output, ellipsisLabel0+k)
	}
	var once []int
	for l, c := range count {
		if c == 1 && l < ellipsisLabel0 {
			once = append(once, l)
		}
	}
	sort.Ints(once)
	e.Output = append(e.Output, once...)
	return e, nil
}

// Sizes binds every label to its size from the operands' shapes (an axis
// of size 1 broadcasts against a larger one under the ellipsis).
func (e *Einsum) Sizes(shapes []Shape) ([]int64, error) {
	size := make([]int64, e.Labels)
	for i := range size {
		size[i] = -1
	}
	for i, labels := range e.Inputs {
		for k, l := range labels {
			d := shapes[i][k]
			if !d.Known() {
				return nil, fmt.Errorf("einsum over a symbolic dimension %s", d.Sym)
			}
			switch {
			case size[l] == -1 || size[l] == 1 && l >= ellipsisLabel0:
				size[l] = d.Size
			case size[l] == d.Size || d.Size == 1 && l >= ellipsisLabel0:
			default:
				return nil, fmt.Errorf("label %d is %d in one operand and %d in another", l, size[l], d.Size)
			}
		}
	}
	return size, nil
}
