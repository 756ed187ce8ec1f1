package instance

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
)

// stallingStore is a memStore whose state writes stall (or fail) until a given time or until
// released: what a SQLite database does when its disk hangs or another process holds its lock.
type stallingStore struct {
	*memStore
	until   time.Time
	fail    bool          // fail at once instead of stalling
	release chan struct{} // closed to end the stall early

	mu      sync.Mutex
	entered int // SaveStates calls that began
	failed  int // SaveStates calls that returned an error
}

func (s *stallingStore) SaveStates(ctx context.Context, ups []store.StateUpdate) error {
	s.mu.Lock()
	s.entered++
	s.mu.Unlock()
	err := s.stall(ctx)
	if err != nil {
		s.mu.Lock()
		s.failed++
		s.mu.Unlock()
		return err
	}
	return s.memStore.SaveStates(ctx, ups)
}

// stallUntil makes writes stall (or fail) until t.
func (s *stallingStore) stallUntil(t time.Time) {
	s.mu.Lock()
	s.until = t
	s.mu.Unlock()
}

func (s *stallingStore) stall(ctx context.Context) error {
	s.mu.Lock()
	left := time.Until(s.until)
	s.mu.Unlock()
	if left <= 0 {
		return nil
	}
	if s.fail {
		return errors.New("database is locked")
	}
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stallingStore) calls() (entered, failed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entered, s.failed
}

// waitFor polls cond until it holds, failing the test after limit (which only detects a hang).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v: %s", limit, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// answers runs fn and fails the test if it does not return within limit (it would hang behind
// a worker that blocks holding an instance's lock).
func answers(t *testing.T, limit time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("%s did not answer within %v while the store stalled", what, limit)
	}
}

// stallHarness starts a manager on st, like newHarness.
func stallHarness(t *testing.T, st *stallingStore, mut func(*Options)) *harness {
	t.Helper()
	pub, priv, err := registration.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st.memStore, reg: newFakeRegistrar(), pub: pub, priv: priv}
	h.opts = Options{Store: st, Registrar: h.reg, PublicKey: pub, PrivateKey: priv, Workers: 8, ResumeWindow: time.Minute}
	if mut != nil {
		mut(&h.opts)
	}
	if h.m, err = New(h.opts); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h
}

