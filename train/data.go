package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/chat"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// TextWindows cuts tokenized text into consecutive windows of ctx−1
// tokens, each prefixed with bos, so that every token of the text is in
// exactly one window (the last may be shorter). With next set, each
// position's target is the token after it (language modelling); else
// there are no targets (distillation scores every position).
func TextWindows(tokens []int32, bos int32, ctx int, next bool) ([]Example, error) {
	if ctx < 2 {
		return nil, fmt.Errorf("context %d is too small for a window", ctx)
	}
	var exs []Example
	for i := 0; i < len(tokens); i += ctx - 1 {
		w := append([]int32{bos}, tokens[i:min(i+ctx-1, len(tokens))]...)
		exs = append(exs, window(w, next))
	}
	return exs, nil
}

func window(tokens []int32, next bool) Example {
	ex := Example{Tokens: tokens}
	if next {
		ex.Targets = make([]int32, len(tokens))
		for i := range tokens {
			ex.Targets[i] = -1
			if i+1 < len(tokens) {
				ex.Targets[i] = tokens[i+1]
			}
		}
	}
	return ex
}

// LoadBatchJSON reads pre-tokenized windows, {"batch": [[ids…], …]}, used
// in order. Every id must be below vocab.
func LoadBatchJSON(path string, vocab, ctx int, next bool) ([]Example, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b struct {
		Batch [][]int32 `json:"batch"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%s: not a batch file ({\"batch\": [[token ids…], …]}): %v", path, err)
	}
	if len(b.Batch) == 0 {
		return nil, fmt.Errorf("%s: the batch holds no windows", path)
	}
	var exs []Example
	for i, row := range b.Batch {
		if len(row) < 2 {
			return nil, fmt.Errorf("%s: window %d has %d tokens; a window needs at least 2", path, i, len(row))
		}
		if len(row) > ctx {
			return nil, fmt.Errorf("%s: window %d has %d tokens, more than --ctx %d", path, i, len(row), ctx)
		}
		for _, id := range row {
			if id < 0 || int(id) >= vocab {
				return nil, fmt.Errorf("%s: window %d: token id %d is outside the vocabulary of %d", path, i, id, vocab)
			}
		}
		exs = append(exs, window(row, next))
	}
	return exs, nil
}

// The prompt formats of supervised fine-tuning. Alpaca rows use Stanford
// Alpaca's template; chat rows put each message under a "### Role:"
// header. The loss is on the response (the output, or every assistant
// message) and the end-of-sequence token after it.
const (
	alpacaWithInput = "Below is an instruction that describes a task, paired with an input that provides further context. " +
		"Write a response that appropriately completes the request.\n\n### Instruction:\n%s\n\n### Input:\n%s\n\n### Response:\n"
	alpacaNoInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\n%s\n\n### Response:\n"
)

type sftRow struct {
	Instruction *string `json:"instruction"`
	Input       string  `json:"input"`
	Output      *string `json:"output"`
	Messages    []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

// SFTStats says what LoadSFT made of a file.
type SFTStats struct {
	Rows, Truncated, Scored int
}

// LoadSFT reads supervised fine-tuning rows from a JSONL file: alpaca
// rows (instruction, input, output) or chat rows (messages with role and
// content). Each row becomes one window of at most ctx tokens (BOS,
// prompt, response, EOS; a longer row is cut at ctx), scored on the
// response tokens only. With a chat template, chat rows are the
// conversation as the template renders it, scored on the assistant turns
// and what the template ends each with (the end-of-turn token); without
// one, each message goes under a "### Role:" header. A malformed line is
// an error naming it.
func LoadSFT(path string, tok *tokenizer.Tokenizer, ctx int, tmpl *chat.Template) ([]Example, SFTStats, error) {
	var st SFTStats
	f, err := os.Open(path)
	if err != nil {
		return nil, st, err
	}
	defer f.Close()
	v := tok.Vocab()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var exs []Example
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var row sftRow
		dec := json.NewDecoder(bytes.NewReader(text))
		if err := dec.Decode(&row); err != nil {
			return nil, st, fmt.Errorf("%s:%d: not a JSON object: %v", path, line, err)
		}
		type part struct {
			text   string
			scored bool
		}
		var parts []part
		var tokens []int32
		var scored []bool
		switch {
		case row.Messages != nil:
			if len(row.Messages) == 0 {
				return nil, st, fmt.Errorf("%s:%d: messages is empty", path, line)
			}
			assistant := false
			msgs := make([]chat.Message, len(row.Messages))
			for i, m := range row.Messages {
				role := strings.ToLower(m.Role)
				switch role {
				case "system", "user", "assistant":
				default:
					return nil, st, fmt.Errorf("%s:%d: message %d has role %q (want system, user or assistant)", path, line, i, m.Role)
				}
				msgs[i] = chat.Message{Role: role, Content: m.Content}
				header := "### " + strings.ToUpper(role[:1]) + role[1:] + ":\n"
				if role == "assistant" {
					assistant = true
					parts = append(parts, part{header, false}, part{m.Content + "\n\n", true})
				} else {
					parts = append(parts, part{header + m.Content + "\n\n", false})
				}
			}
			if !assistant {
				return nil, st, fmt.Errorf("%s:%d: no assistant message to learn", path, line)
			}
			if tmpl != nil {
				segs, err := tmpl.Segments(msgs)
				if err != nil {
					return nil, st, fmt.Errorf("%s:%d: %w", path, line, err)
				}
				tokens, scored = tmpl.EncodeSegments(tok, segs)
			}
		case row.Instruction != nil && row.Output != nil:
			prompt := fmt.Sprintf(alpacaNoInput, *row.Instruction)
			if row.Input != "" {
				prompt = fmt.Sprintf(alpacaWithInput, *row.Instruction, row.Input)
			}
			parts = []part{{prompt, false}, {*row.Output, true}}
		default:
			return nil, st, fmt.Errorf("%s:%d: want an alpaca row (instruction, input, output) or a chat row (messages)", path, line)
		}
		if tokens == nil {
			tokens, scored = []int32{v.BOS}, []bool{false}
			for _, p := range parts {
				ids := tok.Encode(p.text, false)
				tokens = append(tokens, ids...)
				for range ids {
					scored = append(scored, p.scored)
				}
			}
			tokens, scored = append(tokens, v.EOS), append(scored, true)
		}
		if len(tokens) > ctx {
			tokens, scored = tokens[:ctx], scored[:ctx]
			st.Truncated++
		}
		ex := Example{Tokens: tokens, Targets: make([]int32, len(tokens))}
		n := 0
		for i := range tokens {
			ex.Targets[i] = -1
			if i+1 < len(tokens) && scored[i+1] {
				ex.Targets[i] = tokens[i+1]
				n++
			}
		}
		if n == 0 {
			return nil, st, fmt.Errorf("%s:%d: the prompt alone fills the context of %d tokens: nothing of the response is left to learn", path, line, ctx)
		}
		st.Rows++
		st.Scored += n
		exs = append(exs, ex)
	}
	if err := sc.Err(); err != nil {
		return nil, st, fmt.Errorf("%s: %w", path, err)
	}
	if len(exs) == 0 {
		return nil, st, fmt.Errorf("%s: no rows", path)
	}
	return exs, st, nil
}

// Order is the sequence of examples training visits: epoch after epoch,
// each a permutation of the data seeded by (seed, epoch) when shuffled,
// the data's own order otherwise. Window k of the run is At(k), whatever
// happened before it: resuming needs only the step.
type Order struct {
	N       int
	Shuffle bool
	Seed    uint64
	epoch   int
	perm    []int
}

// At is the index of the k-th example visited (from 0).
func (o *Order) At(k int) int {
	e, i := k/o.N, k%o.N
	if !o.Shuffle {
		return i
	}
	if o.perm == nil || o.epoch != e {
		rng := rand.New(rand.NewPCG(o.Seed, uint64(e)))
		o.perm, o.epoch = rng.Perm(o.N), e
	}
	return o.perm[i]
}

// TeacherSamples writes n training windows with the teacher itself: each
// starts at BOS and continues with up to window−1 tokens sampled from the
// teacher at temperature 1 (seeded: seed+i for window i), ending early at
// EOS. Distilling on the teacher's own text (data-free distillation, as
// LLM-QAT does) shows the student contexts a small calibration text does
// not have, so the adapter learns the teacher rather than the text.
// progress, when set, is called after each window.
func TeacherSamples(ctx context.Context, teacher *ir.Model, b runtime.Backend, n, window int, seed uint64, progress func(done int)) ([]Example, error) {
	if teacher.Vocab == nil {
		return nil, fmt.Errorf("teacher %s has no vocabulary: it cannot start a sample at BOS", teacher.Source)
	}
	m, err := runtime.Load(teacher, b)
	if err != nil {
		return nil, fmt.Errorf("teacher: %w", err)
	}
	bos, eos := teacher.Vocab.BOS, teacher.Vocab.EOS
	out := make([]Example, 0, n)
	for i := range n {
		s, err := m.NewSession(window)
		if err != nil {
			return nil, err
		}
		toks := []int32{bos}
		smp := runtime.NewSampler(runtime.SamplerOptions{Temp: 1, TopP: 1, Seed: seed + uint64(i)})
		_, err = runtime.Generate(ctx, s, toks, window-1, smp, func(id int32) bool { return id == eos },
			func(id int32) error { toks = append(toks, id); return nil })
		if err != nil {
			return nil, fmt.Errorf("teacher sample %d: %w", i+1, err)
		}
		out = append(out, Example{Tokens: toks})
		if progress != nil {
			progress(i + 1)
		}
	}
	return out, nil
}
