package instance

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/pkg/registration"
)

type harness struct {
	t    *testing.T
	st   *memStore
	reg  *fakeRegistrar
	m    *Manager
	pub  *registration.Key
	priv *registration.Key
	opts Options
}

func newHarness(t *testing.T, mut func(*Options)) *harness {
	t.Helper()
	pub, priv, err := registration.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: newMemStore(), reg: newFakeRegistrar(), pub: pub, priv: priv}
	h.opts = Options{Store: h.st, Registrar: h.reg, PublicKey: pub, PrivateKey: priv, Workers: 8, ResumeWindow: time.Minute}
	if mut != nil {
		mut(&h.opts)
	}
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	h.opts.Store, h.opts.Registrar = h.st, h.reg
	m, err := New(h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.m = m
}

func (h *harness) restart() {
	h.m.Stop()
	h.start()
}

func regFor(sel, user string, mode registration.Mode) *registration.Registration {
	return &registration.Registration{
		Version: registration.Version, Selector: sel, Mode: mode,
		Account: registration.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: "127.0.0.1", Port: 5060, Expires: 600},
		Device:  registration.Device{ID: "phone", Platform: "none"}, Timestamp: time.Now(), Nonce: registration.NewNonce(),
	}
}

func (h *harness) send(r *registration.Registration) error {
	sealed, err := registration.Seal(r, h.pub)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.m.Register(context.Background(), sealed)
}

func (h *harness) phase(sel string) Phase {
	s, ok := h.m.Snapshot(sel)
	if !ok {
		return Phase{99, 99}
	}
	return s.Phase
}

func TestRegisterAndRefreshBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		if err := h.send(regFor("aa000001", "alice", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if p := h.phase("aa000001"); p != (Phase{RegisterLoop, Registered}) {
			t.Fatalf("phase %v", p)
		}
		start := time.Now()
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		calls := h.reg.callsFor("alice")
		if len(calls) < 13 {
			t.Fatalf("only %d REGISTERs in 2h with 600 s expiry", len(calls))
		}
		prev := start
		for i, c := range calls[1:] {
			gap := c.At.Sub(prev)
			if gap < 432*time.Second || gap > 540*time.Second {
				t.Errorf("refresh %d after %v, want 432..540 s (0.9 of 600 s less 20%% jitter)", i, gap)
			}
			if c.Binding.CallID != calls[0].Binding.CallID {
				t.Error("Call-ID changed across refreshes")
			}
			if c.Binding.CSeq <= calls[i].Binding.CSeq {
				t.Errorf("CSeq did not increase: %d then %d", calls[i].Binding.CSeq, c.Binding.CSeq)
			}
			prev = c.At
		}
		if got := h.st.get("aa000001"); got.Status != "Registered" || got.State != "RegisterLoop" || got.CSeq == 0 {
			t.Errorf("stored state %s/%s cseq %d", got.State, got.Status, got.CSeq)
		}
	})
}

func TestForegroundUnregistersOurContactOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.send(regFor("aa000002", "bob", registration.ModeBackground))
		synctest.Wait()
		if err := h.send(regFor("aa000002", "bob", registration.ModeForeground)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		calls := h.reg.callsFor("bob")
		last := calls[len(calls)-1].Binding
		if last.Expires != 0 || last.ContactUser == "" || last.ContactUser != calls[0].Binding.ContactUser {
			t.Errorf("unregister binding %+v", last)
		}
		if p := h.phase("aa000002"); p != (Phase{Idle, NotRegistered}) {
			t.Errorf("phase %v", p)
		}
		n := len(calls)
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if got := len(h.reg.callsFor("bob")); got != n {
			t.Errorf("%d REGISTERs after foreground", got-n)
		}
	})
}

func TestIntervalTooBriefUsesMinExpires(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.reg.set("carol", func(b sipua.Binding) (sipua.Result, error) {
			if b.Expires < 1800 {
				return sipua.Result{Status: 423, Reason: "Interval Too Brief", MinExpires: 1800}, nil
			}
			return grant(b)
		})
		h.send(regFor("aa000003", "carol", registration.ModeBackground))
		synctest.Wait()
		calls := h.reg.callsFor("carol")
		if len(calls) != 2 || calls[1].Binding.Expires != 1800 {
			t.Fatalf("calls %+v", calls)
		}
		if p := h.phase("aa000003"); p.Status != Registered {
			t.Errorf("phase %v", p)
		}
	})
}

func TestFailuresBackOffWithJitterAndRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.BackoffMin = 5 * time.Second; o.BackoffMax = 10 * time.Minute })
		defer h.m.Stop()
		h.reg.set("dave", func(b sipua.Binding) (sipua.Result, error) { return sipua.Result{}, sipua.ErrTimeout })
		h.send(regFor("aa000004", "dave", registration.ModeBackground))
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		calls := h.reg.callsFor("dave")
		if len(calls) < 8 || len(calls) > 30 {
			t.Fatalf("%d attempts in 2 h", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			gap := calls[i].At.Sub(calls[i-1].At)
			want := min(5*time.Second<<(i-1), 10*time.Minute)
			if gap < want/2 || gap > want {
				t.Errorf("retry %d after %v, want %v..%v", i, gap, want/2, want)
			}
		}
		s, _ := h.m.Snapshot("aa000004")
		if s.Phase != (Phase{RegisterLoop, Error}) || s.LastError == "" {
			t.Errorf("phase %v error %q", s.Phase, s.LastError)
		}

		h.reg.set("erin", func(b sipua.Binding) (sipua.Result, error) {
			return sipua.Result{Status: 503, Reason: "Service Unavailable", RetryAfter: 20 * time.Minute}, nil
		})
		h.send(regFor("aa000005", "erin", registration.ModeBackground))
		time.Sleep(time.Hour)
		synctest.Wait()
		calls = h.reg.callsFor("erin")
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].At.Sub(calls[i-1].At); gap < 20*time.Minute || gap > 22*time.Minute {
				t.Errorf("503 retry after %v, want Retry-After 20 m plus up to 10%%", gap)
			}
		}
	})
}

func TestUnauthorizedRetriesSlowly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.UnauthorizedRetry = 30 * time.Minute })
		defer h.m.Stop()
		h.reg.set("frank", func(b sipua.Binding) (sipua.Result, error) {
			return sipua.Result{Status: 401, Reason: "Unauthorized", Challenged: true}, nil
		})
		h.send(regFor("aa000006", "frank", registration.ModeBackground))
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		calls := h.reg.callsFor("frank")
		if len(calls) < 4 || len(calls) > 8 {
			t.Errorf("%d attempts in 3 h, want one per 24..30 minutes", len(calls))
		}
		s, _ := h.m.Snapshot("aa000006")
		if s.Phase != (Phase{RegisterLoop, Unauthorized}) {
			t.Errorf("phase %v", s.Phase)
		}
	})
}

func TestTurnOffAndForget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		for i := range 5 {
			h.send(regFor(fmt.Sprintf("bb00000%d", i), fmt.Sprintf("u%d", i), registration.ModeBackground))
		}
		synctest.Wait()
		if err := h.m.TurnOff(context.Background(), "bb000000"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		s, _ := h.m.Snapshot("bb000000")
		if s.Phase != (Phase{Idle, NotRegistered}) || !s.Off {
			t.Errorf("after TurnOff: %v off=%v", s.Phase, s.Off)
		}
		time.Sleep(100 * time.Millisecond) // the write-behind flush
		synctest.Wait()
		if !h.st.get("bb000000").Off {
			t.Error("off flag not stored")
		}
		n, err := h.m.TurnOffAll(context.Background())
		if err != nil || n != 4 {
			t.Errorf("TurnOffAll = %d, %v", n, err)
		}
		synctest.Wait()
		byPhase, off := h.m.Counts()
		if byPhase[Phase{Idle, NotRegistered}] != 5 || off != 5 {
			t.Errorf("counts %v off %d", byPhase, off)
		}
		if err := h.send(regFor("bb000001", "u1", registration.ModeOff)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if _, ok := h.m.Snapshot("bb000001"); ok {
			t.Error("forgotten instance still in memory")
		}
		if _, err := h.st.Instance(context.Background(), "bb000001"); err == nil {
			t.Error("forgotten instance still stored")
		}
		if err := h.m.TurnOff(context.Background(), "ffffffff"); !errors.Is(err, ErrUnknownSelector) {
			t.Errorf("unknown selector: %v", err)
		}
	})
}

func TestRestartResumesWithinWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.ResumeWindow = 2 * time.Minute })
		for i := range 50 {
			r := regFor(fmt.Sprintf("cc%06d", i), fmt.Sprintf("r%d", i), registration.ModeBackground)
			r.Account.Expires = 60 // short: resumption must re-register within the window
			h.send(r)
		}
		synctest.Wait()
		before := len(h.reg.calls)
		h.restart()
		defer h.m.Stop()
		restarted := time.Now()
		if n := h.m.Len(); n != 50 {
			t.Fatalf("%d instances after restart", n)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		seen := map[string]bool{}
		h.reg.mu.Lock()
		resumed := h.reg.calls[before:]
		h.reg.mu.Unlock()
		var first, last time.Duration = time.Hour, 0
		for _, c := range resumed {
			seen[c.Binding.User] = true
			d := c.At.Sub(restarted)
			first, last = min(first, d), max(last, d)
		}
		if len(seen) != 50 {
			t.Errorf("%d of 50 instances re-registered in the window", len(seen))
		}
		if last-first < 20*time.Second {
			t.Errorf("re-registrations not spread: between %v and %v", first, last)
		}
		for i := range 50 {
			if p := h.phase(fmt.Sprintf("cc%06d", i)); p.Status != Registered {
				t.Errorf("instance %d: %v", i, p)
			}
		}
	})
}

func TestPerProxyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.MaxInFlightPerProxy = 3; o.Workers = 16 })
		defer h.m.Stop()
		h.reg.block = make(chan struct{})
		for i := range 10 {
			h.send(regFor(fmt.Sprintf("dd%06d", i), fmt.Sprintf("p%d", i), registration.ModeBackground))
		}
		time.Sleep(time.Second)
		synctest.Wait()
		h.reg.mu.Lock()
		maxIn := h.reg.maxIn
		h.reg.mu.Unlock()
		if maxIn != 3 {
			t.Errorf("max in flight %d, want 3", maxIn)
		}
		close(h.reg.block)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		byPhase, _ := h.m.Counts()
		if byPhase[Phase{RegisterLoop, Registered}] != 10 {
			t.Errorf("counts %v", byPhase)
		}
	})
}

func TestForegroundWhileRegistering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.reg.block = make(chan struct{})
		h.send(regFor("ee000001", "gina", registration.ModeBackground))
		synctest.Wait()
		if p := h.phase("ee000001"); p != (Phase{Registering, StatusRegistering}) {
			t.Errorf("phase while in flight %v", p)
		}
		h.send(regFor("ee000001", "gina", registration.ModeForeground))
		synctest.Wait()
		close(h.reg.block)
		synctest.Wait()
		if p := h.phase("ee000001"); p != (Phase{Idle, NotRegistered}) {
			t.Errorf("phase %v, want idle after the pending foreground", p)
		}
		calls := h.reg.callsFor("gina")
		if len(calls) != 2 || calls[1].Binding.Expires != 0 {
			t.Errorf("calls %+v", calls)
		}
	})
}

func TestRegistrationRefusals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		good := regFor("ff000001", "hank", registration.ModeBackground)
		if err := h.send(good); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		snapshot := h.st.get("ff000001")
		saves := h.st.saves

		code := statusOf
		if err := h.send(good); code(err) != 409 {
			t.Errorf("replay: %v", err)
		}
		stale := regFor("ff000001", "hank", registration.ModeBackground)
		stale.Timestamp = time.Now().Add(-6 * time.Minute)
		if err := h.send(stale); code(err) != 400 {
			t.Errorf("stale: %v", err)
		}
		otherPub, _, _ := registration.GenerateKey()
		sealed, _ := registration.Seal(regFor("ff000001", "hank", registration.ModeBackground), otherPub)
		if err := h.m.Register(context.Background(), sealed); code(err) != 400 {
			t.Errorf("foreign key: %v", err)
		}
		if err := h.m.Register(context.Background(), sealed[:30]); code(err) != 400 {
			t.Errorf("truncated: %v", err)
		}
		synctest.Wait()
		after := h.st.get("ff000001")
		if after.LastActivity != snapshot.LastActivity || h.st.saves != saves {
			t.Error("a refused registration changed the store")
		}
	})
}

