package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/testmodels"
)

// serveRequests is the concurrent load of the serving benchmark: eight
// requests, as the target states it.
const serveRequests = 8

// benchServe measures lqc serve over the loopback interface on
// stories260K and the TinyLlama shape at Q4_0: the aggregate tokens/s of
// eight concurrent requests spread over four adapters, against the same
// eight on one adapter and against the eight served one after another;
// and the time to first token of a 1-token prompt against the same
// forward pass in this process (lqc run's path, warmed up).
func benchServe(work string, layers, runs, threads int) error {
	dir, lqc, err := modelAndLQC(work, layers)
	if err != nil {
		return err
	}
	tiny, err := quantized(dir, lqc, work, layers, "q4_0")
	if err != nil {
		return err
	}
	tinyAdapters, err := benchAdapters(work, dir, fmt.Sprintf("lora-%dl", layers))
	if err != nil {
		return err
	}
	shared := testmodels.SharedDir()
	storiesHF := filepath.Join(shared, "models/stories260K/hf")
	storiesAdapters, err := benchAdapters(work, storiesHF, "lora-stories260K")
	if err != nil {
		return err
	}
	cases := []struct {
		name, file string
		adapters   []string
		tokens     int
	}{
		{"stories260K Q4_0", filepath.Join(shared, "golden/real/stories260K-Q4_0.gguf"), storiesAdapters, 128},
		{fmt.Sprintf("TinyLlama-1.1B shape (%d layers) Q4_0", layers), tiny, tinyAdapters, benchTG},
	}
	fmt.Printf("\nlqc serve, %d concurrent requests of n tokens each (temperature 0, ignore_eos), %d threads, median of %d\n", serveRequests, threads, runs)
	fmt.Println("| model | n | 4 adapters tok/s | 1 adapter tok/s | one after another tok/s | 4 adapters / 1 adapter | 4 adapters / one after another | TTFT serve | TTFT in process | overhead |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, c := range cases {
		row, err := serveCase(lqc, c.file, c.adapters, c.tokens, runs, threads)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		fmt.Printf("| %s | %d | %.1f | %.1f | %.1f | %.2f× | %.2f× | %.2f ms | %.2f ms | %+.2f ms |\n", c.name, c.tokens,
			row.spread, row.one, row.sequential, row.spread/row.one, row.spread/row.sequential,
			ms(row.ttftServe), ms(row.ttftLocal), ms(row.ttftServe-row.ttftLocal))
	}
	fmt.Println("targets: 4 adapters / 1 adapter ≥ 0.8×, 4 adapters / one after another ≥ 3×, TTFT overhead ≤ 5 ms")
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// benchAdapters writes four rank-16 PEFT adapters on q, k, v and o of the
// Hugging Face model in dir (once) and returns their folders.
func benchAdapters(work, dir, prefix string) ([]string, error) {
	var out []string
	for i := range 4 {
		ad := filepath.Join(work, fmt.Sprintf("%s-%d", prefix, i))
		if size(filepath.Join(ad, "adapter_model.safetensors")) == 0 {
			a := testmodels.PEFTAdapter{Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}, R: 16, Alpha: 32, Seed: uint64(i + 1)}
			if err := testmodels.WritePEFT(ad, dir, a); err != nil {
				return nil, err
			}
		}
		out = append(out, ad)
	}
	return out, nil
}

type serveRow struct {
	spread, one, sequential float64 // tokens/s
	ttftServe, ttftLocal    time.Duration
}

