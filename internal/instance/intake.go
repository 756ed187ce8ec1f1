package instance

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/errs"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
)

// refuse returns a registration refused for a reason the app can fix: an *errs.Error of kind
// code (errs.Invalid, errs.Conflict, errs.Forbidden) whose message is one line that never
// contains a secret. The web package turns the kind into the HTTP status.
func refuse(code string, err error, format string, args ...any) error {
	return errs.Wrap(code, err, format, args...)
}

// ErrUnknownSelector is returned for a selector the manager does not hold.
var ErrUnknownSelector = errors.New("instance: unknown selector")

// Register opens a sealed registration as posted by an app and applies it. A bad request
// returns an *errs.Error (see refuse) and changes nothing.
func (m *Manager) Register(ctx context.Context, sealed []byte) error {
	reg, err := m.Open(sealed)
	if err != nil {
		return err
	}
	return m.Apply(ctx, reg)
}

// Open opens a sealed registration with the server's key pair, as Register does, without
// applying it (a cluster node opens a registration to find its owner, then applies it or
// forwards it). A registration that cannot be opened is counted as rejected and returned as an
// *errs.Error.
func (m *Manager) Open(sealed []byte) (*registration.Registration, error) {
	if m.opts.PublicKey == nil || m.opts.PrivateKey == nil {
		return nil, errors.New("instance: no server key configured")
	}
	o := m.opener.Load()
	if o == nil {
		var err error
		if o, err = registration.NewOpener(m.opts.PublicKey, m.opts.PrivateKey); err != nil {
			return nil, fmt.Errorf("instance: server key: %w", err)
		}
		m.opener.Store(o) // two first callers may both make one: they are the same
	}
	reg, err := o.Open(sealed)
	if err != nil {
		m.stats.Rejected.Add(1)
		var ve *registration.ValidationError
		switch {
		case errors.As(err, &ve):
			return nil, refuse(errs.Invalid, err, "%s", ve.Error())
		case errors.Is(err, registration.ErrNotOurs):
			return nil, refuse(errs.Invalid, err, "registration cannot be opened: not sealed to this server's key, or corrupted")
		case errors.Is(err, registration.ErrTruncated):
			return nil, refuse(errs.Invalid, err, "registration is truncated")
		default:
			return nil, refuse(errs.Invalid, err, "%s", oneLine(err.Error()))
		}
	}
	return reg, nil
}

// Apply stores an opened registration and hands its mode to the state machine. The
// timestamp must be within MaxClockSkew of now and the nonce unused, or nothing changes.
//
// Sealing proves nothing about who sends a registration (every app has the server's public
// key), so a registration for a selector we already hold must prove it comes from its owner:
// the stored secret of the device it names, or the account's current password.
//
// The steps are authorize, merge, persist and attach, under the selector's lock (locks.go):
// registrations of one selector, and the removal of its forgotten instance, happen one after
// the other. Only the event for the state machine is posted after the lock is released.
func (m *Manager) Apply(ctx context.Context, reg *registration.Registration) error {
	now := time.Now()
	if err := m.checkFresh(reg, now); err != nil {
		m.stats.Rejected.Add(1)
		return err
	}
	mu := m.locks.of(reg.Selector)
	mu.Lock()
	inst, regs, err := m.intake(ctx, reg, now)
	mu.Unlock()
	if err != nil {
		m.stats.Rejected.Add(1)
		return err
	}
	if inst == nil {
		return nil
	}
	m.stats.Registrations.Add(1)
	var ev Event
	switch reg.Mode {
	case registration.ModeBackground:
		ev = EvBackground
	case registration.ModeForeground:
		ev = EvForeground
	case registration.ModeOff:
		ev = EvForget
	}
	inst.mu.Lock()
	logging := inst.logging
	inst.mu.Unlock()
	if logging || infoEnabled(m.log) { // else the fields would be built for nothing, per registration
		m.instanceLog(inst).WithFields(logrus.Fields{"mode": reg.Mode, "device": reg.Device.ID}).Info("registration accepted")
	}
	return m.postWish(ctx, inst, ev, regs)
}

