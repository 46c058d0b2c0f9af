package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/testmodels"
)

// manifest is the part of shared/golden/*/manifest.json the tests read:
// for every file llama.cpp wrote, the type and sha256 of every tensor.
type manifest struct {
	Outputs []struct {
		File     string         `json:"file"`
		Command  []string       `json:"command"`
		Metadata map[string]any `json:"metadata"`
		Tensors  []struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			SHA256 string `json:"sha256"`
		} `json:"tensors"`
	} `json:"outputs"`
}

func readManifest(t *testing.T, path string) manifest {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// metadataDiff compares the metadata the manifest recorded with a GGUF
// file's.
func metadataDiff(t *testing.T, want map[string]any, path string) string {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, got := map[string]string{}, map[string]string{}
	for k, v := range want {
		w[k] = fmt.Sprint(v)
		if g, ok := f.Metadata.Get(k); ok {
			got[k] = fmt.Sprint(g)
		}
	}
	return cmp.Diff(w, got)
}

// tensorDigests returns "TYPE sha256" for every tensor of a GGUF file.
func tensorDigests(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	for i, ti := range f.Tensors {
		sum := sha256.Sum256(f.TensorData(i))
		out[ti.Name] = ti.Type.String() + " " + hex.EncodeToString(sum[:])
	}
	return out
}

func convert(t *testing.T, args ...string) {
	t.Helper()
	var stderr bytes.Buffer
	if code := run(context.Background(), append([]string{"convert", "--quiet"}, args...), &bytes.Buffer{}, &stderr); code != 0 {
		t.Fatalf("lqc convert %v: exit %d: %s", args, code, stderr.String())
	}
}

// quantArgs turns a llama-quantize command line into lqc convert flags;
// an --imatrix file is taken from dir, the manifest's folder.
func quantArgs(command []string, dir string) (args []string) {
	for i := 0; i < len(command); i++ {
		switch command[i] {
		case "--pure":
			args = append(args, "--pure")
		case "--imatrix":
			i++
			args = append(args, "--imatrix", filepath.Join(dir, command[i]))
		}
	}
	return append(args, "--quant", command[len(command)-2])
}

// TestGoldenQuantization converts the F32 sources llama.cpp quantized and
// checks every tensor's type and bytes against the manifests: lqc must
// choose the same type per tensor and write the same bytes.
func TestGoldenQuantization(t *testing.T) {
	cases := []struct {
		manifest string
		sources  []string // relative to the shared folder
		want     []string // the files that must be checked
	}{
		{
			manifest: "golden/real/manifest.json",
			sources: []string{"golden/real/stories260K-f32.gguf", "models/stories260K/hf",
				"models/stories260K/llama2c/stories260K.bin"},
			want: []string{"stories260K-F16.gguf", "stories260K-Q4_0.gguf", "stories260K-Q4_1.gguf",
				"stories260K-Q5_0.gguf", "stories260K-Q5_1.gguf", "stories260K-Q8_0.gguf"},
		},
		{
			manifest: "golden/quant/manifest.json",
			sources:  []string{"golden/quant/input-f32.gguf"},
			want: []string{"BF16.gguf", "F16.gguf", "IQ4_NL-imat.gguf", "IQ4_NL.gguf", "IQ4_XS.gguf", "Q2_K-imat.gguf",
				"Q2_K.gguf", "Q3_K_M-imat.gguf", "Q3_K_M.gguf", "Q3_K_S.gguf", "Q4_0-imat.gguf", "Q4_0-pure.gguf",
				"Q4_0.gguf", "Q4_1.gguf", "Q4_K-pure.gguf", "Q4_K_M-imat.gguf", "Q4_K_M.gguf", "Q4_K_S.gguf",
				"Q5_0.gguf", "Q5_1.gguf", "Q5_K_M.gguf", "Q5_K_S.gguf", "Q6_K-pure.gguf", "Q6_K.gguf", "Q8_0.gguf"},
		},
	}
	for _, c := range cases {
		m := readManifest(t, testmodels.Shared(t, c.manifest))
		var checked, skipped []string
		for _, out := range m.Outputs {
			args := quantArgs(out.Command, filepath.Dir(testmodels.Shared(t, c.manifest)))
			if _, err := quant.ParseFileType(args[len(args)-1]); err != nil {
				skipped = append(skipped, out.File)
				continue
			}
			checked = append(checked, out.File)
			want := map[string]string{}
			for _, ti := range out.Tensors {
				want[ti.Name] = ti.Type + " " + ti.SHA256
			}
			for _, src := range c.sources {
				t.Run(out.File+"/"+filepath.Base(src), func(t *testing.T) {
					dst := filepath.Join(t.TempDir(), "out.gguf")
					convert(t, append([]string{testmodels.Shared(t, src), "-o", dst}, args...)...)
					if diff := cmp.Diff(want, tensorDigests(t, dst)); diff != "" {
						t.Errorf("tensors differ from llama.cpp's %s (-llama.cpp +lqc):\n%s", out.File, diff)
					}
					if diff := metadataDiff(t, out.Metadata, dst); diff != "" {
						t.Errorf("metadata differs from llama.cpp's %s (-llama.cpp +lqc):\n%s", out.File, diff)
					}
				})
			}
		}
		sort.Strings(checked)
		if diff := cmp.Diff(c.want, checked); diff != "" {
			t.Errorf("%s: checked files differ from the expected set (-want +got):\n%s", c.manifest, diff)
		}
		t.Logf("%s: checked %s; not yet produced by lqc: %s", c.manifest, strings.Join(checked, ", "), strings.Join(skipped, ", "))
	}
}
