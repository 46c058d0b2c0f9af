package hf

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/lqc-dev/lqc/ir"
)

// tokenizerJSON is the part of a Hugging Face tokenizer.json lqc reads.
type tokenizerJSON struct {
	Model struct {
		Type         string            `json:"type"`
		Vocab        map[string]int    `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
		ByteFallback bool              `json:"byte_fallback"`
	} `json:"model"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	AddedTokens  []addedToken    `json:"added_tokens"`
}

type addedToken struct {
	ID      int    `json:"id"`
	Content string `json:"content"`
	Special bool   `json:"special"`
}

// byteLevel reports whether a pre-tokenizer or decoder spec (possibly a
// Sequence) contains a ByteLevel step.
func byteLevel(raw json.RawMessage) bool {
	return bytes.Contains(raw, []byte(`"ByteLevel"`))
}

// parseTokenizerJSON reads a byte-level BPE vocabulary from tokenizer.json.
func parseTokenizerJSON(data []byte, vocabSize int) (*ir.Vocab, error) {
	var tj tokenizerJSON
	if err := json.Unmarshal(data, &tj); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if tj.Model.Type != "BPE" || !(byteLevel(tj.PreTokenizer) || byteLevel(tj.Decoder)) {
		return nil, fmt.Errorf("model type %q is not a byte-level BPE; lqc reads byte-level BPE tokenizer.json, or tokenizer.model for SentencePiece", tj.Model.Type)
	}
	merges := make([]string, len(tj.Model.Merges))
	for i, raw := range tj.Model.Merges {
		// Older files store "left right", tokenizers >= 0.20 ["left", "right"].
		var s string
		if err := json.Unmarshal(raw, &s); err == nil {
			merges[i] = s
			continue
		}
		var pair []string
		if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("merge %d is neither \"a b\" nor [\"a\", \"b\"]", i)
		}
		merges[i] = pair[0] + " " + pair[1]
	}
	pre, err := preTokenizer(tj.PreTokenizer)
	if err != nil {
		return nil, err
	}
	v, err := bpeVocab(tj.Model.Vocab, merges, tj.AddedTokens, vocabSize)
	if err != nil {
		return nil, err
	}
	v.Pre = pre
	return v, nil
}

// splitRegexes are the pre-tokenizer regexes lqc implements, by the name
// llama.cpp gives them in tokenizer.ggml.pre. llama.cpp's converter tells
// them apart by hashing the tokenizer's output; reading the regex itself
// gives the same answer for the tokenizers it covers.
var splitRegexes = map[string]string{
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`: "llama-bpe",
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:      "qwen2",
}

// preTokenizer names a tokenizer.json's pre-tokenizer: GPT-2's when the
// ByteLevel step splits with its own regex, else the one its Split step's
// regex is; another regex is an error rather than a tokenizer that
// silently splits differently.
func preTokenizer(raw json.RawMessage) (string, error) {
	var pt struct {
		Type     string `json:"type"`
		UseRegex *bool  `json:"use_regex"`
		Pattern  struct {
			Regex string `json:"Regex"`
		} `json:"pattern"`
		Steps []json.RawMessage `json:"pretokenizers"`
	}
	if len(raw) == 0 || string(raw) == "null" {
		return "gpt-2", nil
	}
	if err := json.Unmarshal(raw, &pt); err != nil {
		return "", fmt.Errorf("pre_tokenizer: %w", err)
	}
	switch pt.Type {
	case "Sequence":
		name := "gpt-2"
		for _, step := range pt.Steps {
			n, err := preTokenizer(step)
			if err != nil {
				return "", err
			}
			if n != "" && n != "gpt-2" {
				name = n
			}
		}
		return name, nil
	case "Split":
		if name, ok := splitRegexes[pt.Pattern.Regex]; ok {
			return name, nil
		}
		return "", fmt.Errorf("pre_tokenizer: the Split regex %q is not one lqc implements (it has GPT-2's, Llama 3's and Qwen2's)", pt.Pattern.Regex)
	case "ByteLevel":
		if pt.UseRegex != nil && !*pt.UseRegex {
			return "", nil // splits nothing itself
		}
		return "gpt-2", nil
	}
	return "", fmt.Errorf("pre_tokenizer type %q is not supported", pt.Type)
}

// parseVocabMerges reads GPT-2's vocab.json and merges.txt.
func parseVocabMerges(vocabJSON, mergesTxt []byte, added []addedToken, vocabSize int) (*ir.Vocab, error) {
	var vocab map[string]int
	if err := json.Unmarshal(vocabJSON, &vocab); err != nil {
		return nil, fmt.Errorf("vocab.json: invalid JSON: %w", err)
	}
	var merges []string
	sc := bufio.NewScanner(bytes.NewReader(mergesTxt))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimRight(sc.Text(), "\r")
		if s == "" || (line == 1 && strings.HasPrefix(s, "#version")) {
			continue
		}
		if strings.Count(s, " ") != 1 {
			return nil, fmt.Errorf("merges.txt line %d: want \"left right\", have %q", line, s)
		}
		merges = append(merges, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("merges.txt: %w", err)
	}
	return bpeVocab(vocab, merges, added, vocabSize)
}

// bpeVocab lays a token→id map out as a GGUF gpt2 vocabulary. Added
// tokens that are special become CONTROL, other added tokens
// USER_DEFINED, and ids no token claims "[PADn]" UNUSED, as
// llama.cpp's converter writes them.
func bpeVocab(vocab map[string]int, merges []string, added []addedToken, vocabSize int) (*ir.Vocab, error) {
	byID := map[int]string{}
	for tok, id := range vocab {
		byID[id] = tok
	}
	kind := map[int]ir.TokenType{}
	for _, a := range added {
		byID[a.ID] = a.Content
		kind[a.ID] = ir.TokenUserDefined
		if a.Special {
			kind[a.ID] = ir.TokenControl
		}
	}
	maxID := -1
	for id := range byID {
		if id < 0 {
			return nil, fmt.Errorf("negative token id %d", id)
		}
		maxID = max(maxID, id)
	}
	if maxID >= vocabSize {
		ids := make([]int, 0)
		for id := range byID {
			if id >= vocabSize {
				ids = append(ids, id)
			}
		}
		sort.Ints(ids)
		return nil, fmt.Errorf("token id %d (%q) is beyond vocab_size %d", ids[0], byID[ids[0]], vocabSize)
	}
	v := &ir.Vocab{Model: "gpt2", Pre: "gpt-2", Merges: merges, BOS: ir.NoToken, EOS: ir.NoToken, UNK: ir.NoToken, PAD: ir.NoToken, EOT: ir.NoToken}
	v.Tokens = make([]string, vocabSize)
	v.Types = make([]ir.TokenType, vocabSize)
	for i := range vocabSize {
		tok, ok := byID[i]
		switch {
		case !ok:
			v.Tokens[i], v.Types[i] = fmt.Sprintf("[PAD%d]", i), ir.TokenUnused
		case kind[i] != 0:
			v.Tokens[i], v.Types[i] = tok, kind[i]
		default:
			v.Tokens[i], v.Types[i] = tok, ir.TokenNormal
		}
	}
	return v, nil
}
