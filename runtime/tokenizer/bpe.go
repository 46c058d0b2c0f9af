package tokenizer

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// bpe is byte-level BPE: text is split into words by the vocabulary's
// pre-tokenizer, each word's bytes are mapped to printable characters
// (GPT-2's bytes_to_unicode), and adjacent pairs are merged in the order
// of the merge list.
type bpe struct {
	t       *Tokenizer
	split   func(string) []string
	ranks   map[string]int // "left right" -> rank
	byteEnc [256]string    // byte -> its printable character
	byteDec map[rune]byte
}

// preTokenizers maps tokenizer.ggml.pre, as llama.cpp names the
// pre-tokenizers, to lqc's splitters of the same regexes.
var preTokenizers = map[string]func(string) []string{
	"": splitGPT2, "default": splitGPT2, "gpt-2": splitGPT2, "phi-2": splitGPT2, "roberta-bpe": splitGPT2,
	"llama-bpe": splitLlama3, "llama3": splitLlama3, "llama-v3": splitLlama3, "smaug-bpe": splitLlama3,
	"qwen2": splitQwen2, "deepseek-r1-qwen": splitQwen2,
	"starcoder": splitStarCoder, "refact": splitStarCoder, "smollm": splitStarCoder, "codeshell": splitStarCoder,
	"deepseek-llm": splitDeepSeekLLM,
}

// deepSeekLLM are DeepSeek LLM's pre-tokenizer regexes, applied one after
// the other as llama.cpp applies them: each splits every piece the ones
// before it left into its matches and the text between them. (Go's \s is
// ASCII whitespace, as std::wregex's is in the C locale.) The letter class
// is Unicode's cased letters as DeepSeek's tokenizer.json lists them; the
// code points whose NFC form is another character are written as escapes.
var deepSeekLLM = []*regexp.Regexp{
	regexp.MustCompile(`[\r\n]`),
	regexp.MustCompile(`\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+`),
	regexp.MustCompile(`\s?[!-/:-~！-／：-～‘-‟　-。]+`),
	regexp.MustCompile(`\s+$`),
	regexp.MustCompile(`[一-龥ࠀ-一가-퟿]+`),
	regexp.MustCompile(`\p{N}+`),
}

func splitDeepSeekLLM(text string) []string { return splitSequence(text, deepSeekLLM) }

// splitSequence applies regexes in turn to every piece.
func splitSequence(text string, res []*regexp.Regexp) []string {
	pieces := []string{text}
	for _, re := range res {
		var next []string
		for _, p := range pieces {
			at := 0
			for _, m := range re.FindAllStringIndex(p, -1) {
				if m[0] > at {
					next = append(next, p[at:m[0]])
				}
				next = append(next, p[m[0]:m[1]])
				at = m[1]
			}
			if at < len(p) {
				next = append(next, p[at:])
			}
		}
		pieces = next
	}
	return pieces
}

