package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/quant/imatrix"
	"github.com/lqc-dev/lqc/testmodels"
)

// TestDeviceCUDASim: lqc run and lqc eval on --device cuda-sim take the
// CUDA backend's whole code path (kernels interpreted by the PTX
// simulator) and give what the CPU gives: the reference's greedy text,
// and the same perplexity.
func TestDeviceCUDASim(t *testing.T) {
	hf := testmodels.Shared(t, "models/stories260K/hf")
	want, err := os.ReadFile(testmodels.Shared(t, "models/stories260K/reference/expected_greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := lqc("run", "--device", "cuda-sim", "--temp", "0", "-n", "60", hf)
	if code != 0 {
		t.Fatalf("run: exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(string(want), stdout) || len(stdout) < 100 {
		t.Errorf("greedy text on cuda-sim is not the reference's start:\n%q\n%q", stdout, want)
	}
	if !strings.Contains(stderr, "cuda-sim (PTX simulator)") {
		t.Errorf("the speed report does not name the backend: %q", stderr)
	}

	// Perplexity over the same chunks, on each backend.
	var ppl [2]float64
	for i, device := range []string{"cpu", "cuda-sim"} {
		code, stdout, stderr := lqc("eval", "--device", device, hf, "--data", testmodels.Shared(t, "golden/real/eval.txt"),
			"--ctx", "64", "--chunks", "2", "--json")
		if code != 0 {
			t.Fatalf("eval --device %s: exit %d: %s", device, code, stderr)
		}
		var r struct {
			Result struct {
				Tokens int     `json:"tokens"`
				PPL    float64 `json:"ppl"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(stdout), &r); err != nil || r.Result.Tokens == 0 {
			t.Fatalf("eval --device %s --json: %v: %s", device, err, stdout)
		}
		ppl[i] = r.Result.PPL
	}
	if math.Abs(ppl[1]-ppl[0]) > 1e-4*ppl[0] {
		t.Errorf("perplexity on cuda-sim %.6f, on the CPU %.6f", ppl[1], ppl[0])
	}
}

// TestImatrixCUDASim: calibration runs on the GPU too: lqc imatrix on
// cuda-sim measures the same importance (Σx² of every matrix's input)
// as on the CPU, to float32 rounding.
func TestImatrixCUDASim(t *testing.T) {
	hf := testmodels.Shared(t, "models/stories260K/hf")
	data := testmodels.Shared(t, "golden/quant/imatrix-calib.txt")
	var ms [2]*imatrix.Matrix
	for i, device := range []string{"cpu", "cuda-sim"} {
		out := filepath.Join(t.TempDir(), "imatrix.gguf")
		if code, _, stderr := lqc("imatrix", "--device", device, hf, "--data", data, "-o", out, "-c", "64", "--chunks", "2"); code != 0 {
			t.Fatalf("imatrix --device %s: exit %d: %s", device, code, stderr)
		}
		var err error
		if ms[i], err = imatrix.Read(out); err != nil {
			t.Fatal(err)
		}
	}
	if len(ms[0].Entries) == 0 || len(ms[1].Entries) != len(ms[0].Entries) {
		t.Fatalf("%d matrices on cuda-sim, %d on the CPU", len(ms[1].Entries), len(ms[0].Entries))
	}
	for name, want := range ms[0].Entries {
		got := ms[1].Entries[name]
		if got == nil || len(got.Sums) != len(want.Sums) {
			t.Fatalf("%s: missing or of another size on cuda-sim", name)
		}
		for j := range want.Sums {
			if d := math.Abs(float64(got.Sums[j] - want.Sums[j])); d > 1e-4*math.Abs(float64(want.Sums[j]))+1e-6 {
				t.Fatalf("%s value %d: %g on cuda-sim, %g on the CPU", name, j, got.Sums[j], want.Sums[j])
			}
		}
	}
}

// TestDeviceErrors: a wrong --device is a usage error; a CUDA device
// where none can be used is one line naming what is missing, exit 1.
func TestDeviceErrors(t *testing.T) {
	hf := testmodels.Shared(t, "models/stories260K/hf")
	if code, _, stderr := lqc("run", "--device", "gpu", hf); code != 2 || !strings.Contains(stderr, `--device "gpu"`) {
		t.Errorf("--device gpu: exit %d: %s", code, stderr)
	}
	if code, _, stderr := lqc("run", "--device", "cuda:x", hf); code != 2 || !strings.Contains(stderr, "cuda:N") {
		t.Errorf("--device cuda:x: exit %d: %s", code, stderr)
	}
	// Only where this machine has no usable GPU (CI): the driver's
	// absence, or its refusal, in one line.
	if code, _, _ := lqc("inspect", "--devices"); code == 0 {
		t.Log("a GPU is present: the no-GPU error is not checked here")
		return
	}
	code, stdout, stderr := lqc("run", "--device", "cuda", "-n", "4", hf)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "cuda: ") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("--device cuda without a GPU: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// auto falls back to the CPU and says so.
	code, stdout, stderr = lqc("run", "--device", "auto", "--temp", "0", "-n", "8", hf)
	if code != 0 || stdout == "" || !strings.Contains(stderr, "running on the CPU") {
		t.Errorf("--device auto without a GPU: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
