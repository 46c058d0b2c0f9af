package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
)

// TestFromHubCache: repo ids name models and adapters that are already in
// the Hugging Face cache (the layout huggingface_hub writes), for convert,
// run and its --lora, with HF_HUB_OFFLINE set so nothing is fetched; an
// id missing from the cache is then a one-line error.
func TestFromHubCache(t *testing.T) {
	hf := testmodels.Shared(t, "models", "stories260K", "hf")
	cache := t.TempDir()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	put := func(repo, src string) {
		root := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
		snap := filepath.Join(root, "snapshots", commit)
		for _, d := range []string{filepath.Join(root, "refs"), filepath.Dir(snap)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(root, "refs", "main"), []byte(commit), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(copyDir(t, src), snap); err != nil {
			t.Fatal(err)
		}
	}
	put("karpathy/stories260K", hf)
	adapter := filepath.Join(t.TempDir(), "a")
	if err := testmodels.WritePEFT(adapter, hf, testmodels.PEFTAdapter{Targets: []string{"q_proj", "v_proj"}, R: 4, Alpha: 8, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	put("someone/stories-lora", adapter)
	t.Setenv("HF_HUB_CACHE", cache)
	t.Setenv("HF_HUB_OFFLINE", "1")
	t.Chdir(t.TempDir()) // so that no local folder shadows the ids

	out := filepath.Join(t.TempDir(), "m.gguf")
	if code, _, stderr := lqc("convert", "karpathy/stories260K", "-o", out, "--quant", "q8_0", "-q"); code != 0 {
		t.Fatalf("convert karpathy/stories260K: exit %d: %s", code, stderr)
	}
	byID := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := lqc(append([]string{"run"}, args...)...)
		if code != 0 {
			t.Fatalf("lqc run %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
		return stdout
	}
	gen := []string{"-p", "Once upon a time", "-n", "16", "--temp", "0"}
	if got, want := byID(append([]string{"karpathy/stories260K", "--lora", "someone/stories-lora"}, gen...)...),
		byID(append([]string{hf, "--lora", adapter}, gen...)...); got != want {
		t.Errorf("run by repo ids: %q, by paths: %q", got, want)
	}
	if got, want := byID(append([]string{out}, gen...)...), byID(append([]string{hf}, gen...)...); got != want {
		t.Errorf("the Q8_0 file converted from the repo id: %q, the folder: %q", got, want)
	}

	code, _, stderr := lqc("run", "karpathy/other", "-n", "1")
	if code != 1 || !strings.Contains(stderr, "karpathy/other: not in the Hugging Face cache") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("a repo id outside the cache, offline: exit %d, %q", code, stderr)
	}
}

// TestDownloadProgress: off a terminal, a line every two seconds at most
// and one when each file is complete.
func TestDownloadProgress(t *testing.T) {
	var b bytes.Buffer
	p := newDownloadProgress(&b, "org/tiny")
	p.update("model.safetensors", 0, 3e6)
	p.update("model.safetensors", 1e6, 3e6)
	p.update("model.safetensors", 3e6, 3e6)
	p.update("config.json", 10, 10)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "model.safetensors") || !strings.Contains(lines[1], "3.0/3.0 MB") ||
		!strings.Contains(lines[2], "config.json") {
		t.Errorf("progress lines:\n%s", b.String())
	}
}
