package cpu

import (
	"sync/atomic"
	"time"
)

// pool runs loops in parallel on persistent worker goroutines; the caller
// takes part too, so a pool of n threads keeps n cores busy.
//
// A token of a large model is hundreds of parallel loops of well under a
// millisecond each, so waking parked goroutines for every one would cost
// more than the work. Workers and the caller therefore spin for a short
// while (spinFor) before they park, as ggml's thread pool does.
type pool struct {
	threads int
	tasks   chan *task
}

// spinFor is how long an idle worker, or a caller waiting for workers,
// polls before parking.
const spinFor = 200 * time.Microsecond

type task struct {
	fn      func(lo, hi int)
	n, per  int
	next    atomic.Int64
	pending atomic.Int32 // participants still working
	done    chan struct{}
}

// minShare is the least work, in multiply-adds or as many simple steps,
// worth handing to another thread: handing it over and waiting for it
// cost microseconds, which a small model's every operation would pay.
const minShare = 32 << 10

// grainFor is the chunk size, in items of work steps each, that gives
// every chunk at least minShare steps, and at least least items.
func grainFor(work, least int) int { return max(least, minShare/max(work, 1)) }

func newPool(threads int) *pool {
	p := &pool{threads: max(1, threads), tasks: make(chan *task, threads)}
	for range p.threads - 1 {
		go p.worker()
	}
	return p
}

func (p *pool) worker() {
	for {
		t, ok := p.receive()
		if !ok {
			return
		}
		t.work()
	}
}

// receive takes the next task, polling before it parks.
func (p *pool) receive() (*task, bool) {
	deadline := time.Now().Add(spinFor)
	for i := 0; ; i++ {
		select {
		case t, ok := <-p.tasks:
			return t, ok
		default:
		}
		if i&63 == 63 && time.Now().After(deadline) {
			t, ok := <-p.tasks
			return t, ok
		}
	}
}

// work claims chunks of the loop until none are left.
func (t *task) work() {
	for {
		lo := int(t.next.Add(int64(t.per))) - t.per
		if lo >= t.n {
			break
		}
		t.fn(lo, min(lo+t.per, t.n))
	}
	if t.pending.Add(-1) == 0 {
		close(t.done)
	}
}

// parallel calls fn on disjoint ranges covering [0, n), in chunks of at
// least grain iterations, and returns when all are done.
func (p *pool) parallel(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	helpers := min(p.threads-1, (n-1)/max(grain, 1))
	if helpers <= 0 {
		fn(0, n)
		return
	}
	// A few chunks per thread balance uneven work without much overhead.
	per := max(grain, (n+4*(helpers+1)-1)/(4*(helpers+1)))
	t := &task{fn: fn, n: n, per: per, done: make(chan struct{})}
	t.pending.Store(int32(helpers + 1))
	for range helpers {
		p.tasks <- t
	}
	t.work()
	deadline := time.Now().Add(spinFor)
	for i := 0; t.pending.Load() > 0; i++ {
		if i&63 == 63 && time.Now().After(deadline) {
			<-t.done
			break
		}
	}
}

func (p *pool) close() { close(p.tasks) }
