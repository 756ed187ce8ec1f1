package web

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newTestServer(t testing.TB, f *fakeBackend, mod ...func(*Options)) (*Server, *clock) {
	t.Helper()
	c := &clock{t: testNow}
	opts := Options{Addr: "127.0.0.1:0", Backend: f, Now: c.Now,
		Changelog: []byte("# Changelog\n\n## 0.1.0\n- first <release>\n")}
	for _, m := range mod {
		m(&opts)
	}
	return New(opts), c
}

type req struct {
	method, path string
	form         url.Values
	basic        []string // user, pass
	header       map[string]string
	body         io.Reader
	remote       string // the peer's address; default 127.0.0.1:40000
}

func do(t testing.TB, s *Server, r req) *httptest.ResponseRecorder {
	t.Helper()
	body := r.body
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	}
	if r.method == "" {
		r.method = http.MethodGet
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	hr.RemoteAddr = "127.0.0.1:40000"
	if r.remote != "" {
		hr.RemoteAddr = r.remote
	}
	if r.form != nil {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.basic != nil {
		hr.SetBasicAuth(r.basic[0], r.basic[1])
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, hr)
	return w
}

var admin = []string{"admin", "s3cret"}

func TestRoutes(t *testing.T) {
	f := newFake()
	f.seedN(5)
	f.logPath = filepath.Join(t.TempDir(), "instance.log")
	s, _ := newTestServer(t, f, func(o *Options) { o.Gatherer = prometheus.NewRegistry() })
	tests := []struct {
		name string
		r    req
		code int
		want []string
	}{
		{"root redirects", req{path: "/"}, 303, nil},
		{"about", req{path: "/about"}, 200, []string{"node-1", "sipis 0.1.0", "1h 30m 0s", "<h2>0.1.0</h2>", "first &lt;release&gt;"}},
		{"stats", req{path: "/stats"}, 200, []string{"Incoming Call Outcomes", "Push Test Outcomes", "No Push Token", "APNs", "00000004", "Register Loop / Registered", "median"}},
		{"stats selector", req{path: "/stats?s=00000002"}, 200, []string{"00000002"}},
		{"stats unknown selector", req{path: "/stats?s=abcdef"}, 404, []string{"abcdef"}},
		{"stats bad selector", req{path: "/stats?s=xyz"}, 400, []string{"not valid"}},
		{"stats bad page", req{path: "/stats?page=0"}, 400, []string{"page must be"}},
		{"stats bad n", req{path: "/stats?n=abc"}, 400, []string{"n must be"}},
		{"stats too big n", req{path: "/stats?n=100000"}, 400, []string{"n must be"}},
		{"instances json", req{path: "/stats/instances/json"}, 200, []string{`"Selector":"00000000"`}},
		{"instances xml", req{path: "/stats/instances/xml"}, 200, []string{"<Selector>00000000</Selector>"}},
		{"instances json one", req{path: "/stats/instances/json?s=00000001"}, 200, []string{`"Count":1`}},
		{"instances json unknown", req{path: "/stats/instances/json?s=ff"}, 404, []string{"no instance"}},
		{"instances xml bad", req{path: "/stats/instances/xml?s=zz"}, 400, []string{"not valid"}},
		{"summary json", req{path: "/stats/summary/json"}, 200, []string{`"UptimeInSeconds": 5400`}},
		{"summary xml", req{path: "/stats/summary/xml"}, 200, []string{"<UptimeInSeconds>5400</UptimeInSeconds>"}},
		{"selectors", req{path: "/selectors"}, 200, []string{"00000003"}},
		{"selectors page 2", req{path: "/selectors?n=2&page=2"}, 200, []string{"00000002", "00000003", "Page 2 of 3"}},
		{"debug no auth", req{path: "/debug?s=00000001"}, 401, nil},
		{"debug", req{path: "/debug?s=00000001", basic: admin}, 200, []string{"Not Empty", "Last REGISTER", "Via: &lt;x&gt;"}},
		{"debug missing s", req{path: "/debug", basic: admin}, 400, []string{"missing selector"}},
		{"debug unknown", req{path: "/debug?s=ab", basic: admin}, 404, []string{"ab"}},
		{"settings", req{path: "/settings?s=00000001", basic: admin}, 200, []string{"The app sent nothing"}},
		{"settings no auth", req{path: "/settings?s=00000001"}, 401, nil},
		{"settings missing s", req{path: "/settings", basic: admin}, 400, nil},
		{"log", req{path: "/log?s=00000001", basic: admin}, 200, []string{"No log lines yet", "instance.log"}},
		{"log no auth", req{path: "/log?s=00000001"}, 401, nil},
		{"log unknown", req{path: "/log?s=0abc", basic: admin}, 404, nil},
		{"login no auth", req{path: "/login"}, 401, nil},
		{"login", req{path: "/login", basic: admin}, 303, nil},
		{"metrics", req{path: "/metrics"}, 200, nil},
		{"healthz", req{path: "/healthz"}, 200, []string{"ok"}},
		{"unknown page", req{path: "/nope"}, 404, []string{"no such page"}},
		{"register get", req{path: "/sipis/register"}, 405, nil},
		{"action get", req{path: "/stats/actions/turnoffall"}, 405, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, s, tc.r)
			if w.Code != tc.code {
				t.Fatalf("%s %s: status %d, want %d; body:\n%s", tc.r.method, tc.r.path, w.Code, tc.code, w.Body)
			}
			for _, want := range tc.want {
				if !strings.Contains(w.Body.String(), want) {
					t.Errorf("%s: body lacks %q:\n%s", tc.r.path, want, w.Body)
				}
			}
			if tc.code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("401 without a Basic challenge")
			}
		})
	}
	// Only /log changed anything.
	if got, want := f.changes(), "[] 0 [] [00000001] 0"; got != want {
		t.Errorf("GETs changed the backend: %s, want %s", got, want)
	}
}

