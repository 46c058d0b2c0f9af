package gguf

import (
	"fmt"

	"github.com/lqc-dev/lqc/ir"
)

// The tokenizer.ggml.* keys, as llama.cpp's converter writes them.
const (
	keyTokModel     = "tokenizer.ggml.model"
	keyTokPre       = "tokenizer.ggml.pre"
	keyTokens       = "tokenizer.ggml.tokens"
	keyScores       = "tokenizer.ggml.scores"
	keyTokenType    = "tokenizer.ggml.token_type"
	keyMerges       = "tokenizer.ggml.merges"
	keyBOS          = "tokenizer.ggml.bos_token_id"
	keyEOS          = "tokenizer.ggml.eos_token_id"
	keyUNK          = "tokenizer.ggml.unknown_token_id"
	keyEOT          = "tokenizer.ggml.eot_token_id"
	keyPAD          = "tokenizer.ggml.padding_token_id"
	keyAddBOS       = "tokenizer.ggml.add_bos_token"
	keyAddSpace     = "tokenizer.ggml.add_space_prefix"
	keyAddSEP       = "tokenizer.ggml.add_sep_token"
	keyAddEOS       = "tokenizer.ggml.add_eos_token"
	keyChatTemplate = "tokenizer.chat_template"
)

var vocabKeys = []string{keyTokModel, keyTokPre, keyTokens, keyScores, keyTokenType, keyMerges,
	keyBOS, keyEOS, keyUNK, keyPAD, keyEOT, keyAddBOS, keyAddEOS, keyAddSEP, keyAddSpace, keyChatTemplate}

// VocabMetadata writes a vocabulary as tokenizer.* metadata.
func VocabMetadata(v *ir.Vocab) ir.Metadata {
	md := ir.Metadata{{Key: keyTokModel, Value: v.Model}}
	if v.Pre != "" {
		md = append(md, ir.KV{Key: keyTokPre, Value: v.Pre})
	}
	md = append(md, ir.KV{Key: keyTokens, Value: v.Tokens})
	if v.Scores != nil {
		md = append(md, ir.KV{Key: keyScores, Value: v.Scores})
	}
	types := make([]int32, len(v.Types))
	for i, t := range v.Types {
		types[i] = int32(t)
	}
	md = append(md, ir.KV{Key: keyTokenType, Value: types})
	if v.Merges != nil {
		md = append(md, ir.KV{Key: keyMerges, Value: v.Merges})
	}
	for _, s := range []struct {
		key string
		id  int32
	}{{keyBOS, v.BOS}, {keyEOS, v.EOS}, {keyUNK, v.UNK}, {keyPAD, v.PAD}, {keyEOT, v.EOT}} {
		if s.id != ir.NoToken {
			md = append(md, ir.KV{Key: s.key, Value: uint32(s.id)})
		}
	}
	if v.AddBOS != nil {
		md = append(md, ir.KV{Key: keyAddBOS, Value: *v.AddBOS})
	}
	if v.AddEOS != nil {
		md = append(md, ir.KV{Key: keyAddEOS, Value: *v.AddEOS})
	}
	if v.AddSEP != nil {
		md = append(md, ir.KV{Key: keyAddSEP, Value: *v.AddSEP})
	}
	if v.AddSpacePrefix != nil {
		md = append(md, ir.KV{Key: keyAddSpace, Value: *v.AddSpacePrefix})
	}
	if v.ChatTemplate != "" {
		md = append(md, ir.KV{Key: keyChatTemplate, Value: v.ChatTemplate})
	}
	return md
}

// VocabFromMetadata reads a vocabulary from tokenizer.* metadata; it
// returns nil when the file has none.
func VocabFromMetadata(md ir.Metadata) (*ir.Vocab, error) {
	model, ok := md.String(keyTokModel)
	if !ok {
		return nil, nil
	}
	v := &ir.Vocab{Model: model, BOS: ir.NoToken, EOS: ir.NoToken, UNK: ir.NoToken, PAD: ir.NoToken, EOT: ir.NoToken}
	v.Pre, _ = md.String(keyTokPre)
	v.ChatTemplate, _ = md.String(keyChatTemplate)
	var ok2 bool
	raw, _ := md.Get(keyTokens)
	if v.Tokens, ok2 = raw.([]string); !ok2 {
		return nil, fmt.Errorf("%s is missing or not a string array", keyTokens)
	}
	if raw, present := md.Get(keyScores); present {
		if v.Scores, ok2 = raw.([]float32); !ok2 {
			return nil, fmt.Errorf("%s is not a float32 array", keyScores)
		}
	}
	if raw, present := md.Get(keyTokenType); present {
		types, isInts := raw.([]int32)
		if !isInts {
			return nil, fmt.Errorf("%s is not an int32 array", keyTokenType)
		}
		v.Types = make([]ir.TokenType, len(types))
		for i, t := range types {
			v.Types[i] = ir.TokenType(t)
		}
	} else {
		v.Types = make([]ir.TokenType, len(v.Tokens))
		for i := range v.Types {
			v.Types[i] = ir.TokenNormal
		}
	}
	if raw, present := md.Get(keyMerges); present {
		if v.Merges, ok2 = raw.([]string); !ok2 {
			return nil, fmt.Errorf("%s is not a string array", keyMerges)
		}
	}
	for _, s := range []struct {
		key string
		dst *int32
	}{{keyBOS, &v.BOS}, {keyEOS, &v.EOS}, {keyUNK, &v.UNK}, {keyPAD, &v.PAD}, {keyEOT, &v.EOT}} {
		if _, present := md.Get(s.key); present {
			id, err := md.Uint(s.key)
			if err != nil {
				return nil, err
			}
			if id >= uint64(len(v.Tokens)) {
				return nil, fmt.Errorf("%s %d is out of range (%d tokens)", s.key, id, len(v.Tokens))
			}
			*s.dst = int32(id)
		}
	}
	if b, present := md.Bool(keyAddBOS); present {
		v.AddBOS = &b
	}
	if b, present := md.Bool(keyAddEOS); present {
		v.AddEOS = &b
	}
	if b, present := md.Bool(keyAddSEP); present {
		v.AddSEP = &b
	}
	if b, present := md.Bool(keyAddSpace); present {
		v.AddSpacePrefix = &b
	}
	return v, v.Validate()
}

// ReadVocab reads only the vocabulary of the GGUF file at path (a
// vocabulary-only file holds no tensors); a file without tokenizer
// metadata is an error.
func ReadVocab(path string) (*ir.Vocab, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := VocabFromMetadata(f.Metadata)
	if err == nil && v == nil {
		err = fmt.Errorf("no tokenizer metadata")
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
