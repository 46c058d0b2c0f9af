package serve

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/chat"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// NamedAdapter is an adapter the server offers, under the model id Name.
type NamedAdapter struct {
	Name    string
	Adapter *lqrt.Adapter
	Scale   float64 // the scale a request naming it gets
}

// Backend is what a ready server answers with.
type Backend struct {
	Engine    *Engine
	Tokenizer *tokenizer.Tokenizer
	Template  *chat.Template
	BaseID    string         // the base model's id
	Adapters  []NamedAdapter // in --lora order: llama-server's "lora" ids index it
}

// Server is the HTTP layer over an Engine. It answers /health with 503
// until Ready is called, so that it can listen while the model loads.
type Server struct {
	APIKey  string
	MaxBody int64     // request body limit in bytes
	Log     io.Writer // one line per request; nil for none
	Metrics *Metrics

	backend atomic.Pointer[Backend]
	created int64
	logMu   sync.Mutex
}

// NewServer returns a server that is loading.
func NewServer(apiKey string, log io.Writer, metrics *Metrics) *Server {
	return &Server{APIKey: apiKey, MaxBody: 8 << 20, Log: log, Metrics: metrics, created: time.Now().Unix()}
}

// Ready starts answering requests with b.
func (s *Server) Ready(b *Backend) { s.backend.Store(b) }

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.Handle("GET /metrics", s.Metrics.Handler())
	mux.HandleFunc("GET /v1/models", s.ready(s.models))
	mux.HandleFunc("POST /v1/chat/completions", s.ready(s.chatCompletions))
	mux.HandleFunc("POST /v1/completions", s.ready(s.completions))
	mux.HandleFunc("POST /tokenize", s.ready(s.tokenize))
	mux.HandleFunc("POST /detokenize", s.ready(s.detokenize))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found_error", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return s.logged(s.authorized(mux))
}

// reqLog is what one request's log line says.
type reqLog struct {
	model            string
	prompt, complete int
	ttft             time.Duration
}

type logKey struct{}

func requestLog(r *http.Request) *reqLog {
	l, _ := r.Context().Value(logKey{}).(*reqLog)
	if l == nil {
		l = &reqLog{}
	}
	return l
}

// statusWriter remembers the status code for the log line and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		l := &reqLog{}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), logKey{}, l)))
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			s.Metrics.requests.WithLabelValues(r.URL.Path, l.model, strconv.Itoa(sw.code)).Inc()
		}
		if s.Log == nil || r.URL.Path == "/health" || r.URL.Path == "/metrics" {
			return
		}
		line := fmt.Sprintf("%s %s %s %d %.1fms", start.UTC().Format(time.RFC3339), r.Method, r.URL.Path, sw.code,
			float64(time.Since(start).Microseconds())/1000)
		if l.model != "" {
			line += fmt.Sprintf(" model=%s prompt=%d completion=%d ttft=%.1fms", l.model, l.prompt, l.complete,
				float64(l.ttft.Microseconds())/1000)
		}
		s.logMu.Lock()
		fmt.Fprintln(s.Log, line)
		s.logMu.Unlock()
	})
}

func (s *Server) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.APIKey != "" && r.URL.Path != "/health" && r.URL.Path != "/metrics" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.APIKey)) != 1 {
				writeErrorCode(w, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key", "invalid or missing API key (Authorization: Bearer KEY)")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) ready(h func(http.ResponseWriter, *http.Request, *Backend)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b := s.backend.Load()
		if b == nil {
			writeError(w, http.StatusServiceUnavailable, "unavailable_error", "the model is loading")
			return
		}
		h(w, r, b)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.backend.Load() == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable_error", "the model is loading")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request, b *Backend) {
	list := modelList{Object: "list", Data: []modelInfo{{ID: b.BaseID, Object: "model", Created: s.created, OwnedBy: "lqc"}}}
	for _, a := range b.Adapters {
		list.Data = append(list.Data, modelInfo{ID: a.Name, Object: "model", Created: s.created, OwnedBy: "lqc", Parent: b.BaseID})
	}
	writeJSON(w, http.StatusOK, list)
}

// httpError is an error with the status and OpenAI error type it is
// answered with.
type httpError struct {
	status  int
	typ     string
	code    any
	message string
}

func (e *httpError) Error() string { return e.message }

func badRequest(format string, args ...any) *httpError {
	return &httpError{http.StatusBadRequest, "invalid_request_error", nil, fmt.Sprintf(format, args...)}
}

// decode reads a JSON body within the size limit.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *httpError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{http.StatusRequestEntityTooLarge, "invalid_request_error", nil,
				fmt.Sprintf("the request body is larger than %d bytes", mbe.Limit)}
		}
		return badRequest("reading the request body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	return nil
}

