package instance

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
)

// Registrar sends one REGISTER cycle (with digest auth) and returns its final result.
// *sipua.UA implements it; tests use fakes.
type Registrar interface {
	Register(ctx context.Context, b sipua.Binding) (sipua.Result, error)
}

// Store is what the manager needs from the database.
type Store interface {
	PutRegistrationCounted(ctx context.Context, inst *store.Instance, dev *store.Device, nonce string, nonceTime time.Time) (devices int, err error)
	SaveStates(ctx context.Context, ups []store.StateUpdate) error
	// ScanInstances calls fn for every stored instance of this node, from up to parts
	// goroutines (one per range of selectors), reusing in; err is set for a row that cannot
	// be used (store.DB.ScanInstances).
	ScanInstances(ctx context.Context, parts int, fn func(part int, in *store.Instance, err error) error) error
	Instance(ctx context.Context, selector string) (*store.Instance, error)
	Devices(ctx context.Context, selector string) ([]store.Device, error)
	CheckDeviceSecret(ctx context.Context, selector, deviceID, secret string) error
	DeleteInstance(ctx context.Context, selector string) error
	SilentInstances(ctx context.Context, before time.Time) ([]string, error)
	PruneNonces(ctx context.Context, before time.Time) (int64, error)
}

// Options configure a Manager. Zero values take the defaults in parentheses.
type Options struct {
	Store     Store
	Registrar Registrar
	Logger    logrus.FieldLogger
	Node      string

	// PublicKey and PrivateKey open sealed registrations.
	PublicKey, PrivateKey *registration.Key
	MaxClockSkew          time.Duration // accepted timestamp age either way (5m)

	DefaultExpires  int     // seconds asked for when the app asks for none (3600)
	MinExpires      int     // lower bound on what we ask for (60)
	MaxExpires      int     // upper bound on what we ask for (86400)
	RefreshFraction float64 // refresh at this fraction of the granted expiry at the latest, less jitter (0.9; see refreshIn)
	Jitter          float64 // refreshes and slow retries come up to this fraction early (0.2; negative: none)

	BackoffMin        time.Duration // first retry after a failure (5s)
	BackoffMax        time.Duration // retries never wait longer, unless Retry-After says so (30m)
	UnauthorizedRetry time.Duration // retry after the credentials were refused (30m)

	Workers             int           // concurrent SIP transactions at most (256)
	MaxInFlightPerProxy int           // REGISTERs in flight to one proxy at most (64; one while it does not answer, see proxy.go)
	QueueSize           int           // message loop capacity (65536)
	ResumeWindow        time.Duration // spread of re-registrations after a start (5m)
	TransactionTimeout  time.Duration // upper bound on one REGISTER cycle (40s)

	MaxAge              time.Duration // forget instances whose devices were silent this long (7 days)
	NotRegisteredMaxAge time.Duration // forget idle instances silent this long (12h; 0 = never)
	SweepInterval       time.Duration // how often the two above are checked (10m)

	// FollowNAT moves our Contact to the address the registrar saw us at (the received and
	// rport of its response's top Via, RFC 3581 §4) when that differs from the one we put
	// in the Contact. Turn it on when no public address is configured.
	FollowNAT bool

	// OnRegister, when set, is told the outcome of every REGISTER cycle (status 0 with an
	// error when there was no final response), for metrics.
	OnRegister func(status int, err error)

	// InstanceLogger returns a logger for an instance whose detailed logging is on; nil = none.
	InstanceLogger func(selector string) logrus.FieldLogger

	// Reminders configures the expiry reminders and the "account off" notice (remind.go).
	Reminders Reminders
}

