package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/lqc-dev/lqc/frontend"
	"github.com/lqc-dev/lqc/testmodels"
)

type stepLine struct {
	Step int     `json:"step"`
	Loss float64 `json:"loss"`
	Eval *struct {
		KLD float64 `json:"kld_mean"`
	} `json:"eval"`
}

func stepLosses(t *testing.T, stdout string) map[int]float64 {
	t.Helper()
	out := map[int]float64{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var l stepLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		if l.Eval == nil {
			out[l.Step] = l.Loss
		}
	}
	return out
}

func finetuneFixtures(t *testing.T) (base, teacher, ref string) {
	return testmodels.Shared(t, "golden", "real", "stories260K-Q4_0.gguf"),
		testmodels.Shared(t, "models", "stories260K", "hf"),
		testmodels.Shared(t, "models", "stories260K", "reference", "finetune")
}

// replayArgs is the command line replaying the reference's ten
// AdamW steps, without -o.
func replayArgs(base, teacher, ref string) []string {
	return []string{"finetune", base, "--teacher", teacher, "--data", filepath.Join(ref, "batch.json"),
		"--init-adapter", filepath.Join(ref, "adapter"), "--batch", "2", "--ctx", "64", "--steps", "10", "--lr", "1e-3",
		"--warmup", "0", "--schedule", "constant", "--clip", "0", "--weight-decay", "0", "--json"}
}