// generation is a request resolved against the backend.
type generation struct {
	req   Request
	stops []string
	model string
}

// resolve checks the shared fields and chooses the adapters.
func (b *Backend) resolve(sp *sampling, maxTokens *int, defaultMax int) (*generation, *httpError) {
	g := &generation{model: sp.Model}
	if g.model == "" {
		g.model = b.BaseID
	}
	switch {
	case sp.N != nil && *sp.N != 1:
		return nil, badRequest("n=%d: lqc returns one choice per request", *sp.N)
	case maxTokens != nil && *maxTokens < 0:
		return nil, badRequest("max_tokens %d is negative", *maxTokens)
	case sp.Temperature != nil && (*sp.Temperature < 0 || *sp.Temperature > 2):
		return nil, badRequest("temperature %g is outside [0, 2]", *sp.Temperature)
	case sp.TopP != nil && (*sp.TopP <= 0 || *sp.TopP > 1):
		return nil, badRequest("top_p %g is outside (0, 1]", *sp.TopP)
	case sp.TopK != nil && *sp.TopK < 0:
		return nil, badRequest("top_k %d is negative", *sp.TopK)
	case len(sp.Stop) > 4:
		return nil, badRequest("%d stop sequences: at most 4", len(sp.Stop))
	}
	if g.model != b.BaseID {
		found := false
		for _, a := range b.Adapters {
			if a.Name == g.model {
				g.req.Adapters = append(g.req.Adapters, lqrt.Applied{Adapter: a.Adapter, Scale: a.Scale})
				found = true
			}
		}
		if !found {
			return nil, &httpError{http.StatusNotFound, "invalid_request_error", "model_not_found",
				fmt.Sprintf("the model %q does not exist; GET /v1/models lists %s and its adapters", g.model, b.BaseID)}
		}
	}
	for _, l := range sp.Lora {
		if l.ID < 0 || l.ID >= len(b.Adapters) {
			return nil, badRequest("lora id %d: the server has %d adapters (ids 0 to %d)", l.ID, len(b.Adapters), len(b.Adapters)-1)
		}
		g.req.Adapters = append(g.req.Adapters, lqrt.Applied{Adapter: b.Adapters[l.ID].Adapter, Scale: l.Scale})
	}
	g.req.Model, g.req.IgnoreEOS = g.model, sp.IgnoreEOS
	g.req.MaxTokens = defaultMax
	if maxTokens != nil {
		g.req.MaxTokens = *maxTokens
	}
	// Unset sampling fields take lqc run's (and llama-server's) defaults.
	g.req.Sampling = lqrt.SamplerOptions{Temp: 0.8, TopK: 40, TopP: 0.95}
	if sp.Temperature != nil {
		g.req.Sampling.Temp = *sp.Temperature
	}
	if sp.TopP != nil {
		g.req.Sampling.TopP = *sp.TopP
	}
	if sp.TopK != nil {
		g.req.Sampling.TopK = *sp.TopK
	}
	if sp.Seed != nil {
		g.req.Sampling.Seed = uint64(*sp.Seed)
	}
	for _, st := range sp.Stop {
		if st != "" {
			g.stops = append(g.stops, st)
		}
	}
	return g, nil
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request, b *Backend) {
	var req chatRequest
	if e := s.decode(w, r, &req); e != nil {
		writeHTTPError(w, e)
		return
	}
	if len(req.Messages) == 0 {
		writeHTTPError(w, badRequest("messages is empty"))
		return
	}
	max := req.MaxTokens
	if req.MaxCompletionTokens != nil {
		max = req.MaxCompletionTokens
	}
	g, e := b.resolve(&req.sampling, max, 0)
	if e != nil {
		writeHTTPError(w, e)
		return
	}
	if req.TopLogprobs < 0 || req.TopLogprobs > 20 {
		writeHTTPError(w, badRequest("top_logprobs %d is outside [0, 20]", req.TopLogprobs))
		return
	}
	g.req.Logprobs, g.req.TopLogprobs = req.Logprobs, req.TopLogprobs
	if !req.Logprobs {
		g.req.TopLogprobs = 0
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = chat.Message{Role: m.Role, Content: string(m.Content)}
	}
	prompt, err := b.Template.Encode(b.Tokenizer, msgs, true)
	if err != nil {
		writeHTTPError(w, badRequest("%v", err))
		return
	}
	g.req.Prompt = prompt
	s.generate(w, r, b, g, true, req.Stream, req.StreamOpts)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request, b *Backend) {
	var req completionRequest
	if e := s.decode(w, r, &req); e != nil {
		writeHTTPError(w, e)
		return
	}
	if req.Echo {
		writeHTTPError(w, badRequest("echo is not supported"))
		return
	}
	g, e := b.resolve(&req.sampling, req.MaxTokens, 16) // OpenAI's default for completions
	if e != nil {
		writeHTTPError(w, e)
		return
	}
	if req.Logprobs != nil {
		if *req.Logprobs < 0 || *req.Logprobs > 5 {
			writeHTTPError(w, badRequest("logprobs %d is outside [0, 5]", *req.Logprobs))
			return
		}
		g.req.Logprobs, g.req.TopLogprobs = true, *req.Logprobs
	}
	if req.Prompt.isIDs {
		for _, id := range req.Prompt.tokens {
			if id < 0 || int(id) >= len(b.Tokenizer.Vocab().Tokens) {
				writeHTTPError(w, badRequest("prompt token %d is outside the vocabulary of %d", id, len(b.Tokenizer.Vocab().Tokens)))
				return
			}
		}
		g.req.Prompt = req.Prompt.tokens
	} else {
		g.req.Prompt = b.Tokenizer.EncodeParsed(req.Prompt.text, true)
	}
	if len(g.req.Prompt) == 0 { // an empty prompt starts from BOS, as lqc run does
		bos := b.Tokenizer.Vocab().BOS
		if bos < 0 {
			writeHTTPError(w, badRequest("the prompt is empty and the model has no BOS token to start from"))
			return
		}
		g.req.Prompt = []int32{bos}
	}
	s.generate(w, r, b, g, false, req.Stream, req.StreamOpts)
}

