// Package chat turns a conversation into the prompt a chat model was
// trained on, by rendering the model's chat template (the Jinja source in
// GGUF's tokenizer.chat_template or tokenizer_config.json) the way
// Hugging Face's apply_chat_template does, and tokenizing the result with
// the special tokens it spells out parsed as tokens.
package chat

import (
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// DefaultTemplate is ChatML, what a model without a template of its own
// is prompted with (llama.cpp falls back on the same).
const DefaultTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Template is a compiled chat template.
type Template struct {
	// Source is the Jinja source; Default is true when the model had none
	// and DefaultTemplate stands in.
	Source  string
	Default bool
	// bos and eos are the texts of the model's BOS and EOS tokens, which
	// templates write as bos_token and eos_token.
	bos, eos string
	tmpl     *jinja.Template
	// systemRole is false for templates that refuse or drop a system
	// message (Gemma, Mistral v0.2, Phi-3 mini): Render then puts the
	// system text at the start of the first user message, as llama.cpp's
	// server does, instead of failing or losing it.
	systemRole bool
}

// New compiles source with the texts templates get as bos_token and
// eos_token.
func New(source, bos, eos string) (*Template, error) {
	tmpl, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("chat template: %w", err)
	}
	t := &Template{Source: source, bos: bos, eos: eos, tmpl: tmpl}
	const probe = "<<lqc system probe>>"
	out, err := t.render([]Message{{"system", probe}, {"user", "hi"}}, false)
	t.systemRole = err == nil && strings.Contains(out, probe)
	return t, nil
}

// ForVocab is source compiled with a vocabulary's BOS and EOS texts;
// an empty source means the vocabulary's own template, or
// DefaultTemplate when it has none.
func ForVocab(v *ir.Vocab, source string) (*Template, error) {
	text := func(id int32) string {
		if id == ir.NoToken || int(id) >= len(v.Tokens) {
			return ""
		}
		return v.Tokens[id]
	}
	src, def := source, false
	if src == "" {
		src = v.ChatTemplate
	}
	if strings.TrimSpace(src) == "" {
		src, def = DefaultTemplate, true
	}
	t, err := New(src, text(v.BOS), text(v.EOS))
	if err != nil {
		return nil, err
	}
	t.Default = def
	return t, nil
}

// Render is the prompt text for msgs; with addGenerationPrompt it ends
// where the assistant's reply begins.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	if len(msgs) == 0 {
		return "", fmt.Errorf("chat: no messages")
	}
	if !t.systemRole && msgs[0].Role == "system" {
		merged := append([]Message(nil), msgs[1:]...)
		if len(merged) > 0 && merged[0].Role == "user" {
			merged[0].Content = msgs[0].Content + "\n" + merged[0].Content
		} else {
			merged = append([]Message{{"user", msgs[0].Content}}, merged...)
		}
		msgs = merged
	}
	out, err := t.render(msgs, addGenerationPrompt)
	if err != nil {
		return "", fmt.Errorf("chat template: %w", err)
	}
	return out, nil
}

func (t *Template) render(msgs []Message, addGenerationPrompt bool) (string, error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		list[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	return t.tmpl.Render(map[string]any{
		"messages":              list,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
	})
}

// Encode renders msgs and tokenizes the prompt with the special tokens it
// spells out parsed. A template that writes bos_token itself does not get
// a second BOS from the tokenizer.
func (t *Template) Encode(tok *tokenizer.Tokenizer, msgs []Message, addGenerationPrompt bool) ([]int32, error) {
	text, err := t.Render(msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	if t.bos != "" && tok.AddsBOS() {
		text = strings.TrimPrefix(text, t.bos)
	}
	return tok.EncodeParsed(text, true), nil
}

// Segment is a stretch of a rendered conversation. Assistant marks an
// assistant turn: its content and whatever the template closes the turn
// with (an end-of-turn token), what supervised fine-tuning learns.
type Segment struct {
	Text      string
	Assistant bool
}

// Segments renders msgs as consecutive pieces: the prompt up to each
// assistant turn (with the generation prompt) and the turn itself;
// messages after the last assistant turn are left out. It relies on the
// rendering of a conversation beginning with the rendering of any earlier
// part of it, as templates written for chat do; a template for which
// that fails is an error, since the turn's tokens could not be told apart.
func (t *Template) Segments(msgs []Message) ([]Segment, error) {
	var out []Segment
	prev := ""
	for i, m := range msgs {
		if m.Role != "assistant" {
			continue
		}
		if i == 0 {
			return nil, fmt.Errorf("chat: the conversation starts with an assistant message")
		}
		prompt, err := t.Render(msgs[:i], true)
		if err != nil {
			return nil, err
		}
		full, err := t.Render(msgs[:i+1], false)
		if err != nil {
			return nil, err
		}
		if withPrompt, err := t.Render(msgs[:i+1], true); err == nil && withPrompt == full {
			return nil, fmt.Errorf("chat template: it ignores add_generation_prompt, so where an assistant's turn ends cannot be found")
		}
		if !strings.HasPrefix(prompt, prev) || !strings.HasPrefix(full, prompt) {
			return nil, fmt.Errorf("chat template: the conversation up to message %d does not render as the start of the longer one, so the assistant's turn cannot be told apart", i)
		}
		out = append(out, Segment{prompt[len(prev):], false}, Segment{full[len(prompt):], true})
		prev = full
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("chat: no assistant message")
	}
	return out, nil
}

// EncodeSegments tokenizes the conversation segs make up as Encode
// does, and tells for each token whether it belongs to an assistant turn.
// The whole text is tokenized at once, as it is when the model runs, and
// each boundary between segments is where the tokens of the text before
// it stop agreeing with the whole: a token that straddles a boundary
// goes with the segment after it.
func (t *Template) EncodeSegments(tok *tokenizer.Tokenizer, segs []Segment) (ids []int32, assistant []bool) {
	encode := func(text string) []int32 {
		if t.bos != "" && tok.AddsBOS() {
			text = strings.TrimPrefix(text, t.bos)
		}
		return tok.EncodeParsed(text, true)
	}
	var text strings.Builder
	for _, s := range segs {
		text.WriteString(s.Text)
	}
	ids = encode(text.String())
	assistant = make([]bool, len(ids))
	text.Reset()
	start := 0
	for i, s := range segs {
		text.WriteString(s.Text)
		end := len(ids)
		if i < len(segs)-1 {
			prefix := encode(text.String())
			end = 0
			for end < len(prefix) && end < len(ids) && prefix[end] == ids[end] {
				end++
			}
		}
		for k := start; k < end; k++ {
			assistant[k] = s.Assistant
		}
		start = max(start, end)
	}
	return ids, assistant
}
