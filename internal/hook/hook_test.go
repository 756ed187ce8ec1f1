package hook

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// fakePush records every notification and answers like a push service: tokens starting
// with "dead" are unregistered, "down" fails with 503, anything else is accepted. It refuses
// notifications a real notifier would refuse (no token, unknown kind, empty platform).
type fakePush struct {
	mu   sync.Mutex
	sent []push.Notification
	ch   chan push.Notification
}

func newFakePush() *fakePush { return &fakePush{ch: make(chan push.Notification, 4096)} }

func (f *fakePush) Send(ctx context.Context, n push.Notification) (push.Result, error) {
	if !n.Kind.Valid() || n.Device.PushToken == "" || n.Device.Platform == "" {
		return push.Result{}, errors.New("fake push: malformed notification")
	}
	if ctx.Err() != nil {
		return push.Result{}, ctx.Err()
	}
	switch {
	case strings.HasPrefix(n.Device.PushToken, "dead"):
		res := push.Result{Status: 410, Reason: "Unregistered", TokenInvalid: true}
		return res, &push.StatusError{Platform: n.Device.Platform, Result: res}
	case strings.HasPrefix(n.Device.PushToken, "down"):
		res := push.Result{Status: 503, Retryable: true}
		return res, &push.StatusError{Platform: n.Device.Platform, Result: res}
	}
	f.mu.Lock()
	f.sent = append(f.sent, n)
	f.mu.Unlock()
	// A test that stopped reading must not block the push workers (Close waits for them):
	// beyond the channel's room a push is only recorded in sent.
	select {
	case f.ch <- n:
	default:
	}
	return push.Result{Accepted: true, Status: 200}, nil
}

func (f *fakePush) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

func (f *fakePush) next(t testing.TB) push.Notification {
	t.Helper()
	select {
	case n := <-f.ch:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no push within 10 s")
		return push.Notification{}
	}
}

// fakeVerifier accepts exactly the password "pw-"+sip_user_id for user "app".
type fakeVerifier struct {
	mu    sync.Mutex
	calls int
	down  bool
}

func (v *fakeVerifier) Verify(ctx context.Context, user, password, sipUserID string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls++
	if v.down {
		return ErrVerifierDown
	}
	if user != "app" || password != "pw-"+sipUserID {
		return ErrDenied
	}
	return nil
}

type env struct {
	t      testing.TB
	h      *Hook
	db     *store.DB
	push   *fakePush
	ver    *fakeVerifier
	srv    *httptest.Server
	client *http.Client
}

func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "s.db"), DataKey: key, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &env{t: t, db: db, push: newFakePush(), ver: &fakeVerifier{}}
	o := Options{Store: db, Push: e.push, Verifier: e.ver, Wait: 4 * time.Second, ResendInterval: time.Second,
		PBXNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if mod != nil {
		mod(&o)
	}
	e.h, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	r := mux.NewRouter()
	e.h.Routes(r)
	e.srv = httptest.NewServer(r)
	e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2000}}
	t.Cleanup(func() {
		e.h.Close()
		e.srv.Close()
	})
	return e
}

// post sends a form POST (or another method) with optional Basic credentials.
func (e *env) do(method, path string, form url.Values, user, pass string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (e *env) register(user, token string) {
	e.t.Helper()
	code, body := e.do("POST", "/api/apns-device/", url.Values{"sip_user_id": {user}, "token": {token},
		"app": {"com.example.app"}, "sandbox": {"true"}, "name": {"Phone"}}, "app", "pw-"+user)
	if code != http.StatusCreated && code != http.StatusOK {
		e.t.Fatalf("register device: %d %s", code, body)
	}
}

// incoming starts incoming-call/ and returns a channel with the PBX's answer.
func (e *env) incoming(user string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		res, err := e.client.PostForm(e.srv.URL+"/api/incoming-call/", url.Values{"sip_user_id": {user},
			"caller_id": {"Alice"}, "phonenumber": {"+31501234567"}, "call_id": {"pbx-call-1"}})
		if err != nil {
			ch <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ch <- string(b)
	}()
	return ch
}

func answerOf(t testing.TB, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(15 * time.Second):
		t.Fatal("the PBX got no answer within 15 s")
		return ""
	}
}

func (e *env) respond(key string, available bool) int {
	e.t.Helper()
	code, _ := e.do("POST", "/api/call-response/", url.Values{"unique_key": {key},
		"message_start_time": {"1700000000.5"}, "available": {map[bool]string{true: "true", false: "false"}[available]}}, "", "")
	return code
}

