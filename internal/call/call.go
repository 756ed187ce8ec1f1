// Package call handles what arrives for a sleeping account: an incoming INVITE is answered with
// 180 Ringing while every device of the instance is woken by a push notification, and ends in an
// outcome (accepted, missed or rejected with a reason) that is counted and stored as a call
// record; a SIP MESSAGE is stored as a waiting message, pushed, and fetched by the device over
// HTTP once it wakes.
//
// The three 180 Ringing responses tell the caller's side how far the wake-up got, in the
// X-Sipis-Push-Status header: Alerting-Device (push being sent), Push-Notification-Sent (the
// push service accepted it) and Device-Making-Progress (the woken device claimed the call with
// its one-time token). Timer T1 runs from the INVITE until the device claims the call, T2 from
// then until it is connected; either expiring ends the call with 480 and X-Sipis-Reason:
// No-Response-From-Device.
//
// A Manager implements sipua.Handler for the requests to our Contact users and serves the
// device-facing HTTP calls (the handlers of http.go). It depends on the rest of sipis through
// small interfaces (Instances, Store, Pusher, Forwarder) that internal/app adapts.
//
// It owns the calls in progress, T1/T2 and Timer C, the call tokens and proofs, the relay of a
// call's dialog to the woken devices (relay.go), CANCEL matching, the call records and the
// outcome counts, the waiting messages and the device HTTP handlers' decoding.
//
// It must not change an instance's registration or state (it only reads accounts through
// Instances), import internal/instance or sipgo (SIP goes through internal/sipua's types), route
// HTTP (internal/web mounts the handlers and throttles them), or follow a 3xx or REFER on a
// user's behalf: it relays them and nothing more.
package call

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sirupsen/logrus"
)

// Defaults of Options.
const (
	DefaultNoResponseTimeout = 120 * time.Second
	DefaultProgressTimeout   = 120 * time.Second
	DefaultMaxCalls          = 4
	DefaultMaxMessageSize    = 4 << 20
	DefaultPushTimeout       = 15 * time.Second
	DefaultMaxDialogAge      = 12 * time.Hour
	DefaultTimerC            = 3 * time.Minute
)

// endedGrace is how long an ended call stays known, so that a late CANCEL is still answered 200
// (RFC 3261 §9.2) and a late device request learns that the call is over: 64*T1 (Timer J).
const endedGrace = 32 * time.Second

// The reasons of rejected and missed calls, as counted and stored.
const (
	ReasonUnknownContact   = "unknown contact"
	ReasonSourceNotAllowed = "source not allowed"
	ReasonInstanceOff      = "instance off"
	ReasonNoDevice         = "no device"
	ReasonTooManyCalls     = "too many calls"
	ReasonPushFailed       = "push failed"
	ReasonDeclined         = "declined"
	ReasonBusy             = "busy"
	ReasonCancelled        = "cancelled by caller"
	ReasonNoResponse       = "no response from device"
	ReasonNotConnected     = "device did not connect"
	ReasonNotAnswered      = "device did not answer"
	ReasonDeviceFailed     = "device failed the call"
	ReasonShutdown         = "server shutting down"
	// ReasonRestarted closes, at start, the records of calls the previous run left open
	// (it was killed while they rang or were relayed).
	ReasonRestarted = "server restarted"
	// The reasons an answered call's dialog was ended by sipis (stored in the record of an
	// accepted call).
	ReasonDeviceLost = "device connection lost"
	ReasonMaxAge     = "dialog too old"
)

// Account is what the call handling needs to know about an instance.
type Account struct {
	// Proxy, Port, Transport and Domain are the account's; the INVITE must come from an
	// address Proxy (or Domain when Proxy is empty) resolves to.
	Proxy     string
	Port      int
	Transport string
	Domain    string
	// Active is true when sipis holds the registration: the instance is neither Idle (the app
	// registers itself) nor turned off.
	Active bool
	// Devices is how many devices the instance has, as held in memory. When it is not 0 the
	// first 180 is sent before the store is read for their push tokens; 0 (also: not known)
	// reads the store first.
	Devices int
}

// Instances maps our Contact user parts to selectors and describes the instances.
type Instances interface {
	// ByContact returns the selector whose Contact user part is contactUser.
	ByContact(contactUser string) (selector string, ok bool)
	// Account returns the account of selector.
	Account(selector string) (Account, bool)
}

