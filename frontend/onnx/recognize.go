package onnx

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
)

// Recognising an exported transformer. torch.onnx.export keeps the
// module path of every node in its name ("/layers.0/self_attn/q_proj/
// MatMul") and the parameters it uses as they are under their own names
// ("model.layers.0.input_layernorm.weight"), but hands each Linear's
// weight to MatMul as a transposed copy ("onnx::MatMul_1059", [in, out]).
// Mapping the copies back through their nodes' module paths gives the
// Hugging Face tensor set, which the architecture's HF importer already
// understands; what the graph fixes (heads, epsilon, RoPE base, tying)
// gives its config.

// export is what an exported graph says about the model it came from:
// its architecture, and the facts the graph fixes (its weights under
// Hugging Face names among them).
type export struct {
	arch      arch.Arch
	modelType string
	names     []string // Hugging Face names, in graph order
	arch.GraphFacts
}

func (e *export) Names() []string { return e.names }

func (e *export) Tensor(name string) (*ir.Tensor, error) {
	t, ok := e.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("no tensor %s", name)
	}
	return t.WithName(name), nil
}

// scopeOf is the dotted module path of a node name ("layers.0.self_attn.
// q_proj" for "/layers.0/self_attn/q_proj/MatMul"), "" when it has none.
func scopeOf(node string) string {
	i := strings.LastIndex(node, "/")
	if i <= 0 {
		return ""
	}
	return strings.ReplaceAll(strings.TrimPrefix(node[:i], "/"), "/", ".")
}

// isParamName reports whether an initializer keeps a module parameter's
// name (exporters name their own copies and constants "onnx::…" or
// "/scope/Constant_output_0").
func isParamName(name string) bool {
	return name != "" && !strings.Contains(name, "::") && !strings.HasPrefix(name, "/") && strings.Contains(name, ".")
}

var layerIndex = regexp.MustCompile(`\.(?:layers|h|blocks|layer)\.(\d+)\.`)

