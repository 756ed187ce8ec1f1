// Package app wires sipis together: settings -> logging -> lock -> keys -> store -> SIP user
// agent -> instance manager -> push -> calls -> probes -> PBX hook -> web server. main calls New,
// Start and Stop; whole-server tests do the same with settings parsed from an XML string.
//
// It owns the order of start and stop, the adapters that give each package the small
// interfaces it declares (instance.Registrar over sipua, call.Instances over the instance
// manager, web's sources over the manager and the store), the Prometheus registry, the log
// outputs (server, instance, access and e-mail logs), the key files and the lock file.
//
// It is the only package that imports every other, and nothing but cmd/sipis imports it. It
// must not implement SIP, storage, push protocols or page rendering itself: those live in the
// packages it wires, and an adapter here only translates between their types.
package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/cluster"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/hook"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/version"
	"github.com/sipis/sipis/internal/web"
	"github.com/sipis/sipis/pkg/registration"
)

// App is one running sipis server.
type App struct {
	settings *config.Settings
	log      *logrus.Logger
	logFile  *os.File
	started  time.Time

	lock    *os.File
	public  *registration.Key
	private *registration.Key

	db    *store.DB
	ua    *sipua.UA
	mgr   *instance.Manager
	cl    *cluster.Cluster // several nodes on one database (cluster.go); nil when off
	calls *call.Manager
	hook  *hook.Hook // PBX-hook mode (hook.go); nil when off
	devUA *sipua.UA  // the device-facing SIP listener (calls.go)
	push  *pushes
	web   *web.Server
	reg   *prometheus.Registry
	pics  *pictures // the trend charts and SIP ladders of the pages (pictures.go)

	metrics    metrics
	msgCounts  perSecond[map[string]int] // waiting messages per selector
	hookCounts perSecond[map[string]int] // PBX-hook devices per sip_user_id
	prober     *probe.Prober
	down       perSecond[map[string]bool] // probe targets that are down

	bg       sync.WaitGroup // background loops of the app itself
	bgCtx    context.Context
	bgCancel context.CancelFunc

	instLogsMu sync.Mutex
	instLogs   map[string]*logrus.Logger

	stopOnce sync.Once

	// wiretap is the proxy-facing UA's sipua.Config.Wiretap; benchmarks set it to time
	// sipis's own part of a call at the socket.
	wiretap func(out bool, transport string, b []byte)
}

// Option changes how New builds an App (tests use them).
type Option func(*App)

// WithLogger sends the server's log to l instead of what the settings say.
func WithLogger(l *logrus.Logger) Option { return func(a *App) { a.log = l } }

// New prepares an App from settings; nothing is opened or bound until Start.
func New(s *config.Settings, opts ...Option) (*App, error) {
	if s == nil {
		return nil, errors.New("app: no settings")
	}
	a := &App{settings: s, instLogs: make(map[string]*logrus.Logger)}
	for _, o := range opts {
		o(a)
	}
	if a.log == nil {
		l, f, err := newLogger(s.Log)
		if err != nil {
			return nil, err
		}
		a.log, a.logFile = l, f
	}
	return a, nil
}

// Logger returns the server's logger.
func (a *App) Logger() *logrus.Logger { return a.log }

// Manager returns the instance manager (after Start).
func (a *App) Manager() *instance.Manager { return a.mgr }

// Store returns the database (after Start).
func (a *App) Store() *store.DB { return a.db }

// PublicKey returns the key apps seal registrations to (after Start).
func (a *App) PublicKey() *registration.Key { return a.public }

// HTTPURL returns the web server's base URL, e.g. http://127.0.0.1:5000 (after Start).
func (a *App) HTTPURL() string { return a.web.URL() }

// SIPAddr returns the bound address of the SIP listener of a transport (after Start).
func (a *App) SIPAddr(transport string) string { return a.ua.Addr(transport) }

