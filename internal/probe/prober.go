package probe

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Defaults for the zero fields of Options.
const (
	DefaultInterval         = 30 * time.Second
	DefaultTimeout          = 5 * time.Second
	DefaultDownAfter        = 3
	DefaultUpAfter          = 2
	DefaultMaxInFlight      = 256
	DefaultAlertQueue       = 256
	DefaultMinAlertInterval = 5 * time.Minute
	DefaultAlertTimeout     = 2 * time.Minute
	DefaultRecent           = 10
)

// ErrStarted is returned by Start when the Prober already runs or has run.
var ErrStarted = errors.New("probe: prober already started")

// Options configure a Prober. Zero values take the Default constants.
type Options struct {
	// Pinger sends the OPTIONS requests. Required.
	Pinger Pinger
	// History records every state change except the first Unknown to Up; nil
	// records nothing.
	History History
	// Alerters are told about state changes, each from its own goroutine and
	// queue, at most once per MinAlertInterval per target.
	Alerters []Alerter

	// Interval and Timeout apply to targets that do not set their own.
	Interval time.Duration
	Timeout  time.Duration
	// DownAfter is N: consecutive failures that take a target Down.
	DownAfter int
	// UpAfter is M: consecutive answers that bring a Down target Up.
	UpAfter int
	// MaxInFlight bounds the probes waiting for an answer at once (the size
	// of the worker pool). When many targets time out, a target is probed
	// every interval only if MaxInFlight >= targets × Timeout / Interval;
	// below that, probes of targets whose previous probe still waits are
	// skipped and counted in Stats.Skipped.
	MaxInFlight int
	// AlertQueue bounds the changes waiting for the History and for each
	// Alerter; when a queue is full, new entries are dropped and counted.
	AlertQueue int
	// MinAlertInterval is the shortest time between two alerts about one
	// target; changes in between are coalesced into one alert that states the
	// latest change and how many were suppressed.
	MinAlertInterval time.Duration
	// AlertTimeout bounds one Alert call (including an alerter's own retries)
	// and one History call.
	AlertTimeout time.Duration
	// Recent is how many state changes Status.Recent keeps per target.
	Recent int

	// Clock defaults to the real clock.
	Clock Clock
	// Log receives warnings about failed alerts and dropped changes; nil
	// discards them.
	Log logrus.FieldLogger
}

