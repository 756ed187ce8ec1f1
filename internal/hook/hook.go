// Package hook is sipis's PBX-hook mode, the second way of getting a call to a sleeping
// softphone beside the relay of internal/call. The app registers itself at the operator's PBX
// while it is awake and tells sipis its push token; when a call comes in, the PBX asks sipis
// over HTTP (incoming-call/), sipis pushes every device of the account and holds the PBX's
// request until a woken app answers call-response/ or the wait ends, then answers the PBX
// "status=ACK" (dial the account now: the app has registered) or "status=NAK".
//
// The HTTP interface follows VoIPGRID's vialer-middleware, so existing dialplans and apps
// carry over, with these differences:
//   - several devices per account (vialer keeps one);
//   - every push carries a fresh random one-time unique_key (vialer reuses the PBX's call_id,
//     which a caller may know), and the first answer uses up the keys of the whole call;
//   - device registration is authenticated by HTTP Basic credentials that sipis checks with a
//     verifier URL the operator configures (see Verifier), instead of VoIPGRID's own API;
//   - incoming-call/ is only for sources in the configured PBX networks, optionally with a
//     shared secret.
//
// Holding a request costs no goroutine of its own beyond the one net/http already runs for
// it: the handler sleeps in one select on the device's answer, the end of the wait and a
// resend timer (runtime timers, not goroutines), and a fixed pool of push workers sends every
// push, so 1,000 waiting calls cost 1,000 parked handlers and nothing per second. An answer is
// handed over through a buffered channel found in a map, so the PBX's response is written
// within microseconds of the app's call-response/.
//
// It owns the API's routes under its prefix, its decoding and answers, the waits, its devices
// and call records in the store (the unique_key only as its SHA-256) and its outcome counts.
// It must not touch SIP, the instances of the relay or their registrations; it reaches the
// store and the push dispatcher only through the interfaces in Options.
package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// Defaults of Options fields left zero. Wait and ResendInterval are vialer-middleware's
// APP_PUSH_ROUNDTRIP_WAIT and APP_PUSH_RESEND_INTERVAL.
const (
	DefaultPrefix         = "/api/"
	DefaultWait           = 4000 * time.Millisecond
	DefaultResendInterval = 1000 * time.Millisecond
	DefaultPushWorkers    = 32
	DefaultMaxWaits       = 10000
	DefaultRetention      = 30 * 24 * time.Hour
)

// Reasons of rejected and missed calls, as counted and stored.
const (
	ReasonNoDevice       = "no device"
	ReasonPushFailed     = "push failed"
	ReasonNotAvailable   = "device not available"
	ReasonNoResponse     = "no response from device"
	ReasonPBXGone        = "cancelled by PBX"
	ReasonTooManyCalls   = "too many calls"
	ReasonShuttingDown   = "server shutting down"
	ReasonSourceNotAllow = "source not allowed"
)

// Store is what the hook keeps in the database (implemented by *store.DB).
type Store interface {
	PutHookDevice(ctx context.Context, d *store.HookDevice) (bool, error)
	DeleteHookDevice(ctx context.Context, sipUserID, app, token string) error
	CheckInHookDevices(ctx context.Context, sipUserID, token string) (int64, error)
	MarkHookTokenInvalid(ctx context.Context, id int64) error
	HookDevices(ctx context.Context, sipUserID string) ([]store.HookDevice, error)
	PutHookCall(ctx context.Context, c *store.HookCall) error
	SetHookHangupReason(ctx context.Context, sipUserID, keyHash, reason string) error
	AddHookMetric(ctx context.Context, m *store.HookMetric) error
	PruneHook(ctx context.Context, before time.Time) (int64, error)
}

// Pusher sends one notification (implemented by *push.Dispatcher).
type Pusher interface {
	Send(ctx context.Context, n push.Notification) (push.Result, error)
}

// Options configure a Hook. Store, Push and Verifier are required.
type Options struct {
	// Store keeps devices, call records and metrics.
	Store Store
	// Push sends the call pushes (the shared dispatcher, so the same providers as the relay).
	Push Pusher
	// Verifier checks the apps' HTTP Basic credentials for a sip_user_id.
	Verifier Verifier
	// Prefix is where the API is mounted; default "/api/". It starts and ends with "/".
	Prefix string
	// Wait is how long incoming-call/ waits for a device; default 4 s.
	Wait time.Duration
	// ResendInterval is the time between pushes of one call; default 1 s. As in vialer, at
	// most Wait/ResendInterval-1 pushes (at least one) go to each device, so no push is sent
	// too close to the end of the wait to be answered.
	ResendInterval time.Duration
	// PBXNetworks are the sources allowed to call incoming-call/. Empty allows none.
	PBXNetworks []netip.Prefix
	// Secret, when set, must come with incoming-call/ as the header X-Sipis-Hook-Secret or
	// the form field "secret".
	Secret string
	// PushWorkers is the number of goroutines sending pushes; default 32.
	PushWorkers int
	// MaxWaits bounds the calls waiting at once; more get NAK at once. Default 10,000.
	MaxWaits int
	// Retention is how long call records and metrics are kept; default 30 days.
	Retention time.Duration
	// Logger receives the hook's log; nil discards it.
	Logger logrus.FieldLogger
}

