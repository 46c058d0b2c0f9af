package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

func readIDs(t *testing.T, path string) []int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, f := range strings.Fields(string(data)) {
		id, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// agreement is the length of the common prefix of two id sequences.
func agreement(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestInteropLlamaCpp is the acceptance test of the foundation: lqc
// converts the real stories260K model from each of its sources to F32,
// F16, Q8_0 and Q4_0, and real llama.cpp loads every file and generates
// 200 tokens greedily from BOS. From F32 the text must be the reference
// exactly; for the other types the agreement is reported.
func TestInteropLlamaCpp(t *testing.T) {
	dir := llamacpp.Require(t)
	ref := readIDs(t, testmodels.Shared(t, "models/stories260K/reference/expected_greedy_ids.txt"))
	refText, err := os.ReadFile(testmodels.Shared(t, "models/stories260K/reference/expected_greedy.txt"))
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{
		"hf":      testmodels.Shared(t, "models/stories260K/hf"),
		"hf-bf16": testmodels.Shared(t, "models/stories260K/hf-bf16"),
		"llama2c": testmodels.Shared(t, "models/stories260K/llama2c/stories260K.bin"),
	}
	order := []string{"hf", "hf-bf16", "llama2c"}
	types := []string{"f32", "f16", "q8_0", "q4_0"}
	tmp := t.TempDir()
	var jobs []llamacpp.Job
	for _, src := range order {
		for _, q := range types {
			out := filepath.Join(tmp, src+"-"+q+".gguf")
			convert(t, sources[src], "-o", out, "--quant", q)
			jobs = append(jobs, llamacpp.Job{Model: out, N: len(ref)})
		}
	}
	// gpt2: a second architecture end to end, from BOS and from a prompt.
	gpt2 := filepath.Join(tmp, "gpt2-tiny-f32.gguf")
	convert(t, testmodels.Shared(t, "models/gpt2-tiny/hf"), "-o", gpt2, "--quant", "f32")
	gptRef := readIDs(t, testmodels.Shared(t, "models/gpt2-tiny/reference/expected_greedy_ids.txt"))
	gptHello := readIDs(t, testmodels.Shared(t, "models/gpt2-tiny/reference/expected_greedy_hello_ids.txt"))
	jobs = append(jobs,
		llamacpp.Job{Model: gpt2, Prompt: []int{50256}, N: len(gptRef)},
		llamacpp.Job{Model: gpt2, Prompt: []int{50256, 15496, 995}, N: len(gptHello)})

	results, err := llamacpp.Run(dir, jobs)
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "greedy agreement with the reference, llama.cpp %s on lqc's files:\n", llamacpp.Package)
	i := 0
	for _, src := range order {
		for _, q := range types {
			r := results[i]
			i++
			if r.Error != "" {
				t.Errorf("llama.cpp cannot run lqc's %s from %s: %s", q, src, r.Error)
				continue
			}
			n := agreement(ref, r.Tokens)
			fmt.Fprintf(&table, "  %-8s %-5s %3d/%d\n", src, q, n, len(ref))
			if q == "f32" && src != "hf-bf16" {
				if n != len(ref) {
					t.Errorf("%s f32: llama.cpp's greedy ids agree with the reference for %d of %d tokens", src, n, len(ref))
				}
				if r.Text != string(refText) {
					t.Errorf("%s f32: text differs from expected_greedy.txt:\n%q\n%q", src, r.Text, refText)
				}
			}
		}
	}
	for k, want := range [][]int{gptRef, gptHello} {
		r := results[i+k]
		if r.Error != "" {
			t.Fatalf("llama.cpp cannot run lqc's gpt2: %s", r.Error)
		}
		n := agreement(want, r.Tokens)
		fmt.Fprintf(&table, "  gpt2-tiny f32 prompt %d: %3d/%d\n", k, n, len(want))
		if n != len(want) {
			t.Errorf("gpt2-tiny prompt %d: llama.cpp's greedy ids agree for %d of %d tokens", k, n, len(want))
		}
	}
	t.Log(table.String())
}