func TestDeviceRegistration(t *testing.T) {
	e := newEnv(t, nil)
	form := url.Values{"sip_user_id": {"150010001"}, "token": {"tok-a"}, "app": {"com.example.app"}}
	if code, _ := e.do("POST", "/api/apns-device/", form, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d, want 401", code)
	}
	if code, _ := e.do("POST", "/api/apns-device/", form, "app", "pw-other"); code != http.StatusForbidden {
		t.Fatalf("wrong credentials: %d, want 403", code)
	}
	if devs, _ := e.db.HookDevices(context.Background(), "150010001"); len(devs) != 0 {
		t.Fatalf("refused registrations stored %d devices", len(devs))
	}
	if code, body := e.do("POST", "/api/apns-device/", form, "app", "pw-150010001"); code != http.StatusCreated {
		t.Fatalf("first registration: %d %s, want 201", code, body)
	}
	if code, _ := e.do("POST", "/api/apns-device", form, "app", "pw-150010001"); code != http.StatusOK {
		t.Fatalf("same device again (no slash): %d, want 200", code)
	}
	form2 := url.Values{"sip_user_id": {"150010001"}, "token": {"tok-b"}, "app": {"com.example.app"}, "os_version": {"14"}}
	if code, _ := e.do("POST", "/api/android-device/", form2, "app", "pw-150010001"); code != http.StatusCreated {
		t.Fatalf("second device: %d, want 201", code)
	}
	devs, err := e.db.HookDevices(context.Background(), "150010001")
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices = %d, %v; want 2 (several devices per account)", len(devs), err)
	}
	if devs[0].Platform != push.PlatformAPNs || devs[1].Platform != push.PlatformFCM || devs[1].OSVersion != "14" {
		t.Fatalf("devices stored wrongly: %+v", devs)
	}

	for name, f := range map[string]url.Values{
		"no token":       {"sip_user_id": {"150010001"}, "app": {"x"}},
		"bad account":    {"sip_user_id": {"15001 0001"}, "token": {"t"}, "app": {"x"}},
		"token w/ space": {"sip_user_id": {"150010001"}, "token": {"a b"}, "app": {"x"}},
		"bad sandbox":    {"sip_user_id": {"150010001"}, "token": {"t2"}, "app": {"x"}, "sandbox": {"maybe"}},
		"long name":      {"sip_user_id": {"150010001"}, "token": {"t3"}, "app": {"x"}, "name": {strings.Repeat("n", 256)}},
	} {
		code, body := e.do("POST", "/api/fcm-device/", f, "app", "pw-150010001")
		if code != http.StatusBadRequest || !strings.HasPrefix(body, "bad request: ") {
			t.Errorf("%s: %d %q, want 400 with a reason", name, code, body)
		}
	}
	if code, _ := e.do("POST", "/api/fcm-device/", url.Values{"sip_user_id": {"150010001"}, "token": {strings.Repeat("x", 20000)}, "app": {"x"}}, "app", "pw-150010001"); code != http.StatusBadRequest {
		t.Errorf("oversized body: %d, want 400", code)
	}
	if devs, _ := e.db.HookDevices(context.Background(), "150010001"); len(devs) != 2 {
		t.Fatalf("bad requests changed the devices: %d", len(devs))
	}

	// DELETE with a form body, as vialer's apps send it.
	del := url.Values{"sip_user_id": {"150010001"}, "token": {"tok-a"}, "app": {"com.example.app"}}
	if code, _ := e.do("DELETE", "/api/apns-device/", del, "app", "pw-other"); code != http.StatusForbidden {
		t.Fatalf("delete with wrong credentials: %d, want 403", code)
	}
	if code, _ := e.do("DELETE", "/api/apns-device/", del, "app", "pw-150010001"); code != http.StatusOK {
		t.Fatalf("delete: %d, want 200", code)
	}
	if code, _ := e.do("DELETE", "/api/apns-device/", del, "app", "pw-150010001"); code != http.StatusNotFound {
		t.Fatalf("delete again: %d, want 404", code)
	}
	e.ver.mu.Lock()
	e.ver.down = true
	e.ver.mu.Unlock()
	if code, _ := e.do("POST", "/api/apns-device/", form, "app", "pw-150010001"); code != http.StatusServiceUnavailable {
		t.Fatalf("verifier down: %d, want 503", code)
	}
}

