package hf

import (
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/lqc-dev/lqc/ir"
)

// SentencePiece piece types (sentencepiece_model.proto).
const (
	spmNormal      = 1
	spmUnknown     = 2
	spmControl     = 3
	spmUserDefined = 4
	spmUnused      = 5
	spmByte        = 6
)

type spmPiece struct {
	piece string
	score float32
	typ   int
}

// spmModel is what lqc reads of a SentencePiece ModelProto.
type spmModel struct {
	pieces []spmPiece
	// addDummyPrefix is normalizer_spec.add_dummy_prefix (default true).
	addDummyPrefix bool
}

// parseSPM decodes a SentencePiece ModelProto (tokenizer.model): field 1
// (repeated SentencePiece: piece, score, type) and, in field 3
// (NormalizerSpec), add_dummy_prefix (its field 3); other fields are
// skipped.
func parseSPM(b []byte) (*spmModel, error) {
	m := &spmModel{addDummyPrefix: true}
	var pieces []spmPiece
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			msg, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("bad piece %d: %w", len(pieces), protowire.ParseError(n))
			}
			p, err := parsePiece(msg)
			if err != nil {
				return nil, fmt.Errorf("piece %d: %w", len(pieces), err)
			}
			pieces = append(pieces, p)
			b = b[n:]
			continue
		}
		if num == 3 && typ == protowire.BytesType {
			msg, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("bad normalizer_spec: %w", protowire.ParseError(n))
			}
			if err := m.parseNormalizer(msg); err != nil {
				return nil, fmt.Errorf("normalizer_spec: %w", err)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("bad field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	if len(pieces) == 0 {
		return nil, fmt.Errorf("no pieces: not a SentencePiece model")
	}
	m.pieces = pieces
	return m, nil
}

func (m *spmModel) parseNormalizer(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == 3 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			m.addDummyPrefix, b = v != 0, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

func parsePiece(b []byte) (spmPiece, error) {
	p := spmPiece{typ: spmNormal}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return p, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			s, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return p, protowire.ParseError(n)
			}
			p.piece, b = string(s), b[n:]
		case num == 2 && typ == protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return p, protowire.ParseError(n)
			}
			p.score, b = math.Float32frombits(v), b[n:]
		case num == 3 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return p, protowire.ParseError(n)
			}
			p.typ, b = int(v), b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return p, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return p, nil
}

// spmVocab builds the vocabulary as llama.cpp's converter does for a
// SentencePiece model: ids beyond the model's pieces, up to vocabSize, are
// "[PADn]" placeholders marked unused.
func spmVocab(m *spmModel, vocabSize int) (*ir.Vocab, error) {
	pieces := m.pieces
	if vocabSize < len(pieces) {
		return nil, fmt.Errorf("tokenizer.model has %d pieces, more than vocab_size %d", len(pieces), vocabSize)
	}
	v := &ir.Vocab{Model: "llama", Pre: "default", BOS: ir.NoToken, EOS: ir.NoToken, UNK: ir.NoToken, PAD: ir.NoToken, EOT: ir.NoToken}
	v.Tokens = make([]string, vocabSize)
	v.Scores = make([]float32, vocabSize)
	v.Types = make([]ir.TokenType, vocabSize)
	for i := range vocabSize {
		v.Tokens[i], v.Scores[i], v.Types[i] = fmt.Sprintf("[PAD%d]", i), -10000, ir.TokenUnused
	}
	for i, p := range pieces {
		t := ir.TokenNormal
		switch p.typ {
		case spmUnknown:
			t = ir.TokenUnknown
		case spmControl:
			t = ir.TokenControl
		case spmUnused:
			t = ir.TokenUnused
		case spmByte:
			t = ir.TokenByte
		}
		// USER_DEFINED pieces stay NORMAL, as llama.cpp's converter
		// writes them; tokenizer_config.json's added tokens are applied
		// after (applyAddedTokens).
		v.Tokens[i], v.Scores[i], v.Types[i] = p.piece, p.score, t
	}
	v.AddSpacePrefix = &m.addDummyPrefix
	return v, nil
}
