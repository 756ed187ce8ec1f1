package instance

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/pkg/registration"
)

// The sweep and a Forget take the manager's and an instance's locks; in opposite orders they
// deadlock. Real goroutines, so the scheduler interleaves them; the bound only detects a hang.
func TestSweepDuringForgetDoesNotDeadlock(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.NotRegisteredMaxAge = time.Hour; o.SweepInterval = 24 * time.Hour; o.Workers = 8 })
	defer h.m.Stop()
	const n = 3000
	for i := range n {
		h.send(regFor(fmt.Sprintf("d0%06d", i), fmt.Sprintf("u%d", i), registration.ModeForeground))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			h.m.sweep(time.Now().Add(2 * time.Hour))
		}
	}()
	for i := range n {
		h.send(regFor(fmt.Sprintf("d0%06d", i), fmt.Sprintf("u%d", i), registration.ModeOff))
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the sweep did not finish: deadlocked with Forget")
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.m.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.m.Len(); got != 0 {
		t.Errorf("%d instances left", got)
	}
}

// Registrations accepted just before a stop, still in the message loop, are registered after
// the next start; foregrounds likewise unregister.
func TestQueuedEventsSurviveStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.Workers = 2; o.ResumeWindow = time.Second })
		h.reg.block = make(chan struct{})
		for i := range 20 {
			h.send(regFor(fmt.Sprintf("e1%06d", i), fmt.Sprintf("q%d", i), registration.ModeBackground))
		}
		synctest.Wait() // two in flight, eighteen queued
		close(h.reg.block)
		h.m.Stop()
		h.reg.block = nil
		h.start()
		defer h.m.Stop()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		byPhase, _ := h.m.Counts()
		if got := byPhase[Phase{RegisterLoop, Registered}]; got != 20 {
			t.Errorf("%d of 20 registered after the restart: %v", got, byPhase)
		}
	})
}

// Every state change made before Stop returns is in the store.
func TestStopWritesEveryUpdate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		for i := range 60 {
			h.send(regFor(fmt.Sprintf("e2%06d", i), fmt.Sprintf("s%d", i), registration.ModeBackground))
		}
		synctest.Wait()
		h.m.Stop()
		for i := range 60 {
			sel := fmt.Sprintf("e2%06d", i)
			mem, _ := h.m.Snapshot(sel)
			st := h.st.get(sel)
			if st.Status != mem.Phase.Status.String() || st.CSeq != mem.CSeq {
				t.Errorf("%s: stored %s cseq %d, memory %v cseq %d", sel, st.Status, st.CSeq, mem.Phase, mem.CSeq)
			}
		}
	})
}

// A proxy that is full makes waiting instances back off, and their waiting is not stored.
func TestBusyProxyDoesNotStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.MaxInFlightPerProxy = 2; o.Workers = 16 })
		defer h.m.Stop()
		h.reg.block = make(chan struct{})
		for i := range 200 {
			h.send(regFor(fmt.Sprintf("e3%06d", i), fmt.Sprintf("w%d", i), registration.ModeBackground))
		}
		synctest.Wait()
		saves := h.st.saves
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if d := h.st.saves - saves; d > 0 {
			t.Errorf("%d state writes while waiting for a busy proxy", d)
		}
		if q := h.m.sched.len(); q > 400 {
			t.Errorf("%d timer entries for 200 waiting instances", q)
		}
		close(h.reg.block)
		time.Sleep(30 * time.Second)
		synctest.Wait()
		byPhase, _ := h.m.Counts()
		if byPhase[Phase{RegisterLoop, Registered}] != 200 {
			t.Errorf("not all registered once the proxy freed up: %v", byPhase)
		}
	})
}

func TestRetryAfterIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.BackoffMax = 10 * time.Minute })
		defer h.m.Stop()
		h.reg.set("month", func(b sipua.Binding) (sipua.Result, error) {
			return sipua.Result{Status: 503, Reason: "Service Unavailable", RetryAfter: 30 * 24 * time.Hour}, nil
		})
		h.send(regFor("e4000001", "month", registration.ModeBackground))
		time.Sleep(3 * time.Hour)
		synctest.Wait()
		if n := len(h.reg.callsFor("month")); n < 3 {
			t.Errorf("%d attempts in 3 h: a 30-day Retry-After was obeyed", n)
		}
	})
}