func TestSecurityHeaders(t *testing.T) {
	s, _ := newTestServer(t, newFake())
	w := do(t, s, req{path: "/stats"})
	csp := w.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'nonce-") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP = %q", csp)
	}
	nonce := strings.TrimSuffix(strings.SplitN(strings.SplitN(csp, "'nonce-", 2)[1], "'", 2)[0], "'")
	if !strings.Contains(w.Body.String(), `<script nonce="`+nonce+`">`) {
		t.Errorf("script does not carry the CSP nonce %q", nonce)
	}
	if w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Error("no nosniff")
	}
	w2 := do(t, s, req{path: "/stats"})
	if w2.Header().Get("Content-Security-Policy") == csp {
		t.Error("nonce reused between requests")
	}
}

func TestAdminActions(t *testing.T) {
	f := newFake()
	f.seedN(3)
	s, _ := newTestServer(t, f)
	token := s.csrfToken("admin")

	// The admin view of /stats carries the token and the actions.
	w := do(t, s, req{path: "/stats", basic: admin})
	if !strings.Contains(w.Body.String(), token) || !strings.Contains(w.Body.String(), "Test push") {
		t.Fatalf("admin /stats lacks token or actions")
	}
	// The public view carries no token.
	if w := do(t, s, req{path: "/stats"}); strings.Contains(w.Body.String(), token) {
		t.Fatal("public /stats leaks the CSRF token")
	}

	post := func(path string, form url.Values, basic []string, hdr map[string]string) *httptest.ResponseRecorder {
		return do(t, s, req{method: "POST", path: path, form: form, basic: basic, header: hdr})
	}
	refused := []struct {
		name  string
		path  string
		form  url.Values
		basic []string
		hdr   map[string]string
		code  int
	}{
		{"no credentials", "/stats/actions/turnoff", url.Values{"s": {"00000001"}}, nil, nil, 401},
		{"wrong basic", "/stats/actions/turnoff", url.Values{"s": {"00000001"}, "csrf": {token}}, []string{"admin", "nope"}, nil, 401},
		{"wrong form password", "/stats/actions/turnoffall", url.Values{"confirm": {"1"}, "user": {"admin"}, "password": {"x"}}, nil, nil, 401},
		{"missing csrf", "/stats/actions/turnoff", url.Values{"s": {"00000001"}}, admin, nil, 403},
		{"bad csrf", "/stats/actions/testpush", url.Values{"s": {"00000001"}, "csrf": {token + "x"}}, admin, nil, 403},
		{"token of another user", "/stats/actions/turnoffall", url.Values{"confirm": {"1"}, "csrf": {s.csrfToken("eve")}}, admin, nil, 403},
		{"cross origin", "/stats/actions/turnoffall", url.Values{"confirm": {"1"}, "csrf": {token}}, admin, map[string]string{"Origin": "https://evil.example"}, 403},
		{"no confirm", "/stats/actions/turnoffall", url.Values{"csrf": {token}}, admin, nil, 400},
		{"bad selector", "/stats/actions/turnoff", url.Values{"s": {"<x>"}, "csrf": {token}}, admin, nil, 400},
		{"unknown selector", "/stats/actions/testpush", url.Values{"s": {"abc"}, "csrf": {token}}, admin, nil, 404},
	}
	for _, tc := range refused {
		w := post(tc.path, tc.form, tc.basic, tc.hdr)
		if w.Code != tc.code {
			t.Errorf("%s: status %d, want %d: %s", tc.name, w.Code, tc.code, w.Body)
		}
		if got := f.changes(); got != "[] 0 [] [] 0" {
			t.Fatalf("%s: backend changed: %s", tc.name, got)
		}
	}

	// Accepted: Basic + token, and form credentials.
	if w := post("/stats/actions/testpush", url.Values{"s": {"00000001"}, "csrf": {token}}, admin, map[string]string{"Origin": "http://example.com"}); w.Code != 200 ||
		!strings.Contains(w.Body.String(), "Test push sent") || !strings.Contains(w.Body.String(), "dev-1") {
		t.Fatalf("test push: %d %s", w.Code, w.Body)
	} else if !strings.Contains(w.Body.String(), "<th>Accepted</th><td class=\"num\">3</td>") {
		t.Errorf("push test outcomes not updated on the result page:\n%s", w.Body)
	}
	if w := post("/stats/actions/turnoff", url.Values{"s": {"00000002"}, "user": {"admin"}, "password": {"s3cret"}}, nil, nil); w.Code != 200 {
		t.Fatalf("turn off with form credentials: %d %s", w.Code, w.Body)
	}
	if w := post("/stats/actions/turnoffall", url.Values{"confirm": {"1"}, "csrf": {token}}, admin, nil); w.Code != 200 ||
		!strings.Contains(w.Body.String(), "Turned off 3 instances") {
		t.Fatalf("turn off all: %d %s", w.Code, w.Body)
	}
	if got, want := f.changes(), "[00000002] 1 [00000001] [] 0"; got != want {
		t.Errorf("changes = %s, want %s", got, want)
	}
	// The summary counts the test push too.
	var sum struct {
		PushTestOutcomes map[string]struct{ Sent int }
	}
	if err := json.Unmarshal(do(t, s, req{path: "/stats/summary/json"}).Body.Bytes(), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.PushTestOutcomes["APNs"].Sent != 4 {
		t.Errorf("APNs test pushes = %d, want 4", sum.PushTestOutcomes["APNs"].Sent)
	}
}

func TestLoginThrottle(t *testing.T) {
	f := newFake()
	f.seedN(1)
	s, c := newTestServer(t, f, func(o *Options) { o.AuthFailures = 3; o.AuthLockout = 10 * time.Second })
	bad := []string{"admin", "guess"}
	for i := range 3 {
		if w := do(t, s, req{path: "/debug?s=00000000", basic: bad}); w.Code != 401 {
			t.Fatalf("attempt %d: %d, want 401", i, w.Code)
		}
	}
	checks := f.adminChecks
	w := do(t, s, req{path: "/debug?s=00000000", basic: admin})
	if w.Code != 429 || w.Header().Get("Retry-After") != "10" {
		t.Fatalf("locked out: %d Retry-After %q, want 429 and 10", w.Code, w.Header().Get("Retry-After"))
	}
	if w := do(t, s, req{method: "POST", path: "/stats/actions/turnoffall",
		form: url.Values{"confirm": {"1"}, "user": {"admin"}, "password": {"s3cret"}}}); w.Code != 429 {
		t.Fatalf("locked-out POST: %d", w.Code)
	}
	if f.adminChecks != checks {
		t.Error("passwords were checked while locked out")
	}
	c.Add(10 * time.Second)
	if w := do(t, s, req{path: "/debug?s=00000000", basic: bad}); w.Code != 401 {
		t.Fatalf("after the wait: %d, want 401", w.Code)
	}
	// The 4th failure doubles the wait.
	c.Add(19 * time.Second)
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin}); w.Code != 429 {
		t.Fatalf("doubled lockout: %d, want 429", w.Code)
	}
	c.Add(time.Second)
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin}); w.Code != 200 {
		t.Fatalf("after lockout with good password: %d", w.Code)
	}
	if f.changes() != "[] 0 [] [] 0" {
		t.Error("backend changed")
	}
	// Success forgets the failures.
	if w := do(t, s, req{path: "/debug?s=00000000", basic: bad}); w.Code != 401 {
		t.Fatalf("after success: %d, want 401", w.Code)
	}
}