// While the store's state writes stall for 30 s, workers keep registering (thousands of state
// changes, more than any write-behind buffer), the read paths behind /stats answer, and a new
// registration is accepted and registered. Once the store recovers, every state is written.
//
// This runs on the real clock: the hang it guards against is a worker blocked while holding an
// instance's mutex, and a goroutine waiting for a mutex is not durably blocked, so synctest's
// clock would never move on. The stall is released once everything was checked.
func TestStalledStoreBlocksNoInstance(t *testing.T) {
	st := &stallingStore{memStore: newMemStore(), until: time.Now().Add(30 * time.Second), release: make(chan struct{})}
	h := stallHarness(t, st, func(o *Options) { o.MaxInFlightPerProxy = 1 << 20 })
	stopped := false
	defer func() {
		if !stopped {
			close(st.release)
			h.m.Stop()
		}
	}()

	const n = 3000 // two state changes each: 6000 updates
	for i := range n {
		if err := h.m.Apply(context.Background(), regFor(fmt.Sprintf("a1%06d", i), fmt.Sprintf("s%d", i), registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
	}
	var slowest time.Duration
	registered := func() int {
		var got int
		answers(t, 10*time.Second, "Counts", func() {
			start := time.Now()
			byPhase, _ := h.m.Counts()
			got = byPhase[Phase{RegisterLoop, Registered}]
			slowest = max(slowest, time.Since(start))
		})
		return got
	}
	waitFor(t, 20*time.Second, "all instances registered during the stall", func() bool { return registered() == n })
	if entered, _ := st.calls(); entered == 0 {
		t.Fatal("no state write began: the test does not exercise a stall")
	}
	answers(t, 10*time.Second, "Range", func() { h.m.Range(0, 0, func(Snapshot) bool { return true }) })
	answers(t, 10*time.Second, "Debug", func() { h.m.Debug(fmt.Sprintf("a1%06d", n/2)) })

	// A new registration is accepted and registered while the store still stalls.
	answers(t, 10*time.Second, "a new registration", func() {
		if err := h.send(regFor("a1ffffff", "latecomer", registration.ModeBackground)); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, 10*time.Second, "the new registration registered", func() bool { return h.phase("a1ffffff").Status == Registered })
	if time.Now().After(st.until) {
		t.Fatal("the stall was over before the checks ended: they prove nothing")
	}
	if got := h.st.get("a1000000").Status; got == "Registered" {
		t.Fatalf("stored status %q during the stall", got)
	}

	h.m.persistMu.Lock()
	dirty := len(h.m.dirty)
	h.m.persistMu.Unlock()
	t.Logf("during the stall: %d instances registered, Counts took %v at most, %d states waiting to be written", n+1, slowest, dirty)

	close(st.release)
	h.m.Stop()
	stopped = true
	for i := range n + 1 {
		sel := fmt.Sprintf("a1%06d", i)
		if i == n {
			sel = "a1ffffff"
		}
		mem, _ := h.m.Snapshot(sel)
		if got := h.st.get(sel); got.Status != "Registered" || got.CSeq != mem.CSeq {
			t.Fatalf("%s: stored %s cseq %d after the stall, memory %v cseq %d", sel, got.Status, got.CSeq, mem.Phase, mem.CSeq)
		}
	}
}

// A Stop while the store stalls for 30 s (or fails every write for 30 s) waits for it and
// writes every state change: nothing acknowledged is lost, and the newest state of each
// selector is the one stored.
func TestStopDuringStoreStallWritesEverything(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := map[bool]string{false: "stall", true: "fail"}[fail]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &stallingStore{memStore: newMemStore(), fail: fail, release: make(chan struct{})}
				h := stallHarness(t, st, nil)
				for i := range 50 {
					h.send(regFor(fmt.Sprintf("a2%06d", i), fmt.Sprintf("t%d", i), registration.ModeBackground))
				}
				time.Sleep(time.Second) // written behind
				synctest.Wait()
				if got := h.st.get("a2000000"); got.Status != Registered.String() {
					t.Fatalf("stored %s before the stall", got.Status)
				}
				st.stallUntil(time.Now().Add(30 * time.Second)) // from now on writes stall
				for i := range 50 {
					h.send(regFor(fmt.Sprintf("a2%06d", i), fmt.Sprintf("t%d", i), registration.ModeForeground))
				}
				synctest.Wait()
				time.Sleep(time.Second) // the persister is in the stall
				start := time.Now()
				h.m.Stop()
				if waited := time.Since(start); waited < 25*time.Second {
					t.Errorf("Stop returned after %v of a 30 s stall", waited)
				}
				if entered, failed := st.calls(); fail && failed == 0 || entered == 0 {
					t.Fatalf("%d writes began, %d failed: no stall was exercised", entered, failed)
				}
				for i := range 50 {
					sel := fmt.Sprintf("a2%06d", i)
					mem, _ := h.m.Snapshot(sel)
					if got := h.st.get(sel); got.Status != NotRegistered.String() || got.State != Idle.Key() || !got.ExpiresAt.IsZero() || got.CSeq != mem.CSeq {
						t.Errorf("%s: stored %s/%s expires %v cseq %d, want the last state Idle/NotRegistered cseq %d", sel, got.State, got.Status, got.ExpiresAt, got.CSeq, mem.CSeq)
					}
				}
			})
		})
	}
}

