package instance

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/store"
)

// storedRegistered stores a background instance registered for grant, whose last refresh (the
// last save of its state) was at refreshed.
func storedRegistered(st *memStore, sel string, refreshed time.Time, grant time.Duration) {
	st.insts[sel] = &store.Instance{
		Selector: sel, Mode: store.ModeBackground, State: store.StateRegisterLoop, Status: store.StatusRegistered,
		Account:     store.Account{User: "u" + sel, Password: "pw-u" + sel, Domain: "sipis.test", Proxy: "127.0.0.1", Port: 5060, Expires: int(grant / time.Second)},
		ContactUser: "c" + sel, CallID: "call-" + sel, CSeq: 7,
		ExpiresAt: refreshed.Add(grant), UpdatedAt: refreshed, CreatedAt: refreshed, LastActivity: refreshed,
	}
	st.devs[sel] = map[string]store.Device{"d": {ID: "d"}}
}

// A resumed binding that is still valid is refreshed at its own refresh point (refreshIn of its
// grant after its last refresh), as without the restart: not at 0.9 of what is left, which
// would leave minutes without a refresh after a restart and then bring them all at once.
// Bindings past their refresh point are spread over the resume window, before they lapse.
func TestResumeKeepsRefreshPoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		now := time.Now()
		const grant = time.Hour
		// Without jitter, a 3,600 s grant is refreshed 3,240 s after it was granted.
		ago := map[string]time.Duration{"a0": 0, "a1": 10 * time.Minute, "a2": 30 * time.Minute, "a3": 50 * time.Minute}
		for sel, d := range ago {
			storedRegistered(st, sel, now.Add(-d), grant)
		}
		storedRegistered(st, "late", now.Add(-55*time.Minute), grant) // its point passed 1 min ago; 5 min left
		storedRegistered(st, "never", now.Add(-10*time.Minute), grant)
		st.insts["never"].UpdatedAt = time.Time{} // no time of its grant: refreshes at 0.9 of what is left
		m, err := New(Options{Store: st, Registrar: realistic(), Jitter: -1, ResumeWindow: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		next := func(sel string) time.Duration {
			s, ok := m.Snapshot(sel)
			if !ok {
				t.Fatalf("%s not resumed", sel)
			}
			return s.NextAt.Sub(now)
		}
		for sel, d := range ago {
			if got, want := next(sel), 3240*time.Second-d; got != want {
				t.Errorf("%s (refreshed %v ago): next refresh in %v, want %v", sel, d, got, want)
			}
		}
		// Past its refresh point: within the window, but a whole transaction before it lapses.
		if got := next("late"); got < 0 || got > 5*time.Minute-refreshLead {
			t.Errorf("late: next refresh in %v, want within %v", got, 5*time.Minute-refreshLead)
		}
		if got, want := next("never"), time.Duration(0.9*float64(50*time.Minute)); got != want {
			t.Errorf("never: next refresh in %v, want %v", got, want)
		}
		synctest.Wait() // nothing is due: nothing was sent
		if m.Stats().Registers.Load() != 0 {
			t.Errorf("%d REGISTERs right after the start, want none", m.Stats().Registers.Load())
		}
	})
}

// A resume of many bindings refreshed at random moments sends their refreshes at the rate
// they came before the restart, from the start: no gap, no burst.
func TestResumeSpreadsRefreshes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		now := time.Now()
		const n, grant = 3600, 600 * time.Second // one refresh every 0.15 s before the restart
		for i := range n {
			// Refreshed at evenly spread moments of the 540 s refresh interval.
			storedRegistered(st, fmt.Sprintf("%08x", i), now.Add(-time.Duration(i)*540*time.Second/n), grant)
		}
		m, err := New(Options{Store: st, Registrar: realistic(), Jitter: -1, ResumeWindow: 5 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		// Count the refreshes of each minute of the first five: each gets its share.
		var prev int64
		for minute := range 5 {
			time.Sleep(time.Minute)
			synctest.Wait()
			got := m.Stats().Registers.Load()
			if d := got - prev; d < n/9*8/10 || d > n/9*12/10 { // 540 s: 400 a minute
				t.Errorf("minute %d: %d refreshes, want about %d", minute+1, d, n/9)
			}
			prev = got
		}
	})
}

// A stored row that cannot be used (its password does not open) is reported and left stored;
// the other instances are resumed.
func TestResumeReportsBadRows(t *testing.T) {
	st := newMemStore()
	now := time.Now()
	for i := range 10 {
		storedRegistered(st, fmt.Sprintf("b%07d", i), now, time.Hour)
	}
	st.badRows = map[string]bool{"b0000003": true}
	m, err := New(Options{Store: st, Registrar: realistic()})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start with a bad row: %v", err)
	}
	defer m.Stop()
	if n := m.Len(); n != 9 {
		t.Errorf("%d instances resumed, want 9", n)
	}
	if _, ok := m.Snapshot("b0000003"); ok {
		t.Error("the bad row was resumed")
	}
	if n := m.Stats().NotResumed.Load(); n != 1 {
		t.Errorf("NotResumed = %d, want 1", n)
	}
	if _, err := st.Instance(context.Background(), "b0000003"); err != nil {
		t.Errorf("the bad row is no longer stored: %v", err)
	}
}
