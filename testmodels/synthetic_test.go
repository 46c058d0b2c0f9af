package testmodels

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/lqc-dev/lqc/frontend/hf"
	"github.com/lqc-dev/lqc/quant"
)

func TestWriteLlamaHF(t *testing.T) {
	s := LlamaShape{Layers: 2, Hidden: 64, FFN: 96, Heads: 4, KVHeads: 2, Vocab: 300, Context: 128}
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if err := WriteLlamaHF(dir, s, quant.BF16, 7); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"model.safetensors", "tokenizer.model", "config.json"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two writes with the same seed", f)
		}
	}
	m, err := hf.Load(a)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var n int64
	for _, w := range m.Weights() {
		n += w.NumElements()
		if w.Type != quant.BF16 {
			t.Errorf("%s is %v", w.Name, w.Type)
		}
	}
	if n != s.Params() || len(m.Vocab.Tokens) != 300 || m.Vocab.BOS != 1 || m.Params.HeadCountKV != 2 {
		t.Errorf("loaded %d parameters (want %d), vocab %d, bos %d, params %+v", n, s.Params(), len(m.Vocab.Tokens), m.Vocab.BOS, m.Params)
	}
	emb, _ := m.Weight("token_embd.weight").Float32s()
	var sum, sq float64
	for _, v := range emb {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	mean, std := sum/float64(len(emb)), sq/float64(len(emb))
	if mean > 1e-3 || mean < -1e-3 || std < 0.0003 || std > 0.0005 { // N(0, 0.02²)
		t.Errorf("embedding mean %g, second moment %g; want about 0 and 4e-4", mean, std)
	}
}