// TestFinetuneReplaysReference: the command line of the issue reproduces
// PyTorch's 10-step AdamW trajectory, and the adapters it writes (GGUF and
// PEFT) load over the base and run.
func TestFinetuneReplaysReference(t *testing.T) {
	base, teacher, ref := finetuneFixtures(t)
	var want struct {
		AdamW struct {
			Trajectory []float64 `json:"loss_distill_before_each_step_then_final"`
		} `json:"adamw"`
	}
	b, err := os.ReadFile(filepath.Join(ref, "losses.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, peft := filepath.Join(dir, "out.gguf"), filepath.Join(dir, "peft")
	code, stdout, stderr := lqc(append(replayArgs(base, teacher, ref), "-o", out, "--peft-out", peft)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	losses := stepLosses(t, stdout)
	if len(losses) != 10 {
		t.Fatalf("%d step lines, want 10", len(losses))
	}
	for step := 1; step <= 10; step++ {
		w := want.AdamW.Trajectory[step-1]
		if rel := math.Abs(losses[step]-w) / w; rel > 1e-3 {
			t.Errorf("step %d: loss %.6f, PyTorch %.6f", step, losses[step], w)
		}
	}
	// Gradient checkpointing recomputes the same values: the same losses
	// to the bit.
	code, stdout, stderr = lqc(append(replayArgs(base, teacher, ref), "-o", filepath.Join(dir, "ck.gguf"), "--gradient-checkpointing")...)
	if code != 0 {
		t.Fatalf("--gradient-checkpointing: exit %d: %s", code, stderr)
	}
	ck := stepLosses(t, stdout)
	if len(ck) != len(losses) {
		t.Fatalf("--gradient-checkpointing: %d step lines, want %d", len(ck), len(losses))
	}
	for step, l := range ck {
		if l != losses[step] {
			t.Errorf("--gradient-checkpointing: step %d: loss %v, without %v", step, l, losses[step])
		}
	}
	// Both outputs hold the same adapter; each runs over the base.
	for _, a := range []string{out, peft} {
		if code, _, stderr := lqc("run", base, "--lora", a, "-n", "8", "--temp", "0"); code != 0 {
			t.Errorf("run --lora %s: exit %d: %s", a, code, stderr)
		}
	}
	bm, err := frontend.LoadGGUF(base)
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	ga, err := frontend.LoadAdapter(out, bm)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	pa, err := frontend.LoadAdapter(peft, bm)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	if len(ga.LoRA) != 35 || len(pa.LoRA) != 35 {
		t.Fatalf("%d and %d adapted weights, want 35", len(ga.LoRA), len(pa.LoRA))
	}
	for name, l := range ga.LoRA {
		p := pa.LoRA[name]
		if p == nil || math.Abs(p.Scale-l.Scale) > 1e-12 {
			t.Fatalf("%s: scales %v and %v", name, l.Scale, p)
		}
		for _, pair := range [][2]func() ([]float32, error){{l.A.Float32s, p.A.Float32s}, {l.B.Float32s, p.B.Float32s}} {
			x, err1 := pair[0]()
			y, err2 := pair[1]()
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			for i := range x {
				if x[i] != y[i] {
					t.Fatalf("%s: GGUF and PEFT outputs differ at %d: %v vs %v", name, i, x[i], y[i])
				}
			}
		}
	}
}

// cancelAfter is a stdout that cancels the run once it has printed the
// JSON line of step n: an interrupt between two steps.
type cancelAfter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	var l stepLine
	if json.Unmarshal(bytes.TrimSpace(p), &l) == nil && l.Step == c.n && l.Eval == nil {
		c.cancel()
	}
	return len(p), nil
}

// TestFinetuneInterruptAndResume: an interrupt writes a checkpoint and
// exits 130; --resume then continues to exactly the losses of an
// uninterrupted run (cosine schedule, shuffled windows, gradient
// accumulation).
func TestFinetuneInterruptAndResume(t *testing.T) {
	base, teacher, _ := finetuneFixtures(t)
	data := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	args := func(out, ck string) []string {
		a := []string{"finetune", base, "--teacher", teacher, "--data", data, "--rank", "2", "--ctx", "32", "--batch", "2",
			"--grad-accum", "2", "--steps", "6", "--lr", "2e-3", "--warmup", "2", "--json", "-q", "-o", out}
		if ck != "" {
			a = append(a, "--checkpoint-dir", ck, "--checkpoint-every", "100")
		}
		return a
	}
	dir := t.TempDir()
	code, full, stderr := lqc(args(filepath.Join(dir, "full.gguf"), "")...)
	if code != 0 {
		t.Fatalf("uninterrupted run: exit %d: %s", code, stderr)
	}
	want := stepLosses(t, full)

	ck := filepath.Join(dir, "ck")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelAfter{n: 3, cancel: cancel}
	var e bytes.Buffer
	out := filepath.Join(dir, "resumed.gguf")
	if code := run(ctx, args(out, ck), w, &e); code != 130 {
		t.Fatalf("interrupted run: exit %d, want 130: %s", code, e.String())
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("an interrupted run wrote its adapter")
	}
	first := stepLosses(t, w.buf.String())
	code, rest, stderr := lqc(append(args(out, ck), "--resume")...)
	if code != 0 {
		t.Fatalf("resumed run: exit %d: %s", code, stderr)
	}
	for k, v := range stepLosses(t, rest) {
		first[k] = v
	}
	for step := 1; step <= 6; step++ {
		if first[step] != want[step] {
			t.Errorf("step %d: loss %.9g after interrupt and resume, %.9g uninterrupted", step, first[step], want[step])
		}
	}
	// Resuming with another rank is refused.
	code, _, stderr = lqc(append(args(filepath.Join(dir, "x.gguf"), ck), "--resume", "--rank", "4", "--steps", "8")...)
	if code != 1 || !strings.Contains(stderr, "rank") {
		t.Errorf("resume with another rank: exit %d: %s", code, stderr)
	}
}

// TestFinetuneTeacherSamples: --teacher-samples adds windows the teacher
// writes to the calibration text's, and training runs over both.
func TestFinetuneTeacherSamples(t *testing.T) {
	base, teacher, _ := finetuneFixtures(t)
	data := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	out := filepath.Join(t.TempDir(), "a.gguf")
	code, stdout, stderr := lqc("finetune", base, "--teacher", teacher, "--data", data, "--teacher-samples", "8", "--ctx", "32",
		"--steps", "3", "--json", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "8 windows the teacher wrote") {
		t.Errorf("stderr does not report the teacher's windows: %q", stderr)
	}
	if n := len(stepLosses(t, stdout)); n != 3 {
		t.Errorf("%d step lines, want 3", n)
	}
}

// TestFinetuneSFT trains an SFT adapter on alpaca and chat rows, on both
// architectures (gpt2's LayerNorm, GELU, biases and fused qkv included):
// the loss falls.
func TestFinetuneSFT(t *testing.T) {
	dir := t.TempDir()
	rows := filepath.Join(dir, "rows.jsonl")
	var sb strings.Builder
	for i := range 8 {
		if i%2 == 0 {
			sb.WriteString(`{"instruction": "Tell a story about a cat.", "input": "", "output": "Once upon a time there was a little cat. She liked to play in the sun."}` + "\n")
		} else {
			sb.WriteString(`{"messages": [{"role": "user", "content": "Who is Tom?"}, {"role": "assistant", "content": "Tom is a happy dog who loves to run."}]}` + "\n")
		}
	}
	if err := os.WriteFile(rows, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// Chat rows in Qwen2's own template (qwen2-tiny ships none).
	qwen2 := filepath.Join(dir, "qwen2.jinja")
	if err := os.WriteFile(qwen2, []byte("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, base string
		args       []string
	}{
		{"stories260K", testmodels.Shared(t, "golden", "real", "stories260K-Q4_0.gguf"), nil},
		{"gpt2", testmodels.Shared(t, "models", "gpt2-tiny", "hf"), nil},
		{"qwen2 chat template", testmodels.Shared(t, "models", "qwen2-tiny", "hf"), []string{"--chat-template", qwen2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := lqc(append([]string{"finetune", c.base, "--sft", rows, "--rank", "4", "--batch", "4", "--steps", "20",
				"--lr", "2e-2", "--ctx", "256", "--json", "-q", "-o", filepath.Join(dir, c.name+".gguf")}, c.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			l := stepLosses(t, stdout)
			if !(l[20] < 0.8*l[1]) {
				t.Errorf("SFT loss went from %.4f to %.4f", l[1], l[20])
			}
			t.Logf("loss %.4f → %.4f", l[1], l[20])
		})
	}
}

// TestFinetuneBadInput: one-line errors, exit 1, nothing written.
func TestFinetuneBadInput(t *testing.T) {
	base, teacher, _ := finetuneFixtures(t)
	data := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	gpt2 := testmodels.Shared(t, "models", "gpt2-tiny", "hf")
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"instruction": "a", "output": "b"}`+"\n"+`{"instruction": "a", "output": `+"\n"), 0o644)
	short := filepath.Join(dir, "short.txt")
	os.WriteFile(short, []byte("Once upon a time"), 0o644)
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"teacher of another model", []string{base, "--teacher", gpt2, "--data", data}, []string{"teacher", "gpt2"}},
		{"data shorter than a batch", []string{base, "--teacher", teacher, "--data", short, "--batch", "4"}, []string{short, "fewer than one batch"}},
		{"malformed JSONL line", []string{base, "--sft", bad}, []string{bad + ":2"}},
		{"diverging loss", []string{base, "--teacher", teacher, "--data", data, "--lr", "1e30", "--clip", "0", "--steps", "3", "--ctx", "32"}, []string{"diverged"}},
		{"rank beyond the matrix", []string{base, "--teacher", teacher, "--data", data, "--rank", "100"}, []string{"rank 100"}},
		// lqc plan's prediction refuses a run that cannot fit, before it starts.
		{"more memory than --mem", []string{base, "--teacher", teacher, "--data", data, "--mem", "1MiB"}, []string{"1.0 MiB is available", "lqc plan"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			failsCleanly(t, append([]string{"finetune"}, c.args...), 1, c.want...)
		})
	}
	t.Run("a --mem that is no size", func(t *testing.T) {
		failsCleanly(t, []string{"finetune", base, "--data", data, "--mem", "lots"}, 2, "--mem")
	})
	t.Run("teacher samples without a teacher", func(t *testing.T) {
		failsCleanly(t, []string{"finetune", base, "--data", data, "--teacher-samples", "4"}, 2, "--teacher-samples")
	})
	// An output folder that does not exist: refused before training.
	code, _, stderr := lqc("finetune", base, "--teacher", teacher, "--data", data, "--steps", "1", "--ctx", "32", "-q", "-o", filepath.Join(dir, "missing", "a.gguf"))
	if code != 1 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "missing") {
		t.Errorf("unwritable output: exit %d: %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Error("the missing folder was made")
	}
}

// TestFinetuneSweepReport: --sweep-rank trains one adapter per rank and
// writes the report: markdown, JSON, and the plots as PNG and SVG.
func TestFinetuneSweepReport(t *testing.T) {
	base, teacher, _ := finetuneFixtures(t)
	dir := filepath.Join(t.TempDir(), "sweep")
	code, _, stderr := lqc("finetune", base, "--teacher", teacher, "--data", testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt"),
		"--eval-data", testmodels.Shared(t, "golden", "real", "eval.txt"), "--sweep-rank", "1,2", "--steps", "4", "--eval-every", "2",
		"--ctx", "64", "--lr", "2e-3", "-q", "-o", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep struct {
		Runs []struct {
			Rank      int     `json:"rank"`
			Params    int     `json:"trainable_params"`
			Recovered float64 `json:"recovered"`
			BaseKLD   float64 `json:"base_kld_mean"`
			KLD       float64 `json:"kld_mean"`
			Train     []any   `json:"train_loss"`
			Eval      []any   `json:"eval"`
		} `json:"runs"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 || rep.Runs[1].Params != 2*rep.Runs[0].Params {
		t.Fatalf("runs %+v", rep.Runs)
	}
	for _, r := range rep.Runs {
		if len(r.Train) != 4 || len(r.Eval) != 2 || !(r.KLD < r.BaseKLD) || math.Abs(r.Recovered-(r.BaseKLD-r.KLD)/r.BaseKLD) > 1e-9 {
			t.Errorf("rank %d: %+v", r.Rank, r)
		}
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("rank-%d.gguf", r.Rank))); err != nil {
			t.Error(err)
		}
	}
	for _, f := range []string{"report.md", "loss.svg", "recovered.svg"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || len(b) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, f := range []string{"loss.png", "recovered.png"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG: %v", f, err)
		}
	}
}

// TestFinetuneLoftQ: --init loftq quantizes the float model into
// --base-out and trains the adapter on that file, distilling the float
// model; with one iteration the base is plain --quant and the run is the
// SVD-initialized one over it, loss for loss. More iterations start
// closer to the teacher. The adapter runs over the new base.
func TestFinetuneLoftQ(t *testing.T) {
	_, teacher, _ := finetuneFixtures(t)
	data := testmodels.Shared(t, "golden", "quant", "imatrix-calib.txt")
	dir := t.TempDir()
	common := []string{"--data", data, "--steps", "3", "--batch", "2", "--ctx", "32", "--rank", "4", "--shuffle=false", "--json", "-q"}
	loftq := func(iter string) (base, adapter string, losses map[int]float64) {
		base, adapter = filepath.Join(dir, "base-"+iter+".gguf"), filepath.Join(dir, "a-"+iter+".gguf")
		code, stdout, stderr := lqc(append([]string{"finetune", teacher, "--init", "loftq", "--quant", "q4_0", "--loftq-iter", iter,
			"--base-out", base, "-o", adapter}, common...)...)
		if code != 0 {
			t.Fatalf("--loftq-iter %s: exit %d: %s", iter, code, stderr)
		}
		return base, adapter, stepLosses(t, stdout)
	}
	base1, _, one := loftq("1")
	code, stdout, stderr := lqc(append([]string{"finetune", base1, "--teacher", teacher, "--init", "svd", "-o", filepath.Join(dir, "svd.gguf")}, common...)...)
	if code != 0 {
		t.Fatalf("svd over the one-iteration base: exit %d: %s", code, stderr)
	}
	if svd := stepLosses(t, stdout); len(one) != 3 || fmt.Sprint(one) != fmt.Sprint(svd) {
		t.Errorf("losses with one LoftQ iteration %v, with the SVD init over the same base %v", one, svd)
	}
	plain := filepath.Join(dir, "plain.gguf")
	if code, _, stderr := lqc("convert", teacher, "--quant", "q4_0", "-o", plain, "-q"); code != 0 {
		t.Fatalf("convert: %s", stderr)
	}
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(base1)
	if !bytes.Equal(a, b) {
		t.Error("the one-iteration LoftQ base differs from lqc convert --quant q4_0")
	}
	base5, adapter5, five := loftq("5")
	if five[1] >= one[1] {
		t.Errorf("first loss after five LoftQ iterations %.6g, not below one iteration's %.6g", five[1], one[1])
	}
	if code, _, stderr := lqc("run", base5, "--lora", adapter5, "-p", "Once", "-n", "8", "--temp", "0"); code != 0 {
		t.Errorf("the adapter over the LoftQ base: exit %d: %s", code, stderr)
	}
	for _, args := range [][]string{
		{teacher, "--init", "loftq", "--data", data, "-o", filepath.Join(dir, "x.gguf")},
		{teacher, "--quant", "q4_0", "--data", data, "-o", filepath.Join(dir, "x.gguf")},
	} {
		if code, _, _ := lqc(append([]string{"finetune"}, args...)...); code != 2 {
			t.Errorf("finetune %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}
