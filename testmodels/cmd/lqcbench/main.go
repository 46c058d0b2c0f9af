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
//	lqcbench lora      unfused LoRA at decode: one rank-16 adapter's
//	                   overhead over the base, and four sequences with
//	                   four adapters batched against one after another.
//	lqcbench serve     lqc serve on the loopback interface: eight
//	                   concurrent requests over four adapters against
//	                   eight on one adapter and eight one after another
//	                   (tokens/s), and the time to first token of a
//	                   1-token prompt against the runtime in process.
//	lqcbench finetune  LoRA training on the TinyLlama shape at Q4_0:
//	                   tokens/s, backward against forward, peak RSS,
//	                   ranks 8 to 256; and the residual-adapter rank
//	                   sweep on stories260K (make finetune-report).
//	lqcbench quality   every type and method on stories260K and the
//	                   synthetic golden model: bits per weight,
//	                   perplexity, KL divergence and top-1 against F32,
//	                   beside llama.cpp's figures (make quality).
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
	if len(os.Args) < 2 || (os.Args[1] != "convert" && os.Args[1] != "run" && os.Args[1] != "attention" && os.Args[1] != "quality" && os.Args[1] != "lora" && os.Args[1] != "finetune" && os.Args[1] != "serve" && os.Args[1] != "gpu" && os.Args[1] != "plan") {
		fmt.Fprintln(os.Stderr, "usage: lqcbench convert|run|attention|lora|serve|quality|finetune|plan|gpu [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	layers := fs.Int("layers", testmodels.TinyLlama.Layers, "layers of the TinyLlama-shaped model (22 = 1.1B)")
	runs := fs.Int("runs", 3, "repetitions of each measurement; the median is reported")
	threads := fs.Int("threads", 2, "threads for lqc and llama.cpp")
	work := fs.String("work", filepath.Join(os.TempDir(), "lqc-bench"), "folder for the model and outputs")
	heads := fs.Int("heads", 2, "attention heads (lqcbench attention)")
	types := fs.String("types", "", "--quant types to compare (lqcbench run: every type lqc writes; gpu: "+strings.Join(gpuTypes, ",")+")")
	device := fs.String("device", "cuda", "lqcbench gpu: cuda, or cuda-sim to try the bench without a GPU")
	ranks := fs.String("ranks", "16,8,128,256", "lqcbench finetune: LoRA ranks, each trained with and without gradient checkpointing")
	torch := fs.Bool("torch", true, "lqcbench finetune: compare with PyTorch training the rank-16 LoRA")
	accuracy := fs.Bool("accuracy", true, "lqcbench finetune: the residual-adapter rank sweep and the LoftQ rank-8 run on stories260K")
	pp := fs.Int("pp", 0, "prompt tokens (lqcbench run: 64, gpu: 512)")
	tg := fs.Int("tg", 0, "generated tokens (lqcbench run: 32, gpu: 128)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "convert":
		err = benchConvert(*work, *layers, *runs, *threads)
	case "run":
		err = benchRun(*work, *layers, *runs, *threads, typeList(*types, runTypes), or(*pp, 64), or(*tg, benchTG))
	case "gpu":
		err = benchGPU(*work, *layers, *runs, *device, typeList(*types, gpuTypes), or(*pp, 512), or(*tg, 128))
	case "attention":
		err = benchAttention(*threads, *heads)
	case "quality":
		err = benchQuality(*work, *threads)
	case "lora":
		err = benchLoRA(*work, *layers, *runs, *threads)
	case "finetune":
		var parts finetuneParts
		if parts.ranks, err = intList(*ranks); err == nil {
			parts.torch, parts.accuracy = *torch, *accuracy
			err = benchFinetune(*work, *layers, *runs, *threads, parts)
		}
	case "serve":
		err = benchServe(*work, *layers, *runs, *threads)
	case "plan":
		err = benchPlan(*work, *layers, *threads)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lqcbench:", err)
		os.Exit(1)
	}
}

// typeList is --types split, or the command's default.
func typeList(flag string, def []string) []string {
	if flag == "" {
		return def
	}
	return strings.Split(flag, ",")
}

// intList parses a comma-separated list of integers.
func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil {
			return nil, fmt.Errorf("%q is not a list of integers", s)
		}
		out = append(out, n)
	}
	return out, nil
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

// modelAndLQC returns the seeded benchmark model's folder (made on first
// use) and a freshly built lqc binary.
func modelAndLQC(work string, layers int) (dir, lqc string, err error) {
	if dir, err = model(work, layers); err != nil {
		return "", "", err
	}
	lqc, err = buildLQC(work)
	return dir, lqc, err
}

// quantized returns the TinyLlama-shaped model converted to --quant q,
// converting it once: work/run-<layers>l-<q>.gguf.
func quantized(dir, lqc, work string, layers int, q string) (string, error) {
	file := filepath.Join(work, fmt.Sprintf("run-%dl-%s.gguf", layers, q))
	if size(file) == 0 {
		if _, err := timeCmd(lqc, "convert", dir, "-o", file, "--quant", q, "--quiet"); err != nil {
			return "", err
		}
	}
	return file, nil
}

