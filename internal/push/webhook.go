package push

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Webhook headers. The signature is "sha256=" followed by the lower-case hex
// HMAC-SHA256 of the request body keyed with the shared secret; the body
// carries the same timestamp as the header, so it is covered by the
// signature and a receiver can refuse replays.
const (
	WebhookSignatureHeader = "X-Sipis-Signature"
	WebhookTimestampHeader = "X-Sipis-Timestamp"
	webhookMinSecret       = 16
)

// WebhookOptions configures a webhook notifier for self-hosted push.
type WebhookOptions struct {
	// URL receives the POSTs (http or https).
	URL string
	// Secret keys the HMAC signature; at least 16 bytes.
	Secret string
	// HTTPClient replaces the default client.
	HTTPClient *http.Client
	// Logger receives debug entries per push; nil discards them.
	Logger logrus.FieldLogger
	// Now replaces the clock (the timestamp) in tests.
	Now func() time.Time
}

// Webhook posts notifications as signed JSON documents.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
	own    bool
	log    logrus.FieldLogger
	now    func() time.Time
}

// WebhookBody is the JSON document a webhook receiver gets. It holds what
// the device needs to be woken and to claim the call, and no credential of
// sipis.
type WebhookBody struct {
	Kind         Kind          `json:"kind"`
	Selector     string        `json:"selector"`
	PairingID    string        `json:"pairing_id,omitempty"`
	CallerName   string        `json:"caller_name,omitempty"`
	CallerURI    string        `json:"caller_uri,omitempty"`
	RelayAddress string        `json:"relay_address,omitempty"`
	Token        string        `json:"token,omitempty"`
	MessageText  string        `json:"message_text,omitempty"`
	CallID       string        `json:"call_id,omitempty"`
	SentAt       string        `json:"sent_at,omitempty"`
	Silent       bool          `json:"silent,omitempty"`
	MissedCalls  int           `json:"missed_calls,omitempty"`
	ExpiresAt    string        `json:"expires_at,omitempty"`
	Alert        *Alert        `json:"alert,omitempty"`
	Device       WebhookDevice `json:"device"`
	// Timestamp is the Unix time of sending, equal to X-Sipis-Timestamp.
	Timestamp int64 `json:"timestamp"`
}

// WebhookDevice is the device part of a WebhookBody.
type WebhookDevice struct {
	ID        string `json:"id,omitempty"`
	PushToken string `json:"push_token"`
	AppID     string `json:"app_id,omitempty"`
	Sandbox   bool   `json:"sandbox,omitempty"`
}

// NewWebhook checks the options and returns a notifier.
func NewWebhook(o WebhookOptions) (*Webhook, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL may carry a token: never echo it, only its scheme.
		scheme := ""
		if u != nil {
			scheme = u.Scheme
		}
		return nil, fmt.Errorf("push: webhook: URL (scheme %q) is not an http(s) URL with a host", scheme)
	}
	if len(o.Secret) < webhookMinSecret {
		return nil, fmt.Errorf("push: webhook: Secret must be at least %d bytes", webhookMinSecret)
	}
	w := &Webhook{
		url:    o.URL,
		secret: []byte(o.Secret),
		client: o.HTTPClient,
		log:    logger(o.Logger),
		now:    o.Now,
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.client == nil {
		w.own = true
		w.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return w, nil
}

// Platform returns PlatformWebhook.
func (w *Webhook) Platform() string { return PlatformWebhook }

// Close closes the idle connections of the notifier's own HTTP client.
func (w *Webhook) Close() error {
	if w.own {
		w.client.CloseIdleConnections()
	}
	return nil
}

// Sign returns the X-Sipis-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature reports whether sig is the valid X-Sipis-Signature of body
// under secret, comparing in constant time.
func VerifySignature(secret, body []byte, sig string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(sig))
}

// Send posts n once. A 2xx answer is acceptance, 410 a dead token, 429 and
// 5xx are worth retrying.
func (w *Webhook) Send(ctx context.Context, n Notification) (Result, error) {
	if err := n.validate(PlatformWebhook); err != nil {
		return Result{}, err
	}
	now := w.now()
	fields := n.payloadFields()
	body, err := json.Marshal(WebhookBody{
		Kind:         n.Kind,
		Selector:     n.Selector,
		PairingID:    n.PairingID,
		CallerName:   n.CallerName,
		CallerURI:    n.CallerURI,
		RelayAddress: n.RelayAddress,
		Token:        n.Token,
		MessageText:  n.MessageText,
		CallID:       n.CallID,
		SentAt:       fields["sent_at"],
		Silent:       n.Silent,
		MissedCalls:  n.MissedCalls,
		ExpiresAt:    fields["expires_at"],
		Alert:        n.Alert,
		Device: WebhookDevice{
			ID:        n.Device.ID,
			PushToken: n.Device.PushToken,
			AppID:     n.Device.AppID,
			Sandbox:   n.Device.Sandbox,
		},
		Timestamp: now.Unix(),
	})
	if err != nil {
		return Result{}, fmt.Errorf("push: webhook: encoding body: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("push: webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(WebhookSignatureHeader, Sign(w.secret, body))
	req.Header.Set(WebhookTimestampHeader, strconv.FormatInt(now.Unix(), 10))
	log := w.log.WithFields(logrus.Fields{"token": ShortToken(n.DeviceToken()), "kind": string(n.Kind)})
	resp, err := w.client.Do(req)
	if err != nil {
		err = redactURLError(err, w.shownURL()) // the URL may carry a token
		log.WithField("err", err).Debug("webhook: post failed")
		return Result{Retryable: true}, fmt.Errorf("push: webhook: %w", err)
	}
	defer resp.Body.Close()
	raw := readBody(resp.Body)
	res := Result{Status: resp.StatusCode, ID: resp.Header.Get("X-Request-Id")}
	log = log.WithField("status", resp.StatusCode)
	if resp.StatusCode/100 == 2 {
		res.Accepted = true
		log.Debug("webhook: accepted")
		return res, nil
	}
	res.Reason = webhookReason(raw, resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusGone:
		res.TokenInvalid = true
	case retryableStatus(resp.StatusCode):
		res.Retryable = true
		res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
	}
	log.WithField("reason", res.Reason).Debug("webhook: refused")
	return res, &StatusError{Platform: PlatformWebhook, Result: res}
}

// webhookReason takes a short reason from a refusal body: a JSON "reason"
// or "error" string, else the first line of text.
func webhookReason(raw []byte, code int) string {
	var j struct {
		Reason string `json:"reason"`
		Error  string `json:"error"`
	}
	if json.Unmarshal(raw, &j) == nil {
		if j.Reason != "" {
			return truncateUTF8(j.Reason, 200)
		}
		if j.Error != "" {
			return truncateUTF8(j.Error, 200)
		}
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	if line = strings.TrimSpace(line); line != "" && !bytes.ContainsAny([]byte(line), "{<") {
		return truncateUTF8(line, 200)
	}
	return http.StatusText(code)
}

// shownURL is the webhook URL as logs and errors may show it: scheme and host only.
func (w *Webhook) shownURL() string {
	u, err := url.Parse(w.url)
	if err != nil {
		return "webhook"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
