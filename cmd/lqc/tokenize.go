package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

func runTokenize(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", "MODEL [TEXT | --file F] [flags]\n\nMODEL may be a vocabulary-only GGUF.", stderr)
	file := fs.StringP("file", "f", "", "read the text from this file")
	noBOS := fs.Bool("no-bos", false, "do not add BOS (or EOS) as the vocabulary asks")
	ids := fs.Bool("ids", false, "print only the ids, space-separated")
	asJSON := fs.Bool("json", false, "print ids and pieces as JSON")
	tokPath := fs.String("tokenizer", "", tokenizerHelp)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() < 1 || fs.NArg() > 2 || (fs.NArg() == 2) == (*file != "") {
		fs.Usage()
		return usageError{fmt.Errorf("want MODEL and either TEXT or --file")}
	}
	text := ""
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		text = string(b)
	} else {
		text = fs.Arg(1)
	}
	v, err := loadVocab(fs.Arg(0), *tokPath)
	if err != nil {
		return err
	}
	tok, err := tokenizer.New(v)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	out := tok.Encode(text, !*noBOS)
	switch {
	case *ids:
		s := make([]string, len(out))
		for i, id := range out {
			s[i] = fmt.Sprint(id)
		}
		fmt.Fprintln(stdout, strings.Join(s, " "))
	case *asJSON:
		type entry struct {
			ID    int32  `json:"id"`
			Piece string `json:"piece"`
		}
		list := make([]entry, len(out))
		for i, id := range out {
			list[i] = entry{id, v.Tokens[id]}
		}
		return json.NewEncoder(stdout).Encode(list)
	default:
		for _, id := range out {
			fmt.Fprintf(stdout, "%6d -> '%s'\n", id, tok.Piece(id))
		}
	}
	return nil
}

// loadVocab reads only the vocabulary of a GGUF file (which may hold no
// tensors), or loads any other model.
func loadVocab(path, tokPath string) (*ir.Vocab, error) {
	if st, err := os.Stat(path); err == nil && !st.IsDir() && frontend.IsGGUF(path) {
		return gguf.ReadVocab(path)
	}
	m, err := frontend.Load(path, frontend.Options{Tokenizer: tokPath})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.Vocab, nil
}