func serveCase(lqc, file string, adapters []string, tokens, runs, threads int) (serveRow, error) {
	var row serveRow
	args := []string{"serve", file, "--port", "0", "--parallel", fmt.Sprint(serveRequests), "--ctx-size", fmt.Sprint(tokens + 128), "-t", fmt.Sprint(threads)}
	var names []string
	for i, a := range adapters {
		names = append(names, fmt.Sprintf("a%d", i))
		args = append(args, "--lora", fmt.Sprintf("a%d=%s", i, a))
	}
	m, rm, closeModel, err := loadRuntime(file, threads)
	if err != nil {
		return row, err
	}
	defer closeModel()
	url, stop, err := startServer(lqc, args...)
	if err != nil {
		return row, err
	}
	defer stop()

	spreadModels := make([]string, serveRequests)
	oneModels := make([]string, serveRequests)
	for i := range spreadModels {
		spreadModels[i], oneModels[i] = names[i%len(names)], names[0]
	}
	var spread, one, seq []float64
	for r := 0; r <= runs; r++ { // run 0 warms up
		s, err := serveLoad(url, spreadModels, tokens, true)
		if err != nil {
			return row, err
		}
		o, err := serveLoad(url, oneModels, tokens, true)
		if err != nil {
			return row, err
		}
		q, err := serveLoad(url, spreadModels, tokens, false)
		if err != nil {
			return row, err
		}
		if r > 0 {
			spread, one, seq = append(spread, s), append(one, o), append(seq, q)
		}
		fmt.Fprint(os.Stderr, ".")
	}
	row.spread, row.one, row.sequential = medianF(spread), medianF(one), medianF(seq)

	// Time to first token of a 1-token prompt (BOS), through the server
	// and through the runtime in this process.
	const ttftRuns = 21
	var served []float64
	for range ttftRuns {
		d, err := firstToken(url, m.Vocab.BOS)
		if err != nil {
			return row, err
		}
		served = append(served, float64(d))
	}
	row.ttftServe = time.Duration(medianF(served))
	var local []float64
	for i := 0; i <= ttftRuns; i++ {
		t0 := time.Now()
		s, err := rm.NewSession(tokens + 128)
		if err != nil {
			return row, err
		}
		logits, err := s.Forward([]int32{m.Vocab.BOS}, false)
		if err != nil {
			return row, err
		}
		lqrt.NewSampler(lqrt.SamplerOptions{}).Sample(logits)
		if i > 0 {
			local = append(local, float64(time.Since(t0)))
		}
	}
	row.ttftLocal = time.Duration(medianF(local))
	return row, nil
}

// startServer starts lqc serve and waits until /health says it is ready.
func startServer(lqc string, args ...string) (url string, stop func(), err error) {
	cmd := exec.Command(lqc, args...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	lines := bufio.NewScanner(errPipe)
	var log strings.Builder
	for lines.Scan() {
		log.WriteString(lines.Text() + "\n")
		if _, addr, ok := strings.Cut(lines.Text(), "listening on "); ok {
			url, _, _ = strings.Cut(addr, " ")
			break
		}
	}
	if url == "" {
		stop()
		return "", nil, fmt.Errorf("lqc %s did not start:\n%s", strings.Join(args, " "), log.String())
	}
	go io.Copy(io.Discard, errPipe) // one log line per request
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url, stop, nil
			}
		}
	}
	stop()
	return "", nil, errors.New("lqc serve did not become ready in 5 minutes")
}

// serveLoad sends one completion request per model name, all at once or
// one after another, and returns the generated tokens per second of
// wall time.
func serveLoad(url string, models []string, tokens int, concurrent bool) (float64, error) {
	generated := make([]int, len(models))
	errs := make([]error, len(models))
	one := func(i int) {
		body, _ := json.Marshal(map[string]any{"model": models[i], "prompt": "Once upon a time", "max_tokens": tokens,
			"temperature": 0, "ignore_eos": true})
		resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			errs[i] = err
			return
		}
		defer resp.Body.Close()
		var out struct {
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil {
			errs[i] = fmt.Errorf("POST /v1/completions: %s %s", resp.Status, b)
			return
		}
		generated[i] = out.Usage.CompletionTokens
	}
	t0 := time.Now()
	if concurrent {
		var wg sync.WaitGroup
		for i := range models {
			wg.Go(func() { one(i) })
		}
		wg.Wait()
	} else {
		for i := range models {
			one(i)
		}
	}
	wall := time.Since(t0)
	total := 0
	for i, n := range generated {
		if errs[i] != nil {
			return 0, errs[i]
		}
		if n != tokens {
			return 0, fmt.Errorf("request %d generated %d tokens, not %d", i, n, tokens)
		}
		total += n
	}
	return float64(total) / wall.Seconds(), nil
}

// firstToken is the time from sending a streamed 1-token completion to
// reading its first token's event.
func firstToken(url string, bos int32) (time.Duration, error) {
	body := fmt.Appendf(nil, `{"prompt": [%d], "max_tokens": 1, "temperature": 0, "stream": true}`, bos)
	t0 := time.Now()
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("POST /v1/completions: %s %s", resp.Status, b)
	}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if strings.HasPrefix(lines.Text(), "data: {") {
			d := time.Since(t0)
			io.Copy(io.Discard, resp.Body)
			return d, nil
		}
	}
	return 0, errors.New("the stream ended before its first token")
}
