package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lqc-dev/lqc/testmodels"
)

// testServer is an lqc serve running in-process on a free port.
type testServer struct {
	url string
	mu  sync.Mutex
	log bytes.Buffer
}

func (s *testServer) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// startServe runs lqc serve with args until the test ends.
func startServe(t *testing.T, args ...string) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--port", "0", "-t", "2"}, args...), io.Discard, pw)
		pw.Close()
	}()
	s := &testServer{}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if _, a, ok := strings.Cut(line, "listening on "); ok {
				addr <- strings.Fields(a)[0]
			}
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 && code != 130 {
			t.Errorf("lqc serve exited %d:\n%s", code, s.logText())
		}
	})
	select {
	case s.url = <-addr:
	case code := <-done:
		t.Fatalf("lqc serve exited %d before listening:\n%s", code, s.logText())
	case <-time.After(30 * time.Second):
		t.Fatal("lqc serve did not listen within 30 s")
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		resp, err := http.Get(s.url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("/health answered %d while loading, want 503", resp.StatusCode)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lqc serve not ready within 60 s:\n%s", s.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serveFixture is stories260K's Hugging Face folder with n PEFT adapters
// (q, v, down projections; rank 4), named a0, a1, ….
func serveFixture(t *testing.T, n int) (model string, adapters []string) {
	t.Helper()
	model = testmodels.Shared(t, "models", "stories260K", "hf")
	work := t.TempDir()
	for i := range n {
		dir := filepath.Join(work, fmt.Sprintf("a%d", i))
		a := testmodels.PEFTAdapter{Targets: []string{"q_proj", "v_proj", "down_proj"}, R: 4, Alpha: 16, Seed: uint64(100 + i)}
		if err := testmodels.WritePEFT(dir, model, a); err != nil {
			t.Fatal(err)
		}
		adapters = append(adapters, dir)
	}
	return model, adapters
}

// greedy is what lqc run prints for prompt at temperature 0.
func greedy(t *testing.T, model, adapter, prompt string, n int) string {
	t.Helper()
	args := []string{"run", model, "-p", prompt, "-n", fmt.Sprint(n), "--temp", "0", "-t", "2"}
	if adapter != "" {
		args = append(args, "--lora", adapter)
	}
	code, out, errOut := lqc(args...)
	if code != 0 {
		t.Fatalf("lqc %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// TestServeOpenAIClient drives the server with OpenAI's own npm client:
// models, chat, completions with and without an adapter, streaming with
// usage, stop strings, and its error types.
func TestServeOpenAIClient(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil && !testmodels.RequireFixtures() {
		t.Skip("node not found")
	}
	dir := testmodels.RequireNpm(t, "openai-7.55.0", "openai@7.55.0")
	model, adapters := serveFixture(t, 2)
	s := startServe(t, model, "--lora", "story="+adapters[0], "--lora", adapters[1], "--api-key", "sekret")
	const prompt = "Once upon a time"
	cfg, _ := json.Marshal(map[string]string{"baseURL": s.url + "/v1", "apiKey": "sekret", "base": "hf", "adapter": "story",
		"prompt": prompt, "stop": "Lily"})
	script, err := os.ReadFile("testdata/openai-client.mjs")
	if err != nil {
		t.Fatal(err)
	}
	// A module read from stdin resolves "openai" from the working folder.
	cmd := exec.Command("node", "--input-type=module")
	cmd.Dir, cmd.Stdin = dir, bytes.NewReader(script)
	cmd.Env = append(os.Environ(), "LQC_CLIENT_CONFIG="+string(cfg))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openai client: %v\n%s\nserver log:\n%s", err, out, s.logText())
	}
	var got struct {
		Models []string
		Chat   struct {
			Content, Role, Finish string
			Usage                 struct{ Prompt_tokens, Completion_tokens, Total_tokens int }
			Logprobs, Top         int
		}
		Base    struct{ Text, Finish string } `json:"completion:hf"`
		Adapter struct{ Text, Finish string } `json:"completion:story"`
		Stream  struct {
			Text, Finish string
			Chunks       int
			Usage        struct{ Completion_tokens int }
		}
		CompletionStreamStop             string
		UnknownModel, TwoChoices, BadKey struct {
			Status int
			Type   string
		}
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("openai client: %s", out)
	if want := []string{"hf", "story", "a1"}; !slices.Equal(got.Models, want) {
		t.Errorf("models %v, want %v", got.Models, want)
	}
	c := got.Chat
	if c.Role != "assistant" || c.Content == "" || c.Usage.Completion_tokens == 0 || c.Usage.Total_tokens != c.Usage.Prompt_tokens+c.Usage.Completion_tokens ||
		c.Logprobs != c.Usage.Completion_tokens || c.Top != 3 {
		t.Errorf("chat: %+v", c)
	}
	if want := greedy(t, model, "", prompt, 24); got.Base.Text != want {
		t.Errorf("completion %q, lqc run gives %q", got.Base.Text, want)
	}
	wantAdapter := greedy(t, model, adapters[0], prompt, 24)
	if got.Adapter.Text != wantAdapter || wantAdapter == got.Base.Text {
		t.Errorf("completion with the adapter %q, lqc run --lora gives %q (base %q)", got.Adapter.Text, wantAdapter, got.Base.Text)
	}
	if st := got.Stream; st.Finish == "" || st.Chunks < 3 || st.Usage.Completion_tokens == 0 || st.Text == "" {
		t.Errorf("stream: %+v", st)
	}
	full := greedy(t, model, "", prompt, 64)
	if i := strings.Index(full, "Lily"); i < 0 || got.CompletionStreamStop != full[:i] {
		t.Errorf("stream with stop \"Lily\": %q (full text %q)", got.CompletionStreamStop, full)
	}
	for name, e := range map[string]struct {
		got struct {
			Status int
			Type   string
		}
		status int
	}{
		"unknown model": {got.UnknownModel, 404}, "n=2": {got.TwoChoices, 400}, "bad key": {got.BadKey, 401},
	} {
		if e.got.Status != e.status {
			t.Errorf("%s: status %d, want %d", name, e.got.Status, e.status)
		}
	}
	if !strings.Contains(s.logText(), "POST /v1/completions 200") {
		t.Errorf("no request log line:\n%s", s.logText())
	}
}

// TestServeLoad: 4 adapters and the base, 32 concurrent streaming
// clients, 200 requests in all. No request is lost or mixed up: each
// streamed text equals what lqc run gives for the same prompt and
// adapter at temperature 0.
func TestServeLoad(t *testing.T) {
	model, adapters := serveFixture(t, 4)
	args := []string{model, "--parallel", "8", "--queue", "256"}
	models := []string{""} // the base
	for i, a := range adapters {
		name := fmt.Sprintf("a%d", i)
		args = append(args, "--lora", name+"="+a)
		models = append(models, name)
	}
	s := startServe(t, args...)
	prompts := []string{"Once upon a time", "The little dog", "Tom and Sue went", "One day, a bird", "She was happy"}
	const tokens = 20
	want := map[[2]string]string{}
	for _, p := range prompts {
		for i, m := range models {
			ad := ""
			if i > 0 {
				ad = adapters[i-1]
			}
			want[[2]string{m, p}] = greedy(t, model, ad, p, tokens)
		}
	}
	const requests, clients = 200, 32
	type result struct {
		model, prompt, text string
		ttft                time.Duration
		tokens              int
		err                 error
	}
	jobs := make(chan int)
	results := make(chan result, requests)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				m, p := models[j%len(models)], prompts[(j/len(models))%len(prompts)]
				r := result{model: m, prompt: p}
				r.text, r.ttft, r.tokens, r.err = streamCompletion(s.url, m, p, tokens)
				results <- r
			}
		}()
	}
	for j := range requests {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	close(results)
	var ttfts []time.Duration
	total := 0
	for r := range results {
		if r.err != nil {
			t.Errorf("%s %q: %v", r.model, r.prompt, r.err)
			continue
		}
		if w := want[[2]string{r.model, r.prompt}]; r.text != w {
			t.Errorf("model %q prompt %q: streamed %q, lqc run gives %q", r.model, r.prompt, r.text, w)
		}
		ttfts = append(ttfts, r.ttft)
		total += r.tokens
	}
	if len(ttfts) != requests {
		t.Fatalf("%d of %d requests answered", len(ttfts), requests)
	}
	slices.Sort(ttfts)
	t.Logf("%d requests, %d clients, 5 models: time to first token p50 %v, p99 %v; %d tokens in %v, %.0f tokens/s",
		requests, clients, ttfts[len(ttfts)/2].Round(time.Microsecond), ttfts[len(ttfts)*99/100].Round(time.Microsecond),
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds())
}

// streamCompletion streams one completion and returns its text, the time
// to its first token and the tokens generated.
func streamCompletion(url, model, prompt string, maxTokens int) (text string, ttft time.Duration, tokens int, err error) {
	body, _ := json.Marshal(map[string]any{"model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]bool{"include_usage": true}})
	t0 := time.Now()
	resp, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var sb strings.Builder
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Choices []struct{ Text string }
			Usage   *struct{ Completion_tokens int }
			Error   *struct{ Message string }
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return "", 0, 0, err
		}
		if chunk.Error != nil {
			return "", 0, 0, fmt.Errorf("%s", chunk.Error.Message)
		}
		for _, c := range chunk.Choices {
			if c.Text != "" && ttft == 0 {
				ttft = time.Since(t0)
			}
			sb.WriteString(c.Text)
		}
		if chunk.Usage != nil {
			tokens = chunk.Usage.Completion_tokens
		}
	}
	if !done {
		return "", 0, 0, fmt.Errorf("the stream ended without [DONE]: %v", sc.Err())
	}
	return sb.String(), ttft, tokens, nil
}

// TestServeErrors: the 4xx answers, in OpenAI's error shape, and a client
// that disconnects frees its session.
func TestServeErrors(t *testing.T) {
	model, adapters := serveFixture(t, 1)
	s := startServe(t, model, "--lora", "a="+adapters[0], "--parallel", "1", "--queue", "1", "--ctx-size", "64")
	post := func(path, body string) (int, string, string) {
		resp, err := http.Post(s.url+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Type, Message string }
		}
		json.Unmarshal(b, &e)
		return resp.StatusCode, e.Error.Type, string(b)
	}
	long := strings.Repeat("and then the dog ran ", 40)
	for _, c := range []struct {
		name, path, body string
		status           int
		contains         string
	}{
		{"malformed JSON", "/v1/chat/completions", `{"messages": [`, 400, "malformed JSON"},
		{"prompt longer than the context", "/v1/completions", `{"prompt": "` + long + `"}`, 400, "context holds 64"},
		{"unknown model", "/v1/completions", `{"model": "b", "prompt": "x"}`, 404, "does not exist"},
		{"unknown lora id", "/v1/completions", `{"prompt": "x", "lora": [{"id": 3, "scale": 1}]}`, 400, "lora id 3"},
		{"no messages", "/v1/chat/completions", `{"messages": []}`, 400, "messages is empty"},
		{"image content", "/v1/chat/completions", `{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, 400, "text only"},
		{"negative max_tokens", "/v1/completions", `{"prompt": "x", "max_tokens": -1}`, 400, "negative"},
		{"temperature out of range", "/v1/completions", `{"prompt": "x", "temperature": 7}`, 400, "temperature"},
		{"token outside the vocabulary", "/v1/completions", `{"prompt": [1, 99999]}`, 400, "outside the vocabulary"},
		{"no such route", "/v1/embeddings", `{}`, 404, "no route"},
	} {
		code, typ, body := post(c.path, c.body)
		if code != c.status || typ == "" || !strings.Contains(body, c.contains) {
			t.Errorf("%s: %d %s, want %d and an error saying %q", c.name, code, body, c.status, c.contains)
		}
	}

	// One session and one queue place: of six simultaneous long requests,
	// some are refused with 429.
	var wg sync.WaitGroup
	codes := make(chan int, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, _ := post("/v1/completions", `{"prompt": "Once", "max_tokens": 60, "temperature": 0}`)
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for c := range codes {
		n[c]++
	}
	if n[200] < 1 || n[429] < 1 || n[200]+n[429] != 6 {
		t.Errorf("six requests on one session and one queue place: %v, want some 200 and some 429", n)
	}

	// A client that leaves mid-stream frees the only session.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/completions",
		strings.NewReader(`{"prompt": "Once", "max_tokens": 60, "stream": true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(resp.Body).ReadString('\n')
	cancel()
	resp.Body.Close()
	done := make(chan string, 1)
	go func() {
		text, _, _, err := streamCompletion(s.url, "a", "Once upon a time", 8)
		if err != nil {
			text = err.Error()
		}
		done <- text
	}()
	select {
	case got := <-done:
		if want := greedy(t, model, adapters[0], "Once upon a time", 8); got != want {
			t.Errorf("after a disconnect: %q, want %q", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the session of a disconnected client was not freed")
	}

	// tokenize and detokenize agree; metrics count what happened.
	_, _, tok := post("/tokenize", `{"content": "Once upon a time"}`)
	var ids struct{ Tokens []int }
	json.Unmarshal([]byte(tok), &ids)
	b, _ := json.Marshal(map[string]any{"tokens": ids.Tokens})
	_, _, detok := post("/detokenize", string(b))
	if len(ids.Tokens) == 0 || !strings.Contains(detok, `"Once upon a time"`) && !strings.Contains(detok, `" Once upon a time"`) {
		t.Errorf("tokenize %s, detokenize %s", tok, detok)
	}
	resp, err = http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`lqc_requests_total{code="429",endpoint="/v1/completions",model="hf"}`, `lqc_generated_tokens_total{model="a"}`,
		"lqc_time_to_first_token_seconds_bucket", "lqc_batch_size_count", "lqc_queue_depth"} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestRunChat: lqc run --chat keeps the conversation's cache between
// turns; its second answer equals the server's answer to the whole
// conversation evaluated afresh.
func TestRunChat(t *testing.T) {
	model := testmodels.Shared(t, "models", "stories260K", "hf")
	stdin = strings.NewReader("Hi there\n\nWhat is your name?\n")
	defer func() { stdin = os.Stdin }()
	code, out, errOut := lqc("run", model, "--chat", "--system", "Be nice", "--temp", "0", "-n", "12", "-t", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	replies := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(replies) < 2 {
		t.Fatalf("want two replies, got %q", out)
	}
	first, second := replies[0], replies[len(replies)-1]
	if len(replies) > 2 { // a reply may hold newlines itself
		first = strings.Join(replies[:len(replies)-1], "\n")
	}
	s := startServe(t, model)
	body, _ := json.Marshal(map[string]any{"temperature": 0, "max_tokens": 12, "messages": []map[string]string{
		{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi there"},
		{"role": "assistant", "content": strings.TrimSpace(first)}, {"role": "user", "content": "What is your name?"}}})
	resp, err := http.Post(s.url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("%v %+v", err, r)
	}
	if got := strings.TrimSpace(r.Choices[0].Message.Content); got != strings.TrimSpace(second) {
		t.Errorf("second turn: lqc run --chat %q, the server on the whole conversation %q", second, got)
	}
}
