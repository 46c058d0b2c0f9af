// Package tokenizer turns text into token ids and back for the
// vocabularies lqc reads: SentencePiece-style BPE with byte fallback
// (GGUF tokenizer model "llama") and byte-level BPE ("gpt2") with the
// pre-tokenizers of GPT-2, Llama 3, Qwen2, StarCoder and DeepSeek LLM. Both follow llama.cpp's tokenizers, and are
// tested against its test vectors.
package tokenizer

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	v      *ir.Vocab
	ids    map[string]int32
	impl   encoder
	addBOS bool
	addEOS bool
	// userDefined are the USER_DEFINED tokens of a byte-level BPE
	// vocabulary, longest first: llama.cpp takes them out of the text
	// before pre-tokenizing it.
	userDefined []string
	// parsed are the tokens a text may spell out when its special tokens
	// are parsed (llama.cpp's parse_special): control and user-defined
	// tokens, longest first. Rendered chat templates need it.
	parsed []string
}

type encoder interface {
	encode(text string, out []int32) []int32
	piece(id int32) []byte // the bytes a token stands for
	// spacePrefix reports whether encoding prefixes a space that decoding
	// should drop again.
	spacePrefix() bool
}

// New builds the tokenizer for v.
func New(v *ir.Vocab) (*Tokenizer, error) {
	if v == nil {
		return nil, fmt.Errorf("the model has no vocabulary")
	}
	t := &Tokenizer{v: v, ids: make(map[string]int32, len(v.Tokens))}
	for i, s := range v.Tokens {
		if _, dup := t.ids[s]; !dup {
			t.ids[s] = int32(i)
		}
	}
	switch v.Model {
	case "llama":
		t.impl = newSPM(t)
		t.addBOS = true
	case "gpt2":
		var err error
		if t.impl, err = newBPE(t); err != nil {
			return nil, err
		}
		for i, typ := range v.Types {
			if typ == ir.TokenUserDefined && v.Tokens[i] != "" {
				t.userDefined = append(t.userDefined, v.Tokens[i])
			}
		}
		sort.SliceStable(t.userDefined, func(i, j int) bool { return len(t.userDefined[i]) > len(t.userDefined[j]) })
	default:
		return nil, fmt.Errorf("tokenizer model %q is not supported (lqc has llama and gpt2)", v.Model)
	}
	for i, typ := range v.Types {
		if (typ == ir.TokenControl || typ == ir.TokenUserDefined) && v.Tokens[i] != "" {
			t.parsed = append(t.parsed, v.Tokens[i])
		}
	}
	sort.SliceStable(t.parsed, func(i, j int) bool { return len(t.parsed[i]) > len(t.parsed[j]) })
	if v.AddBOS != nil {
		t.addBOS = *v.AddBOS
	}
	if v.AddEOS != nil {
		t.addEOS = *v.AddEOS
	}
	if t.addBOS && v.BOS == ir.NoToken {
		t.addBOS = false
	}
	if t.addEOS && v.EOS == ir.NoToken {
		t.addEOS = false
	}
	return t, nil
}

// Vocab is the tokenizer's vocabulary.
func (t *Tokenizer) Vocab() *ir.Vocab { return t.v }

// AddsBOS reports whether Encode with special tokens starts with BOS.
func (t *Tokenizer) AddsBOS() bool { return t.addBOS }

// Encode tokenizes text. With special set it adds BOS/EOS as the
// vocabulary asks (llama.cpp's add_special); control tokens written in the
// text are not parsed, they are ordinary text.
func (t *Tokenizer) Encode(text string, special bool) []int32 {
	return t.encode(text, special, t.userDefined)
}

// EncodeParsed is Encode with the special tokens spelled out in text
// parsed as themselves (llama.cpp's parse_special): "<|im_start|>" in a
// rendered chat template becomes that control token, not its letters.
func (t *Tokenizer) EncodeParsed(text string, special bool) []int32 {
	return t.encode(text, special, t.parsed)
}