// MovedContacts is implemented by an Instances that knows which Contacts this node handed to
// another node moments ago (a cluster's drain): Moved reports whether contactUser is one of
// them. A request to such a Contact is answered 480 Temporarily Unavailable with Retry-After
// instead of 404 Not Found: the account exists and is being registered by the other node (the
// registrar is told within seconds), so the request may be tried again (RFC 3261 §21.4.18,
// §20.33), where a 404 says the user does not exist here (§21.4.5). A 503 is not used: a proxy
// does not pass a 503 upstream (§16.7, point 6), and it would speak of this server, not the
// callee.
type MovedContacts interface {
	Moved(contactUser string) bool
}

// movedRetryAfter is the Retry-After of a request to a Contact handed over moments ago: the new
// owner's REGISTER is usually through in well under that.
const movedRetryAfter = "5"

// moved reports whether user is a Contact of an instance just handed to another node.
func (m *Manager) moved(user string) bool {
	mc, ok := m.opts.Instances.(MovedContacts)
	return ok && mc.Moved(user)
}

// replyUnknown answers a request to a Contact this node does not know: 480 with Retry-After if
// it was handed over moments ago, else 404.
func (m *Manager) replyUnknown(user string, reply func(int, string, ...sipua.Header)) {
	if m.moved(user) {
		reply(480, "Temporarily Unavailable", sipua.Header{Name: "Retry-After", Value: movedRetryAfter})
		return
	}
	reply(404, "Not Found")
}

// Store is the part of *store.DB the package uses.
type Store interface {
	Devices(ctx context.Context, selector string) ([]store.Device, error)
	MarkTokenInvalid(ctx context.Context, selector, deviceID, token string) error
	PutCall(ctx context.Context, c *store.Call) error
	Calls(ctx context.Context, selector string, limit int) ([]store.Call, error)
	AddMessage(ctx context.Context, m *store.Message) error
	Messages(ctx context.Context, selector string, limit int) ([]store.Message, error)
	AckMessages(ctx context.Context, selector string, ids []int64) (int64, error)
	CheckDeviceSecret(ctx context.Context, selector, deviceID, secret string) error
	CheckDeviceProof(ctx context.Context, selector, deviceID string, verify func(secret []byte) bool) error
	CallOutcomes(ctx context.Context) ([]store.OutcomeCount, error)
	CloseOpenCalls(ctx context.Context, reason string, at time.Time) ([]store.Call, error)
}

// Pusher sends one notification; *push.Dispatcher implements it.
type Pusher interface {
	Send(ctx context.Context, n push.Notification) (push.Result, error)
}

// Forwarder relays SIP requests as a stateful proxy, and sends the BYEs that end a relayed
// dialog; *sipua.UA implements it.
type Forwarder interface {
	Forward(ctx context.Context, req *sipua.Request, o sipua.ForwardOptions) (*sipua.ClientTx, error)
	SendRequest(ctx context.Context, r sipua.DialogRequest) (*sipua.ClientTx, error)
}

// Timer is a pending call of a function, as returned by Clock.AfterFunc.
type Timer interface {
	// Stop prevents the function from running; it reports whether it did.
	Stop() bool
}

// Clock is the time source of T1, T2 and record times; tests replace it.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

type realClock struct{}

