// Package arch is the one place each model architecture is described:
// its hyper-parameters as config.json and GGUF spell them, its canonical
// tensor set (named as GGUF names them), how Hugging Face tensor names and
// layouts map onto it, and the builder of its forward graph. Frontends,
// codegen and the runtime all go through this package, so an
// architecture's facts are written once.
package arch

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// Arch describes one model architecture.
type Arch interface {
	// Name is the architecture as GGUF's general.architecture spells it.
	Name() string
	// HFModelTypes are the config.json model_type values it accepts.
	HFModelTypes() []string
	// ParamsFromHF reads hyper-parameters from a parsed config.json.
	ParamsFromHF(cfg Config) (ir.HParams, error)
	// ParamsFromGGUF reads hyper-parameters from GGUF metadata.
	ParamsFromGGUF(md ir.Metadata) (ir.HParams, error)
	// GGUFMetadata writes hyper-parameters as GGUF metadata.
	GGUFMetadata(p ir.HParams) ir.Metadata
	// Tensors is the canonical tensor set for p.
	Tensors(p ir.HParams) []TensorSpec
	// MapHF maps a Hugging Face tensor name onto the canonical set. It
	// returns ok=false for buffers the converter drops, and the layout
	// fix (a q/k un-permutation, a transpose) the tensor needs.
	MapHF(name string, p ir.HParams) (canonical string, fix Fix, ok bool, err error)
	// CompleteHF checks the mapped tensors against config.json and adds
	// those llama.cpp's converter derives rather than reads (gpt2's copy
	// of the tied embedding as output.weight).
	CompleteHF(cfg Config, p ir.HParams, ts map[string]*ir.Tensor) error
	// Build returns the forward graph over the given weights.
	Build(p ir.HParams, weights map[string]*ir.Tensor) (*ir.Graph, error)
	// ScaleGroups lists where activation-aware quantization (AWQ) can
	// fold a per-channel scale without changing what the model computes.
	ScaleGroups(p ir.HParams) []ScaleGroup
	// HFName is the Hugging Face name (as transformers' *ForCausalLM
	// saves it) of a canonical weight: how adapters trained by lqc name
	// their modules for PEFT.
	HFName(canonical string) (string, bool)
	// RowFix is the permutation the canonical tensor's rows went through
	// on import from Hugging Face (llama's q/k un-permutation), or nil.
	// A LoRA adapter's B and DoRA's magnitude, whose rows are the
	// weight's output rows, take the same permutation; PEFT stores A and B
	// Linear-shaped even for gpt2's Conv1D, so no transpose applies.
	RowFix(canonical string, p ir.HParams) Fix
}

// caveats is implemented by architectures for which llama.cpp computes
// something other than the model, or cannot load it.
type caveats interface {
	llamaCppCaveats(p ir.HParams) []string
}

// LlamaCppCaveats says, one sentence each, where llama.cpp running a file
// of architecture a with hyper-parameters p will not compute what the
// model computes (convert prints them).
func LlamaCppCaveats(a Arch, p ir.HParams) []string {
	if c, ok := a.(caveats); ok {
		return c.llamaCppCaveats(p)
	}
	return nil
}

// VocabCompleter is implemented by architectures whose converter sets
// vocabulary facts the tokenizer files do not state (Gemma's end-of-turn
// token); frontends call it after reading the tokenizer.
type VocabCompleter interface {
	CompleteVocab(v *ir.Vocab)
}

// ScaleGroup is one place where a per-channel scale s folds exactly: the
// input columns of the Next matrices are multiplied by s and whatever
// produces their input is divided by s. The producer is either norm
// vectors (a norm's weight and bias, divided elementwise) or rows
// [RowOffset, RowOffset+Channels) of a matrix and its bias: attention is
// linear in v, and a gated MLP is linear in its up projection.
type ScaleGroup struct {
	Next      []string
	Vectors   []string // norm weight and bias names
	Rows      string   // or a matrix ...
	RowBias   string   // ... with this bias (optional)
	RowOffset int64
	// Channels is the length of s. NextCol maps a column of the Next
	// matrices to its channel (nil: the identity): with grouped-query
	// attention several heads' output columns share one v row.
	Channels int64
	NextCol  func(col int64) int64
}

// Fix rewrites a tensor's layout lazily.
type Fix func(t *ir.Tensor, p ir.HParams) (*ir.Tensor, error)

// TensorSpec is one tensor of the canonical set. Shape is row-major.
type TensorSpec struct {
	Name     string
	Shape    []int64
	Optional bool
}

var registry = map[string]Arch{}

func register(a Arch) { registry[a.Name()] = a }

// Lookup returns the architecture named as GGUF names it.
func Lookup(name string) (Arch, error) {
	if a, ok := registry[name]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("unknown architecture %q (lqc supports %s)", name, strings.Join(Names(), ", "))
}

