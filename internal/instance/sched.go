package instance

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler is one timer heap for every instance: a refresh or retry is an entry, not a
// goroutine, so a million instances cost a million small entries. An instance invalidates its
// earlier entries by bumping its generation; stale entries are dropped when they come due.
type scheduler struct {
	mu   sync.Mutex
	h    entryHeap
	wake chan struct{}
	fire func(inst *Instance, gen uint64) // called outside the lock; may block (backpressure)

	// fireProxy is called, outside the lock, for the entries of proxies (a down proxy's
	// next probe); they share the heap with the instances' entries.
	fireProxy func(px *proxyState, gen uint64)
}

type entry struct {
	at   int64 // unix nanoseconds
	gen  uint64
	inst *Instance
	px   *proxyState // instead of inst: a proxy's probe timer
}

type entryHeap []entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = entry{}
	*h = old[:len(old)-1]
	return e
}

func newScheduler(fire func(*Instance, uint64), fireProxy func(*proxyState, uint64)) *scheduler {
	return &scheduler{wake: make(chan struct{}, 1), fire: fire, fireProxy: fireProxy}
}

// add schedules inst's event for time at with generation gen.
func (s *scheduler) add(inst *Instance, at time.Time, gen uint64) {
	s.push(entry{at: at.UnixNano(), gen: gen, inst: inst})
}

// addProxy schedules px's probe timer for time at with generation gen.
func (s *scheduler) addProxy(px *proxyState, at time.Time, gen uint64) {
	s.push(entry{at: at.UnixNano(), gen: gen, px: px})
}

// addAll adds many entries at once (a start): one heap build, O(n), instead of a push each.
func (s *scheduler) addAll(es []entry) {
	if len(es) == 0 {
		return
	}
	s.mu.Lock()
	s.h = append(s.h, es...)
	heap.Init(&s.h)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) push(e entry) {
	s.mu.Lock()
	heap.Push(&s.h, e)
	first := s.h[0] == e
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// coalesce is the scheduler's timer granularity: it wakes at multiples of it and then fires
// every entry due by then, at most this late. Refreshes spread by jitter over seconds would
// otherwise each wake the runtime on their own (a timer, a worker, a send, a receive, and
// the threads behind them, per datagram); woken together, one wake-up sends tens of
// REGISTERs and takes their answers while the threads are running. 100 ms is nothing next to
// a refresh's lead (refreshLead) or a retry's backoff, and keeps the jitter's spread.
const coalesce = int64(100 * time.Millisecond)

// coalesced rounds at (unix nanoseconds) up to the next multiple of coalesce.
func coalesced(at int64) int64 {
	return (at + coalesce - 1) / coalesce * coalesce
}

// run fires due entries until ctx ends, in batches (coalesce).
func (s *scheduler) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := time.Now().UnixNano()
		if len(s.h) > 0 && s.h[0].at <= now {
			e := heap.Pop(&s.h).(entry)
			// Shrink a heap that emptied after a burst, so it does not pin memory.
			if cap(s.h) > 1024 && len(s.h) < cap(s.h)/4 {
				s.h = append(entryHeap(nil), s.h...)
			}
			s.mu.Unlock()
			if e.px != nil {
				s.fireProxy(e.px, e.gen)
			} else {
				s.fire(e.inst, e.gen)
			}
			continue
		}
		wait := time.Hour
		if len(s.h) > 0 {
			wait = time.Duration(coalesced(s.h[0].at) - now)
		}
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-timer.C:
		}
	}
}

// len returns the number of pending entries, stale ones included (for tests and metrics).
func (s *scheduler) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.h)
}
