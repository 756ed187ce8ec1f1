// Package web is sipis's HTTP interface: the operator pages (/about,
// /stats, /debug, /log, /selectors, /settings), the machine-readable
// instance and summary documents (JSON and XML), /metrics, /healthz and the
// app-facing POST /sipis/register. docs/http.md is the contract: every
// route with its auth, parameters and fields (internal/app's
// TestRoutesDocumented fails when a mounted route is missing there).
//
// Routes:
//
//	GET  /                         redirects to /stats
//	GET  /about                    server info and the CHANGELOG
//	GET  /stats[?s=&page=&n=]      server, call outcomes, push tests, instances
//	GET  /stats/instances/json|xml every instance, streamed (?s= for one)
//	GET  /stats/summary/json|xml   counts by state, call and push outcomes
//	GET  /stats/trends/json        the per-minute trend series of the charts (?window=1h|24h)
//	GET  /selectors[?page=&n=]     selectors and their last activity
//	GET  /debug?s=, /settings?s=   admin: one instance in detail
//	GET  /log?s=                   admin: turn on the instance log, show it
//	GET  /login                    asks the browser for admin credentials
//	POST /stats/actions/testpush   admin: s=, csrf=
//	POST /stats/actions/turnoff    admin: s=, csrf=
//	POST /stats/actions/turnoffall admin: confirm=1, csrf=
//	POST /sipis/register           the app's sealed registration
//	POST /sipis/call/progress      a woken device: the call token's call is coming (Options.Devices)
//	POST /sipis/call/decline       a woken device: decline the call of the token
//	GET  /sipis/messages?s=        a device: its waiting messages (X-Sipis-Device, X-Sipis-Secret)
//	POST /sipis/messages/ack?s=    a device: delete fetched messages
//	GET  /sipis/calls?s=           admin: the instance's call records (Options.AdminGET)
//	GET  /probes, /probes/json     the OPTIONS probe targets and their states
//	POST /sipis/cluster/drain      admin: hand this node's instances to the others (Options.AdminPOST)
//	GET  /metrics, /healthz        Prometheus (when a Gatherer is given), liveness
//	GET  /debug/pprof/...          admin: the Go runtime's profiles
//
// Admin actions take HTTP Basic credentials plus the CSRF token of the
// page, or user= and password= form fields instead (see auth.go).
//
// The package owns presentation: routing, decoding requests, titles, formats and
// status codes. It must not reach into the instance manager, the store or the SIP
// stack: it depends on the rest of sipis only through small interfaces declared
// beside the pages that use them (StatsSource, SelectorSource, DebugSource,
// SettingsSource, InstanceAdmin, Registrar, AdminChecker; Backend is their union),
// which internal/app implements over the instance manager and the store. Sources
// return data; this package renders it.
package web

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/errs"
)

// Defaults for Options fields left zero.
const (
	DefaultAddr            = ":5000"
	DefaultMaxRegisterBody = 64 << 10
	DefaultLogTailBytes    = 256 << 10
	DefaultPageSize        = 100
	MaxPageSize            = 10000
	DefaultAuthFailures    = 5
	DefaultAuthLockout     = 2 * time.Second
	// authQueue is how many secret checks may wait for a free slot before
	// further ones get 503.
	authQueue = 64
	// deviceConcurrency bounds the device requests whose secret is being
	// checked at once (a cheap check, then a store read).
	deviceConcurrency = 32
)