// generate runs g and answers in one body or as server-sent events, as a
// chat completion or a text completion.
func (s *Server) generate(w http.ResponseWriter, r *http.Request, b *Backend, g *generation, isChat, stream bool, so *streamOpt) {
	l := requestLog(r)
	l.model, l.prompt = g.model, len(g.req.Prompt)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	start := time.Now()
	st, err := b.Engine.Submit(ctx, g.req)
	if err != nil {
		var tl PromptTooLongError
		switch {
		case errors.Is(err, ErrQueueFull):
			writeHTTPError(w, &httpError{http.StatusTooManyRequests, "rate_limit_error", "queue_full", err.Error()})
		case errors.As(err, &tl):
			writeHTTPError(w, &httpError{http.StatusBadRequest, "invalid_request_error", "context_length_exceeded", err.Error()})
		default:
			writeHTTPError(w, badRequest("%v", err))
		}
		return
	}
	prefix := "cmpl-"
	if isChat {
		prefix = "chatcmpl-"
	}
	id := prefix + randomID()
	out := &replyWriter{w: w, isChat: isChat, stream: stream, id: id, model: g.model, created: time.Now().Unix(),
		usage: usage{PromptTokens: len(g.req.Prompt)}, includeUsage: so != nil && so.IncludeUsage, tok: b.Tokenizer}
	text := &textStream{stops: g.stops}
	if stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		if isChat {
			out.event(chatOut{Role: "assistant", Content: ptr("")}, nil)
		}
	}
	for {
		evs, err := st.Next(ctx)
		if err != nil {
			return // the client left; cancel frees the session
		}
		for _, ev := range evs {
			if ev.Err != nil {
				out.fail(ev.Err)
				return
			}
			if ev.Token >= 0 {
				if out.usage.CompletionTokens == 0 {
					l.ttft = time.Since(start)
				}
				out.usage.CompletionTokens++
				l.complete = out.usage.CompletionTokens
				piece := b.Tokenizer.Piece(ev.Token)
				chunk, stopped := text.add(piece)
				out.token(chunk, ev, piece, g.req.Logprobs)
				if stopped {
					out.finish("stop")
					return
				}
			}
			if ev.Finish != "" {
				out.text(text.flush())
				out.finish(ev.Finish)
				return
			}
		}
	}
}

