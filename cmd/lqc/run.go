package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/spf13/pflag"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/passes"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// loaded is a model ready to run, with its tokenizer.
type loaded struct {
	ir       *ir.Model
	model    *lqrt.Model
	tok      *tokenizer.Tokenizer
	adapters []lqrt.Applied // --lora: applied beside the weights
	names    []string       // the adapters' names, as --lora gave them
	close    func()
}

// runOptions are the flags run and eval share.
type runOptions struct {
	threads   int
	device    string
	tokenizer string
	flashAttn string
	verbose   bool
	fuse      []adapterSpec // adapters merged into the weights before running
	lora      []adapterSpec // adapters applied beside the weights
	fuseFlag  []string
	loraFlag  []string
}

func addRunFlags(fs *pflag.FlagSet) *runOptions {
	o := &runOptions{}
	fs.IntVarP(&o.threads, "threads", "t", runtime.GOMAXPROCS(0), "threads")
	addDeviceFlag(fs, &o.device)
	fs.StringVar(&o.tokenizer, "tokenizer", "", tokenizerHelp)
	fs.StringVar(&o.flashAttn, "flash-attn", "auto", "fused attention: on, off, or auto (on where the backend has the kernel)")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "print what the passes did")
	fs.StringArrayVar(&o.loraFlag, "lora", nil, "apply a LoRA adapter (GGUF adapter or PEFT folder) beside the weights, [NAME=]PATH[:SCALE]; repeatable (lqc serve offers each as model NAME, default the file name)")
	fs.StringArrayVar(&o.fuseFlag, "fuse-lora", nil, "merge a LoRA adapter into the weights before running, PATH or PATH:WEIGHT; repeatable")
	return o
}

// parseAdapters reads --lora and --fuse-lora.
func (o *runOptions) parseAdapters() error {
	var err error
	if o.lora, err = parseAdapterSpecs(o.loraFlag); err != nil {
		return err
	}
	o.fuse, err = parseAdapterSpecs(o.fuseFlag)
	return err
}

// adaptersFromHub resolves the adapters given as Hugging Face repo ids.
func (o *runOptions) adaptersFromHub(stderr io.Writer) error {
	for _, specs := range [][]adapterSpec{o.lora, o.fuse} {
		for i := range specs {
			p, err := fromHub(context.Background(), specs[i].path, stderr, false)
			if err != nil {
				return err
			}
			specs[i].path = p
		}
	}
	return nil
}

// pipeline is the passes a model goes through before it runs.
func (o *runOptions) pipeline(stderr io.Writer) (*passes.Manager, error) {
	pm := &passes.Manager{Passes: []passes.Pass{passes.DeadCode{}}}
	switch o.flashAttn {
	case "on", "auto": // the CPU backend has the FlashAttention kernel
		pm.Passes = append(pm.Passes, passes.FlashAttention{})
	case "off":
	default:
		return nil, usageError{fmt.Errorf("--flash-attn %q: want on, off or auto", o.flashAttn)}
	}
	if o.verbose {
		pm.Trace = stderr
	}
	return pm, nil
}

func loadForRun(path string, o *runOptions, stderr io.Writer) (l *loaded, err error) {
	pm, err := o.pipeline(stderr)
	if err != nil {
		return nil, err
	}
	// The device first: a wrong --device or a missing GPU is reported
	// before a large model is read.
	b, err := newBackend(o.device, o.threads, stderr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && l == nil {
			b.Close()
		}
	}()
	if path, err = fromHub(context.Background(), path, stderr, false); err != nil {
		return nil, err
	}
	if err := o.adaptersFromHub(stderr); err != nil {
		return nil, err
	}
	m, err := frontend.Load(path, frontend.Options{Tokenizer: o.tokenizer})
	if err != nil {
		return nil, err
	}
	adapters, closeAdapters, err := loadAdapters(o.fuse, m)
	if err != nil {
		m.Close()
		return nil, err
	}
	m.OnClose(func() error { closeAdapters(); return nil })
	if len(adapters) > 0 {
		pm.Passes = append([]passes.Pass{passes.FuseLoRA{Adapters: adapters}}, pm.Passes...)
	}
	if err := pm.Run(m); err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rm, err := lqrt.Load(m, b)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l = &loaded{ir: m, model: rm, tok: tok, close: func() { b.Close(); m.Close() }}
	for _, spec := range o.lora {
		a, err := frontend.LoadAdapter(spec.path, m)
		if err != nil {
			m.Close() // the backend closes on the way out
			return nil, err
		}
		m.OnClose(a.Close)
		ra, err := rm.LoadAdapter(a)
		if err != nil {
			m.Close() // the backend closes on the way out
			return nil, err
		}
		l.adapters = append(l.adapters, lqrt.Applied{Adapter: ra, Scale: spec.weight})
		l.names = append(l.names, spec.name)
	}
	return l, nil
}

