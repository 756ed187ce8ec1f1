package call

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil"
)

// TestMain fails the run if a test left goroutines of this package, sipua or the store behind.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m, testutil.Matching("internal/call.", "internal/sipua.", "database/sql.")))
}

// fakeClock is a manual clock: timers fire only in Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	at     time.Time
	f      func()
	done   bool
	serial int
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f, serial: len(c.timers)}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.done
	t.done = true
	return was
}

// Advance moves the clock by d and runs, in time order, the timers that came due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.done:
		case !t.at.After(c.now):
			t.done = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// fakePusher records notifications; result decides each one's fate (nil: accepted).
type fakePusher struct {
	mu     sync.Mutex
	sent   []push.Notification
	ch     chan push.Notification
	result func(push.Notification) (push.Result, error)
}

func newFakePusher() *fakePusher { return &fakePusher{ch: make(chan push.Notification, 1000)} }

func (p *fakePusher) Send(ctx context.Context, n push.Notification) (push.Result, error) {
	// As strict as the Dispatcher: no kind the platforms do not know, no push without its
	// token (on iOS a call goes to the VoIP token only, the rest to the alert token only).
	if !n.Kind.Valid() {
		return push.Result{}, fmt.Errorf("push: unknown notification kind %q", n.Kind)
	}
	if n.DeviceToken() == "" {
		return push.Result{}, push.ErrNoToken
	}
	p.mu.Lock()
	p.sent = append(p.sent, n)
	f := p.result
	p.mu.Unlock()
	p.ch <- n
	if f != nil {
		return f(n)
	}
	return push.Result{Accepted: true, Status: 200, Attempts: 1}, nil
}

func (p *fakePusher) setResult(f func(push.Notification) (push.Result, error)) {
	p.mu.Lock()
	p.result = f
	p.mu.Unlock()
}

// next waits for the next notification.
func (p *fakePusher) next(t *testing.T) push.Notification {
	t.Helper()
	select {
	case n := <-p.ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("no push notification within 5 s")
		return push.Notification{}
	}
}

// fakeInstances is a fixed table of instances.
type fakeInstances struct {
	mu        sync.Mutex
	byContact map[string]string
	accounts  map[string]Account
	moved     map[string]bool // Contacts handed to another node (MovedContacts)
}

func (f *fakeInstances) Moved(u string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.moved[u]
}

func (f *fakeInstances) ByContact(u string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.byContact[u]
	return s, ok
}

func (f *fakeInstances) Account(sel string) (Account, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.accounts[sel]
	return a, ok
}

func (f *fakeInstances) set(sel string, a Account) {
	f.mu.Lock()
	f.accounts[sel] = a
	f.mu.Unlock()
}

const (
	testSel     = "a1b2c3"
	testContact = "c0ffee15c0ffee15"
	testSecret  = "Device-Secret-Numbat-77"
	testToken   = "feedfacefeedface0011"
	testAlert   = "a1e47a1e47a1e47a1e47"
	waitSIP     = 5 * time.Second
)

// env is a Manager behind a real sipua.UA on UDP loopback, a caller playing the user's proxy,
// and the device HTTP calls on an httptest server.
type env struct {
	t      testing.TB
	dbPath string
	db     *store.DB
	ua     *sipua.UA
	m      *Manager
	clock  *fakeClock
	pusher *fakePusher
	insts  *fakeInstances
	caller *siptest.Caller
	http   *httptest.Server
	target string
}

type envOption func(*Options)

func newEnv(t testing.TB, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, dbPath: filepath.Join(t.TempDir(), "sipis.db"), clock: newFakeClock(), pusher: newFakePusher()}
	e.openDB()
	ctx := context.Background()
	inst := &store.Instance{Selector: testSel, Mode: store.ModeBackground, ContactUser: testContact,
		Account: store.Account{User: "alice", Password: "pw", Domain: "example.org", Proxy: "127.0.0.1", Port: 5060}}
	dev := &store.Device{ID: "iphone", Platform: push.PlatformAPNs, PushToken: testToken, AlertToken: testAlert, AppID: "com.example.softphone", Secret: testSecret}
	if err := e.db.PutRegistration(ctx, inst, dev, "nonce-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	e.insts = &fakeInstances{
		byContact: map[string]string{testContact: testSel},
		accounts:  map[string]Account{testSel: {Proxy: "127.0.0.1", Port: 5060, Domain: "example.org", Active: true}},
	}
	e.caller = siptest.NewCaller(t)
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ua.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.ua = ua
	t.Cleanup(func() { ua.Close() })
	e.target = ua.Addr("udp")
	e.startManager(opts...)
	return e
}