// infoEnabled reports whether l writes Info entries; true when it cannot tell.
func infoEnabled(l logrus.FieldLogger) bool {
	switch l := l.(type) {
	case *logrus.Logger:
		return l.IsLevelEnabled(logrus.InfoLevel)
	case *logrus.Entry:
		return l.Logger.IsLevelEnabled(logrus.InfoLevel)
	}
	return true
}

// checkFresh checks what needs neither the store nor the selector's lock: the registration's
// fields and its timestamp.
func (m *Manager) checkFresh(reg *registration.Registration, now time.Time) error {
	if err := reg.Validate(); err != nil {
		return refuse(errs.Invalid, err, "%s", err.Error())
	}
	if skew := now.Sub(reg.Timestamp); skew > m.opts.MaxClockSkew || -skew > m.opts.MaxClockSkew {
		return refuse(errs.Invalid, nil, "registration timestamp %s is more than %s away from the server's clock",
			reg.Timestamp.UTC().Format(time.RFC3339), m.opts.MaxClockSkew)
	}
	if reg.Account.User != "" && reg.Account.Domain != "" {
		if err := reg.Account.Validate(); err != nil {
			return refuse(errs.Invalid, err, "%s", err.Error())
		}
	}
	return nil
}

// intake authorizes, merges, persists and attaches one registration; the caller holds the
// selector's lock. It returns the held instance (nil when there was nothing to do) and its
// registration count after this one, which the posted wish carries.
func (m *Manager) intake(ctx context.Context, reg *registration.Registration, now time.Time) (*Instance, uint32, error) {
	held := m.lookup(reg.Selector)
	hasAccount := reg.Account.User != "" && reg.Account.Domain != ""
	if held == nil && (reg.Mode == registration.ModeOff || !hasAccount) {
		// Forgetting, or releasing without an account, an instance we do not hold: there is
		// nothing to do, and storing it would create it.
		return nil, 0, nil
	}
	var old store.Account
	active := false
	if held != nil {
		held.mu.Lock()
		old, active = held.account, held.phase.State != Idle || held.expiresAt > now.UnixNano()
		held.mu.Unlock()
		if err := m.authorize(ctx, reg, old.Password); err != nil {
			return nil, 0, err
		}
	}
	si := &store.Instance{
		Selector: reg.Selector, Node: m.opts.Node, Mode: string(reg.Mode), LastActivity: now,
		Settings: maskedSettings(reg),
		// Used only if this creates the row: the store keeps a stored instance's identity.
		ContactUser: randomToken(16), CallID: randomToken(16), CreatedAt: now,
	}
	if err := merge(si, reg, held != nil, old, active, hasAccount); err != nil {
		return nil, 0, err
	}
	devices, err := m.persist(ctx, si, reg, now)
	if err != nil {
		return nil, 0, err
	}
	m.noteApp(reg.Selector, reg.Device.AppID) // renewed: the expiry reminders start over
	inst, _ := m.lookupOrAdd(si, now)
	inst.mu.Lock()
	attach(inst, si, reg, hasAccount, devices, now)
	regs := inst.regs
	inst.mu.Unlock()
	return inst, regs, nil
}

// persist stores the merged row si and the registration's device with its nonce, and returns
// how many devices the instance has. A replayed nonce or a row the store refuses is the app's
// error; anything else is the server's.
func (m *Manager) persist(ctx context.Context, si *store.Instance, reg *registration.Registration, now time.Time) (int, error) {
	dev := &store.Device{
		Selector: reg.Selector, ID: reg.Device.ID, Platform: reg.Device.Platform, PushToken: reg.Device.PushToken,
		AlertToken: reg.Device.AlertToken, AppID: reg.Device.AppID, Sandbox: reg.Device.Sandbox, AppVersion: reg.Device.AppVersion,
		Locale: reg.Device.Locale, Secret: reg.Device.Secret, LastSeen: now,
	}
	devices, err := m.opts.Store.PutRegistrationCounted(ctx, si, dev, reg.Nonce, reg.Timestamp)
	switch {
	case errors.Is(err, store.ErrReplay):
		return 0, refuse(errs.Conflict, err, "registration replayed: this nonce was already used")
	case errors.Is(err, store.ErrInvalid):
		return 0, refuse(errs.Invalid, err, "%s", oneLine(err.Error()))
	case err != nil:
		return 0, fmt.Errorf("instance: store registration: %w", err)
	}
	return devices, nil
}