// A registration for a held selector must prove it comes from its owner.
func TestTakeoverRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		own := regFor("e5000001", "victim", registration.ModeBackground)
		own.Device = registration.Device{ID: "phone", Platform: "none", Secret: "device-secret"}
		if err := h.send(own); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		code := statusOf
		evil := func(mut func(r *registration.Registration)) error {
			r := regFor("e5000001", "victim", registration.ModeBackground)
			r.Account.Password, r.Account.Proxy = "", "203.0.113.66"
			r.Device = registration.Device{ID: "attacker", Platform: "none", Secret: "mine"}
			if mut != nil {
				mut(r)
			}
			return h.send(r)
		}
		if err := evil(nil); code(err) != 403 {
			t.Errorf("new device, no password: %v", err)
		}
		if err := evil(func(r *registration.Registration) { r.Device.ID = "phone" }); code(err) != 403 {
			t.Errorf("known device, wrong secret: %v", err)
		}
		if err := evil(func(r *registration.Registration) { r.Account.Password = "guess" }); code(err) != 403 {
			t.Errorf("wrong password: %v", err)
		}
		if err := evil(func(r *registration.Registration) { r.Mode = registration.ModeOff }); code(err) != 403 {
			t.Errorf("forgetting someone else's instance: %v", err)
		}
		synctest.Wait()
		for _, c := range h.reg.callsFor("victim") {
			if c.Binding.Proxy != "127.0.0.1" || c.Binding.Password != "pw-victim" && c.Binding.Password != "" {
				t.Fatalf("a REGISTER went to %s", c.Binding.Proxy)
			}
		}
		// The owner's device secret proves it, but a changed registrar needs the password.
		if err := evil(func(r *registration.Registration) { r.Device = own.Device }); code(err) != 400 {
			t.Errorf("owner moving the account without its password: %v", err)
		}
		if err := evil(func(r *registration.Registration) { r.Device = own.Device; r.Account.Proxy = "127.0.0.1" }); err != nil {
			t.Errorf("owner refreshing without a password: %v", err)
		}
		// A second phone proves the account with its password.
		second := regFor("e5000001", "victim", registration.ModeBackground)
		second.Device = registration.Device{ID: "tablet", Platform: "none", Secret: "tablet-secret"}
		if err := h.send(second); err != nil {
			t.Errorf("second device with the password: %v", err)
		}
		if s, _ := h.m.Snapshot("e5000001"); s.Devices != 2 {
			t.Errorf("%d devices", s.Devices)
		}
	})
}

// When the app moves its account to another registrar, the binding at the old one goes.
func TestChangedAccountDropsOldBinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.send(regFor("e6000001", "mover", registration.ModeBackground))
		synctest.Wait()
		moved := regFor("e6000001", "mover", registration.ModeBackground)
		moved.Account.Proxy = "127.0.0.2"
		if err := h.send(moved); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		calls := h.reg.callsFor("mover")
		if len(calls) != 3 {
			t.Fatalf("%d REGISTERs, want register, unregister at the old proxy, register at the new", len(calls))
		}
		if b := calls[1].Binding; b.Expires != 0 || b.Proxy != "127.0.0.1" {
			t.Errorf("second REGISTER %+v, want Expires 0 at the old proxy", b)
		}
		if b := calls[2].Binding; b.Expires == 0 || b.Proxy != "127.0.0.2" {
			t.Errorf("third REGISTER %+v, want the new proxy", b)
		}
	})
}

// The NAT-moved Contact is stored, so an unREGISTER after a restart names it.
func TestNATContactSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.FollowNAT = true })
		h.reg.set("natty", func(b sipua.Binding) (sipua.Result, error) {
			res, _ := grant(b)
			res.ContactAddr = b.ContactAddr
			if res.ContactAddr == "" {
				res.ContactAddr = "10.0.0.5:5060"
			}
			res.Received, res.RPort = "198.51.100.7", 40123
			return res, nil
		})
		h.send(regFor("e7000001", "natty", registration.ModeBackground))
		synctest.Wait()
		time.Sleep(100 * time.Millisecond)
		h.restart()
		defer h.m.Stop()
		h.send(regFor("e7000001", "natty", registration.ModeForeground))
		synctest.Wait()
		calls := h.reg.callsFor("natty")
		last := calls[len(calls)-1].Binding
		if last.Expires != 0 || last.ContactAddr != "198.51.100.7:40123" {
			t.Errorf("unREGISTER after a restart: %+v", last)
		}
	})
}

