package tokenizer

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/testmodels"
)

func vocabTokenizer(t *testing.T, path string) *Tokenizer {
	t.Helper()
	v, err := gguf.ReadVocab(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLlamaCppVectors runs llama.cpp's tokenizer test vectors: every
// input string must encode to the expected ids (without BOS, as
// test-tokenizer-0 calls it) and decode back to itself.
func TestLlamaCppVectors(t *testing.T) {
	for _, name := range []string{"ggml-vocab-llama-spm", "ggml-vocab-gpt-2", "ggml-vocab-llama-bpe", "ggml-vocab-starcoder", "ggml-vocab-deepseek-llm"} {
		t.Run(name, func(t *testing.T) {
			base := testmodels.Shared(t, "golden/tokenizer", name+".gguf")
			tok := vocabTokenizer(t, base)
			inp, err := os.ReadFile(base + ".inp")
			if err != nil {
				t.Fatal(err)
			}
			outp, err := os.ReadFile(base + ".out")
			if err != nil {
				t.Fatal(err)
			}
			texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
			texts = texts[:len(texts)-1]
			lines := strings.Split(strings.TrimSuffix(string(outp), "\n"), "\n")
			if len(texts) != len(lines) || len(texts) < 40 {
				t.Fatalf("%d strings, %d expected lines", len(texts), len(lines))
			}
			pass := 0
			for i, text := range texts {
				var want []int32
				for _, f := range strings.Fields(lines[i]) {
					id, err := strconv.Atoi(f)
					if err != nil {
						t.Fatal(err)
					}
					want = append(want, int32(id))
				}
				got := tok.Encode(text, false)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("string %d %q: ids differ (-llama.cpp +lqc):\n%s", i, text, diff)
					continue
				}
				if back := string(tok.Decode(got)); back != text {
					t.Errorf("string %d %q decodes to %q", i, text, back)
					continue
				}
				pass++
			}
			t.Logf("%s: %d/%d strings", name, pass, len(texts))
		})
	}
}

func TestSpecialTokens(t *testing.T) {
	tok := vocabTokenizer(t, testmodels.Shared(t, "golden/tokenizer/ggml-vocab-llama-spm.gguf"))
	ids := tok.Encode("Hello", true)
	if ids[0] != 1 || !tok.AddsBOS() {
		t.Errorf("Encode with special: %v", ids)
	}
	if string(tok.Decode(ids)) != "Hello" || !tok.IsEOG(2) || tok.IsEOG(1) {
		t.Errorf("decode %q, eog", tok.Decode(ids))
	}
	if got := tok.Encode("", true); len(got) != 1 {
		t.Errorf("empty text with BOS: %v", got)
	}
}