// stdin is what lqc run --chat reads user turns from; tests replace it.
var stdin io.Reader = os.Stdin

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "MODEL [-p PROMPT] [flags]\n\nMODEL is a GGUF file, a Hugging Face folder, an ONNX export or a llama2.c checkpoint.", stderr)
	prompt := fs.StringP("prompt", "p", "", "prompt (empty: start from BOS)")
	n := fs.IntP("n-predict", "n", 128, "tokens to generate")
	temp := fs.Float32("temp", 0.8, "temperature (0: greedy)")
	topK := fs.Int("top-k", 40, "keep the k most likely tokens (0: all)")
	topP := fs.Float32("top-p", 0.95, "keep the most likely tokens up to this probability (1: all)")
	seed := fs.Uint64("seed", 0, "random seed (0: from the clock)")
	ctxSize := fs.IntP("ctx-size", "c", 0, "context size (0: the prompt plus -n, at most the model's; with --chat, the model's up to 4096)")
	chatMode := fs.Bool("chat", false, "converse: read user turns from stdin, one per line, and answer each in the model's chat template")
	system := fs.String("system", "", "with --chat, a system message to start the conversation with")
	templateFile := fs.String("chat-template", "", "with --chat, a Jinja chat template file instead of the model's")
	opts := addRunFlags(fs)
	profile := profileFlag(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	if err := opts.parseAdapters(); err != nil {
		return err
	}
	stop, err := profile()
	if err != nil {
		return err
	}
	defer stop()
	if *n < 0 {
		return usageError{fmt.Errorf("-n %d is negative", *n)}
	}
	l, err := loadForRun(pos[0], opts, stderr)
	if err != nil {
		return err
	}
	defer l.close()
	if *seed == 0 {
		*seed = uint64(time.Now().UnixNano())
	}
	smp := lqrt.NewSampler(lqrt.SamplerOptions{Temp: *temp, TopK: *topK, TopP: *topP, Seed: *seed})
	if *chatMode {
		return converse(ctx, l, *system, *templateFile, *ctxSize, *n, smp, stdin, stdout, stderr)
	}

	ids := l.tok.Encode(*prompt, true)
	if len(ids) == 0 { // an empty prompt starts from BOS, whatever the vocabulary adds
		if ids = []int32{l.tok.Vocab().BOS}; ids[0] == ir.NoToken {
			return fmt.Errorf("%s: empty prompt and no BOS token to start from", pos[0])
		}
	}
	size := *ctxSize
	if size == 0 {
		size = min(len(ids)+*n, l.ir.Params.ContextLength)
	}
	if len(ids) > size {
		return fmt.Errorf("the prompt has %d tokens, more than the context of %d", len(ids), size)
	}
	sess, err := l.model.NewSession(size)
	if err != nil {
		return err
	}
	if err := sess.SetAdapters(l.adapters...); err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	// A SentencePiece tokenizer puts a space before the text; the first
	// piece after BOS shows it, so it is dropped, as llama.cpp's and
	// llama2.c's detokenizers do.
	atStart := len(ids) == 1 && ids[0] == l.tok.Vocab().BOS
	st, err := lqrt.Generate(ctx, sess, ids, *n, smp, l.tok.IsEOG, func(id int32) error {
		p := l.tok.Piece(id)
		if atStart {
			p = l.tok.Decode([]int32{id})
			atStart = false
		}
		if _, err := out.Write(p); err != nil {
			return err
		}
		return out.Flush()
	})
	if err != nil {
		return err
	}
	if isTerminal(stdout) {
		fmt.Fprintln(out)
	}
	if err := out.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "\nprompt: %d tokens, %.2f t/s; generation: %d tokens, %.2f t/s (%s)\n",
		st.PromptTokens, st.PromptRate(), st.GenTokens, st.GenRate(), l.model.Backend.Name())
	return nil
}
