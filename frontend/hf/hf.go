// Package hf imports Hugging Face model folders: config.json, safetensors
// weights (single or sharded) and the tokenizer, from tokenizer.model
// (SentencePiece), tokenizer.json (byte-level BPE) or vocab.json with
// merges.txt.
package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lqc-dev/lqc/frontend/safetensors"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
)

// IsModelDir reports whether dir looks like a Hugging Face model folder.
func IsModelDir(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "config.json"))
	return err == nil && st.Mode().IsRegular()
}

// Load imports the model in dir. Weights stay in the mapped files until
// read; Close the model when done.
func Load(dir string) (*ir.Model, error) {
	cfgPath := filepath.Join(dir, "config.json")
	cfg, err := ReadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := Build(filepath.Base(filepath.Clean(dir)), cfg, set, dir)
	if err != nil {
		set.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	m.Source = dir
	m.OnClose(set.Close)
	return m, nil
}

// ReadConfig reads and parses a config.json.
func ReadConfig(path string) (arch.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := arch.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Weights is a set of tensors under Hugging Face names: safetensors
// files, or an export's weights mapped back to the names they came from.
type Weights interface {
	Names() []string
	Tensor(name string) (*ir.Tensor, error)
}

// Build makes a model from a parsed config.json, weights under Hugging
// Face names and the tokenizer files in tokDir.
func Build(name string, cfg arch.Config, w Weights, tokDir string) (*ir.Model, error) {
	mt, err := cfg.ModelType()
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	a, err := arch.ForHF(mt)
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	p, err := a.ParamsFromHF(cfg)
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	weights := map[string]*ir.Tensor{}
	from := map[string]string{}
	for _, hfName := range w.Names() {
		canon, fix, ok, err := a.MapHF(hfName, p)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if prev, dup := from[canon]; dup {
			return nil, fmt.Errorf("tensors %s and %s both map to %s", prev, hfName, canon)
		}
		t, err := w.Tensor(hfName)
		if err != nil {
			return nil, err
		}
		t = t.WithName(canon)
		if fix != nil {
			if t, err = fix(t, p); err != nil {
				return nil, err
			}
		}
		weights[canon], from[canon] = t, hfName
	}
	if err := a.CompleteHF(cfg, p, weights); err != nil {
		return nil, err
	}
	vocab, err := loadVocab(tokDir, cfg, p.VocabSize)
	if err != nil {
		return nil, err
	}
	if vc, ok := a.(arch.VocabCompleter); ok {
		vc.CompleteVocab(vocab)
	}
	return arch.NewModel(a, name, p, weights, vocab)
}

// HasTokenizer reports whether dir holds tokenizer files lqc reads.
func HasTokenizer(dir string) bool {
	return exists(filepath.Join(dir, "tokenizer.model")) || exists(filepath.Join(dir, "tokenizer.json")) ||
		exists(filepath.Join(dir, "vocab.json")) && exists(filepath.Join(dir, "merges.txt"))
}

// loadVocab reads the tokenizer: tokenizer.model first (SentencePiece, as
// llama.cpp's converter prefers it), else tokenizer.json, else vocab.json
// with merges.txt.
func loadVocab(dir string, cfg arch.Config, vocabSize int) (*ir.Vocab, error) {
	tc, err := readTokenizerConfig(dir)
	if err != nil {
		return nil, err
	}
	var v *ir.Vocab
	spmPath := filepath.Join(dir, "tokenizer.model")
	tjPath := filepath.Join(dir, "tokenizer.json")
	vjPath, mtPath := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
	switch {
	case exists(spmPath):
		data, err := os.ReadFile(spmPath)
		if err != nil {
			return nil, err
		}
		model, err := parseSPM(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spmPath, err)
		}
		if v, err = spmVocab(model, vocabSize); err != nil {
			return nil, fmt.Errorf("%s: %w", spmPath, err)
		}
		if err := applyAddedTokens(v, tc); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer_config.json"), err)
		}
	case exists(tjPath):
		data, err := os.ReadFile(tjPath)
		if err != nil {
			return nil, err
		}
		if v, err = parseTokenizerJSON(data, vocabSize); err != nil {
			return nil, fmt.Errorf("%s: %w", tjPath, err)
		}
		if err := applyTemplate(v, data, tc); err != nil {
			return nil, fmt.Errorf("%s: %w", tjPath, err)
		}
	case exists(vjPath) && exists(mtPath):
		vj, err := os.ReadFile(vjPath)
		if err != nil {
			return nil, err
		}
		mt, err := os.ReadFile(mtPath)
		if err != nil {
			return nil, err
		}
		if v, err = parseVocabMerges(vj, mt, tc.added(), vocabSize); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	default:
		return nil, fmt.Errorf("%s: no tokenizer (want tokenizer.model, tokenizer.json, or vocab.json with merges.txt)", dir)
	}
	if err := setSpecialTokens(v, tc, cfg, exists(tjPath)); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return v, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// tokenizerConfig is the part of tokenizer_config.json lqc reads.
type tokenizerConfig struct {
	AddBOS       *bool                      `json:"add_bos_token"`
	AddEOS       *bool                      `json:"add_eos_token"`
	ChatTemplate json.RawMessage            `json:"chat_template"`
	AddedDecoder map[string]addedTokenEntry `json:"added_tokens_decoder"`
	Tokens       map[string]json.RawMessage `json:"-"`
}

type addedTokenEntry struct {
	Content string `json:"content"`
	Special bool   `json:"special"`
}

func readTokenizerConfig(dir string) (*tokenizerConfig, error) {
	path := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &tokenizerConfig{}, nil
	}
	if err != nil {
		return nil, err
	}
	tc := &tokenizerConfig{}
	if err := json.Unmarshal(data, tc); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %w", path, err)
	}
	if err := json.Unmarshal(data, &tc.Tokens); err != nil {
		return nil, fmt.Errorf("%s: invalid JSON: %w", path, err)
	}
	return tc, nil
}

