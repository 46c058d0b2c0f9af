package hf

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/frontend/llama2c"
	"github.com/lqc-dev/lqc/ir"
	"github.com/lqc-dev/lqc/ir/arch"
	"github.com/lqc-dev/lqc/testmodels"
)

func ggufVocab(t *testing.T, path string) *ir.Vocab {
	t.Helper()
	v, err := gguf.ReadVocab(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func dirVocab(t *testing.T, dir string) *ir.Vocab {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := arch.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	n, err := cfg.Int("vocab_size")
	if err != nil {
		t.Fatal(err)
	}
	v, err := loadVocab(dir, cfg, n)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sameVocab compares what llama.cpp uses to tokenize.
func sameVocab(t *testing.T, what string, want, got *ir.Vocab) {
	t.Helper()
	type key struct {
		Model, Pre     string
		Tokens, Merges []string
		Scores         []float32
		Types          []ir.TokenType
		BOS, EOS       int32
	}
	k := func(v *ir.Vocab) key {
		return key{v.Model, v.Pre, v.Tokens, v.Merges, v.Scores, v.Types, v.BOS, v.EOS}
	}
	if diff := cmp.Diff(k(want), k(got)); diff != "" {
		t.Errorf("%s: vocabulary differs from llama.cpp's (-llama.cpp +lqc):\n%s", what, diff)
	}
}

// TestGPT2VocabMatchesLlamaCpp: GPT-2's vocabulary read from
// tokenizer.json, and from vocab.json + merges.txt, equals the one
// llama.cpp's converter wrote into its test vocabulary.
func TestGPT2VocabMatchesLlamaCpp(t *testing.T) {
	want := ggufVocab(t, testmodels.Shared(t, "golden/tokenizer/ggml-vocab-gpt-2.gguf"))
	hfDir := testmodels.Shared(t, "models/gpt2-tiny/hf")
	sameVocab(t, "tokenizer.json", want, dirVocab(t, hfDir))

	// The same folder without tokenizer.json: vocab.json + merges.txt, with
	// the special token from tokenizer_config.json.
	dir := t.TempDir()
	for _, f := range []string{"config.json", "tokenizer_config.json", "vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(hfDir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	v := dirVocab(t, dir)
	sameVocab(t, "vocab.json + merges.txt", want, v)
	if v.AddBOS == nil || *v.AddBOS {
		t.Errorf("add_bos_token: %v, want false", v.AddBOS)
	}
}

// TestSentencePieceVocab: llama2.c's tok512.bin gives the vocabulary of
// the reference F32 GGUF (written from the llama2.c checkpoint), and
// stories260K's tokenizer.model the same but for what llama.cpp's
// Hugging Face converter does with tokenizer_config.json's added tokens
// (<unk>, <s>, </s>): CONTROL with score −1000, and no unknown-token id
// where config.json gives none (mistral-tiny's manifest shows the
// converter doing both).
func TestSentencePieceVocab(t *testing.T) {
	want := ggufVocab(t, testmodels.Shared(t, "golden/real/stories260K-f32.gguf"))
	want.Pre = "default" // the reference was written without tokenizer.ggml.pre
	hfWant := *want
	hfWant.Scores = slices.Clone(want.Scores)
	hfWant.Types = slices.Clone(want.Types)
	for id := range 3 {
		hfWant.Scores[id], hfWant.Types[id] = -1000, ir.TokenControl
	}
	got := dirVocab(t, testmodels.Shared(t, "models/stories260K/hf"))
	sameVocab(t, "tokenizer.model", &hfWant, got)
	if got.UNK != ir.NoToken || got.AddBOS == nil || !*got.AddBOS || got.AddSpacePrefix == nil || !*got.AddSpacePrefix {
		t.Errorf("unk %d, add_bos %v, add_space_prefix %v", got.UNK, got.AddBOS, got.AddSpacePrefix)
	}
	m, err := llama2c.Load(testmodels.Stories260K(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sameVocab(t, "tok512.bin", want, m.Vocab)
}

func TestParseSPMRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0xff, 0xff}, {0x0a, 0x05, 0x0a}, []byte("not a proto at all")} {
		if _, err := parseSPM(b); err == nil {
			t.Errorf("parseSPM(%q) succeeded", b)
		}
	}
}