func (o *Options) setDefaults() error {
	if o.Pinger == nil {
		return errors.New("probe: Options.Pinger is required")
	}
	for i, a := range o.Alerters {
		if a == nil {
			return fmt.Errorf("probe: Options.Alerters[%d] is nil", i)
		}
	}
	ints := []struct {
		name string
		v    *int
		def  int
	}{
		{"DownAfter", &o.DownAfter, DefaultDownAfter},
		{"UpAfter", &o.UpAfter, DefaultUpAfter},
		{"MaxInFlight", &o.MaxInFlight, DefaultMaxInFlight},
		{"AlertQueue", &o.AlertQueue, DefaultAlertQueue},
		{"Recent", &o.Recent, DefaultRecent},
	}
	for _, f := range ints {
		if *f.v < 0 {
			return fmt.Errorf("probe: Options.%s is negative (%d)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"Interval", &o.Interval, DefaultInterval},
		{"Timeout", &o.Timeout, DefaultTimeout},
		{"MinAlertInterval", &o.MinAlertInterval, DefaultMinAlertInterval},
		{"AlertTimeout", &o.AlertTimeout, DefaultAlertTimeout},
	}
	for _, f := range durs {
		if *f.v < 0 {
			return fmt.Errorf("probe: Options.%s is negative (%v)", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.Timeout >= o.Interval {
		return fmt.Errorf("probe: Options.Timeout (%v) must be shorter than Options.Interval (%v)", o.Timeout, o.Interval)
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = l
	}
	return nil
}

// Prober probes a changing set of targets. Create it with NewProber, give it
// targets with SetTargets (before or after Start), and read Targets for the
// pages. All methods are safe for concurrent use.
type Prober struct {
	opt Options
	log logrus.FieldLogger

	mu      sync.Mutex
	targets map[string]*target // by Target.Key
	queue   timerHeap          // every target, by next probe time
	running bool               // between Start and Stop
	started bool

	wake    chan struct{} // scheduler: the heap changed
	jobs    chan job      // scheduler to workers
	changes chan Change   // workers to the dispatcher

	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats struct {
		probes, failures, skipped, changes, changesDropped atomic.Uint64
		alertsSent, alertsFailed, alertsDropped, coalesced atomic.Uint64
		historyFailed                                      atomic.Uint64
	}
}

// target is the Prober's record of one Target; mu guards every field.
type target struct {
	cfg      Target // normalized
	key      string
	interval time.Duration
	timeout  time.Duration

	index   int       // in the heap
	next    time.Time // next probe
	busy    bool      // a probe is queued or in flight
	removed bool

	health
	since      time.Time
	lastCode   int
	lastReason string
	lastRTT    time.Duration
	lastError  string
	lastProbe  time.Time
	recent     []Event
}

// job is one probe handed to a worker, with the target's settings copied
// under the lock.
type job struct {
	t         *target
	uri       string
	transport string
	timeout   time.Duration
}

// NewProber checks opt and returns a stopped Prober with no targets.
func NewProber(opt Options) (*Prober, error) {
	if err := opt.setDefaults(); err != nil {
		return nil, err
	}
	return &Prober{
		opt:     opt,
		log:     opt.Log.WithField("component", "probe"),
		targets: make(map[string]*target),
		wake:    make(chan struct{}, 1),
		jobs:    make(chan job),
		changes: make(chan Change, opt.AlertQueue),
	}, nil
}

// SetTargets replaces the set of targets. Targets already known (same Key)
// keep their state and schedule; new ones start Unknown and have their first
// probes spread evenly over their interval; missing ones are forgotten.
// Duplicates are merged, the first occurrence winning, so the caller may
// simply concatenate static targets and the proxies in use. If any target is
// invalid, SetTargets returns an error naming it and changes nothing.
func (p *Prober) SetTargets(list []Target) error {
	norm := make([]Target, 0, len(list))
	seen := make(map[string]bool, len(list))
	for _, t := range list {
		n, err := t.normalize()
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		iv, to := p.effective(n)
		if to >= iv {
			return fmt.Errorf("probe: target %q: timeout %v must be shorter than interval %v", n.URI, to, iv)
		}
		if k := n.Key(); !seen[k] {
			seen[k] = true
			norm = append(norm, n)
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opt.Clock.Now()
	for k, t := range p.targets {
		if !seen[k] {
			t.removed = true
			if t.index >= 0 {
				heap.Remove(&p.queue, t.index)
			}
			delete(p.targets, k)
		}
	}
	var added []*target
	for _, n := range norm {
		k := n.Key()
		iv, to := p.effective(n)
		if t, ok := p.targets[k]; ok {
			t.cfg, t.timeout = n, to
			if iv != t.interval {
				t.interval = iv
				if p.running && t.next.After(now.Add(iv)) {
					t.next = now.Add(iv)
					heap.Fix(&p.queue, t.index)
				}
			}
			continue
		}
		t := &target{cfg: n, key: k, interval: iv, timeout: to, index: -1, since: now}
		p.targets[k] = t
		added = append(added, t)
	}
	if p.running {
		p.schedule(added, now)
	}
	return nil
}

// effective returns the interval and timeout of t after defaults.
func (p *Prober) effective(t Target) (interval, timeout time.Duration) {
	interval, timeout = t.Interval, t.Timeout
	if interval == 0 {
		interval = p.opt.Interval
	}
	if timeout == 0 {
		timeout = p.opt.Timeout
	}
	return interval, timeout
}

// schedule puts new targets in the heap, the i-th of n at now+i*interval/n,
// so that a batch of targets (all of them, at Start) does not probe at once.
// p.mu must be held.
func (p *Prober) schedule(ts []*target, now time.Time) {
	if len(ts) == 0 {
		return
	}
	// A stable order makes the spread reproducible.
	slices.SortFunc(ts, func(a, b *target) int { return strings.Compare(a.key, b.key) })
	for i, t := range ts {
		t.next = now.Add(time.Duration(int64(t.interval) / int64(len(ts)) * int64(i)))
		heap.Push(&p.queue, t)
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Start begins probing and returns at once. Cancelling ctx has the effect of
// Stop, except that Stop also waits for the goroutines to end. A Prober
// starts only once.
func (p *Prober) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return ErrStarted
	}
	p.started, p.running = true, true
	ctx, p.cancel = context.WithCancel(ctx)

	all := make([]*target, 0, len(p.targets))
	for _, t := range p.targets {
		all = append(all, t)
	}
	p.schedule(all, p.opt.Clock.Now())

	alertQs := make([]chan Change, len(p.opt.Alerters))
	for i, a := range p.opt.Alerters {
		alertQs[i] = make(chan Change, p.opt.AlertQueue)
		p.wg.Go(func() { p.runAlerter(ctx, a, alertQs[i]) })
	}
	p.wg.Go(func() { p.dispatch(ctx, alertQs) })
	for range p.opt.MaxInFlight {
		p.wg.Go(func() { p.work(ctx) })
	}
	p.wg.Go(func() { p.run(ctx) })
	return nil
}

// Stop ends probing and waits for every goroutine of the Prober. Probes in
// flight are abandoned without changing state; queued and coalesced alerts
// are dropped, and an alert being sent is cancelled. Stop may be called more
// than once.
func (p *Prober) Stop() {
	p.mu.Lock()
	cancel := p.cancel
	p.running = false
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.wg.Wait()
}

// run is the scheduler: it pops due targets from the heap and hands them to
// the workers, sleeping on one timer until the next is due. It never waits
// for a probe, so a slow target delays nobody but itself.
func (p *Prober) run(ctx context.Context) {
	timer := p.opt.Clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var armed time.Time // deadline the timer is set for; zero when stopped
	var ready []job     // due probes waiting for a free worker, from head on
	head := 0
	for {
		p.mu.Lock()
		now := p.opt.Clock.Now()
		for len(p.queue) > 0 && !p.queue[0].next.After(now) {
			t := p.queue[0]
			t.next = nextProbe(t.next, t.interval, now)
			heap.Fix(&p.queue, 0)
			if t.busy {
				// The previous probe has not finished within an interval:
				// skip a beat rather than pile up probes of one target.
				p.stats.skipped.Add(1)
				continue
			}
			t.busy = true
			ready = append(ready, job{t: t, uri: t.cfg.URI, transport: t.cfg.Transport, timeout: t.timeout})
		}
		var deadline time.Time
		if len(p.queue) > 0 {
			deadline = p.queue[0].next
		}
		p.mu.Unlock()

		if !deadline.Equal(armed) {
			if deadline.IsZero() {
				timer.Stop()
			} else {
				timer.Reset(deadline.Sub(p.opt.Clock.Now()))
			}
			armed = deadline
		}
		var timerC <-chan time.Time
		if !armed.IsZero() {
			timerC = timer.C()
		}
		var jobs chan job
		var next job
		if head < len(ready) {
			jobs, next = p.jobs, ready[head]
		}
		select {
		case jobs <- next:
			ready[head] = job{}
			head++
			if head == len(ready) {
				ready, head = ready[:0], 0
			} else if head > 1024 && head > len(ready)/2 {
				// A lasting backlog: reclaim the consumed front.
				n := copy(ready, ready[head:])
				clear(ready[n:])
				ready, head = ready[:n], 0
			}
		case <-timerC:
			armed = time.Time{}
		case <-p.wake:
		case <-ctx.Done():
			return
		}
	}
}

// nextProbe returns the first time after now that is a whole number of
// intervals after due, keeping each target's phase (and so the spread of
// targets over the interval) even when the scheduler fell behind.
func nextProbe(due time.Time, interval time.Duration, now time.Time) time.Time {
	next := due.Add(interval)
	if next.After(now) {
		return next
	}
	behind := now.Sub(due)
	return due.Add((behind/interval + 1) * interval)
}

// work is one worker of the pool: it sends the probes the scheduler hands it.
func (p *Prober) work(ctx context.Context) {
	for {
		select {
		case j := <-p.jobs:
			pctx, cancel := context.WithTimeout(ctx, j.timeout)
			code, reason, rtt, err := p.opt.Pinger.Options(pctx, j.uri, j.transport)
			cancel()
			if ctx.Err() != nil {
				return // stopping: an aborted probe says nothing about the target
			}
			if err == nil && (code < 200 || code > 699) {
				err = fmt.Errorf("no final response (got %d %s)", code, reason)
			}
			p.record(j.t, code, reason, rtt, err)
		case <-ctx.Done():
			return
		}
	}
}

// record applies one probe result to t and queues the change, if any.
func (p *Prober) record(t *target, code int, reason string, rtt time.Duration, err error) {
	p.stats.probes.Add(1)
	if err != nil {
		p.stats.failures.Add(1)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	t.busy = false
	if t.removed {
		return
	}
	now := p.opt.Clock.Now()
	t.lastProbe = now
	if err == nil {
		t.lastCode, t.lastReason, t.lastRTT = code, reason, rtt
	} else {
		t.lastError = err.Error()
		code, rtt = 0, 0
	}
	old := t.state
	t.health = t.health.step(err == nil, p.opt.DownAfter, p.opt.UpAfter)
	if t.state == old {
		return
	}
	t.since = now
	if old == Unknown && t.state == Up {
		return // the first answer is not news
	}
	ev := Event{Target: t.key, OldState: old, NewState: t.state, Code: code, RTT: rtt, At: now}
	if err != nil {
		ev.LastError = err.Error()
	}
	if len(t.recent) >= p.opt.Recent {
		t.recent = slices.Delete(t.recent, 0, len(t.recent)-p.opt.Recent+1)
	}
	t.recent = append(t.recent, ev)
	p.stats.changes.Add(1)
	select {
	case p.changes <- Change{Event: ev, Transport: t.cfg.Transport}:
	default:
		p.stats.changesDropped.Add(1)
		p.log.WithField("target", t.key).WithField("state", t.state).Warn("probe change queue full, change not recorded or alerted")
	}
}

// Targets returns a snapshot of every target, sorted by Target key.
func (p *Prober) Targets() []Status {
	p.mu.Lock()
	out := make([]Status, 0, len(p.targets))
	for _, t := range p.targets {
		out = append(out, Status{
			Target:     t.key,
			Transport:  t.cfg.Transport,
			State:      t.state,
			Since:      t.since,
			LastCode:   t.lastCode,
			LastReason: t.lastReason,
			LastRTT:    t.lastRTT,
			LastError:  t.lastError,
			LastProbe:  t.lastProbe,
			Failures:   t.failures,
			Successes:  t.successes,
			Recent:     slices.Clone(t.recent),
		})
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Target, b.Target) })
	return out
}

// Stats returns the counters of the Prober.
func (p *Prober) Stats() Stats {
	s := &p.stats
	return Stats{
		Probes:          s.probes.Load(),
		Failures:        s.failures.Load(),
		Skipped:         s.skipped.Load(),
		Changes:         s.changes.Load(),
		ChangesDropped:  s.changesDropped.Load(),
		AlertsSent:      s.alertsSent.Load(),
		AlertsFailed:    s.alertsFailed.Load(),
		AlertsDropped:   s.alertsDropped.Load(),
		AlertsCoalesced: s.coalesced.Load(),
		HistoryFailed:   s.historyFailed.Load(),
	}
}

// timerHeap orders targets by their next probe time.
type timerHeap []*target

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *timerHeap) Push(x any) {
	t := x.(*target)
	t.index = len(*h)
	*h = append(*h, t)
}

func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
