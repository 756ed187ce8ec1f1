package instance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// proxyState is what the manager knows of one upstream proxy (transport/host:port): the
// REGISTER transactions in flight to it, the unREGISTERs queued for one of its slots, and
// whether it answers. All fields are guarded by Manager.proxyMu.
//
// A proxy that stops answering is backed off as a whole, not only per instance: otherwise
// every instance using it keeps its own retry going and a dead proxy gets a flat storm of
// REGISTERs bounded only by the in-flight limit (a UDP REGISTER that gets no answer is sent 11
// times over Timer F's 32 s, RFC 3261 §17.1.2.2). While it is down it gets one REGISTER
// transaction at a time, the probe, at most one per backoff delay; every other instance that
// wants to register is parked until the proxy answers, and then resumed spread over the last
// backoff delay so that the proxy is not hit by all of them at once when it comes back.
type proxyState struct {
	inFlight int
	waiters  []chan bool // admitWait's queue, first come first served: true = a slot, false = the proxy is down

	down      bool
	probing   bool          // the probe is in flight
	failures  int           // consecutive probes without an answer
	delay     time.Duration // the current wait between probes
	nextProbe int64         // unix nanoseconds: no probe before this
	parked    map[*Instance]uint64
	timerGen  uint64 // of the probe timer: older timer entries are stale
}

// maxProbeInterval caps the wait between two probes of a dead proxy, whatever BackoffMax says:
// a probe costs one transaction, and the sooner sipis sees the proxy answer again, the sooner
// its instances are registered again.
const maxProbeInterval = 2 * time.Minute

// admission is admitProxy's verdict.
type admission uint8

const (
	admitted  admission = iota // a slot is taken: send, then release
	admitBusy                  // too many REGISTERs in flight: try again soon
	admitDown                  // the proxy does not answer and its probe is out or not due: inst is parked
)

func proxyKey(a *store.Account) string {
	host := a.Proxy
	if host == "" {
		host = a.Domain
	}
	return fmt.Sprintf("%s/%s:%d", a.Transport, host, a.Port)
}

// proxy returns the state of key, making it; the caller holds proxyMu.
func (m *Manager) proxy(key string) *proxyState {
	px := m.proxies[key]
	if px == nil {
		px = &proxyState{}
		m.proxies[key] = px
	}
	return px
}

// tidy forgets the state of a proxy nothing refers to; the caller holds proxyMu.
func (m *Manager) tidy(key string, px *proxyState) {
	if px.inFlight <= 0 && !px.down && len(px.waiters) == 0 && len(px.parked) == 0 {
		delete(m.proxies, key)
	}
}

// takeProbe makes inst's transaction the probe of the down proxy px if one is due; the caller
// holds inst.mu and proxyMu.
func (m *Manager) takeProbe(inst *Instance, px *proxyState, now int64) bool {
	if px.probing || now < px.nextProbe {
		return false
	}
	px.probing, inst.probe = true, true
	px.inFlight++
	return true
}

// admitProxy takes a slot for a REGISTER of inst to acct's proxy, says no when the proxy has
// too many in flight, or parks inst when the proxy does not answer. The caller holds inst.mu.
func (m *Manager) admitProxy(inst *Instance, acct *store.Account) admission {
	key := proxyKey(acct)
	now := time.Now().UnixNano()
	m.proxyMu.Lock()
	defer m.proxyMu.Unlock()
	px := m.proxy(key)
	if px.down {
		if m.takeProbe(inst, px, now) {
			return admitted
		}
		// Parked: its earlier timer entries go stale, and the proxy's answer (or its next
		// probe) schedules it again with this generation.
		inst.gen++
		inst.nextAt = 0
		if px.parked == nil {
			px.parked = make(map[*Instance]uint64)
		}
		px.parked[inst] = inst.gen
		return admitDown
	}
	if px.inFlight >= m.opts.MaxInFlightPerProxy || len(px.waiters) > 0 {
		return admitBusy
	}
	px.inFlight++
	return admitted
}

// admitWait takes a slot of acct's proxy for inst, waiting in the proxy's queue for one while
// it is busy; used for unREGISTERs, which must not be dropped. It returns false, without
// waiting, when the proxy does not answer and its probe is out or not due: the caller handles
// that as a REGISTER that got no answer. The caller holds inst.mu, which is released while it
// waits; other events for inst become pending meanwhile.
func (m *Manager) admitWait(inst *Instance, acct *store.Account) bool {
	key := proxyKey(acct)
	m.proxyMu.Lock()
	px := m.proxy(key)
	if px.down {
		ok := m.takeProbe(inst, px, time.Now().UnixNano())
		m.proxyMu.Unlock()
		return ok
	}
	if px.inFlight < m.opts.MaxInFlightPerProxy && len(px.waiters) == 0 {
		px.inFlight++
		m.proxyMu.Unlock()
		return true
	}
	ch := make(chan bool, 1) // release sends without waiting, under proxyMu
	px.waiters = append(px.waiters, ch)
	m.proxyMu.Unlock()

	inst.busy = true
	inst.mu.Unlock()
	var ok bool
	select {
	case ok = <-ch:
	case <-m.ctx.Done():
		m.proxyMu.Lock()
		select {
		case ok = <-ch: // granted meanwhile
		default:
			for i, w := range px.waiters {
				if w == ch {
					px.waiters = append(px.waiters[:i], px.waiters[i+1:]...)
					break
				}
			}
			// Stopping: the transaction fails at once on the cancelled context; the slot
			// keeps release balanced.
			px.inFlight++
			ok = true
		}
		m.proxyMu.Unlock()
	}
	inst.mu.Lock()
	inst.busy = false
	return ok
}