func (o *Options) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.DefaultExpires, 3600)
	def(&o.MinExpires, 60)
	def(&o.MaxExpires, 86400)
	def(&o.Workers, 256)
	def(&o.MaxInFlightPerProxy, 64)
	def(&o.QueueSize, 1<<16)
	defDur(&o.MaxClockSkew, 5*time.Minute)
	defDur(&o.BackoffMin, 5*time.Second)
	defDur(&o.BackoffMax, 30*time.Minute)
	defDur(&o.UnauthorizedRetry, 30*time.Minute)
	defDur(&o.ResumeWindow, 5*time.Minute)
	defDur(&o.TransactionTimeout, 40*time.Second)
	defDur(&o.MaxAge, 7*24*time.Hour)
	defDur(&o.SweepInterval, 10*time.Minute)
	if o.RefreshFraction <= 0 || o.RefreshFraction >= 1 {
		o.RefreshFraction = 0.9
	}
	switch {
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter == 0 || o.Jitter >= 1:
		o.Jitter = 0.2
	}
	if o.Logger == nil {
		l := logrus.New()
		l.Out = discard{}
		o.Logger = l
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// item is one entry of the message loop.
type item struct {
	inst *Instance
	ev   Event
	gen  uint64 // for EvTimer: the schedule generation it belongs to
	// regs is, for EvForget and EvExpire, the instance's registration count when the event
	// was posted: a registration attached after it wins over the forget (see remove).
	regs uint32
}

// Manager owns every instance of this node.
type Manager struct {
	opts  Options
	log   logrus.FieldLogger
	sched *scheduler
	queue chan item

	mu        sync.RWMutex
	instances map[string]*Instance // by selector
	byContact map[string]*Instance // by Contact user part
	sorted    []string             // selectors in order; nil when it must be rebuilt
	proxyMu   sync.Mutex
	proxies   map[string]*proxyState // by proxyKey; see proxy.go

	// The write-behind persister's dirty set: the latest state of every selector that changed
	// since it was last written. save only replaces an entry under persistMu (never waits),
	// so a stalled store never blocks a worker holding an instance's lock.
	persistMu sync.Mutex
	dirty     map[string]store.StateUpdate
	// refreshed holds the states of instances whose only change was a good refresh (a new
	// expiry and CSeq): they are written once a second instead of every 20 ms (saveRefresh).
	refreshed   map[string]store.StateUpdate
	persistWake chan struct{} // a full batch is waiting
	persistStop chan struct{} // closed by Stop once no worker runs
	persistDone chan struct{}
	flushReq    chan chan struct{} // Flush's requests to the persister
	persistLost atomic.Bool        // Stop gave up writing states to a failing store

	locks  *selectorLocks                      // per-selector serialisation of registrations and removal (locks.go)
	opener atomic.Pointer[registration.Opener] // made from the key pair at the first Register (intake.go)

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool

	stats Stats

	remind reminders // expiry reminders and off notices (remind.go)
}

// Stats are counters since the manager started.
type Stats struct {
	Registers        atomic.Int64 // REGISTER cycles run (refreshes included)
	RegisterFailures atomic.Int64
	Unregisters      atomic.Int64
	Registrations    atomic.Int64 // registrations accepted from apps
	Rejected         atomic.Int64 // registrations refused
	PersistErrors    atomic.Int64
	NotResumed       atomic.Int64 // stored instances Start could not resume: their row cannot be used
}

// New returns a manager; Start loads the stored instances and starts the loop.
func New(opts Options) (*Manager, error) {
	if opts.Store == nil || opts.Registrar == nil {
		return nil, errors.New("instance: Store and Registrar are required")
	}
	opts.setDefaults()
	m := &Manager{
		opts:        opts,
		log:         opts.Logger,
		queue:       make(chan item, opts.QueueSize),
		instances:   make(map[string]*Instance),
		byContact:   make(map[string]*Instance),
		proxies:     make(map[string]*proxyState),
		dirty:       make(map[string]store.StateUpdate),
		refreshed:   make(map[string]store.StateUpdate),
		persistWake: make(chan struct{}, 1),
		persistStop: make(chan struct{}),
		persistDone: make(chan struct{}),
		flushReq:    make(chan chan struct{}),
		locks:       newSelectorLocks(),
	}
	m.sched = newScheduler(m.fireTimer, m.probeDue)
	m.remind.init(&m.opts.Reminders)
	return m, nil
}

// Stats returns the manager's counters.
func (m *Manager) Stats() *Stats { return &m.stats }

// QueueLen is the number of events waiting in the message loop.
func (m *Manager) QueueLen() int { return len(m.queue) }

// Start loads every stored instance and resumes those that were holding a registration. A
// binding still valid at the registrar is refreshed at its own refresh point, as if there had
// been no restart; instances that must register now (not registered, or past their refresh
// point) are spread over ResumeWindow, so that a restart of a big node does not hit the
// proxies in one burst. A stored row that cannot be used (its password does not open) is
// logged and counted in Stats.NotResumed, and stays stored; the others are resumed.
func (m *Manager) Start(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("instance: manager already started")
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	loaded, err := m.load(ctx)
	if err != nil {
		return err
	}
	m.log.WithFields(logrus.Fields{"instances": len(m.instances), "resumed": loaded.resumed,
		"released": len(loaded.release), "unusable": loaded.bad}).Info("instances loaded")

	m.wg.Add(2 + m.opts.Workers)
	go func() { defer m.wg.Done(); m.sched.run(m.ctx) }()
	go func() { defer m.wg.Done(); m.sweepLoop() }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.remindLoop() }()
	for range m.opts.Workers {
		go func() { defer m.wg.Done(); m.worker() }()
	}
	go func() { defer close(m.persistDone); m.persistLoop() }()
	if release := loaded.release; len(release) > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for _, it := range release {
				if m.post(m.ctx, it.inst, it.ev) != nil {
					return
				}
			}
		}()
	}
	return nil
}

// resumeParts is how many ranges of selectors Start reads at once: the scan (the database's
// work, the rows' conversion, building the instances) takes most of a big node's start-up,
// and it spreads over the cores.
func resumeParts() int { return max(runtime.GOMAXPROCS(0), 2) }

// loadPart is what one range of the resume scan built, before it is merged into the manager.
type loadPart struct {
	insts   []*Instance
	entries []entry // the timer entries of the resumed instances
	release []item  // instances to release (app foreground, admin off) or forget, that may still be bound
	resumed int
	bad     int
}

// loaded is what load merged.
type loaded struct {
	release      []item
	resumed, bad int
}

