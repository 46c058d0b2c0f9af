// Package serve is lqc's OpenAI-compatible server: an Engine that keeps
// a fixed number of sessions on one loaded model and advances every
// running request together through runtime.Model.Step, whatever adapters
// each applies (continuous batching), and the HTTP layer over it.
package serve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	lqrt "github.com/lqc-dev/lqc/runtime"
	"github.com/lqc-dev/lqc/runtime/tokenizer"
)

// Request is one generation the engine runs.
type Request struct {
	Prompt    []int32
	MaxTokens int // 0: until the context is full
	Sampling  lqrt.SamplerOptions
	Adapters  []lqrt.Applied
	// TopLogprobs > 0 asks for that many alternatives with each token;
	// Logprobs asks for the chosen token's log-probability.
	Logprobs    bool
	TopLogprobs int
	// IgnoreEOS keeps end-of-generation tokens from being sampled, so
	// the request runs to MaxTokens (benchmarks, llama-server's ignore_eos).
	IgnoreEOS bool
	// Model names what the request asked for, for metrics.
	Model string
}

// Alt is a token with its log-probability.
type Alt struct {
	ID      int32
	Logprob float64
}

// Event is what the engine reports for a request: a generated token, or
// the end (Finish "stop" or "length", or Err).
type Event struct {
	Token   int32
	Logprob float64
	Top     []Alt
	Finish  string
	Err     error
}

// Stream receives a request's events in order. The engine never waits
// for a slow reader: events queue here until Next takes them.
type Stream struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
}

func newStream() *Stream {
	return &Stream{notify: make(chan struct{}, 1)}
}

