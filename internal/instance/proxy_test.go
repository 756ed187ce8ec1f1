package instance

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/pkg/registration"
)

// outageRegistrar is one UDP proxy that can be switched off. While it is off, a REGISTER
// transaction sends its request as a UDP client transaction does (RFC 3261 §17.1.2.2): at
// once, then again after T1 = 500 ms doubling up to T2 = 4 s, until Timer F fires at 64*T1 =
// 32 s; 11 packets. When the proxy answers, a transaction is two packets (the REGISTER that
// is challenged, then the authenticated one) and grants what was asked.
type outageRegistrar struct {
	mu       sync.Mutex
	down     bool
	packets  []time.Time // every REGISTER packet sent to the proxy
	txs      []span      // every transaction
	timeouts []time.Time // when transactions ended without an answer
}

// span is when one transaction ran; to is zero while it runs.
type span struct{ from, to time.Time }

func (r *outageRegistrar) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	r.mu.Lock()
	i := len(r.txs)
	r.txs = append(r.txs, span{from: time.Now()})
	r.mu.Unlock()
	var err error
	defer func() {
		r.mu.Lock()
		r.txs[i].to = time.Now()
		if err != nil {
			r.timeouts = append(r.timeouts, time.Now())
		}
		r.mu.Unlock()
	}()
	const t1, t2, timerF = 500 * time.Millisecond, 4 * time.Second, 64 * 500 * time.Millisecond
	start := time.Now()
	interval := t1
	for {
		if time.Since(start) >= timerF {
			err = sipua.ErrTimeout
			return sipua.Result{CSeq: b.CSeq + 1}, err
		}
		r.mu.Lock()
		r.packets = append(r.packets, time.Now())
		down := r.down
		if !down {
			r.packets = append(r.packets, time.Now())
		}
		r.mu.Unlock()
		if !down {
			return sipua.Result{Status: 200, Reason: "OK", Expires: b.Expires, CSeq: b.CSeq + 2}, nil
		}
		select {
		case <-time.After(min(interval, timerF-time.Since(start))):
		case <-ctx.Done():
			err = sipua.ErrTimeout
			return sipua.Result{CSeq: b.CSeq + 1}, err
		}
		interval = min(2*interval, t2)
	}
}

func (r *outageRegistrar) setDown(down bool) {
	r.mu.Lock()
	r.down = down
	r.mu.Unlock()
}

