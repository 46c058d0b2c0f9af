package cpu

import (
	"sync"
	"sync/atomic"
)

// pool runs loops in parallel on persistent worker goroutines; the caller
// takes part too, so a pool of n threads keeps n cores busy.
type pool struct {
	threads int
	tasks   chan *task
}

type task struct {
	fn     func(lo, hi int)
	n, per int
	next   atomic.Int64
	wg     sync.WaitGroup
}

func newPool(threads int) *pool {
	p := &pool{threads: max(1, threads), tasks: make(chan *task)}
	for range p.threads - 1 {
		go func() {
			for t := range p.tasks {
				t.work()
			}
		}()
	}
	return p
}

// work claims chunks of the loop until none are left.
func (t *task) work() {
	defer t.wg.Done()
	for {
		lo := int(t.next.Add(int64(t.per))) - t.per
		if lo >= t.n {
			return
		}
		t.fn(lo, min(lo+t.per, t.n))
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
	t := &task{fn: fn, n: n, per: per}
	t.wg.Add(helpers + 1)
	for range helpers {
		p.tasks <- t
	}
	t.work()
	t.wg.Wait()
}

func (p *pool) close() { close(p.tasks) }