func (s *Stream) push(e Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Next waits for the events the engine has produced since the last call.
func (s *Stream) Next(ctx context.Context) ([]Event, error) {
	for {
		s.mu.Lock()
		ev := s.events
		s.events = nil
		s.mu.Unlock()
		if len(ev) > 0 {
			return ev, nil
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Options configure an Engine.
type Options struct {
	Parallel int // sessions stepped together
	Context  int // positions per session
	Queue    int // requests waiting for a session before Submit refuses
	// PrefillChunk bounds the prompt tokens evaluated in one batch beside
	// the decoding requests, so a long prompt delays them by one chunk.
	PrefillChunk int
}

// DefaultPrefillChunk is Options.PrefillChunk's default (lqc plan sizes
// a batched step with it).
const DefaultPrefillChunk = 256

// ErrQueueFull is Submit's answer when Options.Queue requests wait.
var ErrQueueFull = errors.New("too many requests are waiting; retry later")

// PromptTooLongError is Submit's answer to a prompt that leaves no room
// in the context.
type PromptTooLongError struct{ Tokens, Context int }

func (e PromptTooLongError) Error() string {
	return fmt.Sprintf("the prompt has %d tokens; the context holds %d, one of them for the reply", e.Tokens, e.Context)
}

// Engine runs requests on one model.
type Engine struct {
	model   *lqrt.Model
	tok     *tokenizer.Tokenizer
	opt     Options
	metrics *Metrics
	eog     []int32 // the vocabulary's end-of-generation tokens

	mu      sync.Mutex
	waiting []*pending
	wake    chan struct{}
	slots   []*slot
}

type pending struct {
	ctx    context.Context
	req    Request
	stream *Stream
	queued time.Time
}

// slot is a session and the request it runs.
type slot struct {
	sess *lqrt.Session
	p    *pending
	smp  *lqrt.Sampler
	// fed is how much of the prompt the session has evaluated; next is the
	// sampled token to feed on the next decode step; n counts the tokens
	// generated.
	fed  int
	next int32
	n    int
}

// NewEngine prepares opt.Parallel sessions of opt.Context positions.
func NewEngine(m *lqrt.Model, tok *tokenizer.Tokenizer, opt Options, metrics *Metrics) (*Engine, error) {
	if opt.Parallel <= 0 || opt.Context <= 1 {
		return nil, fmt.Errorf("serve: %d sessions of %d positions", opt.Parallel, opt.Context)
	}
	if opt.PrefillChunk <= 0 {
		opt.PrefillChunk = DefaultPrefillChunk
	}
	if opt.Queue <= 0 {
		opt.Queue = 64
	}
	e := &Engine{model: m, tok: tok, opt: opt, metrics: metrics, wake: make(chan struct{}, 1), eog: eogTokens(tok)}
	for range opt.Parallel {
		s, err := m.NewSession(opt.Context)
		if err != nil {
			return nil, err
		}
		e.slots = append(e.slots, &slot{sess: s})
	}
	return e, nil
}

// eogTokens are the ids of tok's vocabulary that end generation.
func eogTokens(tok *tokenizer.Tokenizer) []int32 {
	var ids []int32
	for id := range int32(len(tok.Vocab().Tokens)) {
		if tok.IsEOG(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// Submit queues r; its events arrive on the returned stream until one
// with Finish or Err set. Cancelling ctx abandons the request and frees
// its session at the next step.
func (e *Engine) Submit(ctx context.Context, r Request) (*Stream, error) {
	if len(r.Prompt) == 0 {
		return nil, errors.New("the prompt is empty")
	}
	if len(r.Prompt) >= e.opt.Context {
		return nil, PromptTooLongError{len(r.Prompt), e.opt.Context}
	}
	st := newStream()
	e.mu.Lock()
	if len(e.waiting) >= e.opt.Queue {
		e.mu.Unlock()
		return nil, ErrQueueFull
	}
	e.waiting = append(e.waiting, &pending{ctx: ctx, req: r, stream: st, queued: time.Now()})
	e.metrics.queueDepth.Set(float64(len(e.waiting)))
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return st, nil
}

// Run steps the running requests until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	for {
		e.admit()
		if !e.busy() {
			select {
			case <-e.wake:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		e.step()
	}
}

func (e *Engine) busy() bool {
	for _, s := range e.slots {
		if s.p != nil {
			return true
		}
	}
	return false
}

// admit moves waiting requests into free sessions, oldest first, and
// drops those whose callers left.
func (e *Engine) admit() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range e.slots {
		if s.p != nil && s.p.ctx.Err() != nil {
			e.release(s)
		}
	}
	kept := e.waiting[:0]
	for _, p := range e.waiting {
		if p.ctx.Err() != nil {
			continue
		}
		s := e.freeSlot()
		if s == nil {
			kept = append(kept, p)
			continue
		}
		s.sess.Reset()
		if err := s.sess.SetAdapters(p.req.Adapters...); err != nil {
			p.stream.push(Event{Err: err})
			continue
		}
		s.p, s.fed, s.n = p, 0, 0
		seed := p.req.Sampling.Seed
		if seed == 0 {
			seed = uint64(time.Now().UnixNano())
		}
		opt := p.req.Sampling
		opt.Seed = seed
		s.smp = lqrt.NewSampler(opt)
	}
	clear(e.waiting[len(kept):])
	e.waiting = kept
	e.metrics.queueDepth.Set(float64(len(e.waiting)))
	e.metrics.running.Set(float64(e.running()))
}

func (e *Engine) freeSlot() *slot {
	for _, s := range e.slots {
		if s.p == nil {
			return s
		}
	}
	return nil
}

func (e *Engine) running() int {
	n := 0
	for _, s := range e.slots {
		if s.p != nil {
			n++
		}
	}
	return n
}

func (e *Engine) release(s *slot) {
	s.p, s.smp = nil, nil
}

// finish ends s's request with ev.
func (e *Engine) finish(s *slot, ev Event) {
	s.p.stream.push(ev)
	e.release(s)
}

// step advances every admitted request in one batch (Model.Batch): the
// next chunk of each prompt still being evaluated, oldest request first
// and within PrefillChunk tokens in all, beside the last sampled token of
// every request that is decoding. Prompts of new requests thus share the
// pass over the weights with the running ones, as llama.cpp's server
// batches them.
func (e *Engine) step() {
	var (
		sessions []*lqrt.Session
		tokens   [][]int32
		stepped  []*slot
		decoding int
	)
	budget := e.opt.PrefillChunk
	for _, s := range e.slots {
		switch {
		case s.p == nil:
		case s.fed < len(s.p.req.Prompt):
			if budget == 0 {
				continue
			}
			n := min(budget, len(s.p.req.Prompt)-s.fed)
			budget -= n
			sessions, stepped = append(sessions, s.sess), append(stepped, s)
			tokens = append(tokens, s.p.req.Prompt[s.fed:s.fed+n])
		case s.n > 0:
			sessions, stepped = append(sessions, s.sess), append(stepped, s)
			tokens = append(tokens, []int32{s.next})
			decoding++
		}
	}
	if len(stepped) == 0 {
		return
	}
	if decoding > 0 {
		e.metrics.batchSize.Observe(float64(decoding))
	}
	logits, err := e.model.Batch(sessions, tokens)
	if err != nil {
		for _, s := range stepped {
			e.finish(s, Event{Err: err})
		}
		return
	}
	for i, s := range stepped {
		if prompt := s.p.req.Prompt; s.fed < len(prompt) {
			s.fed += len(tokens[i])
			if s.fed < len(prompt) {
				continue
			}
			e.metrics.promptTokens.WithLabelValues(s.p.req.Model).Add(float64(len(prompt)))
			e.metrics.ttft.WithLabelValues(s.p.req.Model).Observe(time.Since(s.p.queued).Seconds())
		}
		e.sampled(s, logits[i])
	}
}

// sampled draws s's next token from logits and reports it.
func (e *Engine) sampled(s *slot, logits []float32) {
	r := &s.p.req
	if r.IgnoreEOS {
		for _, id := range e.eog {
			logits[id] = float32(math.Inf(-1))
		}
	}
	id := s.smp.Sample(logits)
	if e.tok.IsEOG(id) {
		e.finish(s, Event{Token: -1, Finish: "stop"})
		return
	}
	ev := Event{Token: id}
	if r.Logprobs || r.TopLogprobs > 0 {
		ev.Logprob, ev.Top = logprobs(logits, id, r.TopLogprobs)
	}
	s.n++
	s.next = id
	e.metrics.genTokens.WithLabelValues(r.Model).Inc()
	if (r.MaxTokens > 0 && s.n >= r.MaxTokens) || s.sess.Pos() >= s.sess.Context() {
		ev.Finish = "length"
		e.finish(s, ev)
		return
	}
	s.p.stream.push(ev)
}

// logprobs is id's log-probability under logits and the top k tokens'.
func logprobs(logits []float32, id int32, k int) (float64, []Alt) {
	lp := lqrt.LogSoftmax(logits)
	if k <= 0 {
		return lp[id], nil
	}
	top := make([]Alt, len(lp))
	for i, v := range lp {
		top[i] = Alt{int32(i), v}
	}
	sort.SliceStable(top, func(a, b int) bool { return top[a].Logprob > top[b].Logprob })
	return lp[id], top[:min(k, len(top))]
}