// load reads every stored instance into the manager (Start, before anything runs). The ranges
// of the scan build their instances and timer entries on their own; they are then put in the
// maps (sized once) and the timer heap (built at once, not pushed one by one).
func (m *Manager) load(ctx context.Context) (loaded, error) {
	now := time.Now()
	parts := make([]loadPart, resumeParts())
	err := m.opts.Store.ScanInstances(ctx, len(parts), func(p int, si *store.Instance, err error) error {
		lp := &parts[p]
		if err != nil {
			// Its row stays stored as it is: an operator can repair it, or the app hand
			// the account over again.
			lp.bad++
			m.stats.NotResumed.Add(1)
			m.log.WithField("selector", si.Selector).WithError(err).Error("stored instance not resumed: its row cannot be used")
			return nil
		}
		inst := fromStore(si)
		inst.devices = int32(si.Devices)
		lp.insts = append(lp.insts, inst)
		switch {
		case si.Mode == store.ModeOff:
			// The app asked to be forgotten, and the stop came before it was done.
			lp.release = append(lp.release, item{inst: inst, ev: EvForget})
		case inst.background && !inst.off:
			// Hold it, also when the app's wish was stored but not acted on before the stop.
			if inst.phase.State == Idle {
				inst.phase = Phase{Registering, StatusRegistering}
			}
			at := m.resumeTime(inst, si.UpdatedAt, now).UnixNano()
			inst.gen++
			inst.nextAt = at
			lp.entries = append(lp.entries, entry{at: at, gen: inst.gen, inst: inst})
			lp.resumed++
		case inst.phase.State != Idle || inst.expiresAt > now.UnixNano():
			ev := EvForeground
			if inst.off {
				ev = EvTurnOff
			}
			lp.release = append(lp.release, item{inst: inst, ev: ev})
		}
		return nil
	})
	if err != nil {
		return loaded{}, fmt.Errorf("instance: load instances: %w", err)
	}
	var out loaded
	n, ne := 0, 0
	for i := range parts {
		n += len(parts[i].insts)
		ne += len(parts[i].entries)
		out.resumed += parts[i].resumed
		out.bad += parts[i].bad
		out.release = append(out.release, parts[i].release...)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	instances, byContact := make(map[string]*Instance, n), make(map[string]*Instance, n)
	var wg sync.WaitGroup
	wg.Add(2) // the two maps and the heap are built at once
	go func() {
		defer wg.Done()
		for i := range parts {
			for _, inst := range parts[i].insts {
				instances[inst.selector] = inst
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range parts {
			for _, inst := range parts[i].insts {
				if inst.contactUser != "" {
					byContact[inst.contactUser] = inst
				}
			}
		}
	}()
	entries := make([]entry, 0, ne)
	for i := range parts {
		entries = append(entries, parts[i].entries...)
		parts[i].entries = nil
	}
	m.sched.addAll(entries)
	wg.Wait()
	for sel, inst := range m.instances { // anything attached before Start (the stored row wins)
		if _, ok := instances[sel]; !ok {
			instances[sel] = inst
		}
	}
	for user, inst := range m.byContact {
		if _, ok := byContact[user]; !ok {
			byContact[user] = inst
		}
	}
	m.instances, m.byContact, m.sorted = instances, byContact, nil
	return out, nil
}

// resumeTime picks when a resumed instance registers again. A registered instance whose
// binding is still valid keeps its own refresh point: the binding was granted when its state
// was last saved (refreshed: a good refresh saves the new expiry, stamped with its time), so
// it refreshes at refreshIn of that grant after it, as it would have without the restart. A
// million bindings refreshed at random moments then go on refreshing at the rate they did,
// instead of all at 0.9 of what is left (none for minutes, then a rush). A later save of
// another kind only makes the grant look shorter, and the refresh earlier, never later than
// refreshIn allows. The others (not registered, or past their refresh point after a long
// stop) register at a random point of the resume window, but before the binding would lapse.
func (m *Manager) resumeTime(inst *Instance, refreshed, now time.Time) time.Time {
	window := m.opts.ResumeWindow
	if inst.expiresAt > 0 && inst.phase.Status == Registered {
		left := time.Duration(inst.expiresAt - now.UnixNano())
		if r := refreshed.UnixNano(); r > 0 && r < inst.expiresAt && r <= now.UnixNano() {
			if at := time.Unix(0, r).Add(m.refreshIn(time.Duration(inst.expiresAt - r))); at.After(now) {
				return at
			}
		} else if refreshIn := m.refreshIn(left); refreshIn > window {
			return now.Add(refreshIn) // no time of its grant: refresh at its share of what is left
		}
		switch {
		case left > refreshLead && left-refreshLead < window:
			window = left - refreshLead // room for a full transaction before it lapses
		case left > 2*time.Second && left-2*time.Second < window:
			window = left - 2*time.Second
		}
	}
	return now.Add(time.Duration(rand.Int64N(int64(window) + 1)))
}

// Stop stops the loop, waits for transactions in flight and flushes state to the store.
// It does not unregister anything: bindings stay at the registrars through a restart.
func (m *Manager) Stop() {
	if !m.started.Load() || m.cancel == nil {
		return
	}
	m.cancel()
	m.wg.Wait() // workers, scheduler and sweeper: nothing produces state updates after this
	close(m.persistStop)
	<-m.persistDone // every update saved so far is written
}

// fireTimer is called by the scheduler; it blocks while the message loop is full.
func (m *Manager) fireTimer(inst *Instance, gen uint64) {
	select {
	case m.queue <- item{inst: inst, ev: EvTimer, gen: gen}:
	case <-m.ctx.Done():
	}
}

// post puts an app or admin event on the message loop.
func (m *Manager) post(ctx context.Context, inst *Instance, ev Event) error {
	return m.postWish(ctx, inst, ev, 0)
}

// postWish puts an app or admin event on the message loop with the instance's registration
// count regs at the time it was decided (it matters for EvForget and EvExpire only).
func (m *Manager) postWish(ctx context.Context, inst *Instance, ev Event, regs uint32) error {
	select {
	case m.queue <- item{inst: inst, ev: ev, regs: regs}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-m.ctx.Done():
		return errors.New("instance: manager stopped")
	}
}

func (m *Manager) worker() {
	for {
		select {
		case <-m.ctx.Done():
			return
		case it := <-m.queue:
			m.handle(it)
		}
	}
}

// handle runs one event through the state machine and executes its actions, including the
// SIP transaction (outside the instance lock) and the events its result produces.
func (m *Manager) handle(it item) {
	inst := it.inst
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.gone || it.ev == EvTimer && it.gen != inst.gen {
		return // forgotten, or superseded
	}
	if inst.busy {
		if it.ev != EvTimer {
			inst.pending, inst.pendingRegs = it.ev, it.regs // the latest app or admin wish wins
		}
		return
	}
	ev, regs := it.ev, it.regs
	for ev != EvNone {
		if ev == EvExpire && !m.stillSilent(inst, time.Now()) {
			ev = EvNone // heard from since the sweep decided
		} else {
			if ev == EvExpire {
				m.offBeforeExpire(inst) // the devices are deleted with the instance
			}
			ev = m.step(inst, ev, regs)
		}
		if inst.gone {
			inst.pending = EvNone // a registration after the forget makes a new instance
			return
		}
		if ev == EvNone && inst.pending != EvNone {
			ev, regs, inst.pending = inst.pending, inst.pendingRegs, EvNone
		}
	}
}

// step applies one event; it returns the event produced by a SIP transaction, if any.
// The caller holds inst.mu; step releases it while the transaction is in flight. regs is the
// registration count an EvForget or EvExpire was posted at.
func (m *Manager) step(inst *Instance, ev Event, regs uint32) Event {
	from := inst.phase
	to, act := Transition(from, ev)
	now := time.Now()
	inst.phase = to
	note := ""
	var next Event
	switch act {
	case ActRegister:
		// The old binding goes first, before we hold a slot: holding one slot while waiting
		// for another could starve a proxy for good.
		m.dropOldBinding(inst)
		if inst.gone {
			return EvNone
		}
		acct := inst.account // the slot and the REGISTER are for this account, even if the app changes it meanwhile
		switch m.admitProxy(inst, &acct) {
		case admitBusy:
			// The proxy has too many REGISTERs in flight: try again later, waiting longer
			// each time (20 ms doubling to 5 s, with jitter). A deferral changes nothing
			// worth storing or showing, so it returns before save.
			d := min(20*time.Millisecond<<min(inst.deferrals, 8), 5*time.Second)
			inst.deferrals++
			m.scheduleIn(inst, d/2+time.Duration(rand.Int64N(int64(d/2)+1)))
			return EvNone
		case admitDown:
			// The proxy does not answer: inst is parked until it does (proxy.go). Its
			// binding cannot be refreshed meanwhile, which is what the stats page shows.
			to, _ = Transition(inst.phase, EvFailed)
			msg := "proxy " + proxyKey(&acct) + " is not answering: waiting for it"
			if inst.phase == to && inst.lastError == msg {
				return EvNone // parked again, nothing new to store or show
			}
			inst.phase, inst.lastError = to, msg
			inst.remember(now.UnixNano(), ev, from, to, act, msg)
			m.save(inst, now)
			return EvNone
		}
		inst.deferrals = 0
		res, err := m.transact(inst, acct, m.requestExpires(inst), inst.contactAddr)
		next, note = m.classify(inst, res, err, time.Now())
		if next == EvRegistered && m.natMoved(inst, acct, res) {
			// We are behind a NAT: remove the binding at the address nobody can reach us
			// at, then register again at the one the registrar saw.
			if m.admitWait(inst, &acct) {
				m.transact(inst, acct, 0, res.ContactAddr)
			}
			next, note = EvIntervalTooBrief, "behind a NAT: Contact moved to "+inst.contactAddr
		}
	case ActUnregister, ActUnregisterGone:
		acct, bound := inst.account, inst.expiresAt > now.UnixNano()
		if act == ActUnregisterGone {
			// Gone first (database and memory), so that the next registration makes a new
			// instance instead of updating this one; then unREGISTER with what it had.
			if !m.remove(inst, regs) {
				inst.phase = from // a registration came after the forget was asked for: it wins
				return EvNone
			}
			m.instanceLog(inst).WithField("event", ev).Info("instance forgotten")
		}
		inst.gen++ // cancel any refresh or retry
		inst.nextAt, inst.failures, inst.lastError = 0, 0, ""
		if ev == EvTurnOff {
			inst.off = true
		}
		note = m.unbind(inst, acct, bound)
		if act == ActUnregisterGone {
			inst.remember(now.UnixNano(), ev, from, to, act, note)
			return EvNone
		}
	case ActRefreshLater:
		inst.failures = 0
		inst.lastError = ""
		granted := time.Duration(inst.expiresAt - now.UnixNano())
		m.scheduleIn(inst, m.refreshIn(granted))
	case ActRetryLater:
		m.scheduleIn(inst, m.backoff(inst))
	case ActRetrySlowly:
		m.scheduleIn(inst, jitterDown(m.opts.UnauthorizedRetry, m.opts.Jitter))
	}
	if ev == EvBackground {
		inst.off = false
	}
	if from != to || act != ActNone && act != ActRegister || ev == EvBackground {
		inst.remember(now.UnixNano(), ev, from, to, act, note)
		m.instanceLog(inst).WithFields(logrus.Fields{"event": ev, "from": from, "to": to, "action": act, "note": note}).Debug("transition")
	}
	if from == to && to == (Phase{RegisterLoop, Registered}) && (ev == EvTimer || ev == EvRegistered) &&
		note == "" && inst.lastError == "" {
		m.saveRefresh(inst, now)
	} else {
		m.save(inst, now)
	}
	return next
}

// unbind removes the binding inst may hold for acct (bound: its expiry has not passed) with an
// unREGISTER, or the one at the previous account's registrar; it returns a note for the event
// record when the unREGISTER got no answer. The caller holds inst.mu.
func (m *Manager) unbind(inst *Instance, acct store.Account, bound bool) (note string) {
	if inst.oldAccount != nil {
		m.dropOldBinding(inst) // the binding is at the old account's registrar
		return ""
	}
	if !bound {
		return ""
	}
	err := errNotAnswering
	if m.admitWait(inst, &acct) {
		_, err = m.transact(inst, acct, 0, inst.contactAddr)
	}
	m.stats.Unregisters.Add(1)
	if err != nil {
		// No answer: the binding may still be there. Keep its expiry, so a restart (or the
		// next wish) tries again; it lapses by itself at the latest then.
		return "unregister: " + err.Error()
	}
	inst.expiresAt = 0
	return ""
}

// natMoved reports whether res shows the registrar saw us at another address than our
// Contact's, and if so moves inst's Contact there (twice at most per instance, so that a
// registrar that keeps changing its mind cannot make us loop).
func (m *Manager) natMoved(inst *Instance, acct store.Account, res sipua.Result) bool {
	// Only over UDP: over TCP/TLS rport is the connection's ephemeral source port, where
	// nobody listens once the connection is gone (RFC 5626 outbound would be the way there).
	if !m.opts.FollowNAT || acct.Transport != "udp" && acct.Transport != "" ||
		res.Received == "" || res.ContactAddr == "" || inst.natMoves >= 2 {
		return false
	}
	_, port, err := net.SplitHostPort(res.ContactAddr)
	if err != nil {
		return false
	}
	if res.RPort > 0 {
		port = strconv.Itoa(res.RPort)
	}
	addr := net.JoinHostPort(res.Received, port)
	if addr == res.ContactAddr {
		return false
	}
	inst.contactAddr = addr
	inst.natMoves++
	return true
}

// errNotAnswering stands for the answer of an unREGISTER that was not sent because its proxy
// does not answer (proxy.go): handled like one that timed out.
var errNotAnswering = errors.New("the proxy is not answering")

// dropOldBinding removes the binding an instance holds under the account it had before the
// app changed it (another user, registrar or transport), once, before anything else is sent.
func (m *Manager) dropOldBinding(inst *Instance) {
	old := inst.oldAccount
	if old == nil {
		return
	}
	inst.oldAccount = nil
	if inst.expiresAt <= time.Now().UnixNano() {
		return
	}
	err := errNotAnswering
	if m.admitWait(inst, old) {
		_, err = m.transact(inst, *old, 0, inst.contactAddr)
	}
	if err != nil {
		// It lapses at the old registrar by itself; the new account's binding is another.
		m.instanceLog(inst).WithField("err", err).Info("removing the binding of the previous account failed")
	}
	inst.expiresAt = 0
}

// transact runs one REGISTER cycle of acct for inst with the lock released; contactAddr
// overrides the host:port of our Contact when it is not empty. The caller holds a slot of
// acct's proxy, which transact gives back.
func (m *Manager) transact(inst *Instance, acct store.Account, expires int, contactAddr string) (sipua.Result, error) {
	b := sipua.Binding{
		Selector: inst.selector, User: acct.User, AuthUser: acct.AuthUser,
		Password: acct.Password, Domain: acct.Domain, Proxy: acct.Proxy,
		Port: acct.Port, Transport: acct.Transport, DisplayName: acct.DisplayName,
		ContactUser: inst.contactUser, ContactAddr: contactAddr, CallID: inst.callID, CSeq: inst.cseq, Expires: expires,
	}
	current := acct == inst.account // not the binding of an account the app has since changed
	if current {
		b.Nonce = inst.nonce
		if expires > 0 {
			b.ReplaceAddr = inst.replaceAddr // an adopted instance: the previous owner's binding goes too
		}
	}
	key := proxyKey(&acct)
	probe := inst.probe
	inst.probe = false
	inst.busy = true
	inst.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, m.opts.TransactionTimeout)
	res, err := m.opts.Registrar.Register(ctx, b)
	cancel()
	m.release(key, probe, m.outcomeOf(err))
	inst.mu.Lock()
	inst.busy = false
	now := time.Now().UnixNano()
	m.stats.Registers.Add(1)
	if res.CSeq > inst.cseq {
		inst.cseq = res.CSeq
	}
	if res.BytesIn+res.BytesOut > 0 {
		inst.bytesIn += int64(res.BytesIn)
		inst.bytesOut += int64(res.BytesOut)
		if inst.firstTraffic == 0 {
			inst.firstTraffic = now
		}
		inst.lastTraffic = now
	}
	inst.lastRegister = now
	if current && acct == inst.account {
		inst.nonce = res.Nonce
		if err == nil && res.Status >= 200 && res.Status < 300 && b.ReplaceAddr == inst.replaceAddr {
			inst.replaceAddr = "" // removed with this REGISTER
		}
	}
	// The text of the last exchange is kept only where someone may look at it: an instance
	// whose REGISTER failed, or whose log is on. A node holds a million instances, and the
	// two messages of a good refresh are a kilobyte each.
	if err != nil || res.Status < 200 || res.Status >= 300 || inst.logging {
		if res.Request != "" {
			inst.lastRequest = res.Request
		}
		inst.lastResponse = res.Response
	} else {
		inst.lastRequest, inst.lastResponse = "", ""
	}
	if err != nil {
		m.stats.RegisterFailures.Add(1)
	}
	if m.opts.OnRegister != nil {
		m.opts.OnRegister(res.Status, err)
	}
	if inst.logging {
		m.instanceLog(inst).WithFields(logrus.Fields{"expires": expires, "status": res.Status, "err": err}).
			Info("REGISTER\n" + res.Request + "\n" + res.Response)
	}
	return res, err
}

// classify turns a REGISTER result into the state machine's event.
func (m *Manager) classify(inst *Instance, res sipua.Result, err error, now time.Time) (Event, string) {
	switch {
	case err != nil:
		inst.lastError = oneLine(err.Error())
		inst.retryAfter = 0
		return EvFailed, inst.lastError
	case res.Status >= 200 && res.Status < 300:
		if res.Expires <= 0 {
			inst.lastError = fmt.Sprintf("%d %s but the registrar granted no binding (expires 0)", res.Status, res.Reason)
			return EvFailed, inst.lastError
		}
		inst.expiresAt = now.Add(time.Duration(res.Expires) * time.Second).UnixNano()
		return EvRegistered, ""
	case res.Status == 423:
		// RFC 3261 §10.2.8: retry with an expiration at least Min-Expires.
		if res.MinExpires > int(inst.minExpires) && res.MinExpires <= 7*24*3600 {
			inst.minExpires = int32(res.MinExpires)
			return EvIntervalTooBrief, fmt.Sprintf("423: Min-Expires %d", res.MinExpires)
		}
		inst.lastError = fmt.Sprintf("423 %s without a usable Min-Expires", res.Reason)
	case res.Status == 401 || res.Status == 407 || res.Status == 403:
		inst.lastError = fmt.Sprintf("%d %s: credentials refused", res.Status, res.Reason)
		return EvUnauthorized, inst.lastError
	case res.Status >= 300 && res.Status < 400:
		// sipis never follows redirects on a user's behalf.
		inst.lastError = fmt.Sprintf("%d %s: redirect not followed", res.Status, res.Reason)
	default:
		inst.lastError = fmt.Sprintf("%d %s", res.Status, res.Reason)
	}
	inst.retryAfter = res.RetryAfter
	return EvFailed, inst.lastError
}

// requestExpires is the expiry to ask for: the app's wish within our bounds, raised to what a
// 423 demanded.
func (m *Manager) requestExpires(inst *Instance) int {
	e := inst.account.Expires
	if e <= 0 {
		e = m.opts.DefaultExpires
	}
	e = max(min(e, m.opts.MaxExpires), m.opts.MinExpires)
	return max(e, int(inst.minExpires))
}

// minRefresh is the shortest wait between two refreshes of one instance, whatever the
// registrar grants: a registrar granting a second must not make us loop.
const minRefresh = 5 * time.Second

// refreshLead is the least time before a binding expires at which its refresh starts: one
// whole non-INVITE transaction, in which a lost request or response is retransmitted, may
// last Timer F = 64·T1 = 32 s (RFC 3261 §17.1.2.2) and must end before the binding lapses,
// plus a margin for a busy proxy's admission and the scheduler's batching (sched.go).
const refreshLead = 32*time.Second + 4*time.Second

// refreshIn is when to refresh a binding valid for granted. Good UAs refresh late, since
// every refresh costs the registrar and us a transaction: at RefreshFraction of the grant
// (0.9), but never later than refreshLead before expiry, so that a refresh whose first
// datagram is lost still completes in time (uac_reg's few seconds before expiry do not allow
// that). A grant too short for that lead is refreshed at a third of it at the latest. Then
// up to Jitter (a fraction) earlier, so that refreshes of instances registered together
// spread out over seconds; and never sooner than minRefresh.
func (m *Manager) refreshIn(granted time.Duration) time.Duration {
	d := min(time.Duration(float64(granted)*m.opts.RefreshFraction), granted-refreshLead)
	d = max(d, granted/3)
	return max(jitterDown(d, m.opts.Jitter), minRefresh)
}

// backoff is the wait before retrying after a failure: exponential from BackoffMin to
// BackoffMax with "equal jitter", or the registrar's Retry-After when that is longer.
func (m *Manager) backoff(inst *Instance) time.Duration {
	if inst.failures < 30 {
		inst.failures++
	}
	d := m.opts.BackoffMin << (inst.failures - 1)
	if d <= 0 || d > m.opts.BackoffMax {
		d = m.opts.BackoffMax
	}
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	if inst.retryAfter > 0 {
		// Honour Retry-After, but never park an instance for longer than the longest of
		// BackoffMax and an hour: the app believes we hold its registration.
		ra := min(inst.retryAfter, max(m.opts.BackoffMax, time.Hour))
		inst.retryAfter = 0
		if ra > d {
			d = ra + time.Duration(rand.Int64N(int64(ra/10)+1))
		}
	}
	return d
}

// jitterDown returns d reduced by a random fraction of at most f.
func jitterDown(d time.Duration, f float64) time.Duration {
	return d - time.Duration(rand.Float64()*f*float64(d))
}

func (m *Manager) scheduleIn(inst *Instance, d time.Duration) {
	inst.gen++
	at := time.Now().Add(d)
	inst.nextAt = at.UnixNano()
	m.sched.add(inst, at, inst.gen)
}

// save marks inst's state for the write-behind persister; the caller holds inst.mu. It never
// waits for the store: it replaces the selector's entry in the dirty set, so however long the
// store stalls, the set holds at most one update per instance and workers, /stats and new
// registrations carry on. Only the latest state of a selector matters: each update carries all
// of the stored state fields.
func (m *Manager) save(inst *Instance, now time.Time) {
	up := stateOf(inst, now)
	m.persistMu.Lock()
	delete(m.refreshed, up.Selector) // superseded
	m.dirty[up.Selector] = up
	wake := len(m.dirty) == 1 || len(m.dirty) >= persistBatch // the first of a round, or a full batch
	m.persistMu.Unlock()
	if wake {
		m.wakePersister()
	}
}

// wakePersister tells the persister that its sets changed (it sleeps while they are empty).
func (m *Manager) wakePersister() {
	select {
	case m.persistWake <- struct{}{}:
	default:
	}
}

func stateOf(inst *Instance, now time.Time) store.StateUpdate {
	return store.StateUpdate{
		Selector: inst.selector, State: inst.phase.State.Key(), Status: inst.phase.Status.String(),
		LastError: inst.lastError, CSeq: inst.cseq, ExpiresAt: unixTime(inst.expiresAt), Off: inst.off, At: now,
		ContactAddr: inst.contactAddr,
	}
}

// saveRefresh is save for a state whose only change is a good refresh: a later expiry and
// CSeq. It is written within refreshedEvery instead of 20 ms, so that a node refreshing
// thousands of bindings a second commits a few large batches instead of fifty small ones (each
// commit costs more than the rows in it). A crash loses at most that second of refreshes,
// which the store's state already covers: a restart adds cseqMargin to the stored CSeq, and
// an expiry older than the true one only brings the next REGISTER forward. A pending update
// of the selector that must be written soon stays in the dirty set, with the new state.
func (m *Manager) saveRefresh(inst *Instance, now time.Time) {
	up := stateOf(inst, now)
	m.persistMu.Lock()
	wake := false
	if _, soon := m.dirty[up.Selector]; soon {
		m.dirty[up.Selector] = up
	} else {
		m.refreshed[up.Selector] = up
		wake = len(m.refreshed) == 1
	}
	m.persistMu.Unlock()
	if wake {
		m.wakePersister()
	}
}

// refreshedEvery is how often the states saved by saveRefresh are written.
const refreshedEvery = time.Second

// mergeRefreshed moves the refreshed states into the dirty set, to be written with it.
func (m *Manager) mergeRefreshed() {
	m.persistMu.Lock()
	for sel, up := range m.refreshed {
		if _, newer := m.dirty[sel]; !newer {
			m.dirty[sel] = up
		}
	}
	clear(m.refreshed)
	m.persistMu.Unlock()
}

// persistBatch is the most state updates written in one transaction.
const persistBatch = 512

// stopFlushFor bounds how long Stop keeps retrying the last writes on a failing store.
const stopFlushFor = 2 * time.Minute

// persistLoop writes the dirty set in transactions of at most persistBatch updates, 20 ms
// after its first update arrived or as soon as a batch is full, so that thousands of changes
// per second cost a few commits; the refreshed set is merged into it a second after its first
// update. With both sets empty it sleeps: an idle node does not wake 50 times a second. A
// batch whose write fails goes back into the set (unless a newer state of the selector arrived
// meanwhile) and is written again 20 ms later: never dropped.
//
// A Flush request merges the refreshed set and writes at once; it is answered once a round
// that started after it emptied the set. While the store fails, requests wait for the round
// that succeeds.
func (m *Manager) persistLoop() {
	const gather = 20 * time.Millisecond
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var flushAt, mergeAt time.Time // zero: nothing pending
	var flushes []chan struct{}    // Flush calls waiting for a round that empties the set
	for {
		wait := time.Hour
		now := time.Now()
		for _, at := range []time.Time{flushAt, mergeAt} {
			if !at.IsZero() {
				wait = min(wait, max(at.Sub(now), 0))
			}
		}
		timer.Reset(wait)
		select {
		case done := <-m.flushReq:
			flushes = append(flushes, done)
		case <-m.persistStop:
			// Every worker has returned: nothing changes any more. Write what is left,
			// retrying a failing store for a while rather than losing it.
			m.mergeRefreshed()
			deadline := time.Now().Add(stopFlushFor)
			for wait := 100 * time.Millisecond; !m.flushDirty(); wait = min(2*wait, 5*time.Second) {
				if time.Now().After(deadline) {
					m.persistMu.Lock()
					n := len(m.dirty)
					m.persistMu.Unlock()
					m.log.WithField("updates", n).Error("the store kept failing: instance states not written at stop")
					m.persistLost.Store(true)
					return
				}
				time.Sleep(wait)
			}
			return
		case <-timer.C:
		case <-m.persistWake:
		}
		now = time.Now()
		m.persistMu.Lock()
		dirty, refreshed := len(m.dirty), len(m.refreshed)
		m.persistMu.Unlock()
		switch {
		case dirty >= persistBatch:
			flushAt = now
		case dirty > 0 && flushAt.IsZero():
			flushAt = now.Add(gather)
		}
		if refreshed > 0 && mergeAt.IsZero() {
			mergeAt = now.Add(refreshedEvery)
		}
		if len(flushes) > 0 {
			mergeAt, flushAt = now, now // a Flush writes the refreshed set too, now
		}
		if !mergeAt.IsZero() && !now.Before(mergeAt) {
			m.mergeRefreshed()
			mergeAt, flushAt = time.Time{}, now
		}
		if !flushAt.IsZero() && !now.Before(flushAt) {
			flushAt = time.Time{}
			if !m.flushDirty() {
				flushAt = now.Add(gather)
			} else {
				for _, done := range flushes {
					close(done)
				}
				flushes = flushes[:0]
			}
		}
	}
}

// Flush waits until every instance state changed before the call is written to the store (a
// committed transaction), or ctx ends. Only one goroutine writes states, so a round of the
// persister that starts after the request and ends with an empty dirty set has written, or
// found already written, everything that was dirty at the call. After Stop it returns what
// Stop's last writes came to.
func (m *Manager) Flush(ctx context.Context) error {
	if !m.started.Load() {
		return errors.New("instance: manager not started")
	}
	done := make(chan struct{})
	select {
	case m.flushReq <- done:
	case <-m.persistDone:
		return m.stopFlushErr()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-m.persistDone:
		return m.stopFlushErr()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopFlushErr says whether Stop left instance states unwritten.
func (m *Manager) stopFlushErr() error {
	if m.persistLost.Load() {
		return errors.New("instance: the store kept failing at stop: instance states not written")
	}
	return nil
}

// flushDirty writes the dirty set batch by batch; it reports whether the set is empty.
func (m *Manager) flushDirty() bool {
	for {
		m.persistMu.Lock()
		if len(m.dirty) == 0 {
			m.persistMu.Unlock()
			return true
		}
		work := make([]store.StateUpdate, 0, min(len(m.dirty), persistBatch))
		for sel, up := range m.dirty {
			work = append(work, up)
			delete(m.dirty, sel)
			if len(work) == persistBatch {
				break
			}
		}
		m.persistMu.Unlock()
		if !m.writeStates(work) {
			m.persistMu.Lock()
			for _, up := range work {
				if _, newer := m.dirty[up.Selector]; !newer {
					m.dirty[up.Selector] = up
				}
			}
			m.persistMu.Unlock()
			return false
		}
	}
}

// writeStates writes one batch, retrying a few times within 30 s; it reports success.
func (m *Manager) writeStates(work []store.StateUpdate) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := m.opts.Store.SaveStates(ctx, work)
		if err == nil {
			return true
		}
		m.stats.PersistErrors.Add(1)
		m.log.WithField("err", err).WithField("updates", len(work)).Error("saving instance states failed")
		if attempt == 3 || ctx.Err() != nil {
			return false
		}
		time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
	}
}

// forgetDirty drops a removed selector's unwritten state, so it is not written after the
// row was deleted (onto a row a new registration of the selector made meanwhile).
func (m *Manager) forgetDirty(selector string) {
	m.persistMu.Lock()
	delete(m.dirty, selector)
	delete(m.refreshed, selector)
	m.persistMu.Unlock()
}

func (m *Manager) instanceLog(inst *Instance) logrus.FieldLogger {
	if inst.logging && m.opts.InstanceLogger != nil {
		if l := m.opts.InstanceLogger(inst.selector); l != nil {
			return l.WithField("selector", inst.selector)
		}
	}
	return m.log.WithField("selector", inst.selector)
}

// stillSilent reports whether inst is still one the sweep may forget.
func (m *Manager) stillSilent(inst *Instance, now time.Time) bool {
	if inst.lastActivity < now.Add(-m.maxAgeOf(inst.selector)).UnixNano() {
		return true
	}
	return m.opts.NotRegisteredMaxAge > 0 && inst.phase.State == Idle &&
		inst.lastActivity < now.Add(-m.opts.NotRegisteredMaxAge).UnixNano()
}

// remove deletes inst from the store, then from memory, unless a registration was attached
// after the forget was posted at registration count regs (then it reports false and changes
// nothing). The caller holds inst.mu; remove holds the selector's lock throughout, so that a
// registration of the selector comes wholly before the removal (and is forgotten with it, or
// voids it) or wholly after it (and makes a new instance): never is its stored row deleted
// after it was acknowledged.
func (m *Manager) remove(inst *Instance, regs uint32) bool {
	lk := m.locks.lockHeld(inst)
	defer lk.Unlock()
	if inst.regs != regs || inst.gone {
		return false
	}
	inst.gone = true
	inst.gen++                 // its timer entries are stale now
	inst.account.Password = "" // it may sit in the timer heap a while: keep no credentials
	inst.lastRequest, inst.lastResponse = "", ""
	m.forgetDirty(inst.selector)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.opts.Store.DeleteInstance(ctx, inst.selector); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.WithField("selector", inst.selector).WithField("err", err).Error("deleting instance failed")
	}
	m.mu.Lock()
	if m.instances[inst.selector] == inst {
		delete(m.instances, inst.selector)
		m.sorted = nil
	}
	if inst.contactUser != "" && m.byContact[inst.contactUser] == inst {
		delete(m.byContact, inst.contactUser)
	}
	m.mu.Unlock()
	return true
}

// cseqMargin is added to the stored CSeq on start: the last few write-behind updates may
// have been lost to a crash, and a registrar drops a REGISTER whose CSeq is not higher than
// the last one of the same Call-ID (RFC 3261 §10.3 step 7).
const cseqMargin = 100

// fromStore builds an instance from its stored row.
func fromStore(si *store.Instance) *Instance {
	st, ss, ok := ParseState(si.State, si.Status)
	if !ok {
		st, ss = Idle, NotRegistered
	}
	acct := si.Account
	// Most instances share a few registrars: one copy of each name, not one per instance.
	acct.Domain, acct.Proxy, acct.Transport = intern(acct.Domain), intern(acct.Proxy), intern(acct.Transport)
	inst := &Instance{
		selector: si.Selector, account: acct, off: si.Off, phase: Phase{st, ss},
		background: si.Mode == string(registration.ModeBackground),
		lastError:  si.LastError, contactUser: si.ContactUser, contactAddr: si.ContactAddr, callID: si.CallID,
		cseq:    si.CSeq + cseqMargin,
		created: si.CreatedAt.UnixNano(), lastActivity: si.LastActivity.UnixNano(),
	}
	if !si.ExpiresAt.IsZero() {
		inst.expiresAt = si.ExpiresAt.UnixNano()
	}
	return inst
}

// intern returns the canonical copy of s (unique.Make: copies no one uses any more are freed).
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// randomToken returns n random bytes as hex: Contact user parts and Call-IDs.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func oneLine(s string) string {
	out := []rune{}
	for _, r := range s {
		if r == '\r' || r == '\n' {
			r = ' '
		}
		out = append(out, r)
		if len(out) >= 300 {
			out = append(out, '…')
			break
		}
	}
	return string(out)
}