// replyWriter assembles a reply, sending it as it goes when streaming.
type replyWriter struct {
	w            http.ResponseWriter
	tok          *tokenizer.Tokenizer
	isChat       bool
	stream       bool
	includeUsage bool
	id, model    string
	created      int64
	usage        usage

	content    strings.Builder
	chatLP     []tokenLogprob
	compLP     *completionLogprobs
	wantedLP   bool
	textOffset int
}

func (o *replyWriter) token(chunk string, ev Event, piece []byte, wantLP bool) {
	var lp []tokenLogprob
	if wantLP {
		o.wantedLP = true
		t := tokenLogprob{Token: string(piece), Logprob: ev.Logprob, Bytes: bytesOf(piece)}
		for _, a := range ev.Top {
			p := o.tok.Piece(a.ID)
			t.TopLogprobs = append(t.TopLogprobs, tokenLogprob{Token: string(p), Logprob: a.Logprob, Bytes: bytesOf(p)})
		}
		if o.isChat {
			o.chatLP = append(o.chatLP, t)
			lp = []tokenLogprob{t}
		} else {
			if o.compLP == nil {
				o.compLP = &completionLogprobs{}
			}
			top := map[string]float64{}
			for _, a := range t.TopLogprobs {
				top[a.Token] = a.Logprob
			}
			o.compLP.Tokens = append(o.compLP.Tokens, t.Token)
			o.compLP.TokenLogprobs = append(o.compLP.TokenLogprobs, t.Logprob)
			o.compLP.TopLogprobs = append(o.compLP.TopLogprobs, top)
			o.compLP.TextOffset = append(o.compLP.TextOffset, o.textOffset)
			o.textOffset += len(piece)
		}
	}
	if o.stream && (chunk != "" || lp != nil) {
		if o.isChat {
			var clp *chatLogprobs
			if lp != nil {
				clp = &chatLogprobs{Content: lp}
			}
			o.event(chatOut{Content: ptr(chunk)}, clp)
		} else {
			var cl *completionLogprobs
			if wantLP {
				n := len(o.compLP.Tokens) - 1
				cl = &completionLogprobs{Tokens: o.compLP.Tokens[n:], TokenLogprobs: o.compLP.TokenLogprobs[n:],
					TopLogprobs: o.compLP.TopLogprobs[n:], TextOffset: o.compLP.TextOffset[n:]}
			}
			o.completionEvent(chunk, cl, nil)
		}
		return
	}
	o.content.WriteString(chunk)
}

func (o *replyWriter) text(s string) {
	if s == "" {
		return
	}
	if o.stream {
		if o.isChat {
			o.event(chatOut{Content: ptr(s)}, nil)
		} else {
			o.completionEvent(s, nil, nil)
		}
		return
	}
	o.content.WriteString(s)
}

