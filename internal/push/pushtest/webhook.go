package pushtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// Webhook is a webhook receiver that checks the X-Sipis-Signature of every
// POST with its secret and records the bodies. A request with a missing or
// wrong signature, or whose X-Sipis-Timestamp is missing or differs from
// the body's, gets 401; otherwise the device's push_token selects the
// scripted reply.
type Webhook struct {
	// URL is where to POST.
	URL string

	secret     []byte
	srv        *httptest.Server
	script     *script
	deliveries record[WebhookDelivery]
}

// WebhookDelivery is one POST the receiver got, with its answer.
type WebhookDelivery struct {
	Body   []byte
	Header http.Header
	// Fields is the decoded JSON body.
	Fields map[string]any
	// SignatureValid reports whether the signature matched the secret.
	SignatureValid bool
	Status         int
	Reason         string
	Arrived        time.Time
}

// NewWebhook starts a receiver on 127.0.0.1:0 that expects signatures made
// with secret, closed when the test ends.
func NewWebhook(t testing.TB, secret string) *Webhook {
	t.Helper()
	s := &Webhook{
		secret: []byte(secret),
		script: newScript(
			Reply{Status: http.StatusGone, Reason: "unregistered"},
			Reply{Status: http.StatusGone, Reason: "bad token"},
			Reply{Status: http.StatusTooManyRequests, Reason: "slow down"},
			Reply{Status: http.StatusInternalServerError, Reason: "broken"},
		),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Client returns an HTTP client for the receiver.
func (s *Webhook) Client() *http.Client { return s.srv.Client() }

// Close shuts the receiver down; it is also done when the test ends.
func (s *Webhook) Close() { s.srv.Close() }

// Script makes the next deliveries for push token get replies in order;
// the last reply repeats.
func (s *Webhook) Script(token string, replies ...Reply) { s.script.set(token, replies) }

// Deliveries returns every POST received so far.
func (s *Webhook) Deliveries() []WebhookDelivery { return s.deliveries.all() }

func (s *Webhook) serve(w http.ResponseWriter, r *http.Request) {
	d := WebhookDelivery{Header: r.Header.Clone(), Arrived: time.Now()}
	d.Body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	mac := hmac.New(sha256.New, s.secret)
	mac.Write(d.Body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	d.SignatureValid = hmac.Equal([]byte(want), []byte(r.Header.Get("X-Sipis-Signature")))
	_ = json.Unmarshal(d.Body, &d.Fields)

	var rep Reply
	ts, tsErr := strconv.ParseInt(r.Header.Get("X-Sipis-Timestamp"), 10, 64)
	bodyTS, _ := d.Fields["timestamp"].(float64)
	switch {
	case r.Method != http.MethodPost:
		rep = Reply{Status: http.StatusMethodNotAllowed, Reason: "POST only"}
	case !d.SignatureValid:
		rep = Reply{Status: http.StatusUnauthorized, Reason: "bad signature"}
	case tsErr != nil || float64(ts) != bodyTS:
		rep = Reply{Status: http.StatusUnauthorized, Reason: "bad timestamp"}
	case d.Fields == nil:
		rep = Reply{Status: http.StatusBadRequest, Reason: "body is not a JSON object"}
	default:
		dev, _ := d.Fields["device"].(map[string]any)
		tok, _ := dev["push_token"].(string)
		rep = s.script.next(tok)
	}
	if rep.Status == http.StatusOK {
		rep.Status = http.StatusNoContent
	}
	d.Status, d.Reason = rep.Status, rep.Reason
	s.deliveries.add(d)
	if rep.RetryAfter != "" {
		w.Header().Set("Retry-After", rep.RetryAfter)
	}
	if rep.Status == http.StatusNoContent {
		w.WriteHeader(rep.Status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"reason": rep.Reason})
}