func benchConvert(work string, layers, runs, threads int) error {
	model, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	input := size(filepath.Join(model, "model.safetensors"))
	t := fmt.Sprint(threads)
	fmt.Fprintf(os.Stderr, "lqc convert --quant q4_0, %d runs...\n", runs)
	hfRun, err := median(lqc, runs, "convert", model, "-o", filepath.Join(work, "lqc-q4_0.gguf"), "--quant", "q4_0", "--quiet", "--threads", t)
	if err != nil {
		return err
	}
	f16 := filepath.Join(work, "f16.gguf")
	if _, err := timeCmd(lqc, "convert", model, "-o", f16, "--quant", "f16", "--quiet"); err != nil {
		return err
	}
	// An importance matrix of the model itself, from four chunks of the
	// golden calibration text (the values do not change the work done).
	imat := filepath.Join(work, "imatrix.gguf")
	if _, err := timeCmd(lqc, "imatrix", f16, "--data", filepath.Join(testmodels.SharedDir(), "golden/quant/imatrix-calib.txt"),
		"-o", imat, "-c", "128", "--chunks", "4", "--quiet", "--threads", t); err != nil {
		return err
	}
	type job struct {
		name, quant string
		imatrix     bool
		ftype       quant.FileType
	}
	jobs := []job{
		{"Q4_0", "q4_0", false, quant.FileMostlyQ4_0},
		{"Q4_K_M", "q4_k_m", false, quant.FileMostlyQ4_K_M},
		{"Q4_0 --imatrix", "q4_0", true, 0},
		{"Q4_K_M --imatrix", "q4_k_m", true, 0},
	}
	mb := func(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	lqcRuns := map[string]measure{}
	for _, j := range jobs {
		fmt.Fprintf(os.Stderr, "lqc F16 -> %s, %d runs...\n", j.name, runs)
		args := []string{"convert", f16, "-o", filepath.Join(work, "lqc-"+j.quant+".gguf"), "--quant", j.quant, "--quiet", "--threads", t}
		if j.imatrix {
			args = append(args, "--imatrix", imat, "-o", filepath.Join(work, "lqc-"+j.quant+"-imat.gguf"))
		}
		if lqcRuns[j.name], err = median(lqc, runs, args...); err != nil {
			return err
		}
	}
	fmt.Printf("\nlqc convert, TinyLlama-1.1B shape (%d layers), %d threads, GOMAXPROCS %d, median of %d\n",
		layers, threads, runtime.GOMAXPROCS(0), runs)
	fmt.Printf("  %-46s %8s %10s %10s\n", "", "wall s", "input MB/s", "peak RSS")
	row := func(name string, in int64, m measure) {
		fmt.Printf("  %-46s %8.2f %10.1f %7.0f MB\n", name, m.wall.Seconds(), mb(in, m.wall), float64(m.maxRSS)/1e6)
	}
	row("lqc, HF bf16 safetensors -> Q4_0", input, hfRun)
	for _, j := range jobs {
		row("lqc, F16 GGUF -> "+j.name, size(f16), lqcRuns[j.name])
	}

	dir, err := llamacpp.Install()
	if err != nil {
		fmt.Printf("  llama.cpp quantizer unavailable (%v): no ratio\n", err)
		return nil
	}
	bins := llamacpp.Bins(dir)
	script := filepath.Join(testmodels.RepoRoot(), "testmodels", "llamacpp", "quantize.py")
	var ratios, same []string
	var mismatch error
	peers := map[string]measure{}
	for _, j := range jobs {
		if j.imatrix {
			continue // llama_model_quantize takes its imatrix as a C++ map: see the kernel table
		}
		peerOut := filepath.Join(work, "llama-"+j.quant+".gguf")
		peer, err := median("python3", runs, script, bins, f16, peerOut, fmt.Sprint(uint32(j.ftype)), t)
		if err != nil {
			return err
		}
		row("llama.cpp llama_model_quantize F16 -> "+j.name, size(f16), peer)
		peers[j.name] = peer
		lq := lqcRuns[j.name]
		ratios = append(ratios, fmt.Sprintf("%s %.2f (RSS %.2f)", j.name, mb(size(f16), lq.wall)/mb(size(f16), peer.wall),
			float64(lq.maxRSS)/float64(peer.maxRSS)))
		if j.name == "Q4_K_M" {
			imatRun := lqcRuns["Q4_K_M --imatrix"]
			ratios = append(ratios, fmt.Sprintf("Q4_K_M --imatrix against llama.cpp's Q4_K_M without %.2f", mb(size(f16), imatRun.wall)/mb(size(f16), peer.wall)))
		}
		n, diff, err := compareTensors(filepath.Join(work, "lqc-"+j.quant+".gguf"), peerOut)
		if err != nil {
			return err
		}
		same = append(same, fmt.Sprintf("%s %d of %d", j.name, n, n+len(diff)))
		if len(diff) > 0 {
			mismatch = fmt.Errorf("lqc's %s differs from llama.cpp's in %d tensors: %s", j.name, len(diff), strings.Join(diff, " "))
		}
	}
	fmt.Printf("\n  ratio lqc/llama.cpp, input MB/s (same F16 GGUF): %s\n", strings.Join(ratios, "; "))
	fmt.Printf("  ratio lqc HF bf16 -> Q4_0 / llama.cpp F16 -> Q4_0, input MB/s: %.2f (RSS %.2f)\n",
		mb(input, hfRun.wall)/mb(size(f16), peers["Q4_0"].wall), float64(hfRun.maxRSS)/float64(peers["Q4_0"].maxRSS))
	fmt.Printf("  tensors byte-identical to llama.cpp's: %s\n", strings.Join(same, ", "))
	if mismatch != nil {
		return mismatch
	}
	return benchKernels(dir, runs)
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

// or is v, or def where v is unset (0).
func or(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
