package onnx

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lqc-dev/lqc/frontend/hf"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/runtime"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Backend folds the graph's shape arithmetic and runs the check that
	// the recognised model computes what the export does.
	Backend runtime.Backend
	// Tokenizer is a Hugging Face folder, or a tokenizer file in one
	// (tokenizer.json, tokenizer.model): an ONNX file carries none. Empty
	// means the model's own folder (Optimum's layout). A config.json in
	// that folder supplies what the graph does not fix (the context
	// length, special tokens) and must agree with what it does.
	Tokenizer string
}

// probeLen is the sequence length the export is imported at, to
// recognise it and to check the recognised model against it.
const probeLen = 8

// defaultContext is the context length of an export without config.json:
// graphs built for any sequence length do not record one.
const defaultContext = 2048

// IsModel reports whether path names an ONNX model file.
func IsModel(path string) bool { return strings.EqualFold(filepath.Ext(path), ".onnx") }

// Load imports an exported causal language model as the architecture it
// is (llama, gpt2, …): its weights mapped back to Hugging Face names, its
// hyper-parameters read from the graph, and the result checked against
// the export itself on a probe sequence. The model maps the file until
// Close.
func Load(path string, opt LoadOptions) (*ir.Model, error) {
	if opt.Backend == nil {
		return nil, fmt.Errorf("onnx: Load needs a backend")
	}
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	m, err := load(f, opt)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Source = path
	m.OnClose(f.Close)
	return m, nil
}