func TestIncomingCallAccepted(t *testing.T) {
	e := newEnv(t, nil)
	e.register("150010001", "tok-a")
	e.register("150010001", "tok-b")
	ans := e.incoming("150010001")
	n1, n2 := e.push.next(t), e.push.next(t)
	if n1.Kind != push.KindCall || n1.CallerName != "Alice" || n1.CallerURI != "+31501234567" || n1.PairingID != "pbx-call-1" {
		t.Fatalf("push = %+v", n1)
	}
	if n1.Token == "" || n1.Token == n2.Token || len(n1.Token) != 32 {
		t.Fatalf("unique keys %q %q: want two different 128-bit keys", n1.Token, n2.Token)
	}
	if n1.Token == "pbx-call-1" {
		t.Fatal("the PBX's call_id was used as the unique key")
	}
	if code := e.respond(n2.Token, true); code != http.StatusAccepted {
		t.Fatalf("call-response: %d, want 202", code)
	}
	if got := answerOf(t, ans); got != "status=ACK" {
		t.Fatalf("PBX got %q, want status=ACK", got)
	}
	// One-time: neither key works again.
	if code := e.respond(n2.Token, true); code != http.StatusNotFound {
		t.Fatalf("reused key: %d, want 404", code)
	}
	if code := e.respond(n1.Token, true); code != http.StatusNotFound {
		t.Fatalf("other device's key after the answer: %d, want 404", code)
	}
	if code := e.respond("00000000000000000000000000000000", true); code != http.StatusNotFound {
		t.Fatalf("unknown key: %d, want 404", code)
	}
	if code, _ := e.do("POST", "/api/call-response/", url.Values{"unique_key": {n1.Token}}, "", ""); code != http.StatusBadRequest {
		t.Fatalf("call-response without message_start_time: %d, want 400", code)
	}
	o := e.h.Outcomes()
	if o.Total != 1 || o.Accepted != 1 {
		t.Fatalf("outcomes = %+v", o)
	}
	calls := waitCalls(t, e.db, 1)
	if c := calls[0]; c.Outcome != store.OutcomeAccepted || c.Devices != 2 || c.SipUserID != "150010001" ||
		c.RespondedAt.IsZero() || c.CallID != "pbx-call-1" || c.KeyHash == n1.Token {
		t.Fatalf("call record = %+v", c)
	}
	if e.h.Waiting() != 0 {
		t.Fatalf("waiting = %d after the answer", e.h.Waiting())
	}
}

// waitCalls waits until n call records are stored (the record is written just after the
// PBX's answer).
func waitCalls(t testing.TB, db *store.DB, n int) []store.HookCall {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		calls, err := db.HookCalls(context.Background(), "", max(n, 100))
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) >= n {
			return calls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d call records, want %d", len(calls), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIncomingCallNotAvailable(t *testing.T) {
	e := newEnv(t, nil)
	e.register("150010001", "tok-a")
	ans := e.incoming("150010001")
	n := e.push.next(t)
	if code := e.respond(n.Token, false); code != http.StatusAccepted {
		t.Fatalf("call-response: %d", code)
	}
	if got := answerOf(t, ans); got != "status=NAK" {
		t.Fatalf("PBX got %q, want status=NAK", got)
	}
	o := e.h.Outcomes()
	if o.Rejected != 1 || o.ByReason[ReasonNotAvailable] != 1 {
		t.Fatalf("outcomes = %+v", o)
	}
	// The app says why; the record keeps it.
	code, body := e.do("POST", "/api/hangup-reason/", url.Values{"sip_user_id": {"150010001"}, "unique_key": {n.Token},
		"reason": {"Busy in another call"}}, "app", "pw-150010001")
	if code != http.StatusOK {
		t.Fatalf("hangup-reason: %d %s", code, body)
	}
	if c := waitCalls(t, e.db, 1)[0]; c.HangupReason != "Busy in another call" || c.Reason != ReasonNotAvailable {
		t.Fatalf("record = %+v", c)
	}
	if code, _ := e.do("POST", "/api/hangup-reason/", url.Values{"sip_user_id": {"150010001"}, "unique_key": {"nokey"},
		"reason": {"x"}}, "app", "pw-150010001"); code != http.StatusNotFound {
		t.Fatalf("hangup-reason of an unknown call: %d, want 404", code)
	}
	if code, _ := e.do("POST", "/api/hangup-reason/", url.Values{"sip_user_id": {"150010001"}, "unique_key": {n.Token},
		"reason": {"x"}}, "app", "pw-bad"); code != http.StatusForbidden {
		t.Fatalf("hangup-reason with wrong credentials: %d, want 403", code)
	}
}