// recognize maps the imported graph's weights back to Hugging Face names
// and reads the hyper-parameters the graph fixes. tokens is the graph's
// token input.
func (im *importer) recognize(tokens string) (*export, error) {
	g := im.f.Model.Graph
	inits := map[string]bool{}
	for _, t := range g.Initializers {
		inits[t.Name] = true
	}
	type use struct {
		node *Node
		arg  int
	}
	uses := map[string][]use{}
	for _, n := range g.Nodes {
		for i, in := range n.Inputs {
			if inits[in] {
				uses[in] = append(uses[in], use{n, i})
			}
		}
	}
	e := &export{GraphFacts: arch.GraphFacts{Tensors: map[string]*ir.Tensor{}}}
	// The prefix the module paths of node names leave out ("model."),
	// learnt from parameters used under their own names.
	prefixes := map[string]int{}
	var direct []string
	copies := map[string][]string{} // initializer → candidate HF names
	transposed := map[string]bool{}
	var logitsHead string
	for _, t := range g.Initializers {
		c := im.vals[t.Name].c
		if c == nil || !c.Type.IsFloat() {
			continue
		}
		if isParamName(t.Name) {
			direct = append(direct, t.Name)
			param := t.Name[strings.LastIndex(t.Name, ".")+1:]
			for _, u := range uses[t.Name] {
				if s := scopeOf(u.node.Name); s != "" && strings.HasSuffix(strings.TrimSuffix(t.Name, "."+param), s) {
					prefixes[strings.TrimSuffix(t.Name, s+"."+param)]++
				}
				if u.node.OpType == "Gather" && u.arg == 0 && len(u.node.Inputs) > 1 && u.node.Inputs[1] == tokens {
					e.Embedding = t.Name
				}
			}
			continue
		}
		// A copy made for a matrix product: named after its node's module.
		if len(t.Dims) != 2 || len(uses[t.Name]) != 1 {
			continue
		}
		u := uses[t.Name][0]
		s := scopeOf(u.node.Name)
		if s == "" || u.arg != 1 || (u.node.OpType != "MatMul" && u.node.OpType != "Gemm") {
			continue
		}
		copies[t.Name] = []string{s + ".weight"}
		transposed[t.Name] = u.node.OpType == "MatMul" || attrInt(u.node, "transB", 0) == 0
		for _, o := range g.Outputs {
			if len(u.node.Outputs) > 0 && u.node.Outputs[0] == o.Name {
				logitsHead = t.Name
			}
		}
	}
	prefix, best := "", 0
	for p, n := range prefixes {
		if n > best || n == best && p < prefix {
			prefix, best = p, n
		}
	}
	for name, cands := range copies {
		copies[name] = []string{prefix + cands[0], cands[0]}
	}
	if len(direct)+len(copies) == 0 {
		return nil, fmt.Errorf("no weights under module names: lqc recognises exports whose node names keep torch's module paths")
	}
	// The architecture is the one that takes every parameter name; where
	// several do (Llama's module names are Gemma's and Qwen2's too), the
	// one whose hyper-parameters the graph itself gives comes first.
	names := arch.Names()
	sort.SliceStable(names, func(i, j int) bool {
		a, _ := arch.Lookup(names[i])
		b, _ := arch.Lookup(names[j])
		_, ea := a.(arch.FromExport)
		_, eb := b.(arch.FromExport)
		return ea && !eb
	})
	for _, name := range names {
		a, _ := arch.Lookup(name)
		ok := true
		for _, n := range direct {
			if _, _, _, err := a.MapHF(n, ir.HParams{}); err != nil {
				ok = false
				break
			}
		}
		if ok && len(direct) > 0 {
			e.arch = a
			e.modelType = a.HFModelTypes()[0]
			break
		}
	}
	if e.arch == nil {
		return nil, fmt.Errorf("the weights (%s, …) match no architecture lqc knows (%s)", direct[0], strings.Join(arch.Names(), ", "))
	}
	for _, t := range g.Initializers {
		c := im.vals[t.Name].c
		switch {
		case c == nil:
		case isParamName(t.Name) && slices.Contains(direct, t.Name):
			e.add(t.Name, c)
		case copies[t.Name] != nil:
			var hfName string
			for _, cand := range copies[t.Name] {
				if _, _, _, err := e.arch.MapHF(cand, ir.HParams{}); err == nil {
					hfName = cand
					break
				}
			}
			if hfName == "" {
				return nil, fmt.Errorf("weight %s of module %s has no %s counterpart", t.Name, strings.TrimSuffix(copies[t.Name][1], ".weight"), e.modelType)
			}
			w := c
			if transposed[t.Name] {
				var err error
				if w, err = ir.Transpose(c); err != nil {
					return nil, err
				}
			}
			if t.Name == logitsHead && e.Embedding != "" && sameValues(w, e.Tensors[e.Embedding]) {
				e.Tied = true // the LM head is the embedding, as tie_word_embeddings says
				continue
			}
			if _, dup := e.Tensors[hfName]; dup {
				return nil, fmt.Errorf("two weights map to %s", hfName)
			}
			e.add(hfName, w)
		}
	}
	layers := map[int]bool{}
	for _, n := range e.names {
		if m := layerIndex.FindStringSubmatch(n); m != nil {
			i, _ := strconv.Atoi(m[1])
			layers[i] = true
		}
	}
	e.Layers = len(layers)
	im.readHyperParams(e)
	return e, nil
}

func (e *export) add(name string, t *ir.Tensor) {
	e.names = append(e.names, name)
	e.Tensors[name] = t
}