func (tc *tokenizerConfig) added() []addedToken {
	var out []addedToken
	for id, e := range tc.AddedDecoder {
		var n int
		if _, err := fmt.Sscan(id, &n); err == nil {
			out = append(out, addedToken{ID: n, Content: e.Content, Special: e.Special})
		}
	}
	return out
}

// applyAddedTokens lays tokenizer_config.json's added tokens over the
// SentencePiece pieces, as llama.cpp's converter does: each takes its id
// with score −1000, CONTROL when it is special or looks special, else
// USER_DEFINED with SentencePiece's ▁ written as a space.
func applyAddedTokens(v *ir.Vocab, tc *tokenizerConfig) error {
	for _, a := range tc.added() {
		if a.ID < 0 || a.ID >= len(v.Tokens) {
			return fmt.Errorf("added token %q has id %d beyond the vocabulary (%d)", a.Content, a.ID, len(v.Tokens))
		}
		v.Tokens[a.ID], v.Scores[a.ID] = a.Content, -1000
		v.Types[a.ID] = ir.TokenControl
		if !a.Special && !looksSpecial(a.Content) {
			v.Tokens[a.ID] = strings.ReplaceAll(a.Content, "\u2581", " ")
			v.Types[a.ID] = ir.TokenUserDefined
		}
	}
	return nil
}

// looksSpecial is llama.cpp's converter's test for added tokens that
// models forget to mark special.
func looksSpecial(tok string) bool {
	switch tok {
	case "<pad>", "<mask>", "<2mass>", "[@BOS@]":
		return true
	}
	return strings.HasPrefix(tok, "<|") && strings.HasSuffix(tok, "|>") ||
		strings.HasPrefix(tok, "<｜") && strings.HasSuffix(tok, "｜>") ||
		strings.HasPrefix(tok, "<unused") && strings.HasSuffix(tok, ">")
}