func TestIncomingCallNoAnswerResends(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Wait, o.ResendInterval = 600*time.Millisecond, 150*time.Millisecond })
	e.register("150010001", "tok-a")
	start := time.Now()
	if got := answerOf(t, e.incoming("150010001")); got != "status=NAK" {
		t.Fatalf("PBX got %q, want status=NAK", got)
	}
	if el := time.Since(start); el < 600*time.Millisecond {
		t.Fatalf("NAK after %s, before the wait ended", el)
	}
	// 600/150 - 1 = 3 pushes, all with the same key.
	if n := e.push.count(); n != 3 {
		t.Fatalf("%d pushes, want 3 (first + 2 resends)", n)
	}
	k := e.push.next(t).Token
	for range 2 {
		if tok := e.push.next(t).Token; tok != k {
			t.Fatal("a resend carried another key")
		}
	}
	if code := e.respond(k, true); code != http.StatusNotFound {
		t.Fatalf("answer after the wait: %d, want 404", code)
	}
	o := e.h.Outcomes()
	if o.Missed != 1 || o.Total != 1 {
		t.Fatalf("outcomes = %+v", o)
	}
	if c := waitCalls(t, e.db, 1)[0]; c.Outcome != store.OutcomeMissed || c.Pushes != 3 || c.Reason != ReasonNoResponse {
		t.Fatalf("record = %+v", c)
	}
}

func TestIncomingCallNoDeviceAndDeadTokens(t *testing.T) {
	e := newEnv(t, nil)
	start := time.Now()
	if got := answerOf(t, e.incoming("150010009")); got != "status=NAK" {
		t.Fatalf("no device: %q", got)
	}
	e.register("150010001", "dead-1")
	e.register("150010001", "down-1")
	if got := answerOf(t, e.incoming("150010001")); got != "status=NAK" {
		t.Fatalf("failing pushes: %q", got)
	}
	// A dead token with a live one beside it: the call waits for the live device, and the
	// dead one gets no resends.
	e.register("150010003", "dead-3")
	e.register("150010003", "tok-3")
	ans := e.incoming("150010003")
	n := e.push.next(t)
	if n.Device.PushToken != "tok-3" {
		t.Fatalf("push to %q", n.Device.PushToken)
	}
	e.respond(n.Token, true)
	if got := answerOf(t, ans); got != "status=ACK" {
		t.Fatalf("one dead, one live device: %q", got)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("NAKs took %s: they must not wait for a device that cannot be reached", el)
	}
	o := e.h.Outcomes()
	if o.ByReason[ReasonNoDevice] != 1 || o.ByReason[ReasonPushFailed] != 1 || o.Accepted != 1 {
		t.Fatalf("outcomes = %+v", o)
	}
	devs, _ := e.db.HookDevices(context.Background(), "150010001")
	if len(devs) != 2 || !devs[0].TokenInvalid || devs[1].TokenInvalid {
		t.Fatalf("dead token not marked (or the wrong one): %+v", devs)
	}
	// Registering the device again revives it.
	e.register("150010001", "dead-1")
	if devs, _ := e.db.HookDevices(context.Background(), "150010001"); devs[0].TokenInvalid {
		t.Fatal("a new registration did not clear the dead-token mark")
	}
}

func TestIncomingCallSource(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.PBXNetworks = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	e.register("150010001", "tok-a")
	if code, _ := e.do("POST", "/api/incoming-call/", url.Values{"sip_user_id": {"150010001"}, "phonenumber": {"1"}}, "", ""); code != http.StatusForbidden {
		t.Fatalf("outside the PBX networks: %d, want 403", code)
	}
	if e.push.count() != 0 {
		t.Fatal("a refused incoming-call pushed")
	}

	s := newEnv(t, func(o *Options) { o.Secret = "s3cret" })
	s.register("150010001", "tok-a")
	if code, _ := s.do("POST", "/api/incoming-call/", url.Values{"sip_user_id": {"150010001"}, "phonenumber": {"1"}, "secret": {"nope"}}, "", ""); code != http.StatusForbidden {
		t.Fatalf("wrong secret: %d, want 403", code)
	}
	if code, body := s.do("POST", "/api/incoming-call/", url.Values{"sip_user_id": {"150010001"}}, "", ""); code != http.StatusForbidden {
		t.Fatalf("no secret: %d %s, want 403", code, body)
	}
	ch := make(chan string, 1)
	go func() {
		_, body := s.do("POST", "/api/incoming-call/", url.Values{"sip_user_id": {"150010001"}, "phonenumber": {"1"}, "secret": {"s3cret"}}, "", "")
		ch <- body
	}()
	n := s.push.next(t)
	s.respond(n.Token, true)
	if got := answerOf(t, ch); got != "status=ACK" {
		t.Fatalf("with the secret: %q", got)
	}
	if code, body := s.do("POST", "/api/incoming-call/", url.Values{"secret": {"s3cret"}, "sip_user_id": {"150010001"}}, "", ""); code != http.StatusBadRequest || !strings.Contains(body, "phonenumber") {
		t.Fatalf("no phonenumber: %d %q, want 400 naming it", code, body)
	}
}

