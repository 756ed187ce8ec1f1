package instance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// This file is the manager's side of running several nodes on one database (internal/cluster
// owns membership and leases): a Fence consulted before anything is sent for an instance,
// Adopt to take over instances another node held, and Release to drop instances this node lost,
// without sending anything for them.

// Fence tells whether this node may send for an instance now: only while its lease on the
// instance is proven. A node whose lease lapsed (paused, cut off from the database) must not
// send, because a survivor may already have taken the instance over; two nodes registering one
// instance would put two Contacts in its binding.
type Fence interface {
	// SendUntil returns until when this node may send for selector, by the monotonic clock
	// (a time.Now()-derived value); ok is false when it may not send at all.
	SendUntil(selector string) (until time.Time, ok bool)
}

// ErrFenced is the error of a REGISTER the fence did not let out (or cut short when the lease
// ended during it). It says nothing about the proxy: the instance is retried with backoff, and
// dropped if the lease turns out lost.
var ErrFenced = errors.New("instance: this node's lease on the instance is not proven: not sending")

// FencedRegistrar returns a Registrar that sends through r only while fence allows: it refuses
// a REGISTER for an instance whose lease is not proven, and bounds each REGISTER cycle's context
// by the lease's end, so that sipua neither sends nor retransmits after it (sipua checks the
// deadline before every transmission). *Manager sends every REGISTER through its Registrar,
// so wrapping it fences all of them.
func FencedRegistrar(r Registrar, fence Fence) Registrar { return fencedRegistrar{r, fence} }

type fencedRegistrar struct {
	next  Registrar
	fence Fence
}

func (f fencedRegistrar) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	until, ok := f.fence.SendUntil(b.Selector)
	if !ok || !time.Now().Before(until) {
		return sipua.Result{CSeq: b.CSeq}, ErrFenced
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	res, err := f.next.Register(ctx, b)
	if err != nil && !time.Now().Before(until) {
		// The lease ended during the cycle: not the proxy's fault.
		return res, fmt.Errorf("%w (%v)", ErrFenced, err)
	}
	return res, err
}

// Adoption is one instance this node takes over from another.
type Adoption struct {
	Selector string
	// OldContactAddr is the host:port of the Contact the previous owner registered (its
	// address, or the NAT address it had moved to); "" when unknown. The new owner removes
	// that binding before registering its own (same Call-ID, higher CSeq, Expires: 0 — RFC
	// 3261 §10.2.2), so that the registrar never holds the instance at two nodes.
	OldContactAddr string
	// Instance, when not nil, is the instance's row as the caller just read it (with Devices,
	// its device count), so that Adopt need not read it again; nil: Adopt reads it.
	Instance *store.Instance
	Devices  int
}

// adoptParallel bounds the adoptions being loaded from the store or having their old binding
// removed at once; the proxy limits (proxy.go) bound the REGISTERs per proxy as well. The loads
// run in parallel too: one at a time, two store reads per instance made a take-over of
// thousands wait on the database's round trips.
const adoptParallel = 64

