package arch

import "github.com/lqc-dev/lqc/ir"

// Gemma is a member of the llama family: see llamaFamily.gemma.
func init() {
	register(gemma{llamaFamily{name: "gemma", hfTypes: []string{"gemma"}, neox: true, gemma: true}})
}

type gemma struct{ llamaFamily }

// gemmaEOT is <end_of_turn>'s id in Gemma's vocabulary, which llama.cpp's
// converter records as the end-of-turn token.
const gemmaEOT = 107

// CompleteVocab sets what the converter sets for Gemma beyond the
// tokenizer files: the end-of-turn token, and no space before the text.
func (gemma) CompleteVocab(v *ir.Vocab) {
	if gemmaEOT < len(v.Tokens) {
		v.EOT = gemmaEOT
	}
	no := false
	v.AddSpacePrefix = &no
}

func init() {
	register(gemma2{llamaFamily{name: "gemma2", hfTypes: []string{"gemma2"}, neox: true, gemma: true, gemma2: true, window: true}})
}

type gemma2 struct{ llamaFamily }

// CompleteVocab: for Gemma 2 the converter records no end-of-turn token,
// and no space before the text.
func (gemma2) CompleteVocab(v *ir.Vocab) {
	no := false
	v.AddSpacePrefix = &no
}

func init() {
	register(gemma3{gemma2{llamaFamily{name: "gemma3", hfTypes: []string{"gemma3_text"}, neox: true, gemma: true, gemma2: true, gemma3: true, window: true}}})
}

// gemma3 is Gemma 3's text model; its vocabulary is Gemma 2's.
type gemma3 struct{ gemma2 }