// outcome is what a REGISTER transaction told about its proxy.
type outcome uint8

const (
	answered   outcome = iota // a response came (whatever its status)
	unanswered                // a timeout, an unresolvable name or a network error: the proxy may be dead
	cancelled                 // stopping, or an error of our own: says nothing about the proxy
)

// outcomeOf tells what a REGISTER transaction's error says about its proxy. Only a missing
// answer or an unreachable proxy count against it; a binding sipua refused to send, or a stop,
// says nothing about the proxy.
func (m *Manager) outcomeOf(err error) outcome {
	var netErr net.Error
	switch {
	case err == nil:
		return answered
	case m.ctx.Err() != nil:
		return cancelled
	case errors.Is(err, sipua.ErrTimeout), errors.Is(err, sipua.ErrResolve), errors.As(err, &netErr):
		return unanswered
	}
	return cancelled
}

// release gives back the slot of proxy key after a transaction (probe says whether it was the
// probe of a down proxy) and updates what is known of the proxy from its outcome.
func (m *Manager) release(key string, probe bool, out outcome) {
	now := time.Now()
	m.proxyMu.Lock()
	defer m.proxyMu.Unlock()
	px := m.proxy(key)
	px.inFlight--
	if probe {
		px.probing = false
	}
	switch {
	case out == answered && px.down:
		m.log.WithFields(logrus.Fields{"proxy": key, "parked": len(px.parked)}).Info("proxy answers again: resuming its instances")
		m.proxyUp(px, now)
	case out == unanswered && (!px.down || probe):
		if !px.down {
			m.log.WithField("proxy", key).Warn("proxy not answering: one REGISTER at a time until it does")
		}
		// The first transaction that went unanswered marks the proxy down; after that only
		// the probe's failures count, not those of transactions sent before it was seen down.
		px.down = true
		px.failures = min(px.failures+1, 30)
		px.delay = m.probeBackoff(px.failures)
		px.nextProbe = now.Add(px.delay).UnixNano()
		m.armProbe(px, px.nextProbe)
		for _, ch := range px.waiters {
			ch <- false // unREGISTERs do not wait for a dead proxy
		}
		px.waiters = nil
	}
	// Hand the freed slot to the first unREGISTER waiting for one.
	for len(px.waiters) > 0 && px.inFlight < m.opts.MaxInFlightPerProxy {
		ch := px.waiters[0]
		px.waiters[0] = nil
		px.waiters = px.waiters[1:]
		px.inFlight++
		ch <- true
	}
	m.tidy(key, px)
}

// proxyUp resumes the instances parked on px, spread over its last backoff delay; the caller
// holds proxyMu. Entries of instances that moved on meanwhile are stale and dropped when due.
func (m *Manager) proxyUp(px *proxyState, now time.Time) {
	window := max(px.delay, m.opts.BackoffMin)
	px.down, px.failures, px.delay, px.nextProbe = false, 0, 0, 0
	px.timerGen++ // no more probes
	for inst, gen := range px.parked {
		m.sched.add(inst, now.Add(time.Duration(rand.Int64N(int64(window)+1))), gen)
	}
	px.parked = nil
}

// probeBackoff is the wait before the next probe after failures unanswered ones: exponential
// from BackoffMin to the lesser of BackoffMax and maxProbeInterval, with equal jitter.
func (m *Manager) probeBackoff(failures int) time.Duration {
	limit := min(m.opts.BackoffMax, maxProbeInterval)
	d := m.opts.BackoffMin << (failures - 1)
	if d <= 0 || d > limit {
		d = limit
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// armProbe sets px's probe timer for at (unix nanoseconds); the caller holds proxyMu.
func (m *Manager) armProbe(px *proxyState, at int64) {
	px.timerGen++
	m.sched.addProxy(px, time.Unix(0, at), px.timerGen)
}

// probeDue is called by the scheduler when a down proxy's next probe is due: it wakes one of
// the instances parked on it to send the probe. It rearms the timer one delay later, so that a
// woken instance that does not become the probe (it moved on meanwhile) leaves nobody waiting
// for good.
func (m *Manager) probeDue(px *proxyState, gen uint64) {
	now := time.Now()
	for {
		m.proxyMu.Lock()
		if gen != px.timerGen || !px.down || len(px.parked) == 0 {
			m.proxyMu.Unlock()
			return
		}
		if px.probing || now.UnixNano() < px.nextProbe {
			m.armProbe(px, max(px.nextProbe, now.Add(px.delay).UnixNano()))
			m.proxyMu.Unlock()
			return
		}
		var inst *Instance
		var instGen uint64
		for inst, instGen = range px.parked {
			break
		}
		delete(px.parked, inst)
		m.armProbe(px, now.Add(px.delay).UnixNano())
		gen = px.timerGen
		m.proxyMu.Unlock()

		// Lock order: inst.mu is never taken under proxyMu.
		inst.mu.Lock()
		current := !inst.gone && inst.gen == instGen
		inst.mu.Unlock()
		if current {
			m.fireTimer(inst, instGen)
			return
		}
	}
}