// Adopt loads the given instances from the store (they must be this node's rows now: claimed or
// handed over) and takes them on: an instance the app wants held gets its old binding removed
// where it can, then registers with this node's Contact at a random point of window (0: at
// once). An instance already held is left alone. It returns how many it took on, and stops at
// ctx's end or at the first failed store read; the instances not loaded by then are not held
// (the caller can adopt them again).
func (m *Manager) Adopt(ctx context.Context, ads []Adoption, window time.Duration) (int, error) {
	if !m.started.Load() {
		return 0, errors.New("instance: adopt before Start")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan Adoption)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		n     int
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	for range min(adoptParallel, len(ads)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ad := range work {
				ok, err := m.adoptOne(ctx, ad, window)
				if err != nil {
					fail(err)
					continue
				}
				if ok {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		}()
	}
	stopped := false
feed:
	for _, ad := range ads {
		if m.get(ad.Selector) != nil {
			continue
		}
		select {
		case work <- ad:
		case <-ctx.Done():
			stopped = true
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil && stopped {
		first = ctx.Err()
	}
	return n, first
}

// adoptOne loads one adopted instance, holds it and takes it on (takeOn); ok is false when it
// was not taken on (already held, or not this node's any more).
func (m *Manager) adoptOne(ctx context.Context, ad Adoption, window time.Duration) (ok bool, err error) {
	if ctx.Err() != nil {
		return false, nil // stopping: this one is not loaded
	}
	si, devices := ad.Instance, ad.Devices
	if si == nil || si.Selector != ad.Selector {
		var err error
		si, err = m.opts.Store.Instance(ctx, ad.Selector)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil // moved on again, or forgotten meanwhile
		}
		if err != nil {
			return false, fmt.Errorf("instance: adopt %s: %w", ad.Selector, err)
		}
		devs, err := m.opts.Store.Devices(ctx, ad.Selector)
		if err != nil {
			return false, fmt.Errorf("instance: adopt %s: %w", ad.Selector, err)
		}
		devices = len(devs)
	}
	inst := fromStore(si)
	inst.devices = int32(devices)
	oldAddr := ad.OldContactAddr
	if inst.contactAddr != "" {
		oldAddr = inst.contactAddr // the previous owner's NAT address is where it was bound
	}
	inst.contactAddr = "" // this node's own Contact from now on
	m.mu.Lock()
	if m.instances[inst.selector] != nil {
		m.mu.Unlock()
		return false, nil
	}
	m.instances[inst.selector] = inst
	if inst.contactUser != "" {
		m.byContact[inst.contactUser] = inst
	}
	m.sorted = nil
	m.mu.Unlock()
	m.takeOn(inst, oldAddr, window)
	return true, nil
}

// takeOn moves inst's binding from the previous owner's Contact to this node's and schedules
// it like a resumed instance (Start), or removes the old binding and leaves it idle if the app
// does not want it held. An instance to hold is moved by its next REGISTER alone: it carries
// the old Contact with expires=0 next to ours (Instance.replaceAddr, RFC 3261 §10.2.1–10.2.2),
// so the registrar holds it at one node or the other at every instant and one challenged cycle
// does it; an unREGISTER and a REGISTER were twice the registrar's work per instance.
func (m *Manager) takeOn(inst *Instance, oldAddr string, window time.Duration) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.gone {
		return
	}
	now := time.Now()
	wantHeld := inst.background && !inst.off
	// The stored expiry may be behind the binding's (the previous owner's last refreshes may
	// not have reached the store before it died), so the old binding is removed whenever
	// there may be one; removing one that is not there costs nothing (a 200).
	if oldAddr != "" && (inst.expiresAt > 0 || inst.phase.State != Idle) {
		if wantHeld {
			inst.replaceAddr = oldAddr
		} else {
			acct := inst.account
			if m.admitWait(inst, &acct) {
				if _, err := m.transact(inst, acct, 0, oldAddr); err != nil {
					// It lapses by itself at its expiry.
					m.instanceLog(inst).WithField("err", err).Info("removing the previous owner's binding failed")
				}
			}
			if inst.gone {
				return
			}
		}
		inst.expiresAt = 0
	}
	if !wantHeld {
		if inst.phase.State != Idle {
			inst.phase = Phase{Idle, NotRegistered}
		}
		m.save(inst, now)
		return
	}
	inst.phase = Phase{Registering, StatusRegistering}
	d := time.Duration(0)
	if window > 0 {
		d = time.Duration(rand.Int64N(int64(window) + 1))
	}
	m.save(inst, now)
	m.scheduleIn(inst, d)
}

// releaseWait bounds how long Release waits for a REGISTER in flight.
const releaseWait = 45 * time.Second

// Release drops the given instances from this node without sending anything more for them and
// without touching their rows: another node owns them now, or is about to (a drain). It waits
// for the REGISTERs in flight for them to end (the fence cuts them short when the lease is
// gone), so that none reaches the registrar after the new owner's; what they would store is
// refused as stale. It returns how many it dropped.
func (m *Manager) Release(selectors []string) int {
	n := 0
	var inFlight []*Instance
	defer func() {
		deadline := time.Now().Add(releaseWait)
		for _, inst := range inFlight {
			for {
				inst.mu.Lock()
				busy := inst.busy
				inst.mu.Unlock()
				if !busy || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	for _, sel := range selectors {
		inst := m.get(sel)
		if inst == nil {
			continue
		}
		inst.mu.Lock()
		if !inst.gone {
			inst.gone = true
			inst.gen++ // its timer entries are stale now
			inst.account.Password = ""
			inst.lastRequest, inst.lastResponse = "", ""
			n++
		}
		if inst.busy {
			inFlight = append(inFlight, inst)
		}
		inst.mu.Unlock()
		m.forgetDirty(sel)
		m.mu.Lock()
		if m.instances[sel] == inst {
			delete(m.instances, sel)
			m.sorted = nil
		}
		if inst.contactUser != "" && m.byContact[inst.contactUser] == inst {
			delete(m.byContact, inst.contactUser)
		}
		m.mu.Unlock()
	}
	return n
}

// Held returns the selectors this manager holds, unordered (a copy).
func (m *Manager) Held() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.instances))
	for sel := range m.instances {
		out = append(out, sel)
	}
	return out
}
