// Package llama2c imports checkpoints of Karpathy's llama2.c in its legacy
// format: seven int32 hyper-parameters, then float32 weights in a fixed
// order, with the vocabulary in a separate tokenizer file (tok512.bin,
// tokenizer.bin).
package llama2c

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/ir/mmap"
	"github.com/lqc-dev/lqc/quant"
)

// headerSize is seven int32s: dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative when the classifier is not shared),
// seq_len.
const headerSize = 28

// magicV1 starts the newer export formats (version 1 and 2), which lqc
// does not read.
const magicV1 = 0x616b3432

type header struct {
	dim, hidden, layers, heads, kvHeads, vocab, seqLen int
	shared                                             bool
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("truncated: %d bytes, the header needs %d", len(b), headerSize)
	}
	if binary.LittleEndian.Uint32(b) == magicV1 {
		return header{}, fmt.Errorf("llama2.c export version %d is not supported; export with the legacy format (version 0)", binary.LittleEndian.Uint32(b[4:]))
	}
	var v [7]int32
	for i := range v {
		v[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
	}
	h := header{dim: int(v[0]), hidden: int(v[1]), layers: int(v[2]), heads: int(v[3]), kvHeads: int(v[4]), vocab: int(v[5]), seqLen: int(v[6])}
	h.shared = h.vocab > 0
	if h.vocab < 0 {
		h.vocab = -h.vocab
	}
	const limit = 1 << 20
	for _, x := range []int{h.dim, h.hidden, h.layers, h.heads, h.kvHeads, h.vocab, h.seqLen} {
		if x <= 0 || x > limit {
			return header{}, fmt.Errorf("not a llama2.c checkpoint: header %v is out of range", v)
		}
	}
	if h.dim%h.heads != 0 || h.heads%h.kvHeads != 0 || (h.dim/h.heads)%2 != 0 {
		return header{}, fmt.Errorf("not a llama2.c checkpoint: inconsistent heads in header %v", v)
	}
	return h, nil
}

// layout lists the weight arrays in file order: canonical name (with %d
// for the layer), shape per layer.
func (h header) layout() []struct {
	name  string
	shape []int64
	layer bool
} {
	d, ff, v := int64(h.dim), int64(h.hidden), int64(h.vocab)
	kv := int64(h.kvHeads * (h.dim / h.heads))
	hs := int64(h.dim / h.heads)
	type e = struct {
		name  string
		shape []int64
		layer bool
	}
	l := []e{
		{"token_embd.weight", []int64{v, d}, false},
		{"attn_norm.weight", []int64{d}, true},
		{"attn_q.weight", []int64{d, d}, true},
		{"attn_k.weight", []int64{kv, d}, true},
		{"attn_v.weight", []int64{kv, d}, true},
		{"attn_output.weight", []int64{d, d}, true},
		{"ffn_norm.weight", []int64{d}, true},
		{"ffn_gate.weight", []int64{ff, d}, true}, // w1
		{"ffn_down.weight", []int64{d, ff}, true}, // w2
		{"ffn_up.weight", []int64{ff, d}, true},   // w3
		{"output_norm.weight", []int64{d}, false},
		{"", []int64{int64(h.seqLen), hs / 2}, false}, // freq_cis_real, unused
		{"", []int64{int64(h.seqLen), hs / 2}, false}, // freq_cis_imag, unused
	}
	if !h.shared {
		l = append(l, e{"output.weight", []int64{v, d}, false})
	}
	return l
}

// IsCheckpoint reports whether path holds a plausible legacy llama2.c
// checkpoint: a consistent header and exactly the size it implies.
func IsCheckpoint(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [headerSize]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return false
	}
	h, err := parseHeader(b[:])
	if err != nil {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Size() == h.fileSize()
}

func (h header) fileSize() int64 {
	n := int64(headerSize)
	for _, e := range h.layout() {
		c := int64(4)
		for _, d := range e.shape {
			c *= d
		}
		if e.layer {
			c *= int64(h.layers)
		}
		n += c
	}
	return n
}