func TestSilentInstancesForgotten(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.MaxAge = 24 * time.Hour; o.SweepInterval = time.Hour })
		defer h.m.Stop()
		h.send(regFor("ab000001", "ivan", registration.ModeBackground))
		synctest.Wait()
		time.Sleep(26 * time.Hour)
		synctest.Wait()
		if _, ok := h.m.Snapshot("ab000001"); ok {
			t.Error("silent instance still held")
		}
		calls := h.reg.callsFor("ivan")
		if last := calls[len(calls)-1].Binding; last.Expires != 0 {
			t.Error("silent instance not unregistered before it was deleted")
		}
	})
}

func TestBehindNATContactMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.FollowNAT = true })
		defer h.m.Stop()
		h.reg.set("nina", func(b sipua.Binding) (sipua.Result, error) {
			res, _ := grant(b)
			res.ContactAddr = b.ContactAddr
			if res.ContactAddr == "" {
				res.ContactAddr = "10.0.0.5:5060" // what the UA put in the Contact
			}
			res.Received, res.RPort = "198.51.100.7", 40123 // what the registrar saw
			return res, nil
		})
		h.send(regFor("ab0000aa", "nina", registration.ModeBackground))
		synctest.Wait()
		calls := h.reg.callsFor("nina")
		if len(calls) != 3 {
			t.Fatalf("%d REGISTERs, want register, unregister at the old address, register at the new", len(calls))
		}
		if c := calls[1].Binding; c.Expires != 0 || c.ContactAddr != "10.0.0.5:5060" {
			t.Errorf("second REGISTER %+v, want Expires 0 at the old address", c)
		}
		if c := calls[2].Binding; c.Expires == 0 || c.ContactAddr != "198.51.100.7:40123" {
			t.Errorf("third REGISTER %+v, want the address the registrar saw", c)
		}
		if p := h.phase("ab0000aa"); p != (Phase{RegisterLoop, Registered}) {
			t.Errorf("phase %v", p)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		for _, c := range h.reg.callsFor("nina")[3:] {
			if c.Binding.ContactAddr != "198.51.100.7:40123" {
				t.Errorf("refresh with Contact at %q", c.Binding.ContactAddr)
			}
		}
	})
}

func TestTinyGrantDoesNotLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.reg.set("tiny", func(b sipua.Binding) (sipua.Result, error) {
			res, _ := grant(b)
			res.Expires = 1 // a registrar that shortens every binding to a second
			return res, nil
		})
		h.send(regFor("ab0000bb", "tiny", registration.ModeBackground))
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(h.reg.callsFor("tiny")); n > 13 {
			t.Errorf("%d REGISTERs in a minute for a 1 s grant; the floor is one per %v", n, minRefresh)
		}
	})
}

// TestRefreshPointLeavesTimerF: a refresh comes at RefreshFraction of the grant, but early
// enough that a whole transaction (Timer F, 32 s) and a margin fit before expiry; a grant too
// short for that is refreshed at a third of it; jitter only makes it earlier.
func TestRefreshPointLeavesTimerF(t *testing.T) {
	m := &Manager{opts: Options{Jitter: -1}}
	m.opts.setDefaults()
	for _, c := range []struct{ granted, want time.Duration }{
		{3600 * time.Second, 3240 * time.Second}, // 0.9
		{600 * time.Second, 540 * time.Second},   // 0.9
		{120 * time.Second, 84 * time.Second},    // 36 s before expiry
		{60 * time.Second, 24 * time.Second},     // 36 s before expiry
		{45 * time.Second, 15 * time.Second},     // a third
		{10 * time.Second, minRefresh},
	} {
		if got := m.refreshIn(c.granted); got != c.want {
			t.Errorf("refreshIn(%v) = %v, want %v", c.granted, got, c.want)
		}
		if c.granted >= 3*refreshLead && c.granted-m.refreshIn(c.granted) < refreshLead {
			t.Errorf("refresh of %v leaves less than %v", c.granted, refreshLead)
		}
	}
	m.opts.Jitter = 0.1
	for range 1000 {
		if got := m.refreshIn(60 * time.Second); got > 24*time.Second || got < 21600*time.Millisecond {
			t.Fatalf("jittered refreshIn(60 s) = %v, want 21.6..24 s", got)
		}
	}
}
