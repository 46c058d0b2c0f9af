package tokenizer

import "unicode/utf8"

// queue is a binary heap of merge candidates ordered by less (a min-heap:
// Pop returns the candidate less ranks first). Both tokenizers merge the
// best adjacent pair first; they differ only in what "best" means.
type queue[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (q *queue[T]) Len() int { return len(q.items) }

func (q *queue[T]) Push(x T) {
	q.items = append(q.items, x)
	for i := len(q.items) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(q.items[i], q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *queue[T]) Pop() T {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items = q.items[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && q.less(q.items[l], q.items[m]) {
			m = l
		}
		if r < last && q.less(q.items[r], q.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}

// symbol is one piece of a word being merged: a doubly linked list over
// the word's characters, merged pairs joined into the left symbol.
type symbol struct {
	text       string
	prev, next int
}

// splitChars makes one symbol per UTF-8 character of s.
func splitChars(s string) []symbol {
	var syms []symbol
	for i := 0; i < len(s); {
		_, n := utf8.DecodeRuneInString(s[i:])
		syms = append(syms, symbol{text: s[i : i+n], prev: len(syms) - 1, next: len(syms) + 1})
		i += n
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// merge joins symbol right into left, whose text it appends; a bigram
// popped after one of its sides was merged away (stale) is refused.
func merge(syms []symbol, left, right, size int) bool {
	l, r := &syms[left], &syms[right]
	if l.text == "" || r.text == "" || len(l.text)+len(r.text) != size || l.next != right {
		return false
	}
	l.text += r.text
	r.text = ""
	l.next = r.next
	if r.next >= 0 {
		syms[r.next].prev = left
	}
	return true
}
