package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lqc-dev/lqc/runtime/chat"
	"github.com/lqc-dev/lqc/runtime/cpu"
	"github.com/lqc-dev/lqc/serve"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "MODEL [--lora NAME=PATH]... [flags]\n\nServes MODEL with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models),\n/health, /metrics, /tokenize and /detokenize. Each --lora adapter is a model id of its own;\nrequests with different adapters are decoded together.", stderr)
	host := fs.String("host", "127.0.0.1", "address to listen on")
	port := fs.Int("port", 8080, "port to listen on (0: any free port)")
	parallel := fs.Int("parallel", 4, "requests decoded together (each holds a context)")
	ctxSize := fs.IntP("ctx-size", "c", 2048, "context of each request, prompt and reply (at most the model's)")
	queue := fs.Int("queue", 64, "requests that may wait for a free slot before the server answers 429")
	apiKey := fs.String("api-key", os.Getenv("LQC_API_KEY"), "require Authorization: Bearer KEY (default $LQC_API_KEY)")
	repack := fs.Bool("repack", true, "on the CPU, keep the weights repacked for the batched kernels after first use, as llama.cpp repacks them: faster batched steps for about the weights' memory again")
	alias := fs.String("alias", "", "the base model's id (default: the file name)")
	templateFile := fs.String("chat-template", "", "a Jinja chat template file instead of the model's")
	opts := addRunFlags(fs)
	pos, err := parseFlags(fs, args, 1)
	if err != nil {
		return err
	}
	if err := opts.parseAdapters(); err != nil {
		return err
	}
	switch {
	case *parallel < 1:
		return usageError{fmt.Errorf("--parallel %d: want at least 1", *parallel)}
	case *ctxSize < 2:
		return usageError{fmt.Errorf("--ctx-size %d: want at least 2", *ctxSize)}
	}
	tmplSrc, err := readTemplate(*templateFile)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for _, a := range opts.lora {
		if names[a.name] {
			return usageError{fmt.Errorf("two adapters are named %q: name them with --lora NAME=PATH", a.name)}
		}
		names[a.name] = true
	}

	// Listen first, so that /health says 503 while the model loads.
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		return err
	}
	metrics := serve.NewMetrics()
	srv := serve.NewServer(*apiKey, stderr, metrics)
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	defer hs.Close()
	fmt.Fprintf(stderr, "lqc serve: listening on http://%s (loading %s)\n", ln.Addr(), pos[0])

	l, err := loadForRun(pos[0], opts, stderr)
	if err != nil {
		return err
	}
	defer l.close()
	if cb, ok := l.model.Backend.(*cpu.Backend); ok && *repack {
		cb.KeepPanels()
	}
	tmpl, err := chatTemplate(l, tmplSrc, *templateFile, stderr)
	if err != nil {
		return err
	}
	size := *ctxSize
	if c := l.ir.Params.ContextLength; c > 0 && size > c {
		size = c
	}
	engine, err := serve.NewEngine(l.model, l.tok, serve.Options{Parallel: *parallel, Context: size, Queue: *queue}, metrics)
	if err != nil {
		return err
	}
	base := *alias
	if base == "" {
		b := filepath.Base(filepath.Clean(pos[0]))
		base = strings.TrimSuffix(b, filepath.Ext(b))
	}
	if names[base] {
		return usageError{fmt.Errorf("an adapter has the base model's id %q: rename it or use --alias", base)}
	}
	backend := &serve.Backend{Engine: engine, Tokenizer: l.tok, Template: tmpl, BaseID: base}
	for i, a := range l.adapters {
		backend.Adapters = append(backend.Adapters, serve.NamedAdapter{Name: l.names[i], Adapter: a.Adapter, Scale: a.Scale})
	}
	srv.Ready(backend)
	fmt.Fprintf(stderr, "lqc serve: ready: model %q with %d adapter(s), %d requests of %d positions decoded together (%s)\n",
		base, len(backend.Adapters), *parallel, size, l.model.Backend.Name())

	runErr := make(chan error, 1)
	go func() { runErr <- engine.Run(ctx) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(shutdown)
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Fprintln(stderr, "lqc serve: stopped")
	return nil
}

// readTemplate is the Jinja source in file, or "" when no file is named.
func readTemplate(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	return string(b), err
}

// chatTemplate is src (from file) or the model's template; a model without
// one is prompted in ChatML, which the user is told.
func chatTemplate(l *loaded, src, file string, stderr io.Writer) (*chat.Template, error) {
	t, err := chat.ForVocab(l.tok.Vocab(), src)
	if err != nil {
		if file != "" {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return nil, err
	}
	if t.Default {
		fmt.Fprintln(stderr, "lqc: the model has no chat template; chats are written in ChatML (--chat-template FILE to choose one)")
	}
	return t, nil
}
