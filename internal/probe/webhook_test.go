package probe_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/probe"
)

// instantClock fires every timer at once and remembers the durations asked
// for, so backoff is tested without waiting.
type instantClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (c *instantClock) Now() time.Time { return time.Now() }

func (c *instantClock) NewTimer(d time.Duration) probe.Timer {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return firedTimer(ch)
}

func (c *instantClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

type firedTimer chan time.Time

func (f firedTimer) C() <-chan time.Time    { return f }
func (firedTimer) Stop() bool               { return false }
func (firedTimer) Reset(time.Duration) bool { return false }

const secret = "hook-secret"

// receiver is an httptest webhook receiver answering from a list of status
// codes (the last repeats) and checking every signature.
type receiver struct {
	t        *testing.T
	mu       sync.Mutex
	statuses []int
	bodies   []map[string]any
	badSigs  int
	posted   chan struct{} // one value per POST
	srv      *httptest.Server
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{t: t, statuses: statuses, posted: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	var doc map[string]any
	jsonErr := json.Unmarshal(body, &doc)

	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" ||
		!hmac.Equal([]byte(req.Header.Get(probe.SignatureHeader)), []byte(want)) || jsonErr != nil {
		r.badSigs++
	}
	r.bodies = append(r.bodies, doc)
	status := r.statuses[0]
	if len(r.statuses) > 1 {
		r.statuses = r.statuses[1:]
	}
	w.WriteHeader(status)
	r.posted <- struct{}{}
}

func (r *receiver) got() (bodies []map[string]any, badSigs int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]any(nil), r.bodies...), r.badSigs
}

func newTestWebhook(t *testing.T, url string, clk probe.Clock, attempts int) *probe.Webhook {
	t.Helper()
	w, err := probe.NewWebhook(probe.WebhookOptions{URL: url, Secret: []byte(secret), Node: "node-1",
		Attempts: attempts, Backoff: time.Second, Timeout: 5 * time.Second, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWebhookOneSignedPostPerChange(t *testing.T) {
	r := newReceiver(t, http.StatusNoContent)
	w := newTestWebhook(t, r.srv.URL+"/hook?token=abc", &instantClock{}, 3)
	for _, ch := range []probe.Change{downChange, upChange} {
		if err := w.Alert(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	bodies, bad := r.got()
	if len(bodies) != 2 || bad != 0 {
		t.Fatalf("receiver got %d POSTs, %d badly signed; want 2 and 0", len(bodies), bad)
	}
	want := []map[string]any{
		{"target": "sip:proxy.example.com", "oldState": "up", "newState": "down", "time": "2026-03-01T12:00:00Z",
			"code": 0.0, "rttMs": 0.0, "lastError": "timeout after 5s", "node": "node-1"},
		{"target": "sip:proxy.example.com;transport=tcp", "transport": "tcp", "oldState": "down", "newState": "up",
			"time": "2026-03-01T12:05:00Z", "code": 200.0, "rttMs": 15.0, "lastError": "", "node": "node-1", "suppressed": 2.0},
	}
	for i := range want {
		if len(bodies[i]) != len(want[i]) {
			t.Errorf("POST %d has fields %v, want %v", i, bodies[i], want[i])
		}
		for k, v := range want[i] {
			if bodies[i][k] != v {
				t.Errorf("POST %d: %s = %#v, want %#v", i, k, bodies[i][k], v)
			}
		}
	}
}

func TestWebhookRetriesUntilSuccess(t *testing.T) {
	r := newReceiver(t, http.StatusInternalServerError, http.StatusBadGateway, http.StatusOK)
	clk := &instantClock{}
	w := newTestWebhook(t, r.srv.URL, clk, 5)
	if err := w.Alert(t.Context(), downChange); err != nil {
		t.Fatalf("Alert = %v, want success on the third try", err)
	}
	bodies, bad := r.got()
	if len(bodies) != 3 || bad != 0 {
		t.Fatalf("receiver got %d POSTs (%d badly signed), want 3 good ones", len(bodies), bad)
	}
	if bodies[2]["newState"] != "down" {
		t.Errorf("third POST = %v", bodies[2])
	}
	waits := clk.Waits()
	if len(waits) != 2 || waits[0] < 500*time.Millisecond || waits[0] > time.Second ||
		waits[1] < time.Second || waits[1] > 2*time.Second {
		t.Errorf("backoff waits = %v, want one in [0.5s,1s] then one in [1s,2s]", waits)
	}
}

func TestWebhookGivesUp(t *testing.T) {
	t.Run("5xx", func(t *testing.T) {
		r := newReceiver(t, http.StatusServiceUnavailable)
		w := newTestWebhook(t, r.srv.URL, &instantClock{}, 3)
		err := w.Alert(t.Context(), downChange)
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("Alert = %v, want an error naming 503", err)
		}
		if bodies, _ := r.got(); len(bodies) != 3 {
			t.Errorf("receiver got %d POSTs, want exactly 3 attempts", len(bodies))
		}
	})
	t.Run("4xx is not retried", func(t *testing.T) {
		r := newReceiver(t, http.StatusUnauthorized)
		w := newTestWebhook(t, r.srv.URL, &instantClock{}, 3)
		if err := w.Alert(t.Context(), downChange); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("Alert = %v, want an error naming 401", err)
		}
		if bodies, _ := r.got(); len(bodies) != 1 {
			t.Errorf("receiver got %d POSTs, want 1", len(bodies))
		}
	})
	t.Run("transport error is retried", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String() + "/hook?token=topsecret"
		ln.Close() // nothing listens there now
		clk := &instantClock{}
		w := newTestWebhook(t, url, clk, 3)
		err = w.Alert(t.Context(), downChange)
		if err == nil {
			t.Fatal("Alert to a closed port succeeded")
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("error %q shows the URL's token", err)
		}
		if n := len(clk.Waits()); n != 2 {
			t.Errorf("waited %d times, want 2 (3 attempts)", n)
		}
	})
}

func TestNewWebhookRejectsBadOptions(t *testing.T) {
	cases := []struct {
		opt  probe.WebhookOptions
		want string
	}{
		{probe.WebhookOptions{URL: "ftp://example.com/", Secret: []byte("k")}, "ftp"},
		{probe.WebhookOptions{URL: "http:///nohost", Secret: []byte("k")}, "host"},
		{probe.WebhookOptions{URL: "https://example.com/"}, "Secret"},
		{probe.WebhookOptions{URL: "https://example.com/", Secret: []byte("k"), Attempts: -1}, "negative"},
	}
	for _, c := range cases {
		if _, err := probe.NewWebhook(c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewWebhook(%+v) = %v, want an error naming %s", c.opt, err, c.want)
		}
	}
}

func TestSign(t *testing.T) {
	// The HMAC-SHA256 example from Wikipedia.
	const want = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got := probe.Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog")); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}
