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