// Start opens everything in order; on an error it closes what it opened.
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.Stop()
		}
	}()
	s := a.settings
	a.started = time.Now()
	a.bgCtx, a.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	sipua.SetLibraryLogger(a.log.WithField("part", "sipgo"))
	if err := a.startLogMail(a.bgCtx); err != nil {
		return err
	}
	if err := a.takeLock(s.Lock.FileName); err != nil {
		return err
	}
	if err := a.loadKeys(); err != nil {
		return err
	}
	dataKey, err := a.dataKey()
	if err != nil {
		return err
	}
	if a.db, err = store.Open(ctx, store.Options{
		OpenString: s.Database.OpenString, DataKey: dataKey, Node: s.Server.Name, Logger: a.log.WithField("part", "store"),
	}); err != nil {
		// Describe, not the OpenString: a PostgreSQL one may hold a password.
		return fmt.Errorf("open database %s: %w", store.Describe(s.Database.OpenString), err)
	}

	clientTLS, clientCerts, err := a.clientTLS()
	if err != nil {
		return err
	}
	var listeners []sipua.Listener
	for _, l := range s.Sip.Listeners {
		listeners = append(listeners, sipua.Listener{Transport: string(l.Transport), Address: joinHostPort(l.Address, l.Port)})
	}
	if a.ua, err = sipua.New(sipua.Config{
		Listeners:          listeners,
		ClientTLS:          clientTLS,
		ClientCertificates: clientCerts,
		PublicHost:         s.Server.PublicAddress,
		UserAgent:          userAgent(s),
		TransactionTimeout: s.Sip.Register.TransactionTimeout,
		KeepAlive:          keepAlive(s),
		// Proxies keep their connections to us quiet for long stretches; the short idle
		// limit is for the device listener, where unproven connections are the risk.
		IdleTimeout: 10 * time.Minute,
		Logger:      a.log.WithField("part", "sip"),
		Wiretap:     a.wiretap,
	}); err != nil {
		return fmt.Errorf("sip: %w", err)
	}
	if err := a.ua.Start(ctx); err != nil {
		return fmt.Errorf("sip listeners: %w", err)
	}

	// The metrics exist before anything that reports to them starts.
	b := &backend{app: a}
	a.reg = a.newMetrics(b)
	r := s.Sip.Register
	a.pics = a.newPictures()
	// Push first: the instance manager sends the expiry reminders through it.
	if err := a.startPush(); err != nil {
		return err
	}
	mgrStore, mgrRegistrar, err := a.startCluster(ctx, a.db, registrar{a.ua, a.pics})
	if err != nil {
		return err
	}
	if a.mgr, err = instance.New(instance.Options{
		Store: mgrStore, Registrar: mgrRegistrar, Logger: a.log.WithField("part", "instances"), Node: s.Server.Name,
		PublicKey: a.public, PrivateKey: a.private,
		DefaultExpires: int(r.DefaultExpires / time.Second), MinExpires: int(r.MinExpires / time.Second),
		MaxExpires: int(r.MaxExpires / time.Second), RefreshFraction: r.RefreshFraction, Jitter: jitter(r.Jitter),
		BackoffMin: r.BackoffMin, BackoffMax: r.BackoffMax, UnauthorizedRetry: r.UnauthorizedRetry,
		Workers: r.Workers, MaxInFlightPerProxy: r.MaxInFlightPerProxy, ResumeWindow: r.ResumeWindow,
		TransactionTimeout: r.TransactionTimeout + 5*time.Second,
		MaxAge:             s.Instance.MaxAge, NotRegisteredMaxAge: s.Instance.NotRegisteredMaxAge,
		InstanceLogger: a.instanceLogger,
		OnRegister:     a.observeRegister,
		FollowNAT:      s.Server.PublicAddress == "",
		Reminders:      a.reminders(),
	}); err != nil {
		return err
	}
	if err := a.mgr.Start(ctx); err != nil {
		return err
	}
	if a.cl != nil {
		a.cl.Run(a.mgr)
	}

	if err := a.startCalls(); err != nil {
		return err
	}
	if err := a.startProbes(a.bgCtx); err != nil {
		return err
	}
	if err := a.startHook(); err != nil {
		return err
	}
	a.web = web.New(web.Options{
		Addr:     joinHostPort(s.HTTPServer.Address, s.HTTPServer.Port),
		Backend:  b,
		Gatherer: a.reg,
		Probes:   a.probeSource(),
		Trends:   trendSource{a.pics},
		Devices: &web.DeviceHandlers{Progress: a.calls.ProgressHandler(), Decline: a.calls.DeclineHandler(),
			Messages: a.calls.MessagesHandler(), Ack: a.calls.AckHandler()},
		HookRoutes:      a.hookRoutes(),
		StatsSections:   a.statsSections,
		Cluster:         a.clusterInfo,
		AdminGET:        map[string]http.Handler{"/sipis/calls": a.calls.CallsHandler()},
		AdminPOST:       map[string]http.Handler{"/sipis/cluster/drain": http.HandlerFunc(a.handleDrain)},
		Logger:          a.log.WithField("part", "web"),
		Changelog:       changelog,
		MaxRegisterBody: int64(s.HTTPServer.MaxRegistrationBytes),
		TrustedProxies:  s.HTTPServer.TrustedProxies,
		Middleware:      forwardedMark(newAccessLog(s.Log.HTTP, a.log)),
	})
	if err := a.web.Open(); err != nil {
		return fmt.Errorf("http server: %w", err)
	}
	if a.cl != nil {
		if err := a.cl.SetHTTPURL(ctx, a.web.URL()); err != nil {
			return err
		}
	}
	a.pics.start(a.bgCtx)
	a.warnUnused()
	a.log.WithFields(logrus.Fields{
		"name": s.Server.Name, "version": version.Version, "http": a.web.URL(), "sip": listeners,
	}).Info("sipis started")
	return nil
}