// merge fills the stored row si with the account and state the registration reg leaves: reg's
// account, with the held one's password if reg sends none for the same identity, or the held
// account old if reg carries none. held says whether the manager holds the selector, active
// whether its instance is registered or registering. A refusal changes nothing stored.
func merge(si *store.Instance, reg *registration.Registration, held bool, old store.Account, active, hasAccount bool) error {
	switch {
	case hasAccount:
		si.Account = store.Account(reg.Account)
		if held && si.Account.Password == "" {
			// An app need not send its password again to release or refresh its account, but
			// the stored password only ever goes to the registrar it was given for.
			if !sameIdentity(old, si.Account) {
				return refuse(errs.Invalid, nil, "the account's user, domain, proxy, port or transport changed: send its password")
			}
			si.Account.Password = old.Password
		}
	case held:
		si.Account = old // this registration carries no account: keep the stored one
	}
	switch {
	case !held:
		si.State, si.Status = Idle.Key(), NotRegistered.String()
	case active && hasAccount && !sameIdentity(old, si.Account):
		// Another account: what is stored must not claim it is registered, so that a
		// restart before the worker acts registers it at once.
		si.State, si.Status = Registering.Key(), StatusRegistering.String()
	}
	return nil
}

// attach gives the held instance what the stored registration si changed: its account (the
// old binding is kept to be removed first when the identity changed), activity, device count
// and background flag, and counts the registration. The caller holds inst.mu.
func attach(inst *Instance, si *store.Instance, reg *registration.Registration, hasAccount bool, devices int, now time.Time) {
	inst.regs++
	if hasAccount {
		if inst.account.User != si.Account.User || inst.account.Domain != si.Account.Domain {
			inst.minExpires = 0
		}
		if !sameIdentity(inst.account, si.Account) && inst.expiresAt > now.UnixNano() && inst.oldAccount == nil {
			// The binding at the old registrar goes before the new one is made (or released).
			prev := inst.account
			inst.oldAccount = &prev
		}
		inst.account = si.Account
	}
	inst.lastActivity = now.UnixNano()
	inst.devices = int32(devices)
	if reg.Mode != registration.ModeOff {
		inst.background = reg.Mode == registration.ModeBackground
	}
}

// authorize checks that a registration for a held selector comes from its owner: the secret
// of the (known) device it names, or the account's current password, compared in constant
// time. It says nothing about which of the two failed.
func (m *Manager) authorize(ctx context.Context, reg *registration.Registration, storedPassword string) error {
	if reg.Device.Secret != "" {
		err := m.opts.Store.CheckDeviceSecret(ctx, reg.Selector, reg.Device.ID, reg.Device.Secret)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrSecret) && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("instance: check device secret: %w", err)
		}
	}
	if p := reg.Account.Password; p != "" && storedPassword != "" &&
		subtle.ConstantTimeCompare([]byte(p), []byte(storedPassword)) == 1 {
		return nil
	}
	return refuse(errs.Forbidden, nil,
		"this selector is held for another device: prove it is yours with the device's secret or the account's password")
}

// sameIdentity reports whether two accounts register the same binding at the same registrar.
func sameIdentity(a, b store.Account) bool {
	return a.User == b.User && a.AuthUser == b.AuthUser && a.Domain == b.Domain &&
		a.Proxy == b.Proxy && a.Port == b.Port && a.Transport == b.Transport
}

// lookup returns the instance of a selector, nil if there is none or it was forgotten. Under the
// selector's lock a forgotten instance is never found: remove takes it out of the map under
// that lock.
func (m *Manager) lookup(sel string) *Instance {
	inst := m.get(sel)
	if inst == nil {
		return nil
	}
	inst.mu.Lock()
	gone := inst.gone
	inst.mu.Unlock()
	if gone {
		return nil
	}
	return inst
}