// Outcomes counts the incoming-call/ requests answered since start.
type Outcomes struct {
	// Total is every answered request; Accepted got ACK, Missed NAK because the wait ran out
	// (or the PBX gave up), Rejected NAK for a reason.
	Total, Accepted, Missed, Rejected int
	// ByReason counts the rejected ones by reason.
	ByReason map[string]int
}

// Hook serves the PBX-hook API. Create it with New, mount it with Routes, stop it with Close.
type Hook struct {
	opts Options
	log  logrus.FieldLogger
	jobs chan pushJob

	mu    sync.Mutex
	keys  map[string]*call // one-time unique_key -> its waiting call
	waits int

	omu sync.Mutex
	out Outcomes

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New checks opts and starts the push workers.
func New(opts Options) (*Hook, error) {
	if opts.Store == nil || opts.Push == nil || opts.Verifier == nil {
		return nil, errors.New("hook: Store, Push and Verifier are required")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(opts.Prefix, "/") || !strings.HasSuffix(opts.Prefix, "/") {
		return nil, fmt.Errorf("hook: prefix %q must start and end with /", opts.Prefix)
	}
	if opts.Wait <= 0 {
		opts.Wait = DefaultWait
	}
	if opts.ResendInterval <= 0 {
		opts.ResendInterval = DefaultResendInterval
	}
	if opts.PushWorkers <= 0 {
		opts.PushWorkers = DefaultPushWorkers
	}
	if opts.MaxWaits <= 0 {
		opts.MaxWaits = DefaultMaxWaits
	}
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	h := &Hook{
		opts: opts, log: log, keys: make(map[string]*call),
		jobs:    make(chan pushJob, 4*opts.PushWorkers+opts.MaxWaits/4),
		closing: make(chan struct{}),
		out:     Outcomes{ByReason: map[string]int{}},
	}
	for range opts.PushWorkers {
		h.wg.Add(1)
		go h.pushWorker()
	}
	h.wg.Add(1)
	go h.pruneLoop()
	return h, nil
}

// Close makes every waiting call (and every later one) end at once with NAK, and stops the
// push workers. Call it before closing the web server, whose shutdown then waits for the
// handlers' quick answers instead of the waits. It is safe to call more than once.
func (h *Hook) Close() {
	h.closeOnce.Do(func() {
		close(h.closing)
		h.wg.Wait()
	})
}

// Routes mounts the API under the prefix. Each path is served with and without its final
// slash, as vialer-middleware's URL patterns match both.
//
// Unlike sipis's own routes (internal/web), this package keeps its routing and decoding:
// the paths, methods, form fields and answers are vialer-middleware's API, which this
// package reproduces and tests as the product; web only mounts it (Options.HookRoutes),
// behind the same request log and access log as every other route.
func (h *Hook) Routes(r *mux.Router) {
	p := h.opts.Prefix
	handle := func(name string, fn http.HandlerFunc, methods ...string) {
		r.HandleFunc(p+name+"/", fn).Methods(methods...)
		r.HandleFunc(p+name, fn).Methods(methods...)
	}
	handle("{platform:apns|gcm|android|fcm|webhook}-device", h.handleDevice, http.MethodPost, http.MethodDelete)
	handle("incoming-call", h.handleIncomingCall, http.MethodPost)
	handle("call-response", h.handleCallResponse, http.MethodPost)
	handle("hangup-reason", h.handleHangupReason, http.MethodPost)
	handle("check-in", h.handleCheckIn, http.MethodPost)
	handle("log-metrics", h.handleLogMetrics, http.MethodPost)
}

// Outcomes returns the counts of answered incoming-call/ requests since start.
func (h *Hook) Outcomes() Outcomes {
	h.omu.Lock()
	defer h.omu.Unlock()
	o := h.out
	o.ByReason = make(map[string]int, len(h.out.ByReason))
	for k, v := range h.out.ByReason {
		o.ByReason[k] = v
	}
	return o
}

// Waiting returns the number of incoming-call/ requests held right now.
func (h *Hook) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waits
}

func (h *Hook) count(outcome, reason string) {
	h.omu.Lock()
	defer h.omu.Unlock()
	h.out.Total++
	switch outcome {
	case store.OutcomeAccepted:
		h.out.Accepted++
	case store.OutcomeMissed:
		h.out.Missed++
	case store.OutcomeRejected:
		h.out.Rejected++
		h.out.ByReason[reason]++
	}
}

// pruneLoop deletes old call records and metrics once an hour.
func (h *Hook) pruneLoop() {
	defer h.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if n, err := h.opts.Store.PruneHook(ctx, time.Now().Add(-h.opts.Retention)); err != nil {
			h.log.WithField("err", err).Warn("pruning PBX-hook records failed")
		} else if n > 0 {
			h.log.WithField("rows", n).Info("pruned old PBX-hook records")
		}
		cancel()
		select {
		case <-h.closing:
			return
		case <-t.C:
		}
	}
}
