package serve

import (
	"testing"

	"github.com/lqc-dev/lqc/ir"
	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// TestIgnoreEOS: when the most likely token ends generation, a request
// stops there, unless it asked for ignore_eos; then it gets the most
// likely other token and runs on.
func TestIgnoreEOS(t *testing.T) {
	v := &ir.Vocab{Model: "llama", Tokens: []string{"<unk>", "<s>", "</s>", "a", "<|im_end|>"},
		Scores: make([]float32, 5), Types: []ir.TokenType{ir.TokenUnknown, ir.TokenControl, ir.TokenControl, ir.TokenNormal, ir.TokenControl},
		BOS: 1, EOS: 2, UNK: 0, PAD: ir.NoToken, EOT: ir.NoToken}
	tok, err := tokenizer.New(v)
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{tok: tok, metrics: NewMetrics(), eog: eogTokens(tok)}
	if len(e.eog) != 2 || e.eog[0] != 2 || e.eog[1] != 4 {
		t.Fatalf("end-of-generation tokens %v, want [2 4]", e.eog)
	}
	for _, c := range []struct {
		ignore     bool
		wantToken  int32
		wantFinish string
	}{
		{false, -1, "stop"},
		{true, 3, "length"},
	} {
		st := newStream()
		s := &slot{p: &pending{req: Request{MaxTokens: 1, IgnoreEOS: c.ignore}, stream: st}, smp: lqrt.NewSampler(lqrt.SamplerOptions{})}
		e.sampled(s, []float32{0, 1, 9, 2, 8})
		if len(st.events) != 1 || st.events[0].Token != c.wantToken || st.events[0].Finish != c.wantFinish {
			t.Errorf("ignore_eos %v: events %+v, want token %d finishing %q", c.ignore, st.events, c.wantToken, c.wantFinish)
		}
	}
}