func TestOriginAndForwardedFor(t *testing.T) {
	f := newFake()
	f.seedN(1)
	s, _ := newTestServer(t, f, func(o *Options) {
		o.TrustedOrigins = []string{"https://sipis.example.org"}
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} // do()'s peer
		o.AuthFailures = 1
	})
	token := s.csrfToken("admin")
	form := url.Values{"s": {"00000000"}, "csrf": {token}}
	for origin, want := range map[string]int{
		"https://sipis.example.org": 200, "http://example.com": 200, "https://evil.example": 403, "null": 403,
	} {
		w := do(t, s, req{method: "POST", path: "/stats/actions/turnoff", form: form, basic: admin, header: map[string]string{"Origin": origin}})
		if w.Code != want {
			t.Errorf("Origin %s: %d, want %d", origin, w.Code, want)
		}
	}
	w := do(t, s, req{method: "POST", path: "/stats/actions/turnoff", form: form, basic: admin,
		header: map[string]string{"Origin": "https://front.example", "X-Forwarded-Host": "front.example"}})
	if w.Code != 200 {
		t.Errorf("X-Forwarded-Host origin: %d", w.Code)
	}
	// Failures are counted per forwarded client: one locked out, another not.
	bad := []string{"admin", "x"}
	do(t, s, req{path: "/debug?s=00000000", basic: bad, header: map[string]string{"X-Forwarded-For": "10.0.0.1, 192.0.2.7"}})
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin, header: map[string]string{"X-Forwarded-For": "192.0.2.7"}}); w.Code != 429 {
		t.Errorf("forwarded client not locked out: %d", w.Code)
	}
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin, header: map[string]string{"X-Forwarded-For": "192.0.2.8"}}); w.Code != 200 {
		t.Errorf("other forwarded client locked out: %d", w.Code)
	}
}

