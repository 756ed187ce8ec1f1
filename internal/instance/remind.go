package instance

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// Pusher sends one notification; *push.Dispatcher implements it.
type Pusher interface {
	Send(ctx context.Context, n push.Notification) (push.Result, error)
}

// Reminders configures the expiry reminders and the "account off" notice.
// An instance whose devices have not registered for MaxAge (PremiumMaxAge
// when one of its devices' app ids is in PremiumApps) is forgotten, and the
// user stops getting calls; before that, from SilentIn before the expiry,
// its devices get a silent (background) push every SilentPeriod, so that a
// live app can re-register without the user seeing anything, and from
// IntrusiveIn before, a user-visible alert every IntrusivePeriod. A
// registration from the app renews the instance and stops the reminders.
// When an instance expires or an administrator turns it off, its devices
// get an "account off" alert.
type Reminders struct {
	// Push sends the reminders; nil sends none.
	Push Pusher
	// SilentIn and IntrusiveIn start the two series before the expiry; 0
	// sends none of that series.
	SilentIn, IntrusiveIn time.Duration
	// SilentPeriod and IntrusivePeriod are the intervals of the two series;
	// 0 sends one push of the series only.
	SilentPeriod, IntrusivePeriod time.Duration
	// PremiumMaxAge replaces MaxAge for premium instances; 0 means MaxAge.
	PremiumMaxAge time.Duration
	// PremiumApps are the app ids (bundle ids, package names) whose
	// instances are premium.
	PremiumApps map[string]bool
	// OffNotice sends the "account off" alert; default off (set it).
	OffNotice bool
	// Tick is how often the instances are checked (1 minute): a reminder
	// goes out at most this late.
	Tick time.Duration
	// MaxInFlight bounds concurrent reminder sends (16).
	MaxInFlight int
}

// reminders is the Manager's reminder state.
type reminders struct {
	mu sync.Mutex
	// sent is, per selector, the expiry the last reminders were computed for
	// and the last slot of each series already sent.
	sent map[string]remindSlots
	// premium caches whether a selector's devices use a premium app id.
	premium map[string]bool
	sem     chan struct{}
}

type remindSlots struct {
	expiry            int64
	silent, intrusive int
}

func (m *Manager) remindOpts() *Reminders { return &m.opts.Reminders }

func (r *reminders) init(o *Reminders) {
	r.sent = map[string]remindSlots{}
	r.premium = map[string]bool{}
	n := o.MaxInFlight
	if n <= 0 {
		n = 16
	}
	r.sem = make(chan struct{}, n)
}

// maxAgeOf is the silence after which selector is forgotten.
func (m *Manager) maxAgeOf(selector string) time.Duration {
	o := m.remindOpts()
	if o.PremiumMaxAge <= 0 || len(o.PremiumApps) == 0 {
		return m.opts.MaxAge
	}
	m.remind.mu.Lock()
	p, ok := m.remind.premium[selector]
	m.remind.mu.Unlock()
	if !ok {
		p = m.loadPremium(selector)
	}
	if p {
		return o.PremiumMaxAge
	}
	return m.opts.MaxAge
}

// loadPremium reads selector's devices to learn whether it is premium.
func (m *Manager) loadPremium(selector string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	devs, err := m.opts.Store.Devices(ctx, selector)
	if err != nil {
		return false // not cached: asked again next time
	}
	p := false
	for _, d := range devs {
		p = p || m.remindOpts().PremiumApps[d.AppID]
	}
	m.remind.mu.Lock()
	m.remind.premium[selector] = p
	m.remind.mu.Unlock()
	return p
}

// noteApp is told of every accepted registration: its app id may make the
// instance premium, and it renews the instance, so the reminders start over.
func (m *Manager) noteApp(selector, appID string) {
	m.remind.mu.Lock()
	defer m.remind.mu.Unlock()
	if m.remindOpts().PremiumApps[appID] {
		m.remind.premium[selector] = true
	} else {
		delete(m.remind.premium, selector) // another device may still be premium: ask the store
	}
	delete(m.remind.sent, selector)
}