func (realClock) Now() time.Time                            { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Action is what a message filter does with a MESSAGE of matching content type.
type Action int

// The filter actions.
const (
	// Accept stores the message and pushes it.
	Accept Action = iota
	// Drop answers 200 and forgets the message (e.g. typing indications, RFC 3994).
	Drop
	// Reject answers 415 Unsupported Media Type (RFC 3261 §21.4.13).
	Reject
)

// String returns "Accept", "Drop" or "Reject".
func (a Action) String() string {
	switch a {
	case Accept:
		return "Accept"
	case Drop:
		return "Drop"
	case Reject:
		return "Reject"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Filter applies Action to the MESSAGEs it matches; the first matching filter wins and a
// MESSAGE no filter matches is accepted. A filter matches on ContentType ("type/subtype",
// "type/*" or "*/*", without parameters, compared case-insensitively) when it is set, and on
// every one of Headers (see HeaderMatch, filter.go). Reject answers Code and Phrase (default
// 415 Unsupported Media Type).
type Filter struct {
	ContentType string
	Action      Action
	Headers     []HeaderMatch
	Code        int
	Phrase      string
}

// DefaultFilters drops typing indications (application/im-iscomposing+xml, RFC 3994).
var DefaultFilters = []Filter{{ContentType: "application/im-iscomposing+xml", Action: Drop}}

// Options configures a Manager. Instances, Store and Push are required.
type Options struct {
	Instances Instances
	Store     Store
	Push      Pusher
	// RelayAddress is where a woken device connects to take the call, sent in the push.
	RelayAddress string
	// AllowedSources are networks (CIDR) an INVITE or MESSAGE may come from besides the
	// addresses of the instance's proxy, e.g. a provider's edge proxies.
	AllowedSources []string
	// Resolver resolves proxy host names (A/AAAA, and SRV when no port is given, RFC 3263); nil
	// means net.DefaultResolver.
	Resolver *net.Resolver
	// NoResponseTimeout is T1, from the INVITE until a device claims the call (default 120 s).
	NoResponseTimeout time.Duration
	// ProgressTimeout is T2, from the claim until the device is connected (default 120 s).
	ProgressTimeout time.Duration
	// NoResponseAnswer is the status sent when T1 or T2 runs out: 480 (default) or 408
	// (<IncomingCall OnNoResponseFromDevice>).
	NoResponseAnswer int
	// MaxCalls bounds the calls in progress per instance; more get 486 (default 4).
	MaxCalls int
	// MaxMessageSize bounds a MESSAGE body; larger ones get 413 (default 4 MiB).
	MaxMessageSize int
	// Filters are the MESSAGE content type filters; nil means DefaultFilters.
	Filters []Filter
	// PushMessageText lets the text of a text/plain MESSAGE travel in the push notification;
	// otherwise the device fetches it.
	PushMessageText bool
	// PushTimeout bounds the sending (with retries) of one push (default 15 s).
	PushTimeout time.Duration
	// MaxDialogAge ends an answered call's dialog with BYE both ways when it is older than
	// this (default 12 h): a dialog whose BYE was lost would otherwise be kept forever.
	MaxDialogAge time.Duration
	// TimerC bounds the wait for the final response of a relayed INVITE (the initial one to a
	// device, or a re-INVITE either way) once a provisional came, restarted by each
	// provisional (RFC 3261 §16.6 step 11, §16.7 step 2; default 3 min, §16.8 says more than
	// 3 min). When it fires the INVITE is cancelled; a re-INVITE is answered 408 upstream.
	TimerC time.Duration
	// SIP forwards requests to devices and upstream; nil means no device can take a call
	// (REGISTER with a token is answered 503). A *sipua.UA implements it.
	SIP Forwarder
	// Clock replaces the real clock in tests.
	Clock Clock
	// Logger receives the package's log lines; nil discards them.
	Logger logrus.FieldLogger

	// Recorder, when set, is told of every request to an instance and of sipis's responses,
	// for the SIP ladder on /debug (see record.go).
	Recorder Recorder
}

// Manager handles incoming INVITE, CANCEL and MESSAGE requests for the instances and the
// devices' HTTP calls about them. It is safe for concurrent use.
type Manager struct {
	opts    Options
	log     logrus.FieldLogger
	clock   Clock
	sources *sources
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	byKey    map[string]*call // Call-ID + "|" + INVITE branch
	byToken  map[[32]byte]*call
	byCallID map[string][]*call // calls whose dialog may be relayed, by Call-ID
	active   map[string]int     // selector -> calls in progress

	omu       sync.Mutex
	out       outcomes             // INVITEs refused without a call record, since start
	stored    outcomes             // the last counts read from the store
	restarted map[string]time.Time // Call-ID -> when a call the last run left ringing was closed
}

type outcomes struct {
	total, accepted, missed, rejected int
	byReason                          map[string]int
}

// add adds n calls with outcome (and reason, for a rejected one).
func (o *outcomes) add(outcome, reason string, n int) {
	o.total += n
	switch outcome {
	case store.OutcomeAccepted:
		o.accepted += n
	case store.OutcomeMissed:
		o.missed += n
	case store.OutcomeRejected:
		o.rejected += n
		o.byReason[reason] += n
	}
}

// restartedGrace is how long a CANCEL for a call the last run left ringing is still answered
// 200 and 487 (its INVITE's transaction is gone): beyond Timer C (3 min, RFC 3261 §16.8), after
// which the caller's proxy gives up by itself.
const restartedGrace = 4 * time.Minute

// Recover closes the call records the previous run left open (it was killed): a call that
// rang becomes missed with ReasonRestarted, an answered one keeps its outcome; both end now.
// For a while a CANCEL of such a call is still answered (200, then 487 to its INVITE) instead
// of 481. Call it once at start, before the Manager gets requests.
func (m *Manager) Recover(ctx context.Context) error {
	now := m.clock.Now()
	open, err := m.opts.Store.CloseOpenCalls(ctx, ReasonRestarted, now)
	if err != nil {
		return fmt.Errorf("call: close the calls the last run left open: %w", err)
	}
	m.omu.Lock()
	for _, c := range open {
		if c.Outcome == "" && c.CallID != "" {
			m.restarted[c.CallID] = now
		}
	}
	m.omu.Unlock()
	if len(open) > 0 {
		m.log.WithField("calls", len(open)).Warn("call: closed the call records the last run left open")
	}
	return nil
}

// restartedCall reports whether callID is of a call the last run left ringing, closed by
// Recover less than restartedGrace ago.
func (m *Manager) restartedCall(callID string) bool {
	m.omu.Lock()
	defer m.omu.Unlock()
	at, ok := m.restarted[callID]
	if ok && m.clock.Now().Sub(at) > restartedGrace {
		delete(m.restarted, callID)
		return false
	}
	return ok
}

// New checks opts and returns a Manager.
func New(opts Options) (*Manager, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	prefixes, err := allowedPrefixes(opts.AllowedSources)
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	m := &Manager{
		opts:      opts,
		log:       opts.Logger,
		clock:     opts.Clock,
		byKey:     make(map[string]*call),
		byToken:   make(map[[32]byte]*call),
		byCallID:  make(map[string][]*call),
		active:    make(map[string]int),
		out:       outcomes{byReason: make(map[string]int)},
		stored:    outcomes{byReason: make(map[string]int)},
		restarted: make(map[string]time.Time),
	}
	if m.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		m.log = l
	}
	if m.clock == nil {
		m.clock = realClock{}
	}
	r := opts.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	m.sources = newSources(prefixes, r, m.clock)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// check reports the first thing wrong with o; zero values are fine (setDefaults fills them).
func (o *Options) check() error {
	if o.Instances == nil || o.Store == nil || o.Push == nil {
		return errors.New("call: Options.Instances, Store and Push are required")
	}
	if o.NoResponseTimeout < 0 || o.ProgressTimeout < 0 || o.PushTimeout < 0 || o.MaxDialogAge < 0 || o.TimerC < 0 {
		return errors.New("call: negative timeout in options")
	}
	if o.MaxCalls < 0 || o.MaxMessageSize < 0 {
		return errors.New("call: negative MaxCalls or MaxMessageSize")
	}
	if strings.ContainsAny(o.RelayAddress, "\r\n") {
		return errors.New("call: RelayAddress contains a line break")
	}
	switch o.NoResponseAnswer {
	case 0, 408, 480:
	default:
		return fmt.Errorf("call: NoResponseAnswer must be 408 or 480, not %d", o.NoResponseAnswer)
	}
	if o.Filters != nil {
		return checkFilters(o.Filters)
	}
	return nil
}

// allowedPrefixes parses Options.AllowedSources: each a CIDR, or an address that stands for
// itself alone.
func allowedPrefixes(sources []string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, s := range sources {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(s))
			if aerr != nil {
				return nil, fmt.Errorf("call: allowed source %q is not a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		prefixes = append(prefixes, p.Masked())
	}
	return prefixes, nil
}

// setDefaults replaces the zero values of a checked o by the defaults.
func (o *Options) setDefaults() {
	if o.Filters == nil {
		o.Filters = DefaultFilters
	}
	if o.NoResponseAnswer == 0 {
		o.NoResponseAnswer = 480
	}
	setDefault(&o.NoResponseTimeout, DefaultNoResponseTimeout)
	setDefault(&o.ProgressTimeout, DefaultProgressTimeout)
	setDefault(&o.MaxCalls, DefaultMaxCalls)
	setDefault(&o.MaxMessageSize, DefaultMaxMessageSize)
	setDefault(&o.PushTimeout, DefaultPushTimeout)
	setDefault(&o.MaxDialogAge, DefaultMaxDialogAge)
	setDefault(&o.TimerC, DefaultTimerC)
}

// setDefault sets *v to def when it is zero.
func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// closeByeWait bounds how long Close waits for the answers to its BYEs.
const closeByeWait = 2 * time.Second

// Close ends every call in progress with 480 (outcome missed, "server shutting down"), ends
// every answered call's dialog with BYE both ways (waiting up to 2 s for the answers), stops
// the pushes in flight and waits for the Manager's goroutines. Requests arriving later are
// answered 503.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var live []*call
	for _, c := range m.byKey {
		live = append(live, c)
	}
	m.mu.Unlock()
	var byes []<-chan struct{}
	for _, c := range live {
		if !c.end(anyPhase, 480, "Temporarily Unavailable", store.OutcomeMissed, ReasonShutdown, false) {
			byes = append(byes, c.hangUp(true, true, ReasonShutdown))
		}
	}
	deadline := time.NewTimer(closeByeWait)
	defer deadline.Stop()
wait:
	for _, done := range byes {
		select {
		case <-done:
		case <-deadline.C:
			break wait
		}
	}
	// Cancel under mu: spawn checks the context and adds to wg under mu, so no goroutine is
	// added once Wait may have started.
	m.mu.Lock()
	m.cancel()
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// Outcomes returns the counts of ended calls: all, accepted, missed and rejected, and the
// rejected ones by reason (the /stats page's Incoming Call Outcomes, the summary and
// /metrics). They are counted from the stored call records, so they survive restarts and agree
// with /sipis/calls; the INVITEs refused before a record is made (unknown contact, source not
// allowed: no record, RFC 3261 §21.4.4) are added as counted since start. When the store
// cannot be read the last counts read are used.
func (m *Manager) Outcomes() (total, accepted, missed, rejected int, byReason map[string]int) {
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	counts, err := m.opts.Store.CallOutcomes(ctx)
	cancel()
	m.omu.Lock()
	defer m.omu.Unlock()
	if err != nil {
		m.log.WithField("err", err).Warn("call: count the call outcomes in the store")
	} else {
		m.stored = outcomes{byReason: make(map[string]int)}
		for _, c := range counts {
			m.stored.add(c.Outcome, c.Reason, c.Count)
		}
	}
	byReason = make(map[string]int, len(m.out.byReason)+len(m.stored.byReason))
	for k, v := range m.stored.byReason {
		byReason[k] += v
	}
	for k, v := range m.out.byReason {
		byReason[k] += v
	}
	return m.stored.total + m.out.total, m.stored.accepted + m.out.accepted, m.stored.missed + m.out.missed,
		m.stored.rejected + m.out.rejected, byReason
}

// ActiveCalls returns the number of calls in progress for selector (the Notes column).
func (m *Manager) ActiveCalls(selector string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active[selector]
}

// refused counts an INVITE refused without a call record.
func (m *Manager) refused(reason string) {
	m.omu.Lock()
	defer m.omu.Unlock()
	m.out.add(store.OutcomeRejected, reason, 1)
}

// HandleRequest implements sipua.Handler for requests to our Contact users.
func (m *Manager) HandleRequest(contactUser string, req *sipua.Request) {
	m.handle(contactUser, fromSIP(req))
}

// inbound is a received request as the handlers need it; tests build it without a socket.
type inbound struct {
	method, callID, from, source string
	body                         []byte
	header                       func(name string) string
	respond                      func(code int, reason string, hs ...sipua.Header) error
	sip                          *sipua.Request // nil in tests without sockets
}

func fromSIP(r *sipua.Request) *inbound {
	return &inbound{
		method: r.Method, callID: r.CallID, from: r.From, source: r.Source, body: r.Body,
		header: r.Header, respond: r.Respond, sip: r,
	}
}

func (m *Manager) handle(user string, req *inbound) {
	if m.opts.Recorder != nil {
		req = m.recorded(user, req) // the ladder on /debug
	}
	log := m.log.WithFields(logrus.Fields{"method": req.method, "src": req.source, "call_id": req.callID})
	reply := func(code int, reason string, hs ...sipua.Header) {
		if err := req.respond(code, reason, hs...); err != nil {
			log.WithField("err", err).Debug("call: respond")
		}
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if m.inDialog(req, reply) {
		return
	}
	switch req.method {
	case "ACK":
		return // ACK of our non-2xx final response (RFC 3261 §17.2.1): nothing to do
	case "CANCEL":
		m.handleCancel(req, reply)
		return
	}
	if closed {
		reply(503, "Service Unavailable")
		return
	}
	switch req.method {
	case "INVITE":
		m.handleInvite(user, req, log, reply)
	case "MESSAGE":
		m.handleMessage(user, req, log, reply)
	case "REGISTER":
		m.handleRegister(req, log, reply)
	case "OPTIONS":
		if _, ok := m.opts.Instances.ByContact(user); !ok {
			reply(404, "Not Found")
			return
		}
		reply(200, "OK", sipua.Header{Name: "Allow", Value: "INVITE, ACK, CANCEL, OPTIONS, MESSAGE"})
	default:
		// BYE, INFO, UPDATE, PRACK, NOTIFY: no dialog of ours exists outside a relayed call
		// (RFC 3261 §12.2.2).
		reply(481, "Call/Transaction Does Not Exist")
	}
}