// Options configure a Server. Backend is required; every other field has a
// default.
type Options struct {
	// Addr is the listen address; default ":5000". "127.0.0.1:0" picks a
	// free port (see Server.URL).
	Addr string
	// Backend is the rest of sipis.
	Backend Backend
	// Logger receives request and error logs; nil discards them.
	Logger logrus.FieldLogger
	// Changelog is the project's CHANGELOG (Markdown), shown on /about.
	Changelog []byte
	// Devices, when set, serves the routes woken devices call (call progress and
	// decline, waiting messages); web routes them (devices.go), the handlers check the
	// devices' tokens and secrets.
	Devices *DeviceHandlers
	// HookRoutes, when set, adds the PBX-hook API (internal/hook), which checks its callers
	// itself (PBX networks and secret; the apps' HTTP Basic credentials). Unlike the
	// device routes it keeps its own routing under its configured prefix: it is a
	// vialer-middleware-compatible API whose paths, methods and answers are the product
	// internal/hook implements and tests, not presentation of sipis's own.
	HookRoutes func(r *mux.Router)
	// StatsSections, when set, gives further titled sections for /stats (the PBX-hook
	// mode's counters and the apps' call-setup metrics).
	StatsSections func(ctx context.Context) []DebugSection
	// AdminGET are further read-only pages for the administrator (path -> handler), served
	// behind the same authentication as /debug.
	AdminGET map[string]http.Handler
	// AdminPOST are further admin actions (path -> handler), served for POST to an
	// administrator's Basic credentials (scripts and the CLI; no CSRF token, so browsers'
	// cross-origin POSTs are refused by the Origin check).
	AdminPOST map[string]http.Handler
	// Cluster, when set, gives the cluster block of /stats/summary (a node of a cluster).
	Cluster func(ctx context.Context) *ClusterInfo
	// Probes gives the OPTIONS probes for /probes, /probes/json and /stats; nil means
	// probing is off.
	Probes ProbeSource
	// Trends gives the per-minute series drawn on /stats and served on /stats/trends/json;
	// nil leaves the charts out.
	Trends TrendSource
	// Gatherer is served on /metrics; nil leaves /metrics out (404).
	Gatherer prometheus.Gatherer
	// MaxRegisterBody caps the body of POST /sipis/register; larger
	// bodies get 413. Default 64 KiB.
	MaxRegisterBody int64
	// LogTailBytes is how much of the end of an instance log file /log
	// shows. Default 256 KiB.
	LogTailBytes int64
	// PageSize is the default number of rows per page of /stats and
	// /selectors (?n= overrides it, up to MaxPageSize). Default 100.
	PageSize int
	// AuthFailures is how many wrong admin passwords in a row one client
	// address may send before it must wait; default 5.
	AuthFailures int
	// AuthLockout is the first wait after AuthFailures failures; each
	// further failure doubles it, up to 15 minutes. Default 2 s.
	AuthLockout time.Duration
	// AuthConcurrency is how many password checks (bcrypt) run at once;
	// further checks wait in a short queue or get 503. Default half the
	// CPUs (at least 1), so a guess storm leaves CPU for the other pages.
	AuthConcurrency int
	// TrustedOrigins are extra origins (e.g. "https://sipis.example.com")
	// whose browser POSTs are accepted when a TLS proxy in front of sipis
	// rewrites the Host header. The request's own Host is always accepted,
	// and X-Forwarded-Host when it comes from a trusted proxy.
	TrustedOrigins []string
	// TrustedProxies are the addresses of the proxies in front of sipis
	// (stunnel, nginx). From them only, a connection may start with a PROXY
	// protocol v1 header giving the client's address (stunnel's
	// "protocol = proxy"), and X-Forwarded-For and X-Forwarded-Host are
	// believed: failed logins are counted by the client's address instead
	// of the proxy's. List only proxies that write these themselves.
	TrustedProxies []netip.Prefix
	// Now returns the current time; default time.Now. Tests inject a clock.
	Now func() time.Time
	// Middleware, when set, wraps every request outside everything else (the access log of
	// <Log><Http>), so it sees the final status, a recovered panic's 500 included.
	Middleware func(http.Handler) http.Handler
}

// Server is the sipis web server.
type Server struct {
	opts Options
	log  logrus.FieldLogger
	// The parts of Options.Backend, each used by its own pages.
	stats     StatsSource
	selectors SelectorSource
	debug     DebugSource
	settings  SettingsSource
	admin     InstanceAdmin
	registrar Registrar
	admins    AdminChecker
	now       func() time.Time
	pages     map[string]*template.Template
	changelog template.HTML
	csrfKey   []byte
	// adminThrottle counts wrong admin passwords; deviceThrottle wrong
	// device secrets on the device routes.
	adminThrottle  *throttle
	deviceThrottle *throttle
	router         *mux.Router // every route; handler wraps it
	handler        http.Handler

	mu  sync.Mutex
	ln  net.Listener
	srv *http.Server
	url string
}