func TestThrottleBounded(t *testing.T) {
	c := &clock{t: testNow}
	l := newThrottle(1, time.Second, 1, 1, c.Now)
	for i := range maxTracked + 10 {
		l.fail(t, strings.Repeat("a", i%7)+string(rune('0'+i%10))+itoa(i))
	}
	if n := l.tracked(); n > maxTracked+1 { // +1: the shared overflow bucket
		t.Fatalf("throttle tracks %d addresses", n)
	}
}

const hostile = `<script>alert(1)</script>`

func TestHostileInputInert(t *testing.T) {
	f := newFake()
	r := row("0a", 100)
	r.UserName = hostile
	r.Domain = `"><img src=x onerror=alert(1)>`
	r.LastError = hostile
	f.add(r)
	f.settings["0a"] = []Field{{"DisplayName", hostile}}
	s, _ := newTestServer(t, f)
	for _, p := range []req{
		{path: "/stats"}, {path: "/stats", basic: admin}, {path: "/stats?s=0a"},
		{path: "/settings?s=0a", basic: admin},
		{path: "/stats?s=" + url.QueryEscape(hostile)},
		{path: "/debug?s=" + url.QueryEscape(hostile), basic: admin},
		{path: "/stats/instances/json"}, {path: "/stats/instances/xml"},
	} {
		w := do(t, s, p)
		body := w.Body.String()
		if strings.Contains(body, hostile) || strings.Contains(body, "<img") {
			t.Errorf("%s renders the hostile string live:\n%s", p.path, body)
		}
		if !strings.Contains(body, "alert(1)") {
			t.Errorf("%s does not show the (escaped) hostile string at all", p.path)
		}
	}
	w := do(t, s, req{path: "/stats?s=" + url.QueryEscape(hostile)})
	if w.Code != 400 || !strings.Contains(w.Body.String(), "&lt;script&gt;") {
		t.Errorf("hostile selector: %d %s", w.Code, w.Body)
	}
}

