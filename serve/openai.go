package serve

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The request and response bodies of OpenAI's API, as far as lqc
// implements it. Fields lqc does not use are ignored, as OpenAI's own
// server ignores unknown ones from newer clients.

// loraRef is llama-server's per-request adapter choice: the adapter's
// index in the server's --lora list and a scale.
type loraRef struct {
	ID    int     `json:"id"`
	Scale float64 `json:"scale"`
}

// sampling are the fields both endpoints share.
type sampling struct {
	Model       string     `json:"model"`
	MaxTokens   *int       `json:"max_tokens"`
	Temperature *float32   `json:"temperature"`
	TopP        *float32   `json:"top_p"`
	TopK        *int       `json:"top_k"`
	Seed        *int64     `json:"seed"`
	Stop        stopList   `json:"stop"`
	N           *int       `json:"n"`
	Stream      bool       `json:"stream"`
	Lora        []loraRef  `json:"lora"`
	StreamOpts  *streamOpt `json:"stream_options"`
	// IgnoreEOS (vLLM's and llama-server's extension) generates until
	// max_tokens: end-of-generation tokens are never sampled.
	IgnoreEOS bool `json:"ignore_eos"`
}

type streamOpt struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	sampling
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	Logprobs            bool          `json:"logprobs"`
	TopLogprobs         int           `json:"top_logprobs"`
}

type completionRequest struct {
	sampling
	Prompt   promptInput `json:"prompt"`
	Logprobs *int        `json:"logprobs"`
	Echo     bool        `json:"echo"`
}

// chatMessage's content is a string or a list of parts, of which lqc
// takes the text ones.
type chatMessage struct {
	Role    string      `json:"role"`
	Content contentText `json:"content"`
}

type contentText string

func (c *contentText) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*c = ""
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		*c = contentText(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return fmt.Errorf("content is neither a string nor a list of parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q: lqc serves text only", p.Type)
		}
		sb.WriteString(p.Text)
	}
	*c = contentText(sb.String())
	return nil
}

// stopList is a string or a list of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("stop is neither a string nor a list of strings")
	}
	*s = many
	return nil
}

// promptInput is a completion prompt: a string, token ids, or a list of
// one of either (n prompts are not batched into one request here).
type promptInput struct {
	text   string
	tokens []int32
	isIDs  bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	if json.Unmarshal(b, &p.text) == nil {
		return nil
	}
	if json.Unmarshal(b, &p.tokens) == nil {
		p.isIDs = true
		return nil
	}
	var texts []string
	if json.Unmarshal(b, &texts) == nil && len(texts) == 1 {
		p.text = texts[0]
		return nil
	}
	var lists [][]int32
	if json.Unmarshal(b, &lists) == nil && len(lists) == 1 {
		p.tokens, p.isIDs = lists[0], true
		return nil
	}
	return fmt.Errorf("prompt must be a string, a list of token ids, or a list of one of those")
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *chatOut      `json:"message,omitempty"`
	Delta        *chatOut      `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatOut struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type chatLogprobs struct {
	Content []tokenLogprob `json:"content"`
}

type tokenLogprob struct {
	Token       string         `json:"token"`
	Logprob     float64        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []tokenLogprob `json:"top_logprobs,omitempty"`
}

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    any     `json:"code"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Parent  string `json:"parent,omitempty"`
}
