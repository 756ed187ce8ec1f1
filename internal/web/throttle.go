package web

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Guess throttling. A throttle guards a secret check (the administrator's
// password, a device's secret) against guessing: it counts failures per
// client key and makes a key that failed too often wait, with a wait that
// doubles on every further failure.
//
// The check and the count are one step: begin reserves an attempt under the
// throttle's lock before the (slow) check runs, and a key may have only as
// many attempts in flight as it has tries left, so parallel guesses from one
// address cannot all be checked before the first failure is counted. A
// semaphore bounds how many checks run at once over all keys (bcrypt takes
// tens of milliseconds of CPU), and a bounded queue in front of it sheds the
// rest with 503, so that a guess storm leaves CPU for the pages that need
// no password.

// throttle counts failed secret checks per client key.
type throttle struct {
	max  int
	base time.Duration
	now  func() time.Time

	checks    chan struct{} // one token per check running
	maxQueued int

	mu     sync.Mutex
	queued int
	state  map[string]*failures
	pruned time.Time // last walk of state for old entries
}

// failures is the record of one key: consecutive failures, the time of the
// last one, and the attempts in flight.
type failures struct {
	n       int
	pending int
	last    time.Time
}

const (
	maxLockout     = 15 * time.Minute
	forgetFailures = 30 * time.Minute
	maxTracked     = 10000
	// busyWait is the Retry-After of an attempt refused because the key's
	// remaining tries are all in flight, or because too many checks wait.
	busyWait = time.Second
)

// overflowKey is the bucket of keys failing once the table is full.
const overflowKey = "*overflow*"

// newThrottle returns a throttle that locks a key out after max failures
// for base, doubling per further failure, running at most concurrent checks
// at once with at most queued more waiting.
func newThrottle(max int, base time.Duration, concurrent, queued int, now func() time.Time) *throttle {
	return &throttle{
		max: max, base: base, now: now,
		checks: make(chan struct{}, max1(concurrent)), maxQueued: max1(queued),
		state: make(map[string]*failures),
	}
}

func max1(n int) int { return max(n, 1) }

// outcome is how a check ended.
type outcome int

const (
	// neutral neither counts nor forgets failures (a malformed request).
	neutral outcome = iota
	// failed counts a failure.
	failed
	// succeeded forgets the key's failures.
	succeeded
)

// attempt is a reserved check; done must be called exactly once.
type attempt struct {
	t    *throttle
	key  string
	once sync.Once
}

// busyError is a 503 asking the client to come back shortly: every check
// slot is taken and the queue in front of them is full.
type busyError struct{}

func (busyError) Error() string   { return "too many password checks at once: try again shortly" }
func (busyError) StatusCode() int { return http.StatusServiceUnavailable }

// begin reserves an attempt for key, or returns a *lockedError (429) when
// key must wait, busyError (503) when too many checks queue, or the
// context's error. On success it holds a check slot until done.
func (t *throttle) begin(ctx context.Context, key string) (*attempt, error) {
	t.mu.Lock()
	now := t.now()
	f := t.state[key]
	if f == nil && len(t.state) >= maxTracked {
		if now.Sub(t.pruned) >= time.Second { // a full walk of the table at most once a second
			t.pruned = now
			t.prune(now)
		}
		if len(t.state) >= maxTracked {
			// Too many keys failing at once (an attack from many addresses): they
			// share one bucket, so none of them resets anyone's lockout.
			key = overflowKey
			f = t.state[key]
		}
	}
	if f != nil {
		if now.Sub(f.last) > forgetFailures && f.pending == 0 {
			f.n = 0
		}
		if wait := t.lockedFor(f, now); wait > 0 {
			t.mu.Unlock()
			return nil, &lockedError{wait: wait}
		}
		// Only as many attempts in flight as tries are left (one once locked
		// out before): if they all fail, the key is locked out at once.
		if f.pending >= max(t.max-f.n, 1) {
			t.mu.Unlock()
			return nil, &lockedError{wait: busyWait}
		}
	}
	if t.queued >= t.maxQueued+cap(t.checks) {
		t.mu.Unlock()
		return nil, busyError{}
	}
	if f == nil {
		f = &failures{}
		t.state[key] = f
	}
	f.pending++
	t.queued++
	t.mu.Unlock()

	select {
	case t.checks <- struct{}{}:
		return &attempt{t: t, key: key}, nil
	case <-ctx.Done():
		t.finish(key, neutral)
		return nil, ctx.Err()
	}
}

// done releases the check slot and records how the check ended.
func (a *attempt) done(o outcome) {
	a.once.Do(func() {
		<-a.t.checks
		a.t.finish(a.key, o)
	})
}

// finish ends an attempt of key.
func (t *throttle) finish(key string, o outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.queued--
	f := t.state[key]
	if f == nil {
		return // cannot happen: an entry with pending > 0 is never pruned
	}
	f.pending--
	switch o {
	case failed:
		f.n++
		f.last = t.now()
	case succeeded:
		f.n = 0
	}
	if f.n == 0 && f.pending == 0 {
		delete(t.state, key)
	}
}

// lockedFor returns how long f must still wait; the caller holds t.mu.
func (t *throttle) lockedFor(f *failures, now time.Time) time.Duration {
	if f.n < t.max {
		return 0
	}
	d := t.base << min(f.n-t.max, 20)
	if d <= 0 || d > maxLockout {
		d = maxLockout
	}
	return max(f.last.Add(d).Sub(now), 0)
}

// prune forgets old failures of keys with nothing in flight; the caller
// holds t.mu.
func (t *throttle) prune(now time.Time) {
	for k, f := range t.state {
		if f.pending == 0 && now.Sub(f.last) > forgetFailures {
			delete(t.state, k)
		}
	}
}

// clientKey is the throttle key of a client address: the address itself,
// or for IPv6 its /64, since one host usually holds a whole /64.
func clientKey(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// deviceRoute reports whether path is one of the routes on which woken
// devices present their secret or call token (registerDeviceRoutes).
func deviceRoute(path string) bool {
	return path == "/sipis/messages" || path == "/sipis/messages/ack" || strings.HasPrefix(path, "/sipis/call/")
}

// throttleDevices guards the device routes like the admin login: an
// attempt is reserved per client address and selector before the handler
// runs, and the handler's answer is counted: 401 or 403 (wrong secret or
// token) as a failure, 2xx as a success, anything else as neither. The
// selector is part of the key so that a device's success on its own
// selector cannot reset the failures of guesses at another one, and so
// that devices behind one carrier NAT do not lock each other out.
func (s *Server) throttleDevices(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !deviceRoute(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		key := clientKey(s.clientAddr(r)) + "\x00" + strings.ToLower(r.URL.Query().Get("s"))
		a, err := s.deviceThrottle.begin(r.Context(), key)
		if err != nil {
			s.error(w, r, err)
			return
		}
		defer a.done(neutral) // a panicking handler counts as nothing
		sw := &StatusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		switch {
		case sw.Status == http.StatusUnauthorized || sw.Status == http.StatusForbidden:
			a.done(failed)
			s.log.WithField("remote", s.clientAddr(r)).WithField("path", r.URL.Path).Info("device secret or token refused")
		case sw.Status >= 200 && sw.Status < 300:
			a.done(succeeded)
		}
	})
}
