package web

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// fail records one failed check of key, as a wrong password does.
func (t *throttle) fail(tb testing.TB, key string) {
	tb.Helper()
	a, err := t.begin(tb.Context(), key)
	if err != nil {
		var le *lockedError
		if errors.As(err, &le) {
			return // already locked out: nothing is checked
		}
		tb.Fatalf("begin %s: %v", key, err)
	}
	a.done(failed)
}

// blocked returns how long key must still wait (0 if it may try), without
// leaving an attempt behind.
func (t *throttle) blocked(tb testing.TB, key string) time.Duration {
	tb.Helper()
	a, err := t.begin(tb.Context(), key)
	if err == nil {
		a.done(neutral)
		return 0
	}
	var le *lockedError
	if !errors.As(err, &le) {
		tb.Fatalf("begin %s: %v", key, err)
	}
	return le.wait
}

// tracked returns the number of keys the throttle holds.
func (t *throttle) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.state)
}

// checkGate holds every check that enters it until open is called, and
// records how many ran at once.
type checkGate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	running int
	most    int
	total   int
}

func newCheckGate() *checkGate {
	return &checkGate{entered: make(chan struct{}, 1000), release: make(chan struct{})}
}

func (g *checkGate) wait() {
	g.mu.Lock()
	g.running++
	g.total++
	g.most = max(g.most, g.running)
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-g.release
	g.mu.Lock()
	g.running--
	g.mu.Unlock()
}

func (g *checkGate) open() { g.once.Do(func() { close(g.release) }) }

func (g *checkGate) stats() (most, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most, g.total
}

// storm sends n requests at once and collects their status codes. While
// the checks are held it calls until(codes) after every answer; when that
// returns true the gate opens. A check entering beyond maxEntered before
// then is an error (and opens the gate, so the test ends instead of
// hanging).
func storm(t *testing.T, g *checkGate, n, maxEntered int, send func(i int) int, until func(codes map[int]int) bool) map[int]int {
	t.Helper()
	results := make(chan int, n)
	for i := range n {
		go func() { results <- send(i) }()
	}
	codes := map[int]int{}
	entered := 0
	for got := 0; got < n; {
		select {
		case c := <-results:
			got++
			codes[c]++
			if until(codes) {
				g.open()
			}
		case <-g.entered:
			entered++
			if entered > maxEntered {
				select {
				case <-g.release:
				default:
					t.Errorf("%d checks entered while held, want at most %d", entered, maxEntered)
				}
				g.open()
			}
		}
	}
	g.open()
	return codes
}

func TestParallelGuessesCountedBeforeTheyAreChecked(t *testing.T) {
	f := newFake()
	f.seedN(1)
	g := newCheckGate()
	f.adminGate = g.wait
	s, _ := newTestServer(t, f, func(o *Options) { o.AuthConcurrency = 2 })
	bad := []string{"admin", "guess"}
	retryAfter := make(chan string, 40)
	codes := storm(t, g, 40, 2, func(int) int {
		w := do(t, s, req{path: "/debug?s=00000000", basic: bad})
		if w.Code == 429 {
			retryAfter <- w.Header().Get("Retry-After")
		}
		return w.Code
	}, func(codes map[int]int) bool { return codes[429] == 35 })
	if codes[401] != DefaultAuthFailures || codes[429] != 40-DefaultAuthFailures {
		t.Errorf("40 parallel wrong passwords: %v, want %d × 401 and the rest 429", codes, DefaultAuthFailures)
	}
	if most, total := g.stats(); most > 2 || total != DefaultAuthFailures {
		t.Errorf("%d checks ran at once (want ≤ 2), %d in all (want %d)", most, total, DefaultAuthFailures)
	}
	close(retryAfter)
	for v := range retryAfter {
		if v == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	// The five failures lock the address out: even the right password waits.
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin}); w.Code != 429 {
		t.Errorf("after the storm: %d, want 429", w.Code)
	}
	// Another address is not locked out.
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin, remote: "192.0.2.50:1234"}); w.Code != 200 {
		t.Errorf("other address after the storm: %d, want 200", w.Code)
	}
}

func TestGuessStormLeavesPublicPagesFree(t *testing.T) {
	f := newFake()
	f.seedN(3)
	g := newCheckGate()
	f.adminGate = g.wait
	s, _ := newTestServer(t, f, func(o *Options) { o.AuthConcurrency = 1 })
	const extra = 10
	n := 1 + authQueue + extra // one check running, a full queue, and more
	var pagesChecked bool
	codes := storm(t, g, n, 1, func(i int) int {
		// Each guess from its own address: the per-address limit does not
		// apply, only the bound on checks.
		return do(t, s, req{path: "/debug?s=00000000", basic: []string{"admin", "guess"},
			remote: fmt.Sprintf("198.51.%d.%d:999", i>>8, i&255)}).Code
	}, func(codes map[int]int) bool {
		if codes[503] < extra {
			return false
		}
		// Every check slot and queue place is taken: the pages without a
		// password still answer.
		for _, p := range []string{"/healthz", "/stats", "/about", "/stats/summary/json"} {
			if w := do(t, s, req{path: p}); w.Code != 200 {
				t.Errorf("%s during the storm: %d", p, w.Code)
			}
		}
		pagesChecked = true
		return true
	})
	if codes[503] != extra || codes[401] != n-extra {
		t.Errorf("storm answers %v, want %d × 503 and %d × 401", codes, extra, n-extra)
	}
	if most, _ := g.stats(); most != 1 {
		t.Errorf("%d checks ran at once, want 1", most)
	}
	if !pagesChecked {
		t.Error("the public pages were not tried during the storm")
	}
}

