package serve

import (
	"strings"
	"unicode/utf8"
)

// textStream turns generated tokens into text to send: it holds back
// bytes that may still become part of a stop string or complete a UTF-8
// character, and stops at the first stop string, which is not sent.
type textStream struct {
	stops   []string
	pending []byte
	stopped bool
}

// add appends a token's bytes and returns the text now safe to send;
// stopped reports that a stop string ended the reply.
func (t *textStream) add(piece []byte) (out string, stopped bool) {
	if t.stopped {
		return "", true
	}
	t.pending = append(t.pending, piece...)
	s := string(t.pending)
	first := -1
	for _, stop := range t.stops {
		if i := strings.Index(s, stop); i >= 0 && (first < 0 || i < first) {
			first = i
		}
	}
	if first >= 0 {
		t.stopped, t.pending = true, nil
		return s[:first], true
	}
	keep := 0
	for _, stop := range t.stops {
		for k := min(len(stop)-1, len(s)); k > keep; k-- {
			if strings.HasSuffix(s, stop[:k]) {
				keep = k
				break
			}
		}
	}
	cut := len(s) - keep
	// An incomplete UTF-8 sequence at the end waits for its next bytes.
	for i := cut - 1; i >= 0 && i >= cut-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if !utf8.FullRuneInString(s[i:cut]) {
				cut = i
			}
			break
		}
	}
	t.pending = append(t.pending[:0], s[cut:]...)
	return s[:cut], false
}

// flush is what is left when the reply ends without a stop string.
func (t *textStream) flush() string {
	s := strings.ToValidUTF8(string(t.pending), "\uFFFD")
	t.pending = nil
	return s
}