// Stop stops everything in the reverse order of Start. Registrations stay in place at the
// registrars: the next Start resumes them.
func (a *App) Stop() {
	a.stopOnce.Do(func() {
		if a.hook != nil {
			a.hook.Close() // waiting PBX requests get NAK now, so the web server's shutdown is quick
		}
		if a.web != nil {
			a.web.Close()
		}
		if a.bgCancel != nil {
			a.bgCancel()
		}
		if a.calls != nil {
			a.calls.Close() // ends calls in progress with 480 while the UA can still say so
		}
		if a.devUA != nil {
			a.devUA.Close()
		}
		a.bg.Wait()
		if a.prober != nil {
			a.prober.Stop()
		}
		if a.cl != nil {
			a.cl.Stop()
		}
		if a.mgr != nil {
			a.mgr.Stop()
		}
		if a.push != nil {
			a.push.close()
		}
		if a.ua != nil {
			a.ua.Close()
		}
		if a.db != nil {
			if err := a.db.Close(); err != nil {
				a.log.WithField("err", err).Error("closing the database")
			}
		}
		a.instLogsMu.Lock()
		for _, l := range a.instLogs {
			if c, ok := l.Out.(io.Closer); ok {
				c.Close()
			}
		}
		a.instLogsMu.Unlock()
		if a.lock != nil {
			os.Remove(a.lock.Name())
			a.lock.Close()
		}
		if a.logFile != nil {
			a.logFile.Close()
		}
	})
}

