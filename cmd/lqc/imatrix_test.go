package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/quant/imatrix"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestImatrixCommand computes an importance matrix with lqc imatrix,
// in both formats, and checks that convert --calib, which computes it on
// the fly, quantizes exactly as convert --imatrix with the file does.
func TestImatrixCommand(t *testing.T) {
	src := testmodels.Shared(t, "golden/quant/input-f32.gguf")
	calib := testmodels.Shared(t, "golden/quant/imatrix-calib.txt")
	dir := t.TempDir()
	for _, name := range []string{"m.gguf", "m.dat"} {
		out := filepath.Join(dir, name)
		code, stdout, stderr := lqc("imatrix", src, "--data", calib, "--ctx", "128", "-o", out, "--quiet")
		if code != 0 {
			t.Fatalf("lqc imatrix: exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, "14 matrices, 39 chunks of 128 tokens") {
			t.Errorf("lqc imatrix said %q", stdout)
		}
		m, err := imatrix.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Entries) != 14 || m.ChunkCount != 39 || !cmp.Equal(m.Datasets, []string{"imatrix-calib.txt"}) {
			t.Errorf("%s: %d entries, %d chunks, datasets %v", name, len(m.Entries), m.ChunkCount, m.Datasets)
		}
	}

	withFile, onTheFly := filepath.Join(dir, "file.gguf"), filepath.Join(dir, "calib.gguf")
	convert(t, src, "-o", withFile, "--quant", "Q4_K_M", "--imatrix", filepath.Join(dir, "m.gguf"))
	convert(t, src, "-o", onTheFly, "--quant", "Q4_K_M", "--calib", calib, "--calib-ctx", "128")
	if diff := cmp.Diff(tensorDigests(t, withFile), tensorDigests(t, onTheFly)); diff != "" {
		t.Errorf("--calib and --imatrix of the same text differ:\n%s", diff)
	}
	f, err := gguf.Open(onTheFly)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ds, _ := f.Metadata.String("quantize.imatrix.dataset")
	_, hasFile := f.Metadata.Get("quantize.imatrix.file")
	if ds != "imatrix-calib.txt" || hasFile {
		t.Errorf("--calib metadata: dataset %q, file recorded %v", ds, hasFile)
	}
}

// TestImatrixBadInput: an importance matrix that does not fit the model,
// a file that is not one, and too little calibration text each end with a
// one-line error and no output.
func TestImatrixBadInput(t *testing.T) {
	golden := testmodels.Shared(t, "golden/quant/input-f32.gguf")
	stories := testmodels.Shared(t, "golden/real/stories260K-f32.gguf")
	imat := testmodels.Shared(t, "golden/quant/imatrix.gguf")
	short := filepath.Join(t.TempDir(), "short.txt")
	os.WriteFile(short, []byte("Once upon a time."), 0o644)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"imatrix of another model", []string{"convert", stories, "--quant", "q4_k_m", "--imatrix", imat},
			[]string{"imatrix.gguf", "another model"}},
		{"model given as imatrix", []string{"convert", golden, "--quant", "q4_k_m", "--imatrix", stories},
			[]string{"stories260K-f32.gguf", "not imatrix"}},
		{"calibration text too short", []string{"convert", golden, "--quant", "q4_k_m", "--calib", short, "--calib-ctx", "128"},
			[]string{"short.txt", "fewer than one chunk of 128"}},
		{"imatrix command, text too short", []string{"imatrix", golden, "--data", short, "--ctx", "64"},
			[]string{"short.txt", "fewer than one chunk of 64"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			failsCleanly(t, c.args, 1, c.want...)
		})
	}
	if code, _, stderr := lqc("convert", golden, "-o", "x.gguf", "--imatrix", imat, "--calib", short); code != 2 || !strings.Contains(stderr, "pick one") {
		t.Errorf("--imatrix with --calib: exit %d, %q", code, stderr)
	}
}

// TestCalibContextDefault: on a model whose context is below 512 the
// default calibration chunk is the model's context, said once on stderr;
// an explicit larger one stays an error.
func TestCalibContextDefault(t *testing.T) {
	gpt2 := testmodels.Shared(t, "models/gpt2-tiny/hf") // context 256
	calib := testmodels.Shared(t, "golden/quant/imatrix-calib.txt")
	out := filepath.Join(t.TempDir(), "imatrix.gguf")
	code, stdout, stderr := lqc("imatrix", gpt2, "--data", calib, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Count(stderr, "calibration chunks of 256 tokens") != 1 || !strings.Contains(stdout, "chunks of 256 tokens") {
		t.Errorf("stdout %q, stderr %q: want chunks of 256 and one note", stdout, stderr)
	}
	code, _, stderr = lqc("imatrix", gpt2, "--data", calib, "-c", "512", "-o", out)
	if code != 2 || !strings.Contains(stderr, "exceeds the model's context of 256") {
		t.Errorf("explicit -c 512: exit %d, %q", code, stderr)
	}
}
