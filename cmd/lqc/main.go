// Command lqc compiles fine-tuned LLMs into small, fast GGUF files: it
// imports Hugging Face folders, llama2.c checkpoints and GGUF files,
// quantizes them exactly as llama.cpp does, and writes GGUF that llama.cpp
// and ollama run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"convert", "convert and quantize a model to GGUF", runConvert},
	{"imatrix", "measure an importance matrix on calibration text (for convert --imatrix)", runImatrix},
	{"inspect", "show a model's metadata, tensors and graph", runInspect},
	{"run", "generate text with a model", runRun},
	{"finetune", "train a LoRA adapter on a frozen (quantized) model: residual distillation or SFT", runFinetune},
	{"plan", "predict the memory a model needs to run or train on a device, and whether it fits", runPlan},
	{"eval", "measure perplexity and KL divergence against a reference; gate CI on them", runEval},
	{"serve", "serve a model and its adapters with OpenAI's API", runServe},
	{"tokenize", "print the tokens of a text", runTokenize},
	{"version", "print lqc's version", runVersion},
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// usageError marks errors caused by how lqc was called.
type usageError struct{ error }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, pflag.ErrHelp):
			return 0
		case errors.Is(err, context.Canceled):
			fmt.Fprintln(stderr, "lqc: interrupted")
			return 130
		}
		fmt.Fprintf(stderr, "lqc %s: %s\n", c.name, oneLine(err))
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "lqc: unknown command %q (try lqc help)\n", args[0])
	return 2
}

// oneLine folds a multi-line error (joined errors) onto one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "lqc: compile fine-tuned LLMs into quantized GGUF")
	fmt.Fprintln(w, "\nUsage: lqc COMMAND [ARGS]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun lqc COMMAND --help for a command's flags.")
}

func newFlags(name, args string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lqc %s %s\n\nFlags:\n%s", name, args, fs.FlagUsages())
	}
	return fs
}

// parseFlags parses args and checks the number of positional arguments.
func parseFlags(fs *pflag.FlagSet, args []string, positional int) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() != positional {
		fs.Usage()
		return nil, usageError{fmt.Errorf("want %d argument(s), have %d", positional, fs.NArg())}
	}
	return fs.Args(), nil
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", stderr)
	if _, err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "lqc", version)
	return nil
}

// tokenizerHelp describes --tokenizer, which the formats that carry no
// tokenizer need.
const tokenizerHelp = "tokenizer of a llama2.c checkpoint (default: tokenizer.bin or tok*.bin beside it), or of an ONNX export: a Hugging Face folder or a tokenizer file in one (default: the export's folder)"
