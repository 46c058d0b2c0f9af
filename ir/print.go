package ir

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Print writes the graph in lqc's textual form:
//
//	graph llama(%tokens: I32[seq], %pos: I32[seq]) -> (%logits) {
//	  @token_embd.weight: Q8_0[512,64]
//	  %x = Embedding(@token_embd.weight, %tokens) : F32[seq,64]
//	  ...
//	}
func (g *Graph) Print(w io.Writer) error {
	var b strings.Builder
	ins := make([]string, len(g.Inputs))
	for i, v := range g.Inputs {
		ins[i] = fmt.Sprintf("%s: %v%v", v.Ref(), v.Type(), v.Shape())
	}
	outs := make([]string, len(g.Outputs))
	for i, v := range g.Outputs {
		outs[i] = v.Ref()
	}
	fmt.Fprintf(&b, "graph %s(%s) -> (%s) {\n", g.Name, strings.Join(ins, ", "), strings.Join(outs, ", "))
	for _, v := range g.Weights {
		fmt.Fprintf(&b, "  %s: %v%v\n", v.Ref(), v.Type(), v.Shape())
	}
	for _, n := range g.Nodes {
		lhs := make([]string, len(n.Outputs))
		for i, o := range n.Outputs {
			lhs[i] = o.Ref()
		}
		args := make([]string, len(n.Inputs))
		for i, in := range n.Inputs {
			args[i] = in.Ref()
		}
		types := make([]string, len(n.Outputs))
		for i, o := range n.Outputs {
			types[i] = fmt.Sprintf("%v%v", o.Type(), o.Shape())
		}
		fmt.Fprintf(&b, "  %s = %s(%s)%s : %s\n", strings.Join(lhs, ", "), n.Op, strings.Join(args, ", "),
			formatAttrs(n.Attrs), strings.Join(types, ", "))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func formatAttrs(a Attrs) string {
	if len(a) == 0 {
		return ""
	}
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := a[k]
		if s, ok := v.(string); ok {
			v = fmt.Sprintf("%q", s)
		}
		parts[i] = fmt.Sprintf("%s=%v", k, v)
	}
	return " {" + strings.Join(parts, ", ") + "}"
}