// packetsBetween counts the packets sent in [from, to).
func (r *outageRegistrar) packetsBetween(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, at := range r.packets {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// maxInFlight is the most transactions that ran at once at any time in [from, to).
func (r *outageRegistrar) maxInFlight(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	most := 0
	for _, a := range r.txs { // at the start of each transaction, or at from
		at := a.from
		if at.Before(from) {
			at = from
		}
		if !at.Before(to) || !a.to.IsZero() && !a.to.After(at) {
			continue
		}
		n := 0
		for _, b := range r.txs {
			if !b.from.After(at) && (b.to.IsZero() || b.to.After(at)) {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// firstTimeout is when the first transaction ended without an answer after from.
func (r *outageRegistrar) firstTimeout(from time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.timeouts {
		if !at.Before(from) {
			return at
		}
	}
	return time.Time{}
}

// A dead proxy costs one probe at a time, not a storm: 1,000 instances on one proxy through a
// 10-minute outage (on synctest's clock). Until the first REGISTER into the outage times out
// the proxy cannot be told from a slow one, so up to MaxInFlightPerProxy transactions are out;
// from then on it gets one transaction at a time, a small fraction of a packet a second, and
// once it answers again all are registered within a few minutes, resumed spread out rather
// than at once.
func TestDeadProxyGetsOneProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 1000
		const outage = 10 * time.Minute
		reg := &outageRegistrar{}
		m, err := New(Options{Store: newMemStore(), Registrar: reg, Workers: 256, MaxInFlightPerProxy: 64, ResumeWindow: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		for i := range n {
			r := regFor(fmt.Sprintf("b1%06d", i), fmt.Sprintf("o%d", i), registration.ModeBackground)
			r.Account.Expires = 300 // refreshed every 2 to 2.5 minutes: all of them during the outage
			if err := m.Apply(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		registered := func() int { byPhase, _ := m.Counts(); return byPhase[Phase{RegisterLoop, Registered}] }
		if got := registered(); got != n {
			t.Fatalf("%d of %d registered before the outage", got, n)
		}

		start := time.Now()
		reg.setDown(true)
		time.Sleep(outage)
		synctest.Wait()
		end := time.Now()
		reg.setDown(false)
		// The proxy is seen dead when the first transaction to it times out; the ones sent
		// before that (up to the in-flight limit) time out 32 s later at the latest.
		seen := reg.firstTimeout(start)
		if seen.IsZero() {
			t.Fatal("no transaction timed out during the outage")
		}
		settled := seen.Add(32 * time.Second)
		packets, after := reg.packetsBetween(start, end), reg.packetsBetween(settled, end)
		rate, afterRate := float64(packets)/outage.Seconds(), float64(after)/end.Sub(settled).Seconds()
		most := reg.maxInFlight(settled, end)
		t.Logf("outage of %v, %d instances on one proxy: %d REGISTER packets to it, %.3f/s; seen dead %v into the outage; "+
			"from 32 s later %d packets, %.3f/s, at most %d transaction(s) in flight",
			outage, n, packets, rate, seen.Sub(start), after, afterRate, most)
		// One probe of 11 packets per 32 s plus a backoff of at least 2.5 s doubling: about
		// 0.15/s over this window, 0.3 at the very most.
		if afterRate > 0.3 {
			t.Errorf("%.3f REGISTER packets/s to a proxy known to be dead", afterRate)
		}
		if most > 1 {
			t.Errorf("%d REGISTER transactions in flight to a proxy known to be dead", most)
		}
		// Before it was seen dead: at most the in-flight limit's transactions, and one probe.
		if before := packets - after; before > (64+1)*11 {
			t.Errorf("%d packets before the proxy was known to be dead", before)
		}

		for registered() != n {
			if time.Since(end) > time.Hour {
				t.Fatalf("%d of %d registered an hour after the proxy returned", registered(), n)
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		back := time.Since(end)
		t.Logf("all %d registered %v after the proxy returned", n, back)
		if back > 5*time.Minute {
			t.Errorf("all registered only %v after the proxy returned", back)
		}
		// Resumed spread out: the busiest second after the return carries a fraction of them.
		busiest := 0
		for s := end; s.Before(end.Add(back)); s = s.Add(time.Second) {
			busiest = max(busiest, reg.packetsBetween(s, s.Add(time.Second)))
		}
		t.Logf("busiest second after the return: %d packets", busiest)
		if busiest > n/4 {
			t.Errorf("%d packets in one second after the return: not spread", busiest)
		}
	})
}

// unREGISTERs waiting for a slot of a busy proxy wait in its queue, first come first served,
// instead of polling for a slot (which served them in no particular order).
func TestUnregistersQueueForASlotInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.MaxInFlightPerProxy = 1; o.Workers = 16 })
		defer h.m.Stop()
		const n = 10
		for i := range n {
			h.send(regFor(fmt.Sprintf("b2%06d", i), fmt.Sprintf("q%d", i), registration.ModeBackground))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		block := make(chan struct{})
		h.reg.mu.Lock()
		h.reg.block = block
		h.reg.mu.Unlock()
		h.send(regFor("b2ffffff", "holder", registration.ModeBackground)) // holds the only slot
		synctest.Wait()
		for i := range n {
			h.send(regFor(fmt.Sprintf("b2%06d", i), fmt.Sprintf("q%d", i), registration.ModeForeground))
			synctest.Wait() // its worker is waiting for the slot
		}
		time.Sleep(30 * time.Second) // they keep waiting (the holder's transaction has not timed out)
		synctest.Wait()
		h.reg.mu.Lock()
		before := len(h.reg.calls)
		h.reg.block = nil
		h.reg.mu.Unlock()
		close(block)
		time.Sleep(time.Second)
		synctest.Wait()
		h.reg.mu.Lock()
		calls := append([]call(nil), h.reg.calls[before:]...)
		h.reg.mu.Unlock()
		if len(calls) != n {
			t.Fatalf("%d REGISTERs after the slot freed, want %d unREGISTERs", len(calls), n)
		}
		for i, c := range calls {
			if want := fmt.Sprintf("q%d", i); c.Binding.User != want || c.Binding.Expires != 0 {
				t.Errorf("REGISTER %d: %s expires %d, want the unREGISTER of %s", i, c.Binding.User, c.Binding.Expires, want)
			}
		}
	})
}

// Apps going to the foreground while their proxy is known to be dead are released at once:
// their unREGISTERs are not sent into the outage (the binding's expiry is kept, as after an
// unREGISTER that got no answer), and no worker waits on the dead proxy for them.
func TestForegroundDuringOutageSendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := &outageRegistrar{}
		m, err := New(Options{Store: newMemStore(), Registrar: reg, Workers: 8, ResumeWindow: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer m.Stop()
		const n = 20
		for i := range n {
			m.Apply(context.Background(), regFor(fmt.Sprintf("b3%06d", i), fmt.Sprintf("f%d", i), registration.ModeBackground))
		}
		synctest.Wait()
		reg.setDown(true)
		// One app sends its registration again: its REGISTER times out and the proxy is seen dead.
		m.Apply(context.Background(), regFor("b3000000", "f0", registration.ModeBackground))
		time.Sleep(33 * time.Second)
		synctest.Wait()
		if reg.firstTimeout(time.Time{}).IsZero() {
			t.Fatal("the REGISTER into the outage did not time out")
		}
		sent := reg.packetsBetween(time.Time{}, time.Now().Add(time.Hour))
		for i := 1; i < n; i++ {
			m.Apply(context.Background(), regFor(fmt.Sprintf("b3%06d", i), fmt.Sprintf("f%d", i), registration.ModeForeground))
		}
		synctest.Wait() // no time passes: nothing may wait for the dead proxy
		for i := 1; i < n; i++ {
			s, _ := m.Snapshot(fmt.Sprintf("b3%06d", i))
			if s.Phase != (Phase{Idle, NotRegistered}) || s.ExpiresAt.IsZero() {
				t.Errorf("instance %d: %v expires %v, want Idle with its binding's expiry kept", i, s.Phase, s.ExpiresAt)
			}
		}
		if got := reg.packetsBetween(time.Time{}, time.Now().Add(time.Hour)) - sent; got > 0 {
			t.Errorf("%d packets sent to the dead proxy for the foregrounds", got)
		}
	})
}
