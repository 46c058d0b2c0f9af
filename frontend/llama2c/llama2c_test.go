package llama2c

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
)

func TestLoadVendored(t *testing.T) {
	m, err := Load(testmodels.Stories260K(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := m.Params
	if p.EmbeddingLength != 64 || p.BlockCount != 5 || p.HeadCount != 8 || p.HeadCountKV != 4 ||
		p.FeedForwardLength != 172 || p.VocabSize != 512 || p.ContextLength != 512 || len(m.Weights()) != 47 {
		t.Errorf("params %+v, %d weights", p, len(m.Weights()))
	}
	if m.Weight("output.weight") != nil {
		t.Error("stories260K shares its classifier, but output.weight was made")
	}
}

func TestRejects(t *testing.T) {
	orig, err := os.ReadFile(testmodels.Stories260K())
	if err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(filepath.Dir(testmodels.Stories260K()), "tok512.bin")
	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "m.bin")
		os.WriteFile(p, b, 0o644)
		return p
	}
	v1 := binary.LittleEndian.AppendUint32(nil, magicV1)
	v1 = binary.LittleEndian.AppendUint32(v1, 2)
	v1 = append(v1, make([]byte, 100)...)
	bad := append([]byte(nil), orig...)
	binary.LittleEndian.PutUint32(bad[12:], 7) // 7 heads do not divide dim 64
	cases := map[string]struct {
		path, tok, want string
	}{
		"export version 2": {write(v1), tok, "export version 2 is not supported"},
		"truncated":        {write(orig[:len(orig)-4]), tok, "the header implies"},
		"bad heads":        {write(bad), tok, "inconsistent heads"},
		"no tokenizer":     {write(orig), "", "no tokenizer beside the checkpoint"},
		"wrong tokenizer":  {write(orig), testmodels.Stories260K(), "bad length"},
	}
	for name, c := range cases {
		_, err := Load(c.path, c.tok)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	if IsCheckpoint(write(orig[:len(orig)-4])) {
		t.Error("a truncated checkpoint passed IsCheckpoint")
	}
}