func joinHostPort(host string, port int) string {
	if host == "" {
		host = "0.0.0.0"
	}
	if len(host) > 0 && host[0] != '[' && containsColon(host) {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

func containsColon(s string) bool {
	for i := range len(s) {
		if s[i] == ':' {
			return true
		}
	}
	return false
}

func userAgent(s *config.Settings) string {
	if s.Sip.UserAgent != "" {
		return s.Sip.UserAgent
	}
	if s.Instance.UserAgent != "" {
		return s.Instance.UserAgent
	}
	return "sipis/" + version.Number()
}

// takeLock makes sure only one server runs on this database: an exclusive flock on the lock
// file, which the kernel releases when the process dies, so a crash never leaves it stuck.
func (a *App) takeLock(path string) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("lock file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("lock file %s is held: another sipis is running on this database", path)
	}
	f.Truncate(0)
	fmt.Fprintf(f, "%d\n", os.Getpid())
	a.lock = f
	return nil
}

// loadKeys reads the server's key pair, creating it on a first start.
func (a *App) loadKeys() error {
	k := a.settings.Keys
	if _, err := os.Stat(k.PrivateKeyFile); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(k.PublicKeyFile); err == nil {
			return fmt.Errorf("keys: %s exists but %s does not; restore it or remove both", k.PublicKeyFile, k.PrivateKeyFile)
		}
		pub, err := registration.WriteKeyFiles(k.PrivateKeyFile, k.PublicKeyFile)
		if err != nil {
			return fmt.Errorf("keys: create: %w", err)
		}
		a.log.WithFields(logrus.Fields{"private": k.PrivateKeyFile, "public": k.PublicKeyFile,
			"publicKey": base64.StdEncoding.EncodeToString(pub[:])}).Warn("created a new server key pair; apps must seal registrations to this public key")
	}
	return a.readKeys()
}

// dataKey returns the 32-byte key that encrypts SIP passwords in the database: inline in the
// settings, or from its file, which is created on a first start.
func (a *App) dataKey() ([]byte, error) {
	k := a.settings.Keys
	if !k.DataKey.IsEmpty() {
		return decodeDataKey([]byte(k.DataKey.Value()), "DataKey")
	}
	data, err := os.ReadFile(k.DataKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(k.DataKeyFile), 0o700); err != nil {
			return nil, fmt.Errorf("data key: %w", err)
		}
		f, err := os.OpenFile(k.DataKeyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("data key: %w", err)
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
		serr := f.Sync()
		if err := errors.Join(werr, serr, f.Close()); err != nil {
			os.Remove(k.DataKeyFile)
			return nil, fmt.Errorf("data key: %w", err)
		}
		a.log.WithField("file", k.DataKeyFile).Warn("created a new data key; back it up: without it stored SIP passwords cannot be read")
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return decodeDataKey(data, k.DataKeyFile)
}

// ReadDataKey reads the data key s names (<Keys DataKey> or its DataKeyFile) as Start does,
// but never creates one: for tools that work on an existing store (sipis migrate-store).
func ReadDataKey(s *config.Settings) ([]byte, error) {
	k := s.Keys
	if !k.DataKey.IsEmpty() {
		return decodeDataKey([]byte(k.DataKey.Value()), "DataKey")
	}
	data, err := os.ReadFile(k.DataKeyFile)
	if err != nil {
		return nil, fmt.Errorf("data key: %w", err)
	}
	return decodeDataKey(data, k.DataKeyFile)
}

func decodeDataKey(data []byte, where string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(string(trimSpace(data)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("data key %s: want 32 bytes in base64", where)
	}
	return key, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// probeSource is nil when probing is off, so the pages say so.
func (a *App) probeSource() web.ProbeSource {
	if a.prober == nil {
		return nil
	}
	return probeSource{a}
}

// jitter maps the settings' Jitter (0 = none) to the manager's (0 = its default, negative = none).
func jitter(j float64) float64 {
	if j == 0 {
		return -1
	}
	return j
}

// keepAlive is the ping period of TCP/TLS connections (<Instance><KeepAlivePackets>), 0 = off.
func keepAlive(s *config.Settings) time.Duration {
	if !s.Instance.KeepAlive {
		return 0
	}
	return s.Instance.KeepAlivePeriod
}

// warnUnused logs, once each, the settings that are accepted but have no effect (config's
// Settings.Warnings), so an operator is not misled.
func (a *App) warnUnused() {
	for _, w := range a.settings.Warnings() {
		a.log.WithField("setting", w.Setting).Warn(w.Why)
	}
}
