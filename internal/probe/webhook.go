package probe

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the request
// body under the shared secret, so the receiver can tell the POST is ours.
const SignatureHeader = "X-Sipis-Signature"

// Defaults of WebhookOptions.
const (
	DefaultWebhookAttempts = 5
	DefaultWebhookBackoff  = time.Second
	DefaultWebhookTimeout  = 10 * time.Second
	// MaxWebhookBackoff caps the wait between two attempts.
	MaxWebhookBackoff = time.Minute
)

// WebhookOptions configure a Webhook.
type WebhookOptions struct {
	// URL receives the POSTs; http or https. Required.
	URL string
	// Secret keys the signature. Required.
	Secret []byte
	// Node names this sipis node in the payload.
	Node string
	// Attempts bounds the tries of one alert (default 5). Only transport
	// errors, 429 and 5xx answers are retried.
	Attempts int
	// Backoff is the wait before the second attempt (default 1 s); it
	// doubles for each further attempt, up to MaxWebhookBackoff, with jitter.
	Backoff time.Duration
	// Timeout bounds one attempt (default 10 s).
	Timeout time.Duration
	// Client defaults to a client that does not follow redirects.
	Client *http.Client
	// Clock times the backoff; nil means the real clock.
	Clock Clock
}

// Webhook is an Alerter that POSTs a signed JSON document per alert.
type Webhook struct {
	opt  WebhookOptions
	host string // for error messages; the URL may hold a token
}

// webhookPayload is the JSON document a Webhook sends.
type webhookPayload struct {
	Target     string  `json:"target"`
	Transport  string  `json:"transport,omitempty"`
	OldState   State   `json:"oldState"`
	NewState   State   `json:"newState"`
	Time       string  `json:"time"`
	Code       int     `json:"code"`
	RTTMs      float64 `json:"rttMs"`
	LastError  string  `json:"lastError"`
	Node       string  `json:"node"`
	Suppressed int     `json:"suppressed,omitempty"`
}

// NewWebhook checks opt and returns a Webhook.
func NewWebhook(opt WebhookOptions) (*Webhook, error) {
	u, err := url.Parse(opt.URL)
	if err != nil {
		return nil, fmt.Errorf("probe: webhook: bad URL: %v", errors.Unwrap(err))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("probe: webhook: URL must be http:// or https:// with a host, got scheme %q host %q", u.Scheme, u.Host)
	}
	if len(opt.Secret) == 0 {
		return nil, errors.New("probe: webhook: Secret is required")
	}
	if opt.Attempts < 0 || opt.Backoff < 0 || opt.Timeout < 0 {
		return nil, errors.New("probe: webhook: Attempts, Backoff and Timeout must not be negative")
	}
	if opt.Attempts == 0 {
		opt.Attempts = DefaultWebhookAttempts
	}
	if opt.Backoff == 0 {
		opt.Backoff = DefaultWebhookBackoff
	}
	if opt.Timeout == 0 {
		opt.Timeout = DefaultWebhookTimeout
	}
	if opt.Client == nil {
		opt.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opt.Clock == nil {
		opt.Clock = realClock{}
	}
	opt.Secret = bytes.Clone(opt.Secret)
	return &Webhook{opt: opt, host: u.Host}, nil
}

// Sign returns the SignatureHeader value for body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Alert POSTs ch, retrying transport errors, 429 and 5xx with backoff until
// Attempts are used up or ctx ends.
func (w *Webhook) Alert(ctx context.Context, ch Change) error {
	body, err := json.Marshal(webhookPayload{
		Target:     ch.Target,
		Transport:  ch.Transport,
		OldState:   ch.OldState,
		NewState:   ch.NewState,
		Time:       ch.At.UTC().Format(time.RFC3339),
		Code:       ch.Code,
		RTTMs:      float64(ch.RTT.Microseconds()) / 1000,
		LastError:  ch.LastError,
		Node:       w.opt.Node,
		Suppressed: ch.Suppressed,
	})
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	sig := Sign(w.opt.Secret, body)
	backoff := w.opt.Backoff
	for attempt := 1; ; attempt++ {
		retry, wait, err := w.post(ctx, body, sig)
		if err == nil {
			return nil
		}
		if !retry || attempt >= w.opt.Attempts {
			return fmt.Errorf("webhook to %s, attempt %d of %d: %w", w.host, attempt, w.opt.Attempts, err)
		}
		// Jitter in [backoff/2, backoff] keeps many nodes from retrying in step.
		d := backoff/2 + rand.N(backoff/2+1)
		d = max(d, wait)
		if serr := sleep(ctx, w.opt.Clock, d); serr != nil {
			return fmt.Errorf("webhook to %s: gave up after attempt %d of %d (%v): %w", w.host, attempt, w.opt.Attempts, err, serr)
		}
		backoff = min(2*backoff, MaxWebhookBackoff)
	}
}

// post makes one attempt. It reports whether a failure is worth retrying
// and how long the receiver asked to wait (Retry-After, RFC 9110 §10.2.3).
func (w *Webhook) post(ctx context.Context, body []byte, sig string) (retry bool, wait time.Duration, err error) {
	actx, cancel := context.WithTimeout(ctx, w.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, w.opt.URL, bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "sipis")
	req.Header.Set(SignatureHeader, sig)
	resp, err := w.opt.Client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a token
		}
		return ctx.Err() == nil, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = min(time.Duration(s)*time.Second, MaxWebhookBackoff)
		}
		return true, wait, fmt.Errorf("receiver answered %s", resp.Status)
	default:
		return false, 0, fmt.Errorf("receiver answered %s", resp.Status)
	}
}
