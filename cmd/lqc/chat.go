package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/chat"
)

// converse is lqc run --chat: each line of in is a user turn, answered in
// the model's chat template. The session keeps what the conversation has
// evaluated, so each turn evaluates only the tokens it adds.
func converse(ctx context.Context, l *loaded, system, templateFile string, ctxSize, n int, smp *lqrt.Sampler, in io.Reader, stdout, stderr io.Writer) error {
	src, err := readTemplate(templateFile)
	if err != nil {
		return err
	}
	tmpl, err := chatTemplate(l, src, templateFile, stderr)
	if err != nil {
		return err
	}
	size := ctxSize
	if size == 0 {
		size = min(l.ir.Params.ContextLength, 4096)
	}
	sess, err := l.model.NewSession(size)
	if err != nil {
		return err
	}
	if err := sess.SetAdapters(l.adapters...); err != nil {
		return err
	}
	var msgs []chat.Message
	if system != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: system})
	}
	var cached []int32 // the tokens the session holds, in order
	interactive := isTerminal(stdout)
	sc := bufio.NewScanner(in)
	sc.Buffer(nil, 1<<20)
	out := bufio.NewWriter(stdout)
	for {
		if interactive {
			fmt.Fprint(stderr, "> ")
		}
		if !sc.Scan() {
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		msgs = append(msgs, chat.Message{Role: "user", Content: line})
		ids, err := tmpl.Encode(l.tok, msgs, true)
		if err != nil {
			return err
		}
		if len(ids) >= size {
			return fmt.Errorf("the conversation has %d tokens, more than the context of %d (--ctx-size)", len(ids), size)
		}
		keep := 0
		for keep < len(cached) && keep < len(ids)-1 && cached[keep] == ids[keep] {
			keep++
		}
		sess.Rewind(keep)
		seq := append([]int32(nil), ids...)
		var reply []byte
		limit := n
		if limit <= 0 {
			limit = size
		}
		_, err = lqrt.Generate(ctx, sess, ids[keep:], limit, smp, l.tok.IsEOG, func(id int32) error {
			seq = append(seq, id)
			p := l.tok.Piece(id)
			if len(reply) == 0 {
				p = []byte(strings.TrimLeft(string(p), " "))
			}
			reply = append(reply, p...)
			if _, err := out.Write(p); err != nil {
				return err
			}
			return out.Flush()
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(out)
		if err := out.Flush(); err != nil {
			return err
		}
		cached = seq[:sess.Pos()]
		msgs = append(msgs, chat.Message{Role: "assistant", Content: strings.TrimSpace(string(reply))})
	}
}