// Load imports a checkpoint. tokenizer is the vocabulary file; empty
// means tokenizer.bin or the single tok*.bin beside the checkpoint.
func Load(path, tokenizer string) (*ir.Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, unmap, err := mmap.Map(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m, err := load(path, data, tokenizer)
	if err != nil {
		unmap()
		return nil, err
	}
	m.OnClose(unmap)
	return m, nil
}

func load(path string, data []byte, tokenizer string) (*ir.Model, error) {
	h, err := parseHeader(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if want := h.fileSize(); int64(len(data)) != want {
		return nil, fmt.Errorf("%s: file is %d bytes, the header implies %d", path, len(data), want)
	}
	weights := map[string]*ir.Tensor{}
	off := int64(headerSize)
	for _, e := range h.layout() {
		n := int64(4)
		for _, d := range e.shape {
			n *= d
		}
		copies := 1
		if e.layer {
			copies = h.layers
		}
		for i := range copies {
			b := data[off : off+n]
			off += n
			if e.name == "" {
				continue
			}
			name := e.name
			if e.layer {
				name = fmt.Sprintf("blk.%d.%s", i, e.name)
			}
			t, err := ir.FromBytes(name, quant.F32, e.shape, b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			t.Source().(*ir.BytesSource).OnRelease = func() { mmap.Release(b) }
			weights[name] = t
		}
	}
	if tokenizer == "" {
		if tokenizer, err = findTokenizer(filepath.Dir(path)); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	vocab, err := loadTokenizer(tokenizer, h.vocab)
	if err != nil {
		return nil, err
	}
	p := ir.HParams{
		ContextLength: h.seqLen, EmbeddingLength: h.dim, BlockCount: h.layers,
		FeedForwardLength: h.hidden, HeadCount: h.heads, HeadCountKV: h.kvHeads,
		RopeDimensionCount: h.dim / h.heads, RopeFreqBase: 10000, NormEpsilon: 1e-5,
		VocabSize: h.vocab,
	}
	a, _ := arch.Lookup("llama")
	name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	m, err := arch.NewModel(a, name, p, weights, vocab)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.Source = path
	return m, nil
}

func findTokenizer(dir string) (string, error) {
	if p := filepath.Join(dir, "tokenizer.bin"); fileExists(p) {
		return p, nil
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "tok*.bin"))
	if len(matches) == 1 {
		return matches[0], nil
	}
	return "", fmt.Errorf("no tokenizer beside the checkpoint (want tokenizer.bin or one tok*.bin; pass --tokenizer)")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// loadTokenizer reads llama2.c's tokenizer file: int32 max_token_length,
// then per token a float32 score, an int32 length and the bytes. Pieces
// are written as llama.cpp's SentencePiece vocabulary expects them: spaces
// as U+2581, <unk> unknown, <s> and </s> control, <0xNN> byte tokens.
func loadTokenizer(path string, n int) (*ir.Vocab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) < 4 {
		return nil, fmt.Errorf("%s: truncated tokenizer", path)
	}
	maxLen := int(int32(binary.LittleEndian.Uint32(data)))
	off := 4
	v := &ir.Vocab{Model: "llama", Pre: "default", BOS: 1, EOS: 2, UNK: 0, PAD: ir.NoToken, EOT: ir.NoToken,
		Tokens: make([]string, n), Scores: make([]float32, n), Types: make([]ir.TokenType, n)}
	for i := range n {
		if off+8 > len(data) {
			return nil, fmt.Errorf("%s: truncated at token %d of %d", path, i, n)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		l := int(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if l < 0 || l > maxLen || off+l > len(data) {
			return nil, fmt.Errorf("%s: token %d has bad length %d", path, i, l)
		}
		piece := string(data[off : off+l])
		off += l
		v.Scores[i] = score
		switch {
		case i == 0:
			v.Tokens[i], v.Types[i] = "<unk>", ir.TokenUnknown
		case i == 1:
			v.Tokens[i], v.Types[i] = "<s>", ir.TokenControl
		case i == 2:
			v.Tokens[i], v.Types[i] = "</s>", ir.TokenControl
		case isByteToken(piece):
			v.Tokens[i], v.Types[i] = piece, ir.TokenByte
		default:
			v.Tokens[i], v.Types[i] = strings.ReplaceAll(piece, " ", "\u2581"), ir.TokenNormal
		}
	}
	if off != len(data) {
		return nil, fmt.Errorf("%s: %d bytes left after %d tokens (tokenizer for another vocabulary size?)", path, len(data)-off, n)
	}
	return v, nil
}

func isByteToken(s string) bool {
	var b byte
	_, err := fmt.Sscanf(s, "<0x%02X>", &b)
	return err == nil && len(s) == 6
}