// New returns a Server for opts. It parses the templates once; it panics
// only if the embedded templates are broken (a build defect) or
// opts.Backend is nil.
func New(opts Options) *Server {
	if opts.Backend == nil {
		panic("web: Options.Backend is nil")
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.MaxRegisterBody <= 0 {
		opts.MaxRegisterBody = DefaultMaxRegisterBody
	}
	if opts.LogTailBytes <= 0 {
		opts.LogTailBytes = DefaultLogTailBytes
	}
	if opts.PageSize <= 0 || opts.PageSize > MaxPageSize {
		opts.PageSize = DefaultPageSize
	}
	if opts.AuthFailures <= 0 {
		opts.AuthFailures = DefaultAuthFailures
	}
	if opts.AuthLockout <= 0 {
		opts.AuthLockout = DefaultAuthLockout
	}
	if opts.AuthConcurrency <= 0 {
		opts.AuthConcurrency = max(runtime.GOMAXPROCS(0)/2, 1)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.Out = discard{}
		log = l
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	s := &Server{
		opts:      opts,
		log:       log,
		stats:     opts.Backend,
		selectors: opts.Backend,
		debug:     opts.Backend,
		settings:  opts.Backend,
		admin:     opts.Backend,
		registrar: opts.Backend,
		admins:    opts.Backend,
		now:       opts.Now,
		changelog: renderMarkdown(opts.Changelog),
		csrfKey:   key,
		adminThrottle: newThrottle(opts.AuthFailures, opts.AuthLockout, opts.AuthConcurrency,
			authQueue, opts.Now),
		deviceThrottle: newThrottle(opts.AuthFailures, opts.AuthLockout, deviceConcurrency,
			authQueue, opts.Now),
	}
	pages, err := parseTemplates()
	if err != nil {
		panic("web: embedded templates: " + err.Error())
	}
	s.pages = pages
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, &httpError{code: http.StatusNotFound, msg: "no such page"})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, &httpError{code: http.StatusMethodNotAllowed, msg: "method " + r.Method + " not allowed here"})
	})
	s.registerPageRoutes(r)
	s.registerStatsRoutes(r)
	s.registerAdminRoutes(r)
	s.registerAppRoutes(r)
	s.registerDeviceRoutes(r)
	s.registerOpsRoutes(r)
	s.registerExtraRoutes(r)
	s.router = r
	s.handler = s.recoverer(s.logRequests(s.throttleDevices(r)))
	if opts.Middleware != nil {
		s.handler = opts.Middleware(s.handler)
	}
	return s
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Handler returns the server's routes, for tests and for mounting.
func (s *Server) Handler() http.Handler { return s.handler }

// Walk calls fn for every route the server mounts (gorilla/mux's Router.Walk), the
// PBX-hook, device and admin routes given in Options included. The test that keeps
// docs/http.md complete walks the router this way.
func (s *Server) Walk(fn mux.WalkFunc) error { return s.router.Walk(fn) }

// Open binds the listen address and serves in the background.
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("web: server already open")
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("web: listen on %s: %w", s.opts.Addr, err)
	}
	s.url = "http://" + reachableAddr(ln.Addr())
	if len(s.opts.TrustedProxies) > 0 {
		ln = proxyListener{Listener: ln, trusted: s.trusted}
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough to stream every instance to a slow client.
		WriteTimeout:   5 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       stdlog.New(logWriter{s.log}, "", 0),
	}
	srv := s.srv
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.WithError(err).Error("web server stopped")
		}
	}()
	s.log.WithField("addr", ln.Addr().String()).Info("web server listening")
	return nil
}

// URL returns the base URL of the open server, e.g. "http://127.0.0.1:5000";
// "" before Open.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops the server, letting requests in flight finish for up to 5
// seconds. Closing a server that is not open does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("web: shutdown: %w", err)
	}
	return nil
}

type logWriter struct{ log logrus.FieldLogger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (s *Server) registerExtraRoutes(r *mux.Router) {
	if s.opts.HookRoutes != nil {
		s.opts.HookRoutes(r)
	}
	for path, h := range s.opts.AdminGET {
		h := h
		r.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if _, err := s.requireAdmin(req); err != nil {
				s.error(w, req, err)
				return
			}
			h.ServeHTTP(w, req)
		})).Methods(http.MethodGet, http.MethodHead)
	}
	for path, h := range s.opts.AdminPOST {
		h := h
		r.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !s.sameOrigin(req) {
				s.error(w, req, errCrossOrigin)
				return
			}
			if _, err := s.requireAdmin(req); err != nil {
				s.error(w, req, err)
				return
			}
			h.ServeHTTP(w, req)
		})).Methods(http.MethodPost)
	}
}

func (s *Server) registerOpsRoutes(r *mux.Router) {
	r.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet, http.MethodHead)
	r.PathPrefix("/debug/pprof/").Handler(s.adminOnly(http.HandlerFunc(pprofHandler)))
	r.HandleFunc("/probes", s.handleProbes).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/probes/json", s.handleProbesJSON).Methods(http.MethodGet, http.MethodHead)
	if s.opts.Gatherer != nil {
		r.Handle("/metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      s.log,
			ErrorHandling: promhttp.ContinueOnError,
		})).Methods(http.MethodGet)
	}
}