func (o *replyWriter) finish(reason string) {
	o.usage.TotalTokens = o.usage.PromptTokens + o.usage.CompletionTokens
	if o.stream {
		if o.isChat {
			o.sse(chatResponse{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
				Choices: []chatChoice{{Delta: &chatOut{}, FinishReason: &reason}}})
			if o.includeUsage {
				o.sse(chatResponse{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
					Choices: []chatChoice{}, Usage: &o.usage})
			}
		} else {
			o.completionEvent("", nil, &reason)
			if o.includeUsage {
				o.sse(completionResponse{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
					Choices: []completionChoice{}, Usage: &o.usage})
			}
		}
		o.done()
		return
	}
	text := o.content.String()
	if o.isChat {
		c := chatChoice{Message: &chatOut{Role: "assistant", Content: &text}, FinishReason: &reason}
		if o.wantedLP {
			c.Logprobs = &chatLogprobs{Content: o.chatLP}
			if c.Logprobs.Content == nil {
				c.Logprobs.Content = []tokenLogprob{}
			}
		}
		writeJSON(o.w, http.StatusOK, chatResponse{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.model,
			Choices: []chatChoice{c}, Usage: &o.usage})
		return
	}
	writeJSON(o.w, http.StatusOK, completionResponse{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{{Text: text, Logprobs: o.compLP, FinishReason: &reason}}, Usage: &o.usage})
}

func (o *replyWriter) fail(err error) {
	if o.stream {
		o.sse(apiError{Error: apiErrorBody{Message: err.Error(), Type: "server_error"}})
		o.done()
		return
	}
	writeError(o.w, http.StatusInternalServerError, "server_error", err.Error())
}

func (o *replyWriter) event(delta chatOut, lp *chatLogprobs) {
	o.sse(chatResponse{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.model,
		Choices: []chatChoice{{Delta: &delta, Logprobs: lp}}})
}

func (o *replyWriter) completionEvent(text string, lp *completionLogprobs, reason *string) {
	o.sse(completionResponse{ID: o.id, Object: "text_completion", Created: o.created, Model: o.model,
		Choices: []completionChoice{{Text: text, Logprobs: lp, FinishReason: reason}}})
}

func (o *replyWriter) sse(v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(o.w, "data: %s\n\n", b)
	http.NewResponseController(o.w).Flush()
}

func (o *replyWriter) done() {
	fmt.Fprint(o.w, "data: [DONE]\n\n")
	http.NewResponseController(o.w).Flush()
}

func (s *Server) tokenize(w http.ResponseWriter, r *http.Request, b *Backend) {
	var req struct {
		Content    string `json:"content"`
		AddSpecial bool   `json:"add_special"`
		WithPieces bool   `json:"with_pieces"`
	}
	if e := s.decode(w, r, &req); e != nil {
		writeHTTPError(w, e)
		return
	}
	ids := b.Tokenizer.EncodeParsed(req.Content, req.AddSpecial)
	if !req.WithPieces {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": nonNil(ids)})
		return
	}
	type piece struct {
		ID    int32  `json:"id"`
		Piece string `json:"piece"`
	}
	pieces := make([]piece, len(ids))
	for i, id := range ids {
		pieces[i] = piece{id, string(b.Tokenizer.Piece(id))}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": pieces})
}

func (s *Server) detokenize(w http.ResponseWriter, r *http.Request, b *Backend) {
	var req struct {
		Tokens []int32 `json:"tokens"`
	}
	if e := s.decode(w, r, &req); e != nil {
		writeHTTPError(w, e)
		return
	}
	var sb strings.Builder
	for _, id := range req.Tokens {
		if id < 0 || int(id) >= len(b.Tokenizer.Vocab().Tokens) {
			writeHTTPError(w, badRequest("token %d is outside the vocabulary of %d", id, len(b.Tokenizer.Vocab().Tokens)))
			return
		}
		sb.Write(b.Tokenizer.Piece(id))
	}
	writeJSON(w, http.StatusOK, map[string]string{"content": strings.ToValidUTF8(sb.String(), "\uFFFD")})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, typ, msg string) {
	writeErrorCode(w, code, typ, nil, msg)
}

func writeErrorCode(w http.ResponseWriter, code int, typ string, errCode any, msg string) {
	writeJSON(w, code, apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: errCode}})
}

func writeHTTPError(w http.ResponseWriter, e *httpError) {
	writeErrorCode(w, e.status, e.typ, e.code, e.message)
}

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ptr[T any](v T) *T { return &v }

func bytesOf(p []byte) []int {
	out := make([]int, len(p))
	for i, c := range p {
		out[i] = int(c)
	}
	return out
}

func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}