func TestUnknownSelectorEcho(t *testing.T) {
	s, _ := newTestServer(t, newFake())
	w := do(t, s, req{path: "/stats?s=DEADbeef"})
	if w.Code != 404 || !strings.Contains(w.Body.String(), "deadbeef") { // selectors are lowercase
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	long := strings.Repeat("a", 129)
	if w := do(t, s, req{path: "/stats?s=" + long}); w.Code != 400 {
		t.Errorf("129-digit selector: %d, want 400", w.Code)
	}
	if w := do(t, s, req{path: "/stats?s=ab&s=cd"}); w.Code != 400 {
		t.Errorf("two selectors: %d, want 400", w.Code)
	}
}

func TestMaskedSettings(t *testing.T) {
	f := newFake()
	f.add(row("0b", 1))
	f.settings["0b"] = []Field{{"Password", "hunter2"}, {"AuthPassword", ""}, {"PushToken", "0123456789abcdef0123456789"}, {"User", "alice"}}
	s, _ := newTestServer(t, f)
	body := do(t, s, req{path: "/settings?s=0b", basic: admin}).Body.String()
	for _, bad := range []string{"hunter2", "0123456789abcdef"} {
		if strings.Contains(body, bad) {
			t.Errorf("settings shows secret %q", bad)
		}
	}
	for _, want := range []string{"Not Empty", "Empty", "012345…", "alice"} {
		if !strings.Contains(body, want) {
			t.Errorf("settings lacks %q", want)
		}
	}
}

func TestPaginationAndColours(t *testing.T) {
	f := newFake()
	for i := range 25 {
		f.add(row(fmt.Sprintf("%08x", i), int64(10000+i%3*100)))
	}
	f.add(row("f0", 1), row("f1", 1e9)) // very low and very high traffic
	s, _ := newTestServer(t, f)
	body := do(t, s, req{path: "/stats?page=2&n=10"}).Body.String()
	if !strings.Contains(body, `data-selector="0000000a"`) || strings.Contains(body, `data-selector="00000009"`) ||
		strings.Contains(body, `data-selector="00000014"`) || !strings.Contains(body, "Page 2 of 3") {
		t.Errorf("page 2 of 10 wrong:\n%s", body)
	}
	body = do(t, s, req{path: "/stats?page=3&n=10"}).Body.String()
	if !strings.Contains(body, `<tr class="low" data-selector="f0">`) || !strings.Contains(body, `<tr class="high" data-selector="f1">`) ||
		!strings.Contains(body, `<tr class="normal" data-selector="00000018">`) {
		t.Errorf("colours wrong:\n%s", body)
	}
	// Far past the end: an empty table, not an error.
	if w := do(t, s, req{path: "/stats?page=99"}); w.Code != 200 || !strings.Contains(w.Body.String(), "No instance.") {
		t.Errorf("page 99: %d", w.Code)
	}
}

func TestRegister(t *testing.T) {
	f := newFake()
	s, _ := newTestServer(t, f, func(o *Options) { o.MaxRegisterBody = 100 })
	post := func(body []byte) *httptest.ResponseRecorder {
		return do(t, s, req{method: "POST", path: "/sipis/register", body: bytes.NewReader(body)})
	}
	if w := post([]byte("sealed")); w.Code != 200 {
		t.Fatalf("register: %d %s", w.Code, w.Body)
	}
	if w := post(bytes.Repeat([]byte("x"), 101)); w.Code != 413 || !strings.Contains(w.Body.String(), "100 bytes") {
		t.Fatalf("oversize: %d %s", w.Code, w.Body)
	}
	if w := post(nil); w.Code != 400 {
		t.Fatalf("empty: %d", w.Code)
	}
	f.registerErr = statusErr{422, "stale timestamp\nsecond line"}
	if w := post([]byte("old")); w.Code != 422 || w.Body.String() != "stale timestamp\n" {
		t.Fatalf("4xx from backend: %d %q", w.Code, w.Body)
	}
	f.registerErr = errBoom
	if w := post([]byte("x")); w.Code != 500 || strings.Contains(w.Body.String(), "boom") {
		t.Fatalf("500 from backend: %d %q", w.Code, w.Body)
	}
	if len(f.registered) != 1 || string(f.registered[0]) != "sealed" {
		t.Errorf("registered = %q", f.registered)
	}
}

func TestLogTail(t *testing.T) {
	f := newFake()
	f.add(row("0c", 1))
	f.logPath = filepath.Join(t.TempDir(), "i.log")
	var b strings.Builder
	for i := range 100 {
		b.WriteString("line " + itoa(i) + " <b>x</b>\n")
	}
	if err := os.WriteFile(f.logPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestServer(t, f, func(o *Options) { o.LogTailBytes = 200 })
	body := do(t, s, req{path: "/log?s=0c", basic: admin}).Body.String()
	if !strings.Contains(body, "line 99 &lt;b&gt;x&lt;/b&gt;") || strings.Contains(body, "line 1 ") ||
		!strings.Contains(body, "end of the file only") || strings.Contains(body, "<b>x") {
		t.Errorf("log tail wrong:\n%s", body)
	}
}

func TestTemplateErrorIsClean500(t *testing.T) {
	s, _ := newTestServer(t, newFake())
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/stats", nil)
	s.render(w, r, 200, "stats.html", struct{}{})
	if w.Code != 500 || strings.Contains(w.Body.String(), "<html") {
		t.Fatalf("broken template: %d %q", w.Code, w.Body)
	}
}

func TestBackendErrors(t *testing.T) {
	f := newFake()
	f.seedN(10)
	f.instErr, f.instErrAt = errBoom, 5
	s, _ := newTestServer(t, f)
	w := do(t, s, req{path: "/stats"})
	if w.Code != 500 || strings.Contains(w.Body.String(), "boom") {
		t.Errorf("/stats with failing backend: %d %s", w.Code, w.Body)
	}
	// A stream broken off midway is aborted, not ended as if complete.
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	// Failing before anything was sent: a clean 500.
	if w := do(t, s, req{path: "/stats/instances/xml"}); w.Code != 500 || strings.Contains(w.Body.String(), "boom") {
		t.Errorf("early failure: %d %q", w.Code, w.Body)
	}
	// Failing after the first 64 KiB went out: the connection is cut.
	f.mu.Lock()
	f.instErrAt = 5000
	f.mu.Unlock()
	f.seedN(10000)
	resp, err := http.Get(ts.URL + "/stats/instances/json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err == nil || json.Valid(data) {
		t.Fatalf("broken stream: status %d, read error %v, %d bytes", resp.StatusCode, err, len(data))
	}
}

func TestOpenClose(t *testing.T) {
	f := newFake()
	s, _ := newTestServer(t, f)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err == nil {
		t.Error("second Open succeeded")
	}
	resp, err := http.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(s.URL() + "/healthz"); err == nil {
		t.Error("server still answers after Close")
	}
	bad := New(Options{Addr: "256.0.0.1:0", Backend: f})
	if err := bad.Open(); err == nil || !strings.Contains(err.Error(), "256.0.0.1") {
		t.Errorf("bad address: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	f := newFake()
	f.seedN(4)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(f, 0))
	s, _ := newTestServer(t, f, func(o *Options) { o.Gatherer = reg })
	body := do(t, s, req{path: "/metrics"}).Body.String()
	for _, want := range []string{`sipis_instances{state="Registered"} 4`, `sipis_incoming_calls_total{outcome="accepted"} 3`,
		`sipis_incoming_calls_rejected_total{reason="Busy"} 1`, `sipis_push_tests_total{outcome="Failed",platform="APNs"} 1`,
		"sipis_message_loop_queue_size 3"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	s2, _ := newTestServer(t, f)
	if w := do(t, s2, req{path: "/metrics"}); w.Code != 404 {
		t.Errorf("/metrics without gatherer: %d", w.Code)
	}
}

// goldenFake is a small fixed backend for the golden documents.
func goldenFake() *fakeBackend {
	f := newFake()
	a := row("0a1b", 2000)
	b := row("ff00", 0)
	b.State, b.Status, b.UserName, b.Port = StateIdle, StatusNotRegistered, "bob & <co>", 0
	b.FirstTraffic, b.LastTraffic = time.Time{}, time.Time{}
	c := row("c0de", 9000)
	c.Status, c.LastError, c.Off = StatusUnauthorized, "403 Forbidden", true
	f.add(a, b, c)
	return f
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n%s", name, path, got)
	}
}

func TestGolden(t *testing.T) {
	s, _ := newTestServer(t, goldenFake())
	for _, tc := range []struct{ name, path, ctype string }{
		{"summary.json", "/stats/summary/json", "application/json"},
		{"summary.xml", "/stats/summary/xml", "application/xml"},
		{"instances.json", "/stats/instances/json", "application/json"},
		{"instances.xml", "/stats/instances/xml", "application/xml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := do(t, s, req{path: tc.path})
			if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), tc.ctype) {
				t.Fatalf("%d %s", w.Code, w.Header().Get("Content-Type"))
			}
			checkGolden(t, tc.name, w.Body.Bytes())
		})
	}
}