// Flush returns only once every state changed before the call is in the store: at once on a
// healthy store, and only after the store recovers on one that fails every write for 10 s.
func TestFlushWaitsUntilStatesAreWritten(t *testing.T) {
	for _, fail := range []bool{false, true} {
		name := map[bool]string{false: "healthy", true: "failing"}[fail]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := &stallingStore{memStore: newMemStore(), fail: true, release: make(chan struct{})}
				h := stallHarness(t, st, nil)
				defer h.m.Stop()
				if fail {
					st.stallUntil(time.Now().Add(10 * time.Second))
				}
				for i := range 20 {
					if err := h.send(regFor(fmt.Sprintf("a3%06d", i), fmt.Sprintf("f%d", i), registration.ModeBackground)); err != nil {
						t.Fatal(err)
					}
				}
				synctest.Wait() // every worker has registered its instance and is idle
				start := time.Now()
				if err := h.m.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				waited := time.Since(start)
				if fail && waited < 10*time.Second {
					t.Errorf("Flush returned after %v while the store failed for 10 s", waited)
				}
				if _, failed := st.calls(); fail && failed == 0 {
					t.Fatal("no write failed: the failing store was not exercised")
				}
				for i := range 20 {
					sel := fmt.Sprintf("a3%06d", i)
					mem, _ := h.m.Snapshot(sel)
					if got := h.st.get(sel); mem.Phase.Status != Registered || got.Status != Registered.String() || got.CSeq != mem.CSeq {
						t.Errorf("%s after Flush: stored %s cseq %d, memory %v cseq %d", sel, got.Status, got.CSeq, mem.Phase, mem.CSeq)
					}
				}
			})
		})
	}
}

// A Flush whose context ends first says so.
func TestFlushHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := &stallingStore{memStore: newMemStore(), fail: true, release: make(chan struct{})}
		h := stallHarness(t, st, nil)
		defer h.m.Stop()
		st.stallUntil(time.Now().Add(time.Hour))
		if err := h.send(regFor("a4000001", "g", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := h.m.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Flush on a store failing for an hour = %v, want the context's deadline", err)
		}
		st.stallUntil(time.Time{})
	})
}

// TestGoodRefreshesWrittenOncePerSecond: a refresh that changes nothing but the expiry and
// CSeq is written with the next once-a-second batch, not within 20 ms; a failure is written at
// once; Stop writes what is pending.
func TestGoodRefreshesWrittenOncePerSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.Jitter = -1 })
		if err := h.send(regFor("aa0000f1", "fred", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		first := h.st.get("aa0000f1")
		if first.Status != "Registered" || first.CSeq == 0 {
			t.Fatalf("first registration not written at once: %+v", first)
		}
		// 600 s granted: refreshed at 540 s (0.9, no jitter), at most coalesce later.
		time.Sleep(540*time.Second + 150*time.Millisecond)
		synctest.Wait()
		snap, _ := h.m.Snapshot("aa0000f1")
		if snap.CSeq <= first.CSeq {
			t.Fatalf("no refresh by 540 s: CSeq %d", snap.CSeq)
		}
		if got := h.st.get("aa0000f1"); got.CSeq != first.CSeq {
			t.Errorf("refresh written within 0.15 s (CSeq %d), want with the next 1 s batch", got.CSeq)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := h.st.get("aa0000f1"); got.CSeq != snap.CSeq || !got.ExpiresAt.After(first.ExpiresAt) {
			t.Errorf("refresh not written within 1 s: stored CSeq %d expiry %v, want %d after %v", got.CSeq, got.ExpiresAt, snap.CSeq, first.ExpiresAt)
		}

		// A failed refresh is written with the 20 ms round.
		h.reg.set("fred", func(b sipua.Binding) (sipua.Result, error) {
			return sipua.Result{Status: 500, Reason: "Server Error"}, nil
		})
		time.Sleep(540 * time.Second)
		synctest.Wait()
		time.Sleep(50 * time.Millisecond)
		synctest.Wait()
		if got := h.st.get("aa0000f1"); got.Status != "Error" {
			t.Errorf("failed refresh stored as %s/%s, want Error at once", got.State, got.Status)
		}

		// Stop writes a refresh that is still waiting for its batch.
		h.reg.set("fred", grant)
		snap, _ = h.m.Snapshot("aa0000f1")
		time.Sleep(time.Until(snap.NextAt) + 150*time.Millisecond)
		synctest.Wait()
		snap, _ = h.m.Snapshot("aa0000f1")
		h.m.Stop()
		if got := h.st.get("aa0000f1"); got.CSeq != snap.CSeq || got.Status != "Registered" {
			t.Errorf("after Stop stored %s CSeq %d, want Registered %d", got.Status, got.CSeq, snap.CSeq)
		}
	})
}