// Snapshot returns a copy of one instance, without the details of Debug.
func (m *Manager) Snapshot(selector string) (Snapshot, bool) { return m.copyOf(selector, false) }

// Debug returns a copy of one instance with its last REGISTER and recent events.
func (m *Manager) Debug(selector string) (Snapshot, bool) { return m.copyOf(selector, true) }

func (m *Manager) copyOf(selector string, detail bool) (Snapshot, bool) {
	inst := m.get(selector)
	if inst == nil {
		return Snapshot{}, false
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.snapshot(detail), true
}

// get returns the held instance of a selector, or nil.
func (m *Manager) get(selector string) *Instance {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.instances[selector]
}

// Len returns the number of instances.
func (m *Manager) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.instances)
}

// Selectors returns every selector in order. The slice is shared: do not modify it.
func (m *Manager) Selectors() []string {
	m.mu.RLock()
	s := m.sorted
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sorted == nil {
		s := make([]string, 0, len(m.instances))
		for sel := range m.instances {
			s = append(s, sel)
		}
		sort.Strings(s)
		m.sorted = s
	}
	return m.sorted
}

// Range calls fn with a snapshot of the instances from offset on, in selector order, until fn
// returns false or limit snapshots were given (limit 0 = all).
func (m *Manager) Range(offset, limit int, fn func(Snapshot) bool) {
	sels := m.Selectors()
	if offset >= len(sels) {
		return
	}
	sels = sels[max(offset, 0):]
	if limit > 0 && limit < len(sels) {
		sels = sels[:limit]
	}
	for _, sel := range sels {
		if s, ok := m.Snapshot(sel); ok && !fn(s) {
			return
		}
	}
}

