package tokenizer

import (
	"fmt"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// spm is SentencePiece-style BPE as llama.cpp runs it on GGUF "llama"
// vocabularies: the text, with a space in front and spaces written as
// U+2581, is split into characters, and adjacent pairs whose
// concatenation is a token are merged, highest token score first. What
// remains unknown is spelled out as byte tokens <0xNN>.
type spm struct {
	t *Tokenizer
}

func newSPM(t *Tokenizer) *spm { return &spm{t: t} }

func (s *spm) spacePrefix() bool { return s.t.v.AddSpacePrefix == nil || *s.t.v.AddSpacePrefix }

func (s *spm) piece(id int32) []byte {
	tok := s.t.v.Tokens[id]
	if s.t.v.Types[id] == ir.TokenByte {
		var b byte
		if _, err := fmt.Sscanf(tok, "<0x%02X>", &b); err == nil {
			return []byte{b}
		}
	}
	return []byte(strings.ReplaceAll(tok, "\u2581", " "))
}

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

func (s *spm) encode(text string, out []int32) []int32 {
	if s.spacePrefix() {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", "\u2581")
	syms := splitChars(text)
	q := queue[spmBigram]{less: func(a, b spmBigram) bool {
		if a.score != b.score {
			return a.score > b.score // the highest-scoring token first
		}
		return a.left < b.left
	}}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		str := syms[left].text + syms[right].text
		id, ok := s.t.find(str)
		if !ok {
			return
		}
		q.Push(spmBigram{left: left, right: right, score: s.t.v.Scores[id], size: len(str)})
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for q.Len() > 0 {
		bg := q.Pop()
		if merge(syms, bg.left, bg.right, bg.size) {
			tryAdd(syms[bg.left].prev, bg.left)
			tryAdd(bg.left, syms[bg.left].next)
		}
	}
	// Merges only ever form tokens, so every symbol left is a token or a
	// single character the vocabulary lacks, spelled out as bytes.
	for i := 0; i >= 0; i = syms[i].next {
		str := syms[i].text
		if str == "" {
			continue
		}
		if id, ok := s.t.find(str); ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(str); j++ {
			out = append(out, s.byteToken(str[j]))
		}
	}
	return out
}

// byteToken is the <0xNN> token of a byte, or the one-byte token.
func (s *spm) byteToken(b byte) int32 {
	if id, ok := s.t.find(fmt.Sprintf("<0x%02X>", b)); ok {
		return id
	}
	if id, ok := s.t.find(string([]byte{b})); ok {
		return id
	}
	if s.t.v.UNK == ir.NoToken {
		return 0 // llama.cpp's default unknown token for SentencePiece
	}
	return s.t.v.UNK
}
