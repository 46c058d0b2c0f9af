// Command lqcbench measures lqc against llama.cpp in the same run on the
// same machine and prints ratios (make bench).
//
//	lqcbench convert   lqc convert --quant q4_0 of a TinyLlama-1.1B-shaped
//	                   bf16 checkpoint: wall time, input MB/s, peak RSS,
//	                   against llama.cpp's quantizer on the same weights.
//	lqcbench run       prompt processing (pp64) and generation (tg32)
//	                   tokens/s of the same model as Q4_0 and Q8_0 GGUF,
//	                   lqc's runtime against llama.cpp (node-llama-cpp) on
//	                   the same file and thread count.
//	lqcbench attention time and peak memory of fused (FlashAttention)
//	                   against unfused causal attention, 512 to 16384
//	                   positions, head sizes 64 and 128.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/lqc-dev/lqc/codegen/gguf"
	"github.com/lqc-dev/lqc/quant"
	"github.com/lqc-dev/lqc/testmodels"
	"github.com/lqc-dev/lqc/testmodels/llamacpp"
)

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "attention-child" {
		if err := attentionChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "lqcbench:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || (os.Args[1] != "convert" && os.Args[1] != "run" && os.Args[1] != "attention") {
		fmt.Fprintln(os.Stderr, "usage: lqcbench convert|run|attention [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	layers := fs.Int("layers", testmodels.TinyLlama.Layers, "layers of the TinyLlama-shaped model (22 = 1.1B)")
	runs := fs.Int("runs", 3, "repetitions of each measurement; the median is reported")
	threads := fs.Int("threads", 2, "threads for lqc and llama.cpp")
	work := fs.String("work", filepath.Join(os.TempDir(), "lqc-bench"), "folder for the model and outputs")
	heads := fs.Int("heads", 2, "attention heads (lqcbench attention)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "convert":
		err = benchConvert(*work, *layers, *runs, *threads)
	case "run":
		err = benchRun(*work, *layers, *runs, *threads)
	case "attention":
		err = benchAttention(*threads, *heads)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lqcbench:", err)
		os.Exit(1)
	}
}

// model writes the TinyLlama-shaped bf16 checkpoint once and returns its
// folder.
func model(work string, layers int) (string, error) {
	shape := testmodels.TinyLlama
	shape.Layers = layers
	dir := filepath.Join(work, fmt.Sprintf("tinyllama-%dl-bf16", layers))
	if size(filepath.Join(dir, "model.safetensors")) == 0 {
		fmt.Fprintf(os.Stderr, "writing %s (%.2fB parameters, bf16)...\n", dir, float64(shape.Params())/1e9)
		if err := testmodels.WriteLlamaHF(dir, shape, quant.BF16, 1); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// buildLQC builds the lqc binary into work.
func buildLQC(work string) (string, error) {
	lqc := filepath.Join(work, "lqc")
	build := exec.Command("go", "build", "-o", lqc, "./cmd/lqc")
	build.Dir, build.Stderr = testmodels.RepoRoot(), os.Stderr
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return lqc, nil
}

type measure struct {
	wall   time.Duration
	maxRSS int64 // bytes
}

// timeCmd runs a command and returns its wall time and peak RSS.
func timeCmd(name string, args ...string) (measure, error) {
	_, m, err := childRun(name, args...)
	return m, err
}

// childRun runs a command, returning its stdout, wall time and peak RSS.
func childRun(name string, args ...string) (string, measure, error) {
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", measure{}, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	m := measure{wall: time.Since(start)}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.maxRSS = ru.Maxrss * 1024
	}
	return stdout.String(), m, nil
}

func median(name string, runs int, args ...string) (measure, error) {
	var ms []measure
	for range runs {
		m, err := timeCmd(name, args...)
		if err != nil {
			return m, err
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].wall < ms[j].wall })
	med := ms[len(ms)/2]
	for _, m := range ms {
		med.maxRSS = max(med.maxRSS, m.maxRSS)
	}
	return med, nil
}

func size(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func benchConvert(work string, layers, runs, threads int) error {
	model, err := model(work, layers)
	if err != nil {
		return err
	}
	lqc, err := buildLQC(work)
	if err != nil {
		return err
	}
	input := size(filepath.Join(model, "model.safetensors"))
	t := fmt.Sprint(threads)
	out := filepath.Join(work, "lqc-q4_0.gguf")
	fmt.Fprintf(os.Stderr, "lqc convert --quant q4_0, %d runs...\n", runs)
	hfRun, err := median(lqc, runs, "convert", model, "-o", out, "--quant", "q4_0", "--quiet", "--threads", t)
	if err != nil {
		return err
	}
	f16 := filepath.Join(work, "f16.gguf")
	if _, err := timeCmd(lqc, "convert", model, "-o", f16, "--quant", "f16", "--quiet"); err != nil {
		return err
	}
	lqcF16Out := filepath.Join(work, "lqc-f16-q4_0.gguf")
	f16Run, err := median(lqc, runs, "convert", f16, "-o", lqcF16Out, "--quant", "q4_0", "--quiet", "--threads", t)
	if err != nil {
		return err
	}
	mb := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	fmt.Printf("\nlqc convert --quant q4_0, TinyLlama-1.1B shape (%d layers), %d threads, GOMAXPROCS %d, median of %d\n",
		layers, threads, runtime.GOMAXPROCS(0), runs)
	fmt.Printf("  %-44s %8s %10s %10s\n", "", "wall s", "input MB/s", "peak RSS")
	row := func(name string, in int64, m measure) {
		fmt.Printf("  %-44s %8.2f %10.1f %7.0f MB\n", name, m.wall.Seconds(), mb(in, m.wall), float64(m.maxRSS)/1e6)
	}
	row("lqc, HF bf16 safetensors -> Q4_0", input, hfRun)
	row("lqc, F16 GGUF -> Q4_0", size(f16), f16Run)

	dir, err := llamacpp.Install()
	if err != nil {
		fmt.Printf("  llama.cpp quantizer unavailable (%v): no ratio\n", err)
		return nil
	}
	bins := llamacpp.Bins(dir)
	script := filepath.Join(testmodels.RepoRoot(), "testmodels", "llamacpp", "quantize.py")
	peerOut := filepath.Join(work, "llama-q4_0.gguf")
	peer, err := median("python3", runs, script, bins, f16, peerOut, fmt.Sprint(uint32(quant.FileMostlyQ4_0)), t)
	if err != nil {
		return err
	}
	row("llama.cpp llama_model_quantize F16 -> Q4_0", size(f16), peer)
	fmt.Printf("\n  ratio lqc/llama.cpp, input MB/s: %.2f (HF bf16), %.2f (same F16 GGUF)\n",
		mb(input, hfRun.wall)/mb(size(f16), peer.wall), mb(size(f16), f16Run.wall)/mb(size(f16), peer.wall))
	fmt.Printf("  ratio lqc/llama.cpp, peak RSS:   %.2f (HF bf16), %.2f (same F16 GGUF)\n",
		float64(hfRun.maxRSS)/float64(peer.maxRSS), float64(f16Run.maxRSS)/float64(peer.maxRSS))
	same, diff, err := compareTensors(lqcF16Out, peerOut)
	if err != nil {
		return err
	}
	fmt.Printf("  tensors byte-identical to llama.cpp's: %d of %d %s\n", same, same+len(diff), strings.Join(diff, " "))
	if len(diff) > 0 {
		return fmt.Errorf("lqc's Q4_0 differs from llama.cpp's in %d tensors", len(diff))
	}
	return nil
}

func digests(path string) (map[string]string, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := map[string]string{}
	for i, ti := range f.Tensors {
		s := sha256.Sum256(f.TensorData(i))
		d[ti.Name] = ti.Type.String() + ":" + hex.EncodeToString(s[:])
	}
	return d, nil
}

func compareTensors(a, b string) (same int, diff []string, err error) {
	da, err := digests(a)
	if err != nil {
		return 0, nil, err
	}
	db, err := digests(b)
	if err != nil {
		return 0, nil, err
	}
	for name, h := range db {
		if da[name] == h {
			same++
		} else {
			diff = append(diff, name)
		}
	}
	sort.Strings(diff)
	return same, diff, nil
}
