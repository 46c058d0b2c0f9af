// Package llamacpp runs real llama.cpp for lqc's interop tests: the
// prebuilt library of the npm package node-llama-cpp, installed on first
// use into a cache folder, driven by a small Node script.
package llamacpp

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lqc-dev/lqc/testmodels"
)

// Versions pinned for reproducibility: llama.cpp de3ff815 (2026-09).
const (
	Package  = "node-llama-cpp@3.22.1"
	Prebuilt = "@node-llama-cpp/linux-x64@3.22.1"
)

//go:embed run.mjs
var script []byte

// Job asks llama.cpp to load Model and greedily generate N tokens after
// Prompt (nil: BOS only), or, with Bench, to time it.
type Job struct {
	Model  string `json:"model"`
	Prompt []int  `json:"prompt"`
	N      int    `json:"n"`
	Bench  *Bench `json:"bench,omitempty"`
	// Logits asks instead for the raw logits after every prompt token,
	// the prompt evaluated as one batch.
	Logits bool `json:"logits,omitempty"`
	// LoRA lists adapters to apply on top of Model.
	LoRA []LoRA `json:"lora,omitempty"`
	// F32 keeps llama.cpp's KV cache in float32, without flash attention.
	F32 bool `json:"f32,omitempty"`
}

// LoRA is an adapter file and its scale.
type LoRA struct {
	Path  string  `json:"path"`
	Scale float64 `json:"scale"`
}

// Bench times prompt processing of PP tokens in one batch and generation
// of TG tokens, Reps times after a warm-up, as llama-bench's ppN and tgN.
type Bench struct {
	PP      int `json:"pp"`
	TG      int `json:"tg"`
	Threads int `json:"threads"`
	Reps    int `json:"reps"`
}

// Result is llama.cpp's answer to a job.
type Result struct {
	Model  string      `json:"model"`
	Tokens []int       `json:"tokens"`
	Text   string      `json:"text"`
	PPms   []float64   `json:"pp_ms"`
	TGms   []float64   `json:"tg_ms"`
	Logits [][]float32 `json:"logits"`
	Error  string      `json:"error"`
}

// CacheDir is where node-llama-cpp is installed (testmodels.NpmDir).
func CacheDir() string { return testmodels.NpmDir("node-llama-cpp-3.22.1") }

// Install makes sure node-llama-cpp is installed and returns its folder.
func Install() (string, error) {
	return testmodels.NpmInstall("node-llama-cpp-3.22.1", Package, Prebuilt)
}

// Require installs node-llama-cpp for a test: it skips the test when that
// is impossible, or fails it under LQC_REQUIRE_FIXTURES=1.
func Require(t testing.TB) string {
	t.Helper()
	dir, err := Install()
	if err != nil {
		if testmodels.RequireFixtures() {
			t.Fatalf("real llama.cpp unavailable (LQC_REQUIRE_FIXTURES=1): %v", err)
		}
		t.Skipf("real llama.cpp unavailable: %v", err)
	}
	return dir
}

// Run runs the jobs in one Node process and returns their results in
// order.
func Run(dir string, jobs []Job) ([]Result, error) {
	scriptPath := filepath.Join(dir, "lqc-run.mjs")
	if old, err := os.ReadFile(scriptPath); err != nil || !bytes.Equal(old, script) {
		if err := os.WriteFile(scriptPath+".tmp", script, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(scriptPath+".tmp", scriptPath); err != nil {
			return nil, err
		}
	}
	in, err := json.Marshal(jobs)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("node", scriptPath)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("node %s: %v\n%s", scriptPath, err, stderr.String())
	}
	var results []Result
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("bad line from llama.cpp harness: %q", sc.Text())
		}
		results = append(results, r)
	}
	if len(results) != len(jobs) {
		return nil, fmt.Errorf("llama.cpp harness answered %d of %d jobs\n%s", len(results), len(jobs), stderr.String())
	}
	return results, nil
}

// Bins is the folder of the prebuilt libraries (libllama, libggml-base)
// inside an installation dir.
func Bins(dir string) string {
	return filepath.Join(dir, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64")
}

//go:embed quantchunk.py
var quantChunk []byte

// QuantJob asks ggml to quantize rows of RowLen values in X to ggml type
// Type, weighting the columns by Imatrix when it is not nil, as
// llama-quantize --imatrix does.
type QuantJob struct {
	Type       uint32
	RowLen     int
	X, Imatrix []float32
}

// QuantizeRows runs the jobs through ggml's own ggml_quantize_chunk in
// one python3 process and returns the quantized bytes of each and the
// time ggml took (one thread).
func QuantizeRows(dir string, jobs []QuantJob) ([][]byte, []time.Duration, error) {
	work, err := os.MkdirTemp("", "lqc-quantchunk-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	writeF32 := func(path string, v []float32) error {
		b := make([]byte, 0, 4*len(v))
		for _, f := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
		return os.WriteFile(path, b, 0o644)
	}
	var list strings.Builder
	for i, j := range jobs {
		in, imat := filepath.Join(work, fmt.Sprint(i, ".f32")), "-"
		if err := writeF32(in, j.X); err != nil {
			return nil, nil, err
		}
		if j.Imatrix != nil {
			imat = filepath.Join(work, fmt.Sprint(i, ".imatrix"))
			if err := writeF32(imat, j.Imatrix); err != nil {
				return nil, nil, err
			}
		}
		fmt.Fprintf(&list, "%d %d %s %s %s\n", j.Type, j.RowLen, in, imat, filepath.Join(work, fmt.Sprint(i, ".out")))
	}
	script, jobsFile := filepath.Join(work, "quantchunk.py"), filepath.Join(work, "jobs")
	if err := os.WriteFile(script, quantChunk, 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(jobsFile, []byte(list.String()), 0o644); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command("python3", script, Bins(dir), jobsFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("python3 quantchunk.py: %v\n%s", err, stderr.String())
	}
	var times []time.Duration
	for _, f := range strings.Fields(string(stdout)) {
		sec, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("quantchunk.py printed %q", f)
		}
		times = append(times, time.Duration(sec*float64(time.Second)))
	}
	out := make([][]byte, len(jobs))
	for i := range jobs {
		if out[i], err = os.ReadFile(filepath.Join(work, fmt.Sprint(i, ".out"))); err != nil {
			return nil, nil, err
		}
	}
	return out, times, nil
}
