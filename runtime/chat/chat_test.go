package chat

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestLlamaCppTemplates renders the chat templates of llama.cpp's
// test-chat-template.cpp and compares with llama.cpp's Jinja results.
func TestLlamaCppTemplates(t *testing.T) {
	raw, err := os.ReadFile("testdata/llamacpp-chat-templates.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Conversation []Message
		Cases        []struct {
			Name, Template, Expected string
			BOS                      string `json:"bos_token"`
			EOS                      string `json:"eos_token"`
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Cases) < 20 {
		t.Fatalf("%d cases", len(doc.Cases))
	}
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			tmpl, err := New(c.Template, c.BOS, c.EOS)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.Render(doc.Conversation, true)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.Expected {
				t.Errorf("got\n%q\nwant\n%q", got, c.Expected)
			}
		})
	}
}

// The templates of Llama 2 and Qwen2 as their tokenizer_config.json
// ship them; the expected prompts are the formats their model cards
// document.
const (
	llama2Template = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
	qwen2Template  = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

func TestFamilyTemplates(t *testing.T) {
	conv := []Message{{"system", "Be brief."}, {"user", "Hello"}, {"assistant", " Hi there "}, {"user", "Who are you?"}}
	for _, c := range []struct {
		name, src string
		msgs      []Message
		want      string
		raises    bool
	}{
		{name: "llama2", src: llama2Template, msgs: conv,
			want: "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi there </s><s>[INST] Who are you? [/INST]"},
		{name: "llama2 without system", src: llama2Template, msgs: conv[1:],
			want: "<s>[INST] Hello [/INST] Hi there </s><s>[INST] Who are you? [/INST]"},
		{name: "llama2 roles out of turn", src: llama2Template, msgs: []Message{{"user", "a"}, {"user", "b"}}, raises: true},
		{name: "qwen2", src: qwen2Template, msgs: conv,
			want: "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there <|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"},
		{name: "qwen2 default system prompt", src: qwen2Template, msgs: conv[1:2],
			want: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{name: "default ChatML", src: DefaultTemplate, msgs: conv[1:2],
			want: "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl, err := New(c.src, "<s>", "</s>")
			if err != nil {
				t.Fatal(err)
			}
			got, err := tmpl.Render(c.msgs, true)
			if c.raises {
				if err == nil || !strings.Contains(err.Error(), "alternate") {
					t.Fatalf("want the template's exception, got %q, %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

func TestBadTemplate(t *testing.T) {
	if _, err := New("{% for m in messages %}{{ m.content }", "", ""); err == nil {
		t.Fatal("an unterminated tag compiled")
	}
	tmpl, err := New(DefaultTemplate, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmpl.Render(nil, true); err == nil {
		t.Fatal("no messages rendered")
	}
}

// TestEncodeParsesSpecialTokens: the control tokens a template writes
// become those tokens, and a model without a template gets ChatML.
func TestEncodeParsesSpecialTokens(t *testing.T) {
	dir := testmodels.Shared(t, "models", "qwen2-tiny", "hf")
	m, err := frontend.Load(dir, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := ForVocab(m.Vocab, "")
	if err != nil {
		t.Fatal(err)
	}
	if !tmpl.Default {
		t.Fatalf("qwen2-tiny has no template, yet %q", tmpl.Source)
	}
	ids, err := tmpl.Encode(tok, []Message{{"user", "Hello"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	start, end := m.Vocab.Find("<|im_start|>"), m.Vocab.Find("<|im_end|>")
	if ids[0] != start || slices.Index(ids, end) < 0 || slices.Index(ids[1:], start) < 0 {
		t.Errorf("ids %v: want <|im_start|> (%d) and <|im_end|> (%d) as tokens", ids, start, end)
	}
	if !tok.IsEOG(end) {
		t.Error("<|im_end|> does not end generation")
	}
	if plain := tok.Encode("<|im_start|>", false); len(plain) == 1 {
		t.Error("Encode parsed a control token out of plain text")
	}
}

// TestSegments: for every template of llama.cpp's tests, the segments of
// a conversation make up its rendering exactly and each assistant segment
// holds that message's content; a template that ignores
// add_generation_prompt (one of them) is refused, as is one whose
// renderings do not extend each other.
func TestSegments(t *testing.T) {
	raw, err := os.ReadFile("testdata/llamacpp-chat-templates.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Conversation []Message
		Cases        []struct {
			Name, Template string
			BOS            string `json:"bos_token"`
			EOS            string `json:"eos_token"`
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	conv := doc.Conversation[:5] // up to the second assistant message
	for _, c := range doc.Cases {
		t.Run(c.Name, func(t *testing.T) {
			tmpl, err := New(c.Template, c.BOS, c.EOS)
			if err != nil {
				t.Fatal(err)
			}
			full, err := tmpl.Render(conv, false)
			if err != nil {
				t.Fatal(err)
			}
			segs, err := tmpl.Segments(conv)
			if withPrompt, _ := tmpl.Render(conv, true); withPrompt == full {
				if err == nil || !strings.Contains(err.Error(), "ignores add_generation_prompt") {
					t.Errorf("a template without a generation prompt of its own: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var all strings.Builder
			var replies []string
			for _, s := range segs {
				all.WriteString(s.Text)
				if s.Assistant {
					replies = append(replies, s.Text)
				}
			}
			if all.String() != full {
				t.Errorf("segments make\n%q\nthe conversation renders as\n%q", all.String(), full)
			}
			if len(replies) != 2 || !strings.Contains(replies[0], "Hi there") || !strings.Contains(replies[1], "I am an assistant") {
				t.Errorf("assistant segments %q", replies)
			}
		})
	}
	// A template that writes the conversation backwards cannot be split.
	rev, _ := New("{% for m in messages|reverse %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}", "", "")
	if _, err := rev.Segments(conv); err == nil || !strings.Contains(err.Error(), "cannot be told apart") {
		t.Errorf("a template that reverses the conversation: %v", err)
	}
}

// TestEncodeSegments: the tokens are the whole conversation's, and the
// ones marked as the assistant's spell its replies and the end-of-turn
// tokens after them.
func TestEncodeSegments(t *testing.T) {
	dir := testmodels.Shared(t, "models", "qwen2-tiny", "hf")
	m, err := frontend.Load(dir, frontend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := New(qwen2Template, "", "")
	if err != nil {
		t.Fatal(err)
	}
	conv := []Message{{"user", "Hello"}, {"assistant", "Hi there, friend."}, {"user", "Who are you?"}, {"assistant", "An assistant."}}
	segs, err := tmpl.Segments(conv)
	if err != nil {
		t.Fatal(err)
	}
	ids, assistant := tmpl.EncodeSegments(tok, segs)
	want, err := tmpl.Encode(tok, conv, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, want) {
		t.Fatalf("ids %v, the conversation encodes as %v", ids, want)
	}
	var reply []int32
	ends := 0
	for i, a := range assistant {
		if a {
			reply = append(reply, ids[i])
			if ids[i] == m.Vocab.Find("<|im_end|>") {
				ends++
			}
		}
	}
	if got := string(tok.Decode(reply)); got != "Hi there, friend.\nAn assistant.\n" || ends != 2 {
		t.Errorf("assistant tokens spell %q with %d <|im_end|>", got, ends)
	}
}