// sameValues reports whether two tensors hold the same shape and bytes,
// comparing a chunk of rows at a time (a tied LM head is as large as the
// embedding: neither is copied whole).
func sameValues(a, b *ir.Tensor) bool {
	if a == nil || b == nil || a.Type != b.Type || !slices.Equal(a.Shape, b.Shape) {
		return false
	}
	rb := a.RowBytes()
	per := max(1, (1<<20)/max(rb, 1))
	x, y := make([]byte, per*rb), make([]byte, per*rb)
	for r := int64(0); r < a.Rows(); r += per {
		n := min(per, a.Rows()-r)
		if a.ReadRows(x[:n*rb], r, n) != nil || b.ReadRows(y[:n*rb], r, n) != nil || !bytes.Equal(x[:n*rb], y[:n*rb]) {
			return false
		}
	}
	return true
}

// readHyperParams reads what the imported graph fixes: the number of
// heads of the first attention's q and k (the Reshape that splits each
// projection into heads), the epsilon of the first norm (the scalar it
// adds before the square root) and the RoPE base (the inverse frequency
// table). Fields stay 0 where the graph does not say.
func (im *importer) readHyperParams(e *export) {
	ex, ok := e.arch.(arch.FromExport)
	if !ok {
		return // config.json says it all
	}
	qMod, kMod, normMod := ex.ExportModules()
	users := im.g.Users()
	layer0 := func(scope, module string) bool {
		return strings.HasSuffix(scope, ".0."+module) || strings.HasPrefix(scope, "0."+module)
	}
	headsOf := func(module string) int {
		for _, n := range im.f.Model.Graph.Nodes {
			if (n.OpType != "MatMul" && n.OpType != "Gemm") || len(n.Outputs) == 0 || !layer0(scopeOf(n.Name), module) {
				continue
			}
			x := im.vals[n.Outputs[0]]
			if x == nil || x.v == nil {
				continue
			}
			// Follow the projection (through a bias Add) to its Reshape.
			v := x.v
			for range 4 {
				us := users[v]
				if len(us) != 1 {
					break
				}
				if us[0].Op == "Reshape" {
					shape := us[0].Attrs.Ints("shape")
					if len(shape) >= 2 {
						return int(shape[len(shape)-2])
					}
					break
				}
				v = us[0].Outputs[0]
			}
		}
		return 0
	}
	e.Heads, e.KVHeads = headsOf(qMod), headsOf(kMod)
	// The first norm's epsilon: a scalar added in its module.
	for _, n := range im.f.Model.Graph.Nodes {
		if n.OpType != "Add" || !layer0(scopeOf(n.Name), normMod) {
			continue
		}
		for _, in := range n.Inputs {
			if x := im.vals[in]; x != nil && x.c != nil && x.c.NumElements() == 1 && x.c.Type.IsFloat() {
				if f, err := x.c.Float32s(); err == nil && f[0] > 0 && f[0] < 1e-2 {
					e.NormEps = float64(f[0])
				}
			}
		}
	}
	// The RoPE base: a float vector [d/2] of inverse frequencies
	// 1, θ^(-2/d), θ^(-4/d), … (HF's inv_freq).
	if e.Heads > 0 {
		if t := e.Tensors[e.Embedding]; t != nil && len(t.Shape) == 2 {
			d := t.Shape[1] / int64(e.Heads)
			var names []string
			for name, x := range im.vals {
				if x.c != nil && x.c.Type.IsFloat() && len(x.c.Shape) == 1 && x.c.Shape[0] == d/2 && d >= 4 {
					names = append(names, name)
				}
			}
			sort.Strings(names)
			for _, name := range names {
				f, err := im.vals[name].c.Float32s()
				if err != nil || f[0] != 1 || !(f[1] > 0 && f[1] < 1) {
					continue
				}
				theta := math.Pow(float64(f[1]), -float64(d)/2)
				if geometric(f, float64(f[1])) {
					e.RopeTheta = theta
					break
				}
			}
		}
	}
}

// geometric reports whether f[i] ≈ r^i.
func geometric(f []float32, r float64) bool {
	for i, v := range f {
		if w := math.Pow(r, float64(i)); math.Abs(float64(v)-w) > 1e-5*w+1e-12 {
			return false
		}
	}
	return true
}