func (e *env) openDB() {
	db, err := store.Open(context.Background(), store.Options{Path: e.dbPath, DataKey: bytes.Repeat([]byte{7}, store.DataKeySize), Node: "n1"})
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
	e.t.Cleanup(func() { db.Close() })
}

func (e *env) startManager(opts ...envOption) {
	o := Options{Instances: e.insts, Store: e.db, Push: e.pusher, Clock: e.clock, RelayAddress: "relay.example.org:5070", SIP: e.ua}
	for _, f := range opts {
		f(&o)
	}
	m, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	e.ua.SetHandler(m)
	r := mux.NewRouter()
	// The routes as internal/web mounts them (web.DeviceHandlers).
	r.Handle("/sipis/call/progress", m.ProgressHandler()).Methods(http.MethodPost)
	r.Handle("/sipis/call/decline", m.DeclineHandler()).Methods(http.MethodPost)
	r.Handle("/sipis/messages", m.MessagesHandler()).Methods(http.MethodGet)
	r.Handle("/sipis/messages/ack", m.AckHandler()).Methods(http.MethodPost)
	r.Handle("/sipis/calls", m.CallsHandler())
	e.http = httptest.NewServer(r)
	e.t.Cleanup(func() {
		e.http.Close()
		m.Close()
	})
}

// addDevices stores more devices of the test instance, each with push token testToken+id
// and secret testSecret.
func (e *env) addDevices(ids ...string) {
	e.t.Helper()
	for i, id := range ids {
		inst := &store.Instance{Selector: testSel, Mode: store.ModeBackground, ContactUser: testContact,
			Account: store.Account{User: "alice", Password: "pw", Domain: "example.org", Proxy: "127.0.0.1", Port: 5060}}
		dev := &store.Device{ID: id, Platform: push.PlatformAPNs, PushToken: testToken + id, AppID: "com.example.softphone", Secret: testSecret}
		if err := e.db.PutRegistration(context.Background(), inst, dev, fmt.Sprintf("nonce-add-%d-%s", i, id), time.Now()); err != nil {
			e.t.Fatal(err)
		}
	}
}

// stopManager closes the HTTP server, the Manager and the store (a restart).
func (e *env) stopManager() {
	e.ua.SetHandler(nil)
	e.http.Close()
	e.m.Close()
	e.db.Close()
}

// expect waits for the next response to the request and checks its status (and, if not
// empty, its X-Sipis-Push-Status).
func (e *env) expect(callID, method string, status int, pushStatus string) *siptest.CallResponse {
	e.t.Helper()
	r, err := e.caller.Next(callID, method, waitSIP)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.Status != status || r.Header("X-Sipis-Push-Status") != pushStatus {
		e.t.Fatalf("%s response = %d %s (X-Sipis-Push-Status %q), want %d (%q)\n%s", method, r.Status, r.Reason,
			r.Header("X-Sipis-Push-Status"), status, pushStatus, r.Raw)
	}
	return r
}

// post sends a device request and returns status and body.
func (e *env) post(path, contentType, body string, hdr ...string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) get(path string, hdr ...string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.http.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) (int, string) {
	e.t.Helper()
	res, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// calls returns the stored call records of the test instance.
func (e *env) calls() []store.Call {
	e.t.Helper()
	cs, err := e.db.Calls(context.Background(), testSel, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// outcomes returns the Manager's counters as a comparable string.
func (e *env) outcomes() string {
	total, acc, missed, rej, by := e.m.Outcomes()
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := fmt.Sprintf("total=%d accepted=%d missed=%d rejected=%d", total, acc, missed, rej)
	for _, k := range keys {
		s += fmt.Sprintf(" [%s]=%d", k, by[k])
	}
	return s
}