// lookupOrAdd returns the held instance of si's selector, or holds a new one made from the
// stored row si (which PutRegistration filled in). The caller holds the selector's lock.
func (m *Manager) lookupOrAdd(si *store.Instance, now time.Time) (inst *Instance, created bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst := m.instances[si.Selector]; inst != nil {
		return inst, false
	}
	inst = &Instance{selector: si.Selector, contactUser: si.ContactUser, callID: si.CallID, cseq: si.CSeq,
		created: si.CreatedAt.UnixNano(), phase: Phase{Idle, NotRegistered}, account: si.Account}
	if inst.created == 0 {
		inst.created = now.UnixNano()
	}
	m.instances[si.Selector] = inst
	m.byContact[si.ContactUser] = inst
	m.sorted = nil
	return inst, true
}

// maskedSettings is everything the app sent, as JSON, with secrets replaced by "Not Empty" or
// "Empty" and the push token shortened, for the settings page.
func maskedSettings(reg *registration.Registration) []byte {
	r := *reg
	r.Account.Password = mask(r.Account.Password)
	r.Device.Secret = mask(r.Device.Secret)
	r.Device.PushToken = push.ShortToken(r.Device.PushToken)
	r.Device.AlertToken = push.ShortToken(r.Device.AlertToken)
	b, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	return b
}

func mask(s string) string {
	if s == "" {
		return "Empty"
	}
	return "Not Empty"
}

// TurnOff unregisters one instance and keeps it idle until its app registers again.
func (m *Manager) TurnOff(ctx context.Context, selector string) error {
	inst := m.get(selector)
	if inst == nil {
		return ErrUnknownSelector
	}
	if err := m.post(ctx, inst, EvTurnOff); err != nil {
		return err
	}
	m.notifyOff(selector, nil)
	return nil
}

// TurnOffAll turns off every instance that is not idle; it returns how many it turned off.
func (m *Manager) TurnOffAll(ctx context.Context) (int, error) {
	n := 0
	for _, inst := range m.all() {
		inst.mu.Lock()
		active := inst.phase.State != Idle || inst.busy
		inst.mu.Unlock()
		if !active {
			continue
		}
		if err := m.post(ctx, inst, EvTurnOff); err != nil {
			return n, err
		}
		m.notifyOff(inst.selector, nil)
		n++
	}
	return n, nil
}

// Forget unregisters one instance and deletes it with its credentials.
func (m *Manager) Forget(ctx context.Context, selector string) error {
	inst := m.get(selector)
	if inst == nil {
		return ErrUnknownSelector
	}
	return m.postWish(ctx, inst, EvForget, inst.regCount())
}

// sweepLoop forgets silent instances and prunes old nonces, now and every SweepInterval.
func (m *Manager) sweepLoop() {
	t := time.NewTicker(m.opts.SweepInterval)
	defer t.Stop()
	for {
		m.sweep(time.Now())
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) sweep(now time.Time) {
	ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
	defer cancel()
	if _, err := m.opts.Store.PruneNonces(ctx, now.Add(-3*m.opts.MaxClockSkew)); err != nil && ctx.Err() == nil {
		m.log.WithField("err", err).Warn("pruning nonces failed")
	}
	silent, err := m.opts.Store.SilentInstances(ctx, now.Add(-m.opts.MaxAge))
	if err != nil {
		if ctx.Err() == nil {
			m.log.WithField("err", err).Warn("finding silent instances failed")
		}
		return
	}
	if m.opts.NotRegisteredMaxAge > 0 {
		idleBefore := now.Add(-m.opts.NotRegisteredMaxAge).UnixNano()
		// Lock order: never an instance's mu while holding m.mu (remove takes m.mu under an
		// instance's mu), so copy the pointers first.
		for _, inst := range m.all() {
			inst.mu.Lock()
			if inst.phase.State == Idle && !inst.busy && inst.lastActivity < idleBefore {
				silent = append(silent, inst.selector)
			}
			inst.mu.Unlock()
		}
	}
	for _, sel := range silent {
		inst := m.get(sel)
		if inst == nil {
			continue
		}
		// Expire, not Forget: the worker checks the silence again, so a registration that
		// comes in between keeps the instance.
		if err := m.postWish(ctx, inst, EvExpire, inst.regCount()); err != nil {
			return
		}
	}
}