// all returns every instance. Lock order: an instance's mu is never taken while m.mu is
// held (remove takes m.mu under an instance's mu), so callers lock instances after this.
func (m *Manager) all() []*Instance {
	m.mu.RLock()
	defer m.mu.RUnlock()
	insts := make([]*Instance, 0, len(m.instances))
	for _, inst := range m.instances {
		insts = append(insts, inst)
	}
	return insts
}

// Counts returns the number of instances in each phase, and of those turned off.
func (m *Manager) Counts() (byPhase map[Phase]int, off int) {
	byPhase = make(map[Phase]int)
	for _, inst := range m.all() {
		inst.mu.Lock()
		byPhase[inst.phase]++
		if inst.off {
			off++
		}
		inst.mu.Unlock()
	}
	return byPhase, off
}

// ByContact returns the selector whose Contact user part is user.
func (m *Manager) ByContact(user string) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	inst := m.byContact[user]
	if inst == nil {
		return "", false
	}
	return inst.selector, true
}

// SetLogging turns detailed logging of one instance on or off.
func (m *Manager) SetLogging(selector string, on bool) bool {
	inst := m.get(selector)
	if inst == nil {
		return false
	}
	inst.mu.Lock()
	inst.logging = on
	inst.mu.Unlock()
	return true
}