// TestSummaryContractNames pins the contract's exact names independently
// of the golden files.
func TestSummaryContractNames(t *testing.T) {
	s, _ := newTestServer(t, goldenFake())
	var doc struct {
		Server   map[string]any
		Instance struct {
			Count        *int
			CountInState map[string]int
		}
	}
	if err := json.Unmarshal(do(t, s, req{path: "/stats/summary/json"}).Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Name", "VersionString", "VersionNumber", "Build", "UptimeInSeconds", "MessageLoopQueueSize"} {
		if _, ok := doc.Server[k]; !ok {
			t.Errorf("Server.%s missing", k)
		}
	}
	if doc.Instance.Count == nil || *doc.Instance.Count != 3 {
		t.Errorf("Instance.Count = %v", doc.Instance.Count)
	}
	want := map[string]int{"Idle": 1, "Registered": 1, "Registering": 0, "Unauthorized": 1, "Error": 0}
	for k, v := range want {
		if got, ok := doc.Instance.CountInState[k]; !ok || got != v {
			t.Errorf("CountInState.%s = %d (present %v), want %d", k, got, ok, v)
		}
	}
	// XML carries the same tree.
	var x struct {
		XMLName  xml.Name `xml:"Summary"`
		Server   struct{ UptimeInSeconds int64 }
		Instance struct {
			Count        int
			CountInState struct{ Idle, Registered, Unauthorized int }
		}
	}
	if err := xml.Unmarshal(do(t, s, req{path: "/stats/summary/xml"}).Body.Bytes(), &x); err != nil {
		t.Fatal(err)
	}
	if x.Server.UptimeInSeconds != 5400 || x.Instance.Count != 3 || x.Instance.CountInState.Unauthorized != 1 {
		t.Errorf("XML summary = %+v", x)
	}
}