func (t *Tokenizer) encode(text string, special bool, tokens []string) []int32 {
	var out []int32
	if special && t.addBOS {
		out = append(out, t.v.BOS)
	}
	if text != "" {
		out = t.encodeText(text, tokens, out)
	}
	if special && t.addEOS {
		out = append(out, t.v.EOS)
	}
	return out
}

// encodeText takes tokens (whole tokens spelled out) out of text, each
// where it first occurs, longest first as llama.cpp does, and encodes the
// rest.
func (t *Tokenizer) encodeText(text string, tokens []string, out []int32) []int32 {
	type fragment struct {
		text string
		id   int32 // a user-defined token, or NoToken for raw text
	}
	frags := []fragment{{text, ir.NoToken}}
	// Vocabularies hold thousands of user-defined tokens ([PADn]): only
	// those whose first two bytes occur in the text are looked for.
	var pairs [1 << 16]bool
	for i := 0; i+1 < len(text); i++ {
		pairs[uint16(text[i])<<8|uint16(text[i+1])] = true
	}
	for _, tok := range tokens {
		if len(tok) > len(text) || len(tok) >= 2 && !pairs[uint16(tok[0])<<8|uint16(tok[1])] {
			continue
		}
		var next []fragment
		for _, f := range frags {
			if f.id != ir.NoToken || !strings.Contains(f.text, tok) {
				next = append(next, f)
				continue
			}
			rest := f.text
			for {
				i := strings.Index(rest, tok)
				if i < 0 {
					break
				}
				if i > 0 {
					next = append(next, fragment{rest[:i], ir.NoToken})
				}
				next = append(next, fragment{tok, t.ids[tok]})
				rest = rest[i+len(tok):]
			}
			if rest != "" {
				next = append(next, fragment{rest, ir.NoToken})
			}
		}
		frags = next
	}
	for _, f := range frags {
		if f.id != ir.NoToken {
			out = append(out, f.id)
		} else {
			out = t.impl.encode(f.text, out)
		}
	}
	return out
}

// Piece returns the bytes token id stands for: control tokens (BOS, EOS)
// stand for nothing. Pieces of SentencePiece vocabularies keep their
// leading space.
func (t *Tokenizer) Piece(id int32) []byte {
	if id < 0 || int(id) >= len(t.v.Tokens) {
		return nil
	}
	switch t.v.Types[id] {
	case ir.TokenControl, ir.TokenUnused:
		return nil
	case ir.TokenUserDefined:
		if t.v.Model == "gpt2" {
			return []byte(t.v.Tokens[id]) // its text as it is, not byte-level symbols
		}
	}
	return t.impl.piece(id)
}

// Decode turns ids back into text, as llama.cpp's detokenizer does with
// special tokens removed: control tokens vanish, and the space a
// SentencePiece tokenizer put in front of the text is dropped.
func (t *Tokenizer) Decode(ids []int32) []byte {
	var b []byte
	first := true
	for _, id := range ids {
		p := t.Piece(id)
		if len(p) == 0 {
			continue
		}
		if first && t.impl.spacePrefix() && p[0] == ' ' {
			p = p[1:]
		}
		first = false
		b = append(b, p...)
	}
	return b
}

// IsEOG reports whether id ends generation.
func (t *Tokenizer) IsEOG(id int32) bool {
	if id == t.v.EOS || id == t.v.EOT && id != ir.NoToken {
		return true
	}
	if id >= 0 && int(id) < len(t.v.Tokens) && t.v.Types[id] == ir.TokenControl {
		s := t.v.Tokens[id]
		return strings.Contains(s, "eot") || strings.Contains(s, "end_of_turn") || endOfTurn[s]
	}
	return false
}

// endOfTurn are the control tokens chat models end a reply with, which
// llama.cpp also treats as ending generation.
var endOfTurn = map[string]bool{
	"<|endoftext|>": true, "<|im_end|>": true, "<|end|>": true, "<EOT>": true, "_<EOT>": true,
	"<｜end▁of▁sentence｜>": true, "<|end_of_text|>": true,
}

func (t *Tokenizer) find(s string) (int32, bool) {
	id, ok := t.ids[s]
	return id, ok
}