// ForHF finds the architecture for a config.json model_type.
func ForHF(modelType string) (Arch, error) {
	for _, a := range registry {
		for _, t := range a.HFModelTypes() {
			if t == modelType {
				return a, nil
			}
		}
	}
	return nil, fmt.Errorf("unknown architecture model_type %q (lqc supports %s)", modelType, strings.Join(Names(), ", "))
}

// Names lists the supported architectures.
func Names() []string {
	var ns []string
	for n := range registry {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// NewModel validates weights against a's canonical tensor set and builds
// the model's graph.
func NewModel(a Arch, name string, p ir.HParams, weights map[string]*ir.Tensor, vocab *ir.Vocab) (*ir.Model, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", a.Name(), err)
	}
	if err := CheckTensors(a, p, weights); err != nil {
		return nil, err
	}
	if vocab != nil {
		if err := vocab.Validate(); err != nil {
			return nil, err
		}
		if len(vocab.Tokens) != p.VocabSize {
			return nil, fmt.Errorf("vocabulary has %d tokens, model expects %d", len(vocab.Tokens), p.VocabSize)
		}
	}
	g, err := a.Build(p, weights)
	if err != nil {
		return nil, fmt.Errorf("%s graph: %w", a.Name(), err)
	}
	if err := g.Verify(); err != nil {
		return nil, err
	}
	return &ir.Model{Arch: a.Name(), Name: name, Params: p, Vocab: vocab, Graph: g}, nil
}

// CheckTensors reports missing, unexpected and mis-shaped tensors.
func CheckTensors(a Arch, p ir.HParams, weights map[string]*ir.Tensor) error {
	specs := a.Tensors(p)
	known := map[string]bool{}
	for _, s := range specs {
		known[s.Name] = true
		t, ok := weights[s.Name]
		if !ok {
			if s.Optional {
				continue
			}
			return fmt.Errorf("%s model is missing tensor %s", a.Name(), s.Name)
		}
		if !equalInts(t.Shape, s.Shape) {
			return fmt.Errorf("tensor %s has shape %v, %s with these hyper-parameters needs %v", s.Name, t.Shape, a.Name(), s.Shape)
		}
	}
	var extra []string
	for n := range weights {
		if !known[n] {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("%s model has unexpected tensors: %s", a.Name(), strings.Join(extra, ", "))
	}
	return nil
}

// Ordered returns the weights in canonical order.
func Ordered(a Arch, p ir.HParams, weights map[string]*ir.Tensor) []*ir.Tensor {
	var ts []*ir.Tensor
	for _, s := range a.Tensors(p) {
		if t, ok := weights[s.Name]; ok {
			ts = append(ts, t)
		}
	}
	return ts
}

func equalInts(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var layerName = regexp.MustCompile(`^(.*?)(\d+)\.(.*)$`)

// splitLayer splits "prefix.N.rest" at its first layer index.
func splitLayer(name string) (prefix string, layer int, rest string, ok bool) {
	m := layerName.FindStringSubmatch(name)
	if m == nil {
		return "", 0, "", false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		return "", 0, "", false
	}
	return m[1], n, m[3], true
}

// hfName inverts a per-layer HF → GGUF table for HFName: prefix is the
// layers' HF path ("model.layers.").
func hfName(canonical, prefix string, layer map[string]string, whole map[string]string) (string, bool) {
	if n, ok := whole[canonical]; ok {
		return n, true
	}
	pre, i, rest, ok := splitLayer(canonical)
	if !ok || pre != "blk." {
		return "", false
	}
	for hf, g := range layer {
		if g == rest {
			return fmt.Sprintf("%s%d.%s", prefix, i, hf), true
		}
	}
	return "", false
}

// blk names a per-layer tensor the way GGUF does.
func blk(i int, name string) string { return fmt.Sprintf("blk.%d.%s", i, name) }

// GraphFacts is what an exported graph fixes about the model it came
// from (frontend/onnx reads them): zero where the graph does not say.
type GraphFacts struct {
	Tensors        map[string]*ir.Tensor // by Hugging Face name, in HF layout
	Embedding      string                // the token embedding's HF name
	Layers         int
	Heads, KVHeads int
	NormEps        float64
	RopeTheta      float64
	Tied           bool // the LM head is the embedding
}

// FromExport is implemented by architectures whose hyper-parameters an
// exported graph gives without config.json.
type FromExport interface {
	// ExportModules names, within layer 0, the modules whose outputs the
	// graph reshapes into query and key heads, and the first norm.
	ExportModules() (q, k, norm string)
	// ConfigFromGraph makes the config.json the facts imply, with the
	// context length the graph cannot give.
	ConfigFromGraph(f GraphFacts, contextLength int) (Config, error)
}