func TestInstancesJSON100k(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	f := newFake()
	f.seedN(100_000)
	r := f.rows[500]
	r.UserName = "\"quote\\ \u2028 \x01 " + hostile + " \xff"
	f.rows[500] = r
	s, _ := newTestServer(t, f)
	w := do(t, s, req{path: "/stats/instances/json"})
	var doc struct {
		Traffic   struct{ Median, MAD float64 }
		Instances []struct{ Selector, UserName, TrafficClass string }
		Count     int
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	if len(doc.Instances) != 100_000 || doc.Count != 100_000 {
		t.Fatalf("%d instances, Count %d", len(doc.Instances), doc.Count)
	}
	if got, want := doc.Instances[500].UserName, "\"quote\\ \u2028 \x01 "+hostile+" \ufffd"; got != want {
		t.Errorf("escaped user name round-trips as %q, want %q", got, want)
	}
	if doc.Traffic.Median <= 0 {
		t.Errorf("median %v", doc.Traffic.Median)
	}
	if doc.Instances[99_999].Selector != "0001869f" {
		t.Errorf("last selector %q", doc.Instances[99_999].Selector)
	}
	// XML too (on the first 10,000 only: decoding XML under -race is slow).
	f.rows = f.rows[:10_000]
	w = do(t, s, req{path: "/stats/instances/xml"})
	dec := xml.NewDecoder(w.Body)
	n := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("XML invalid after %d instances: %v", n, err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "Instance" {
			n++
		}
	}
	if n != 10_000 {
		t.Errorf("XML has %d instances", n)
	}
}

func TestMarkdown(t *testing.T) {
	src := "# Title\n\nSome *em* and **bold** and `a<b>` text\ncontinued.\n\n- one\n- two [link](https://example.com/?a=1&b=2)\n  more of two\n- [bad](javascript:void)\n\n1. first\n2. second\n\n```\n<code> & stuff\n```\n<script>alert(1)</script>\n### Sub ###\n"
	got := string(renderMarkdown([]byte(src)))
	want := "<h1>Title</h1>\n<p>Some <em>em</em> and <strong>bold</strong> and <code>a&lt;b&gt;</code> text continued.</p>\n" +
		"<ul>\n<li>one</li>\n<li>two <a href=\"https://example.com/?a=1&amp;b=2\">link</a> more of two</li>\n<li>bad</li>\n</ul>\n" +
		"<ol>\n<li>first</li>\n<li>second</li>\n</ol>\n<pre><code>&lt;code&gt; &amp; stuff\n</code></pre>\n" +
		"<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n<h3>Sub</h3>\n"
	if got != want {
		t.Errorf("renderMarkdown:\n got %q\nwant %q", got, want)
	}
}