func newBPE(t *Tokenizer) (*bpe, error) {
	split, ok := preTokenizers[t.v.Pre]
	if !ok {
		names := make([]string, 0, len(preTokenizers))
		for n := range preTokenizers {
			if n != "" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		return nil, fmt.Errorf("BPE pre-tokenizer %q is not supported (lqc has %s)", t.v.Pre, strings.Join(names, ", "))
	}
	b := &bpe{t: t, split: split, ranks: make(map[string]int, len(t.v.Merges)), byteDec: map[rune]byte{}}
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
	for _, word := range b.split(text) {
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

// runes holds text as runes with each rune's byte offset, so that
// splitters can return slices of the original bytes.
type runes struct {
	text    string
	rs      []rune
	offsets []int // offsets[i] is the byte offset of rune i; one past the end
}

func newRunes(text string) runes {
	r := runes{text: text, offsets: make([]int, 0, len(text)+1)}
	for o := 0; o < len(text); {
		c, n := utf8.DecodeRuneInString(text[o:])
		r.rs = append(r.rs, c)
		r.offsets = append(r.offsets, o)
		o += n
	}
	r.offsets = append(r.offsets, len(text))
	return r
}

func (r runes) slice(i, j int) string { return r.text[r.offsets[i]:r.offsets[j]] }

// splitLlama3 is Llama 3's pre-tokenizer (llama.cpp's llama-bpe):
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func splitLlama3(text string) []string { return splitDigitGroups(text, 3) }

// splitQwen2 is Qwen2's: Llama 3's with digits one at a time.
func splitQwen2(text string) []string { return splitDigitGroups(text, 1) }

// splitDigitGroups is the Llama 3 family's regex with at most maxDigits
// digits a word, written out by hand because Go's regexp has no
// look-ahead.
func splitDigitGroups(text string, maxDigits int) []string {
	r := newRunes(text)
	rs, n := r.rs, len(r.rs)
	isLetter, isNumber := unicode.IsLetter, unicode.IsNumber
	isSpace := unicode.IsSpace
	isNewline := func(c rune) bool { return c == '\r' || c == '\n' }
	isOther := func(c rune) bool { return !isSpace(c) && !isLetter(c) && !isNumber(c) }
	var words []string
	for i := 0; i < n; {
		c := rs[i]
		// (?i:'s|'t|'re|'ve|'m|'ll|'d)
		if c == '\'' && i+1 < n {
			c1 := unicode.ToLower(rs[i+1])
			if c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd' {
				words = append(words, r.slice(i, i+2))
				i += 2
				continue
			}
			if i+2 < n {
				c2 := unicode.ToLower(rs[i+2])
				if c1 == 'r' && c2 == 'e' || c1 == 'v' && c2 == 'e' || c1 == 'l' && c2 == 'l' {
					words = append(words, r.slice(i, i+3))
					i += 3
					continue
				}
			}
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		j := i
		if !isNewline(c) && !isLetter(c) && !isNumber(c) && i+1 < n && isLetter(rs[i+1]) {
			j++
		}
		if isLetter(rs[j]) {
			for j < n && isLetter(rs[j]) {
				j++
			}
			words = append(words, r.slice(i, j))
			i = j
			continue
		}
		// \p{N}{1,maxDigits}
		if isNumber(c) {
			j = i
			for j < n && j-i < maxDigits && isNumber(rs[j]) {
				j++
			}
			words = append(words, r.slice(i, j))
			i = j
			continue
		}
		//  ?[^\s\p{L}\p{N}]+[\r\n]*
		j = i
		if c == ' ' && i+1 < n && isOther(rs[i+1]) {
			j++
		}
		if isOther(rs[j]) {
			for j < n && isOther(rs[j]) {
				j++
			}
			for j < n && isNewline(rs[j]) {
				j++
			}
			words = append(words, r.slice(i, j))
			i = j
			continue
		}
		// What is left starts a run of whitespace: \s*[\r\n]+ takes it up to
		// its last newline; \s+(?!\S) leaves the run's last character for
		// the next word unless the text ends; \s+ takes a lone one.
		end := i
		for end < n && isSpace(rs[end]) {
			end++
		}
		last := -1
		for k := i; k < end; k++ {
			if isNewline(rs[k]) {
				last = k
			}
		}
		switch {
		case last >= 0:
			j = last + 1
		case end < n && end-i > 1:
			j = end - 1
		default:
			j = end
		}
		words = append(words, r.slice(i, j))
		i = j
	}
	return words
}

// splitStarCoder is StarCoder's pre-tokenizer: every digit alone, then
// GPT-2's regex over what lies between.
func splitStarCoder(text string) []string {
	var words []string
	start := 0
	for o, c := range text {
		if unicode.IsNumber(c) {
			if start < o {
				words = append(words, splitGPT2(text[start:o])...)
			}
			_, n := utf8.DecodeRuneInString(text[o:])
			words = append(words, text[o:o+n])
			start = o + n
		}
	}
	if start < len(text) {
		words = append(words, splitGPT2(text[start:])...)
	}
	return words
}