func load(f *File, opt LoadOptions) (*ir.Model, error) {
	tokens, consts, err := languageModelInputs(f)
	if err != nil {
		return nil, err
	}
	im, err := importGraph(f, Options{InputShapes: map[string][]int64{tokens: {1, probeLen}}, Consts: consts, Backend: opt.Backend})
	if err != nil {
		return nil, unwrapPath(err, f.Path)
	}
	e, err := im.recognize(tokens)
	if err != nil {
		return nil, err
	}
	tokDir := opt.Tokenizer
	if tokDir == "" {
		tokDir = filepath.Dir(f.Path)
	} else if st, err := os.Stat(tokDir); err != nil {
		return nil, err
	} else if !st.IsDir() {
		tokDir = filepath.Dir(tokDir)
	}
	if !hf.HasTokenizer(tokDir) {
		return nil, fmt.Errorf("an ONNX file carries no tokenizer and %s has none: pass --tokenizer (a Hugging Face folder, tokenizer.json or tokenizer.model)", tokDir)
	}
	cfg, name, err := exportConfig(e, tokDir, f.Path)
	if err != nil {
		return nil, err
	}
	m, err := hf.Build(name, cfg, e, tokDir)
	if err != nil {
		return nil, err
	}
	if err := checkRecognised(im.g, tokens, m, opt.Backend); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// ImportExport imports a causal LM export as the graph it is, at batch 1
// and sequence length seq (what `lqc inspect --ir --imported` shows): the
// caller closes the file when done with the graph.
func ImportExport(path string, b runtime.Backend, seq int64) (*ir.Graph, *File, error) {
	f, err := Open(path)
	if err != nil {
		return nil, nil, err
	}
	tokens, consts, err := languageModelInputs(f)
	if err == nil && seq != probeLen {
		for name, c := range consts {
			if consts[name], err = resizeRow(c, seq); err != nil {
				break
			}
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	g, err := Import(f, Options{InputShapes: map[string][]int64{tokens: {1, seq}}, Consts: consts, Backend: b})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return g, f, nil
}

// unwrapPath drops a leading "path: " so errors name the file once.
func unwrapPath(err error, path string) error {
	if s := err.Error(); strings.HasPrefix(s, path+": ") {
		return fmt.Errorf("%s", strings.TrimPrefix(s, path+": "))
	}
	return err
}

// languageModelInputs finds the token input of a causal LM export and
// binds the others an export may take (attention_mask to ones,
// position_ids to 0…n-1). Exports with a KV cache as inputs are refused.
func languageModelInputs(f *File) (tokens string, consts map[string]*ir.Tensor, err error) {
	inits := map[string]bool{}
	for _, t := range f.Model.Graph.Initializers {
		inits[t.Name] = true
	}
	consts = map[string]*ir.Tensor{}
	for _, in := range f.Model.Graph.Inputs {
		if inits[in.Name] {
			continue
		}
		t, _ := ElemType(in.ElemType)
		rank2Int := t.IsInt() && in.HasShape && len(in.Shape) == 2
		switch {
		case rank2Int && (in.Name == "input_ids" || tokens == "" && in.Name != "attention_mask" && in.Name != "position_ids"):
			if tokens != "" {
				return "", nil, fmt.Errorf("two token inputs, %s and %s", tokens, in.Name)
			}
			tokens = in.Name
		case rank2Int && in.Name == "attention_mask":
			consts[in.Name] = intRow(in.Name, t, probeLen, func(int) int64 { return 1 })
		case rank2Int && in.Name == "position_ids":
			consts[in.Name] = intRow(in.Name, t, probeLen, func(i int) int64 { return int64(i) })
		default:
			return "", nil, fmt.Errorf("input %s: lqc imports causal LM exports taking input_ids (and optionally attention_mask, position_ids); export without a KV cache (use_cache=False)", in.Name)
		}
	}
	if tokens == "" {
		return "", nil, fmt.Errorf("no token input: want an integer input_ids [batch, sequence]")
	}
	if len(f.Model.Graph.Outputs) == 0 {
		return "", nil, fmt.Errorf("the graph has no outputs")
	}
	return tokens, consts, nil
}

// intRow makes a [1, n] integer tensor.
func intRow(name string, t quant.Type, n int64, v func(i int) int64) *ir.Tensor {
	size := t.TypeSize()
	b := make([]byte, n*int64(size))
	for i := range int(n) {
		x := v(i)
		for k := range size {
			b[i*size+k] = byte(x >> (8 * k))
		}
	}
	c, _ := ir.FromBytes(name, t, []int64{1, n}, b)
	return c
}

// resizeRow remakes a bound attention_mask (ones) or position_ids
// (0…n-1) at length n.
func resizeRow(c *ir.Tensor, n int64) (*ir.Tensor, error) {
	if n <= 0 {
		return nil, fmt.Errorf("sequence length %d", n)
	}
	if c.Name == "attention_mask" {
		return intRow(c.Name, c.Type, n, func(int) int64 { return 1 }), nil
	}
	return intRow(c.Name, c.Type, n, func(i int) int64 { return int64(i) }), nil
}

// exportConfig is the config.json of the exported model: the one in
// tokDir (or beside the model), checked against what the graph fixes, or
// for llama-family graphs one made from the graph alone. The model is
// named after the folder the config came from, else after the file.
func exportConfig(e *export, tokDir, modelPath string) (arch.Config, string, error) {
	for _, dir := range []string{tokDir, filepath.Dir(modelPath)} {
		p := filepath.Join(dir, "config.json")
		if _, err := os.Stat(p); err != nil {
			continue
		}
		cfg, err := hf.ReadConfig(p)
		if err != nil {
			return nil, "", err
		}
		if err := e.agrees(cfg); err != nil {
			return nil, "", fmt.Errorf("%s does not describe this graph: %w", p, err)
		}
		return cfg, filepath.Base(filepath.Clean(dir)), nil
	}
	cfg, err := e.config()
	if err != nil {
		return nil, "", err
	}
	return cfg, strings.TrimSuffix(filepath.Base(modelPath), filepath.Ext(modelPath)), nil
}

// agrees checks a config.json against what the graph fixes.
func (e *export) agrees(cfg arch.Config) error {
	mt, err := cfg.ModelType()
	if err != nil {
		return err
	}
	if a, err := arch.ForHF(mt); err != nil || a.Name() != e.arch.Name() {
		return fmt.Errorf("model_type %s, but the graph is %s", mt, e.arch.Name())
	}
	p, err := e.arch.ParamsFromHF(cfg)
	if err != nil {
		return err
	}
	check := func(key string, graph, config float64) error {
		if graph != 0 && math.Abs(graph-config) > 1e-4*math.Abs(config) {
			return fmt.Errorf("%s is %g, the graph says %g", key, config, graph)
		}
		return nil
	}
	emb := e.Tensors[e.Embedding]
	var vocab, hidden float64
	if emb != nil && len(emb.Shape) == 2 {
		vocab, hidden = float64(emb.Shape[0]), float64(emb.Shape[1])
	}
	for _, c := range []error{
		check("the number of layers", float64(e.Layers), float64(p.BlockCount)),
		check("the hidden size", hidden, float64(p.EmbeddingLength)),
		check("the vocabulary size", vocab, float64(p.VocabSize)),
		check("the number of attention heads", float64(e.Heads), float64(p.HeadCount)),
		check("the number of key/value heads", float64(e.KVHeads), float64(p.HeadCountKV)),
		check("the norm epsilon", e.NormEps, float64(p.NormEpsilon)),
		check("the RoPE base", e.RopeTheta, float64(p.RopeFreqBase)),
	} {
		if c != nil {
			return c
		}
	}
	return nil
}

// config makes a config.json from the graph alone, for the
// architectures whose exports fix their hyper-parameters.
func (e *export) config() (arch.Config, error) {
	ex, ok := e.arch.(arch.FromExport)
	if !ok {
		return nil, fmt.Errorf("no config.json beside the model or its tokenizer: lqc reads the hyper-parameters of %s exports from it", e.arch.Name())
	}
	return ex.ConfigFromGraph(e.GraphFacts, defaultContext)
}

// checkRecognised runs the imported graph and the recognised model on
// the same probe tokens: their logits must agree, or the recognition
// missed something the export computes.
func checkRecognised(g *ir.Graph, tokens string, m *ir.Model, b runtime.Backend) error {
	vocab := m.Params.VocabSize
	ids := make([]int32, probeLen)
	raw := make([]byte, 8*probeLen)
	for i := range ids {
		ids[i] = int32((1 + 37*i) % vocab)
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(ids[i]))
	}
	in := g.Inputs[0]
	for _, v := range g.Inputs {
		if v.Name == tokens {
			in = v
		}
	}
	tok, err := ir.FromBytes(tokens, quant.I64, []int64{1, probeLen}, raw)
	if err != nil {
		return err
	}
	if in.Type() != quant.I64 {
		if tok, err = narrowIDs(tokens, in.Type(), ids); err != nil {
			return err
		}
	}
	gm, err := runtime.Load(&ir.Model{Graph: g}, b)
	if err != nil {
		return err
	}
	outs, err := gm.Run(map[string]*ir.Tensor{tokens: tok})
	if err != nil {
		return fmt.Errorf("running the export: %w", err)
	}
	want, err := outs[0].Float32s()
	if err != nil {
		return err
	}
	rm, err := runtime.Load(m, b)
	if err != nil {
		return err
	}
	s, err := rm.NewSession(probeLen)
	if err != nil {
		return err
	}
	got, err := s.Forward(ids, true)
	if err != nil {
		return err
	}
	if len(got) != len(want) {
		return fmt.Errorf("the export gives %d logits for %d tokens, the %s model %d", len(want), probeLen, m.Arch, len(got))
	}
	var worst, scale float64
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	if worst > 1e-3*max(1, scale) {
		return fmt.Errorf("recognised as %s, but its logits differ from the export's by %.3g: the graph computes something lqc's %s does not", m.Arch, worst, m.Arch)
	}
	return nil
}

// narrowIDs makes the probe tokens in an int32 input's type.
func narrowIDs(name string, t quant.Type, ids []int32) (*ir.Tensor, error) {
	if t != quant.I32 {
		return nil, fmt.Errorf("token input %s is %v", name, t)
	}
	b := make([]byte, 4*len(ids))
	for i, v := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return ir.FromBytes(name, t, []int64{1, int64(len(ids))}, b)
}