// setSpecialTokens resolves bos/eos/unk/pad: tokenizer_config.json names
// the token text, config.json may give the id; add_bos_token and
// add_eos_token and the chat template come from tokenizer_config.json.
// As llama.cpp's converter, it looks the names up only where the folder
// has a tokenizer.json (byNames); otherwise config.json's ids alone count.
func setSpecialTokens(v *ir.Vocab, tc *tokenizerConfig, cfg arch.Config, byNames bool) error {
	for _, s := range []struct {
		name string
		dst  *int32
	}{{"bos", &v.BOS}, {"eos", &v.EOS}, {"unk", &v.UNK}, {"pad", &v.PAD}} {
		if text := tokenText(tc.Tokens[s.name+"_token"]); text != "" && byNames {
			if id := v.Find(text); id != ir.NoToken {
				*s.dst = id
				continue
			}
		}
		if _, ok := cfg[s.name+"_token_id"]; ok {
			id, err := cfg.Int(s.name + "_token_id")
			if err != nil {
				// Some configs list several ids; llama.cpp takes none then.
				continue
			}
			if id >= len(v.Tokens) {
				return fmt.Errorf("config.json %s_token_id %d is beyond the vocabulary (%d)", s.name, id, len(v.Tokens))
			}
			*s.dst = int32(id)
		}
	}
	if tc.AddBOS != nil {
		v.AddBOS = tc.AddBOS
	}
	if tc.AddEOS != nil {
		v.AddEOS = tc.AddEOS
	}
	var tmpl string
	if json.Unmarshal(tc.ChatTemplate, &tmpl) == nil {
		v.ChatTemplate = tmpl
	}
	return nil
}

// applyTemplate reads which special tokens a tokenizer.json's
// TemplateProcessing post-processor puts around the text, as llama.cpp's
// converter does: the first token of "single" sets add_bos (when it is
// the BOS or CLS token), its last add_eos (when it is EOS), and a token
// between the two sequences of "pair" add_sep. tokenizer_config.json's
// add_*_token, read later, override them.
func applyTemplate(v *ir.Vocab, data []byte, tc *tokenizerConfig) error {
	type piece struct {
		Special *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
		Sequence *struct {
			ID string `json:"id"`
		} `json:"Sequence"`
	}
	type processor struct {
		Type       string      `json:"type"`
		Single     []piece     `json:"single"`
		Pair       []piece     `json:"pair"`
		Processors []processor `json:"processors"`
	}
	var tj struct {
		Post *processor `json:"post_processor"`
	}
	if err := json.Unmarshal(data, &tj); err != nil || tj.Post == nil {
		return err
	}
	procs := tj.Post.Processors
	if len(procs) == 0 {
		procs = []processor{*tj.Post}
	}
	special := func(p piece) string {
		if p.Special == nil {
			return ""
		}
		return p.Special.ID
	}
	bos, eos := tokenText(tc.Tokens["bos_token"]), tokenText(tc.Tokens["eos_token"])
	sep, cls := tokenText(tc.Tokens["sep_token"]), tokenText(tc.Tokens["cls_token"])
	yes, no := true, false
	for _, p := range procs {
		if p.Type != "TemplateProcessing" || len(p.Single) < 2 {
			continue
		}
		first, last := special(p.Single[0]), special(p.Single[len(p.Single)-1])
		if first != "" {
			v.AddBOS = &no
			if first == bos || first == cls {
				v.AddBOS = &yes
			}
		}
		if last != "" {
			v.AddEOS = &no
			if last == eos {
				v.AddEOS = &yes
			}
		}
		pair := p.Pair
		if len(pair) > 0 && first != "" && special(pair[0]) == first {
			pair = pair[1:]
		}
		if len(pair) > 0 && last != "" && special(pair[len(pair)-1]) == last {
			pair = pair[:len(pair)-1]
		}
		if len(pair) > 2 && pair[0].Sequence != nil && pair[0].Sequence.ID == "A" &&
			pair[len(pair)-1].Sequence != nil && pair[len(pair)-1].Sequence.ID == "B" {
			mid := special(pair[1])
			v.AddSEP = &no
			if mid != "" && (mid == sep || mid == eos) && last == "" {
				v.AddSEP = &yes
			}
		}
	}
	return nil
}

// tokenText reads a special-token entry: a string, or {"content": ...}.
func tokenText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}