// adminOnly serves h to the administrator only (HTTP Basic credentials).
func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.requireAdmin(r); err != nil {
			s.error(w, r, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// pprofHandler serves the Go runtime's profiles under /debug/pprof/, so an
// operator can profile a live node (go tool pprof -http=: with the admin
// credentials in the URL). It is mounted behind adminOnly: a profile shows
// the program's internals and a CPU profile costs CPU.
func pprofHandler(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, "/debug/pprof/") {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r) // the index, and each named profile (heap, goroutine, …)
	}
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

// httpError is an error with the status code and a message safe to show.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string   { return e.msg }
func (e *httpError) StatusCode() int { return e.code }

func badRequest(format string, args ...any) error {
	return &httpError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// kindStatus is the HTTP status of each kind of refusal in internal/errs.
var kindStatus = map[string]int{
	errs.Invalid:   http.StatusBadRequest,
	errs.Conflict:  http.StatusConflict,
	errs.Forbidden: http.StatusForbidden,
	errs.NotFound:  http.StatusNotFound,
}

// errorStatus maps an error to the status code and the message shown.
// Messages of unknown errors are never shown: they may hold internals.
func errorStatus(err error) (int, string) {
	var sc StatusCoder
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, err.Error()
	case kindStatus[errs.ErrorCode(err)] != 0:
		// A refusal of a kind (internal/errs): its message is safe to show.
		return kindStatus[errs.ErrorCode(err)], oneLine(errs.ErrorMessage(err))
	case errors.As(err, &sc) && sc.StatusCode() >= 400 && sc.StatusCode() < 600:
		code := sc.StatusCode()
		if code >= 500 {
			return code, http.StatusText(code)
		}
		return code, oneLine(err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timed out"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// error writes err as a response: an HTML error page for the pages, plain
// text for the machine-readable and app endpoints. Server errors are
// logged; client errors only at debug level.
func (s *Server) error(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	code, msg := errorStatus(err)
	entry := s.log.WithFields(logrus.Fields{"method": r.Method, "path": r.URL.Path, "status": code})
	if code >= 500 {
		entry.WithError(err).Error("request failed")
	} else {
		entry.WithError(err).Debug("request refused")
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="sipis", charset="UTF-8"`)
	}
	if code == http.StatusTooManyRequests {
		var le *lockedError
		if errors.As(err, &le) {
			w.Header().Set("Retry-After", fmt.Sprint(int(le.wait.Seconds()+0.999)))
		}
	}
	if wantsText(r) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(msg + "\n"))
		return
	}
	s.render(w, r, code, "error.html", &errorPage{
		pageBase: s.base(r, http.StatusText(code)),
		Code:     code,
		Message:  msg,
	})
}

func wantsText(r *http.Request) bool {
	p := r.URL.Path
	return strings.HasPrefix(p, "/sipis/") || strings.HasPrefix(p, "/stats/instances/") ||
		strings.HasPrefix(p, "/stats/summary/") || p == "/metrics" || p == "/healthz"
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// render executes page into a buffer and writes it with status, so a
// template error is a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	t := s.pages[page]
	var buf bytes.Buffer
	if t == nil {
		s.log.WithField("page", page).Error("no such template")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		s.log.WithError(err).WithField("page", page).Error("template failed")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	nonce := nonceFrom(r)
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'nonce-"+nonce+
		"'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

type ctxKey int

const nonceKey ctxKey = 0

func nonceFrom(r *http.Request) string {
	if n, ok := r.Context().Value(nonceKey).(string); ok {
		return n
	}
	return "none"
}

// StatusWriter wraps a ResponseWriter and records the status and size of the response, for
// the request logs and the device throttle (and internal/app's access log). Status stays 0
// until the handler writes. It unwraps for http.ResponseController (flushing streamed
// documents).
type StatusWriter struct {
	http.ResponseWriter
	Status int   // the status written, 0 before the handler wrote anything
	Bytes  int64 // body bytes written
}

// WriteHeader records the first status and passes it on.
func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and the size, and passes the bytes on.
func (w *StatusWriter) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.Bytes += int64(n)
	return n, err
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs each request at debug level (never the query's or
// headers' secrets: only method, path, status, size and duration) and gives
// each request its CSP nonce.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		nb := make([]byte, 16)
		_, _ = rand.Read(nb)
		r = r.WithContext(context.WithValue(r.Context(), nonceKey, base64.RawURLEncoding.EncodeToString(nb))) // URL-safe: html/template would escape a "+" in the attribute and break the match
		sw := &StatusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		s.log.WithFields(logrus.Fields{
			"method": r.Method, "path": r.URL.Path, "status": sw.Status,
			"bytes": sw.Bytes, "duration": time.Since(start),
		}).Debug("http request")
	})
}

// recoverer turns a handler panic into a 500 (http.ErrAbortHandler, used
// to abort a broken stream, passes through).
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.WithField("panic", fmt.Sprint(v)).WithField("path", r.URL.Path).Error("handler panicked")
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// reachableAddr is addr as a local client reaches it: a listener on every address
// (0.0.0.0 or ::) is reached at 127.0.0.1.
func reachableAddr(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port))
	}
	return addr.String()
}