// A stored wish to be forgotten is carried out after a restart.
func TestStoredOffForgottenAtStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.send(regFor("f1000001", "leaver", registration.ModeBackground))
		synctest.Wait()
		h.m.Stop()
		h.st.mu.Lock()
		h.st.insts["f1000001"].Mode = "off" // stored, then the process died
		h.st.mu.Unlock()
		h.start()
		defer h.m.Stop()
		synctest.Wait()
		if _, ok := h.m.Snapshot("f1000001"); ok {
			t.Error("instance still held")
		}
		calls := h.reg.callsFor("leaver")
		if last := calls[len(calls)-1].Binding; last.Expires != 0 {
			t.Error("not unregistered before it was forgotten")
		}
	})
}

// Instances moving to another user on a proxy with one slot do not hold a slot while they
// wait for another (they would starve the proxy for good).
func TestAccountChangesOnAFullProxy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.MaxInFlightPerProxy = 1 })
		defer h.m.Stop()
		dev := registration.Device{ID: "phone", Platform: "none", Secret: "phone-secret"}
		for i := range 4 {
			r := regFor(fmt.Sprintf("f20000%02d", i), fmt.Sprintf("a%d", i), registration.ModeBackground)
			r.Device = dev
			h.send(r)
		}
		synctest.Wait()
		for i := range 4 {
			r := regFor(fmt.Sprintf("f20000%02d", i), fmt.Sprintf("b%d", i), registration.ModeBackground)
			r.Device = dev // proves ownership; the new account brings its own password
			if err := h.send(r); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		for i := range 4 {
			s, _ := h.m.Snapshot(fmt.Sprintf("f20000%02d", i))
			if s.User != fmt.Sprintf("b%d", i) || s.Phase.Status != Registered {
				t.Errorf("instance %d: %s %v", i, s.User, s.Phase)
			}
		}
		h.m.proxyMu.Lock()
		slots := len(h.m.proxies)
		h.m.proxyMu.Unlock()
		if slots != 0 {
			t.Errorf("%d proxies still hold slots after everything settled", slots)
		}
	})
}

// Over TCP rport is an ephemeral source port: the Contact must not move there.
func TestNoNATMoveOverTCP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.FollowNAT = true })
		defer h.m.Stop()
		h.reg.set("tcpuser", func(b sipua.Binding) (sipua.Result, error) {
			res, _ := grant(b)
			res.ContactAddr, res.Received, res.RPort = "192.0.2.1:5060", "192.0.2.1", 53111
			return res, nil
		})
		r := regFor("f3000001", "tcpuser", registration.ModeBackground)
		r.Account.Transport = "tcp"
		h.send(r)
		synctest.Wait()
		if calls := h.reg.callsFor("tcpuser"); len(calls) != 1 {
			t.Errorf("%d REGISTERs: the Contact moved over TCP", len(calls))
		}
	})
}

// The sweep's decision is checked again by the worker: an instance heard from meanwhile stays.
func TestExpireRechecksSilence(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Stop()
		h.send(regFor("f4000001", "fresh", registration.ModeBackground))
		synctest.Wait()
		h.m.post(context.Background(), h.m.get("f4000001"), EvExpire)
		synctest.Wait()
		if _, ok := h.m.Snapshot("f4000001"); !ok {
			t.Error("an active instance was forgotten by a stale sweep decision")
		}
	})
}

// An unREGISTER that got no answer keeps the binding's expiry, and a restart tries again.
func TestFailedUnregisterRetriedAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.send(regFor("f5000001", "sticky", registration.ModeBackground))
		synctest.Wait()
		h.reg.set("sticky", func(b sipua.Binding) (sipua.Result, error) {
			if b.Expires == 0 {
				return sipua.Result{}, sipua.ErrTimeout
			}
			return grant(b)
		})
		h.send(regFor("f5000001", "sticky", registration.ModeForeground))
		synctest.Wait()
		if s, _ := h.m.Snapshot("f5000001"); s.ExpiresAt.IsZero() {
			t.Error("a failed unREGISTER forgot the binding")
		}
		time.Sleep(100 * time.Millisecond)
		h.m.Stop()
		h.reg.set("sticky", nil)
		n := len(h.reg.callsFor("sticky"))
		h.start()
		defer h.m.Stop()
		synctest.Wait()
		calls := h.reg.callsFor("sticky")
		if len(calls) <= n || calls[len(calls)-1].Binding.Expires != 0 {
			t.Errorf("no unREGISTER after the restart (%d calls before, %d after)", n, len(calls))
		}
	})
}
