package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// bpe is byte-level BPE with GPT-2's pre-tokenizer: text is split into
// words by GPT-2's regex, each word's bytes are mapped to printable
// characters (GPT-2's bytes_to_unicode), and adjacent pairs are merged in
// the order of the merge list.
type bpe struct {
	t       *Tokenizer
	ranks   map[string]int // "left right" -> rank
	byteEnc [256]string    // byte -> its printable character
	byteDec map[rune]byte
}

func newBPE(t *Tokenizer) (*bpe, error) {
	b := &bpe{t: t, ranks: make(map[string]int, len(t.v.Merges)), byteDec: map[rune]byte{}}
	for i, m := range t.v.Merges {
		if strings.Count(m, " ") != 1 {
			return nil, fmt.Errorf("merge %d %q is not \"left right\"", i, m)
		}
		if _, dup := b.ranks[m]; !dup {
			b.ranks[m] = i
		}
	}
	// bytes_to_unicode: printable Latin-1 bytes map to themselves, the
	// others to 256, 257, … in byte order.
	n := 0
	for c := range 256 {
		r := rune(c)
		if !(c >= '!' && c <= '~' || c >= 0xA1 && c <= 0xAC || c >= 0xAE && c <= 0xFF) {
			r = rune(256 + n)
			n++
		}
		b.byteEnc[c] = string(r)
		b.byteDec[r] = byte(c)
	}
	return b, nil
}

func (b *bpe) spacePrefix() bool { return false }

func (b *bpe) piece(id int32) []byte {
	tok := b.t.v.Tokens[id]
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		if c, ok := b.byteDec[r]; ok {
			out = append(out, c)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

type bpeBigram struct {
	left, right int
	rank, size  int
}

func (b *bpe) encode(text string, out []int32) []int32 {
	for _, word := range splitGPT2(text) {
		var sb strings.Builder
		for i := 0; i < len(word); i++ {
			sb.WriteString(b.byteEnc[word[i]])
		}
		out = b.encodeWord(sb.String(), out)
	}
	return out
}

func (b *bpe) encodeWord(word string, out []int32) []int32 {
	if id, ok := b.t.find(word); ok {
		return append(out, id)
	}
	syms := splitChars(word)
	q := queue[bpeBigram]{less: func(a, b bpeBigram) bool {
		if a.rank != b.rank {
			return a.rank < b.rank // the earliest merge first
		}
		return a.left < b.left
	}}
	tryAdd := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		if rank, ok := b.ranks[syms[l].text+" "+syms[r].text]; ok {
			q.Push(bpeBigram{left: l, right: r, rank: rank, size: len(syms[l].text) + len(syms[r].text)})
		}
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
	for i := 0; i >= 0; i = syms[i].next {
		if syms[i].text == "" {
			continue
		}
		if id, ok := b.t.find(syms[i].text); ok {
			out = append(out, id)
			continue
		}
		// Not a token: fall back to the tokens of its single characters.
		for _, r := range syms[i].text {
			if id, ok := b.t.find(string(r)); ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// splitGPT2 splits text into words as GPT-2's pre-tokenizer regex does:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// written out by hand because Go's regexp has no look-ahead.
func splitGPT2(text string) []string {
	rs := []rune(text)
	// offsets[i] is the byte offset of rune i.
	offsets := make([]int, len(rs)+1)
	o := 0
	for i, r := range rs {
		offsets[i] = o
		o += utf8.RuneLen(r)
		if r == utf8.RuneError {
			// keep invalid bytes as they were
			_, n := utf8.DecodeRuneInString(text[offsets[i]:])
			o = offsets[i] + n
		}
	}
	offsets[len(rs)] = len(text)
	const (
		letter = iota
		number
		other
		space
	)
	class := func(r rune) int {
		switch {
		case unicode.IsLetter(r):
			return letter
		case unicode.IsNumber(r):
			return number
		case unicode.IsSpace(r):
			return space
		}
		return other
	}
	var words []string
	n := len(rs)
	emit := func(i, j int) { words = append(words, text[offsets[i]:offsets[j]]) }
	for i := 0; i < n; {
		r := rs[i]
		// Contractions.
		if r == '\'' && i+1 < n {
			c := rs[i+1]
			if c == 's' || c == 't' || c == 'm' || c == 'd' {
				emit(i, i+2)
				i += 2
				continue
			}
			if i+2 < n {
				if c2 := rs[i+2]; c == 'r' && c2 == 'e' || c == 'v' && c2 == 'e' || c == 'l' && c2 == 'l' {
					emit(i, i+3)
					i += 3
					continue
				}
			}
		}
		// ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`.
		start, j := i, i
		if r == ' ' && i+1 < n && class(rs[i+1]) != space {
			j++
		}
		if k := class(rs[j]); k != space {
			for j < n && class(rs[j]) == k {
				j++
			}
			emit(start, j)
			i = j
			continue
		}
		// Whitespace: `\s+(?!\S)` leaves the last space of a run for the
		// next word; `\s+` takes a lone one.
		j = i
		for j < n && class(rs[j]) == space {
			j++
		}
		if j < n && j-i > 1 {
			j--
		}
		emit(i, j)
		i = j
	}
	return words
}