func TestCheckInAndMetrics(t *testing.T) {
	e := newEnv(t, nil)
	e.register("150010001", "tok-a")
	before, _ := e.db.HookDevices(context.Background(), "150010001")
	if code, _ := e.do("POST", "/api/check-in/", url.Values{"sip_user_id": {"150010001"}}, "app", "pw-150010001"); code != http.StatusOK {
		t.Fatalf("check-in: %d", code)
	}
	after, _ := e.db.HookDevices(context.Background(), "150010001")
	if !after[0].LastSeen.After(before[0].LastSeen) {
		t.Fatal("check-in did not move last seen")
	}
	if code, _ := e.do("POST", "/api/check-in/", url.Values{"sip_user_id": {"150010002"}}, "app", "pw-150010002"); code != http.StatusNotFound {
		t.Fatalf("check-in of an account without devices: %d, want 404", code)
	}
	post := func(doc map[string]any, pass string) int {
		b, _ := json.Marshal(doc)
		req, _ := http.NewRequest("POST", e.srv.URL+"/api/log-metrics/", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("app", pass)
		res, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for i, d := range []map[string]any{
		{"sip_user_id": "150010001", "os": "Android", "network": "WiFi", "call_setup_successful": "true", "time_to_initial_response": 800},
		{"sip_user_id": "150010001", "os": "iOS", "network": "4G", "call_setup_successful": "true", "time_to_initial_response": 1200},
		{"sip_user_id": "150010001", "os": "iOS", "network": "4G", "call_setup_successful": "false", "failed_reason": "INSUFFICIENT_NETWORK", "time_to_initial_response": 3000},
	} {
		if code := post(d, "pw-150010001"); code != http.StatusOK {
			t.Fatalf("metric %d: %d", i, code)
		}
	}
	for name, d := range map[string]map[string]any{
		"bad result":    {"sip_user_id": "150010001", "call_setup_successful": "perhaps"},
		"negative time": {"sip_user_id": "150010001", "time_to_initial_response": -5},
		"nested":        {"sip_user_id": "150010001", "os": map[string]any{"x": 1}},
	} {
		if code := post(d, "pw-150010001"); code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, code)
		}
	}
	if code := post(map[string]any{"sip_user_id": "150010001"}, "pw-x"); code != http.StatusForbidden {
		t.Fatalf("metrics with wrong credentials: %d", code)
	}
	s, err := e.db.HookMetricSummary(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Count != 3 || s.BySetupResult["true"] != 2 || s.ByFailedReason["INSUFFICIENT_NETWORK"] != 1 ||
		s.ByNetwork["4G"] != 2 || s.FirstResponseMedian != 1200*time.Millisecond {
		t.Fatalf("summary = %+v", s)
	}
}

func TestURLVerifier(t *testing.T) {
	var mu sync.Mutex
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		u, p, ok := r.BasicAuth()
		switch {
		case r.URL.Query().Get("sip_user_id") == "broken":
			w.WriteHeader(http.StatusBadGateway)
		case !ok || u != "alice" || p != "right" || r.URL.Query().Get("sip_user_id") != "150010001":
			w.WriteHeader(http.StatusForbidden)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	v := &URLVerifier{URL: srv.URL + "/check?token=x", CacheFor: time.Minute}
	ctx := context.Background()
	if err := v.Verify(ctx, "alice", "right", "150010001"); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(ctx, "alice", "right", "150010001"); err != nil {
		t.Fatal(err)
	}
	if hits != 1 {
		t.Fatalf("%d verifier requests, want 1 (cached)", hits)
	}
	if err := v.Verify(ctx, "alice", "wrong", "150010001"); !errors.Is(err, ErrDenied) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := v.Verify(ctx, "alice", "right", "150010002"); !errors.Is(err, ErrDenied) {
		t.Fatalf("other account: %v", err)
	}
	if err := v.Verify(ctx, "alice", "right", "broken"); !errors.Is(err, ErrVerifierDown) || strings.Contains(err.Error(), "right") {
		t.Fatalf("verifier error: %v", err)
	}
	if err := v.Verify(ctx, "", "", "150010001"); !errors.Is(err, ErrDenied) {
		t.Fatalf("empty credentials: %v", err)
	}
}