func TestDeviceRoutesThrottled(t *testing.T) {
	f := newFake()
	var mu sync.Mutex
	calls := 0
	var gate func()
	// A device route as strict as call/http.go's: 400 without a selector,
	// 401 without credentials, 403 for a wrong secret.
	device := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		gw := gate
		mu.Unlock()
		if gw != nil {
			gw()
		}
		switch {
		case r.URL.Query().Get("s") == "":
			http.Error(w, "missing selector (?s=)", http.StatusBadRequest)
		case r.Header.Get("X-Sipis-Secret") == "":
			http.Error(w, "missing X-Sipis-Device or X-Sipis-Secret header", http.StatusUnauthorized)
		case r.Header.Get("X-Sipis-Secret") != "right":
			http.Error(w, "device or secret not recognised", http.StatusForbidden)
		default:
			_, _ = w.Write([]byte(`{"messages":[]}`))
		}
	}
	s, _ := newTestServer(t, f, func(o *Options) {
		o.AuthFailures = 3
		o.Devices = &DeviceHandlers{Messages: http.HandlerFunc(device), Progress: http.HandlerFunc(device)}
	})
	get := func(sel, secret, remote string) int {
		return do(t, s, req{path: "/sipis/messages?s=" + sel, remote: remote,
			header: map[string]string{"X-Sipis-Device": "d1", "X-Sipis-Secret": secret}}).Code
	}
	const a, b = "192.0.2.1:1000", "192.0.2.2:1000"
	// Bad requests count as nothing.
	for range 5 {
		if c := do(t, s, req{path: "/sipis/messages", remote: a}).Code; c != 400 {
			t.Fatalf("no selector: %d", c)
		}
	}
	for i := range 3 {
		if c := get("0a", "wrong", a); c != 403 {
			t.Fatalf("guess %d: %d, want 403", i, c)
		}
	}
	before := calls
	if c := get("0a", "right", a); c != 429 {
		t.Errorf("after 3 wrong secrets: %d, want 429", c)
	}
	if c := do(t, s, req{method: "POST", path: "/sipis/call/progress?s=0a", remote: a}); c.Code != 429 {
		t.Errorf("call route after 3 wrong secrets: %d, want 429", c.Code)
	}
	if calls != before {
		t.Error("a locked-out request reached the handler")
	}
	if c := get("0a", "right", b); c != 200 {
		t.Errorf("another address: %d, want 200", c)
	}
	if c := get("0b", "right", a); c != 200 {
		t.Errorf("another selector from the same address: %d, want 200", c)
	}
	// A success on one's own selector does not reset guesses at another.
	get("0c", "wrong", b)
	get("0c", "wrong", b)
	if c := get("0b", "right", b); c != 200 {
		t.Fatalf("own selector: %d", c)
	}
	get("0c", "wrong", b)
	if c := get("0c", "right", b); c != 429 {
		t.Errorf("guesses at 0c after a success at 0b: %d, want 429", c)
	}
	// Parallel guesses: only the tries left are run.
	g := newCheckGate()
	mu.Lock()
	gate = g.wait
	mu.Unlock()
	codes := storm(t, g, 20, 3, func(int) int { return get("0d", "wrong", a) },
		func(codes map[int]int) bool { return codes[429] == 17 })
	if codes[403] != 3 || codes[429] != 17 {
		t.Errorf("20 parallel wrong secrets: %v, want 3 × 403 and 17 × 429", codes)
	}
}

func TestThrottleForgetsOldFailuresWhenFull(t *testing.T) {
	c := &clock{t: testNow}
	l := newThrottle(1, time.Second, 1, 1, c.Now)
	for i := range maxTracked {
		l.fail(t, fmt.Sprintf("old-%d", i))
	}
	l.fail(t, "overflowing") // the table is full: this one shares the overflow bucket
	if l.blocked(t, "another-new-one") == 0 {
		t.Fatal("a new key beyond the full table is not limited with the overflow bucket")
	}
	c.Add(forgetFailures + time.Second)
	l.fail(t, "fresh")
	if n := l.tracked(); n != 1 {
		t.Errorf("after the old failures expired the table holds %d keys, want 1", n)
	}
	if l.blocked(t, "fresh") == 0 {
		t.Error("the fresh key is not locked out after its failure")
	}
}