// remindLoop checks every instance each Tick and sends the reminders that
// came due.
func (m *Manager) remindLoop() {
	o := m.remindOpts()
	if o.Push == nil || o.SilentIn <= 0 && o.IntrusiveIn <= 0 {
		return
	}
	tick := o.Tick
	if tick <= 0 {
		tick = time.Minute
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		m.remindDue(time.Now())
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// slot returns the number of the series' slot now falls in (0 for the
// first push at expiry-in, 1 one period later ...), or -1 outside the
// series.
func slot(now, expiry int64, in, period time.Duration) int {
	start := expiry - int64(in)
	if in <= 0 || now < start || now >= expiry {
		return -1
	}
	if period <= 0 {
		return 0
	}
	return int((now - start) / int64(period))
}

// remindDue sends the reminders due at now.
func (m *Manager) remindDue(now time.Time) {
	o := m.remindOpts()
	type due struct {
		sel    string
		silent bool
		expiry time.Time
	}
	var out []due
	for _, inst := range m.all() {
		inst.mu.Lock()
		active := inst.background && !inst.off && !inst.gone
		last, sel := inst.lastActivity, inst.selector
		inst.mu.Unlock()
		if !active {
			continue
		}
		expiry := last + int64(m.maxAgeOf(sel))
		s := slot(now.UnixNano(), expiry, o.SilentIn, o.SilentPeriod)
		i := slot(now.UnixNano(), expiry, o.IntrusiveIn, o.IntrusivePeriod)
		if s < 0 && i < 0 {
			continue
		}
		m.remind.mu.Lock()
		st, ok := m.remind.sent[sel]
		if !ok || st.expiry != expiry {
			st = remindSlots{expiry: expiry, silent: -1, intrusive: -1}
		}
		if s > st.silent {
			st.silent = s
			out = append(out, due{sel, true, time.Unix(0, expiry)})
		}
		if i > st.intrusive {
			st.intrusive = i
			out = append(out, due{sel, false, time.Unix(0, expiry)})
		}
		m.remind.sent[sel] = st
		m.remind.mu.Unlock()
	}
	for _, d := range out {
		m.notifyDevices(d.sel, nil, push.Notification{Kind: push.KindExpiry, Silent: d.silent, ExpiresAt: d.expiry, SentAt: now})
	}
}

// notifyOff sends the "account off" alert to selector's devices; devs, when
// not nil, are its devices read before they were deleted.
func (m *Manager) notifyOff(selector string, devs []store.Device) {
	if !m.remindOpts().OffNotice || m.remindOpts().Push == nil {
		return
	}
	m.notifyDevices(selector, devs, push.Notification{Kind: push.KindOff})
}

// offBeforeExpire reads the devices of an instance about to be forgotten
// for its silence, for the "account off" alert; the caller holds inst.mu.
func (m *Manager) offBeforeExpire(inst *Instance) {
	if !m.remindOpts().OffNotice || m.remindOpts().Push == nil || inst.off || !inst.background {
		return // told when it was turned off; or the app is in the foreground and knows
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	devs, err := m.opts.Store.Devices(ctx, inst.selector)
	if err != nil {
		m.log.WithFields(logrus.Fields{"selector": inst.selector, "err": err}).Warn("reading devices for the account-off notice failed")
		return
	}
	m.notifyOff(inst.selector, devs)
	m.remind.mu.Lock()
	delete(m.remind.sent, inst.selector)
	delete(m.remind.premium, inst.selector)
	m.remind.mu.Unlock()
}

// notifyDevices sends n to every device of selector that has a live token
// for n's kind, in the background, at most MaxInFlight at a time.
func (m *Manager) notifyDevices(selector string, devs []store.Device, n push.Notification) {
	o := m.remindOpts()
	if o.Push == nil || m.ctx == nil || m.ctx.Err() != nil {
		return // not started, or stopping: Stop may be waiting already
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		select {
		case m.remind.sem <- struct{}{}:
		case <-m.ctx.Done():
			return
		}
		defer func() { <-m.remind.sem }()
		ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
		defer cancel()
		if devs == nil {
			var err error
			if devs, err = m.opts.Store.Devices(ctx, selector); err != nil {
				m.log.WithFields(logrus.Fields{"selector": selector, "err": err}).Warn("reading devices for a notice failed")
				return
			}
		}
		if si, err := m.opts.Store.Instance(ctx, selector); err == nil {
			n.User, n.Domain = si.Account.User, si.Account.Domain
		}
		n.Selector = selector
		for _, d := range devs {
			dn := n
			dn.Device = push.Device{ID: d.ID, Platform: d.Platform, AppID: d.AppID, Sandbox: d.Sandbox}
			if !d.TokenInvalid {
				dn.Device.PushToken = d.PushToken
			}
			if !d.AlertTokenInvalid {
				dn.Device.AlertToken = d.AlertToken
			}
			if dn.DeviceToken() == "" {
				continue
			}
			_, err := o.Push.Send(ctx, dn)
			if err != nil && !errors.Is(err, push.ErrTurnedOff) {
				m.log.WithFields(logrus.Fields{"selector": selector, "device": d.ID, "kind": string(n.Kind), "err": err}).Info("notice push failed")
			}
		}
	}()
}
