// Package push sends push notifications that wake a sleeping softphone:
// Apple Push Notification service (APNs, HTTP/2 with token authentication),
// Firebase Cloud Messaging (FCM HTTP v1 with an OAuth2 service account) and a
// signed JSON webhook for self-hosted push.
//
// Each provider implements [Notifier]; a [Dispatcher] picks the notifier by
// the device's platform and retries transient failures (429, 5xx, transport
// errors) with exponential backoff and jitter, within the caller's deadline,
// honouring Retry-After. A dead device token is reported through
// [Result.TokenInvalid] and [ErrTokenInvalid] and is never retried, so the
// caller can forget that device.
//
// It owns the push providers' protocols, the push kinds and their payloads, topics,
// priorities and expirations per platform, and the push texts. It must not know instances,
// calls or the store (the caller marks a dead token), and must never send a VoIP push for
// anything but a new call: Apple stops delivering VoIP pushes to an app that does not report
// each one to CallKit as a call.
//
// Nothing in this package logs a full push token, a key, a password or the
// text of a message: tokens are shortened with [ShortToken].
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// Kind says why a notification is sent; it selects the token, topic, push
// type, priority and lifetime used on the wire (see docs/app-protocol.md,
// "Push kinds and payloads").
type Kind string

// The kinds of notification sipis sends. Only KindCall is a VoIP push on
// iOS: Apple requires every VoIP push to be reported to CallKit as a new
// incoming call, so a call's end is never one.
const (
	// KindCall announces a new incoming call (iOS: VoIP push to the PushKit
	// token; Android: high-priority data message with TTL 0).
	KindCall Kind = "call"
	// KindMissedCall tells the user that a call ended before any device took
	// it (the caller cancelled, or nobody answered in time): an alert on iOS,
	// a normal-priority data message on Android.
	KindMissedCall Kind = "missed-call"
	// KindAnsweredElsewhere tells the device that another device of the
	// same account took the call (an alert, or normal-priority data).
	KindAnsweredElsewhere Kind = "answered-elsewhere"
	// KindMessage announces a waiting SIP MESSAGE (a user-visible alert).
	KindMessage Kind = "message"
	// KindTest is an operator's test push from the web pages.
	KindTest Kind = "test"
	// KindExpiry reminds the user that the account is about to expire
	// because the app has not registered for a long time. A Silent one is an
	// iOS background push (the app may re-register without the user seeing
	// anything); the others are alerts.
	KindExpiry Kind = "expiry"
	// KindOff tells the user that sipis no longer keeps the account (it
	// expired, or an administrator turned it off).
	KindOff Kind = "off"
)

// Valid reports whether k is one of the kinds above.
func (k Kind) Valid() bool {
	switch k {
	case KindCall, KindMissedCall, KindAnsweredElsewhere, KindMessage, KindTest, KindExpiry, KindOff:
		return true
	}
	return false
}

// IsCall reports whether k is the push of a new incoming call, the only kind
// sent to an iOS device's VoIP token.
func (k Kind) IsCall() bool { return k == KindCall }

// Platform names, the values of [Device.Platform].
const (
	PlatformAPNs    = "apns"
	PlatformFCM     = "fcm"
	PlatformWebhook = "webhook"
)

// Device is one push destination of an instance.
type Device struct {
	// ID is the app's identifier for the device.
	ID string
	// Platform is PlatformAPNs, PlatformFCM or PlatformWebhook.
	Platform string
	// PushToken is the APNs PushKit (VoIP) token, the FCM registration
	// token or the opaque address the webhook receiver understands. Leave it
	// empty when it is known to be dead.
	PushToken string
	// AlertToken is the APNs remote-notification token, valid for topic
	// AppID only (FCM and webhook devices have none). Leave it empty when it
	// is known to be dead.
	AlertToken string
	// AppID is the app's bundle id (the APNs topic) or package name.
	AppID string
	// Sandbox selects the APNs development environment.
	Sandbox bool
}

// TokenFor returns the token a notification of kind k goes to: on APNs the
// VoIP token for calls and the alert token for everything else (APNs binds
// each token to one topic); elsewhere the one token. "" means the device
// cannot get that kind.
func (d Device) TokenFor(k Kind) string {
	if d.Platform == PlatformAPNs && !k.IsCall() {
		return d.AlertToken
	}
	return d.PushToken
}

// Notification is what the device must learn when it wakes.
type Notification struct {
	Kind Kind
	// Selector names the instance (account) the notification is about.
	Selector string
	// PairingID identifies the call (or message) across notifications.
	PairingID string
	// CallID is the SIP Call-ID of the call, so that an app can drop a
	// duplicate; SentAt is when sipis first sent the push (set by the
	// Dispatcher when zero).
	CallID string
	SentAt time.Time
	// User and Domain name the account, for the texts' placeholders.
	User, Domain string
	// MissedCalls is the number of calls the account missed since the app
	// last registered; the missed-call alert shows it as the badge.
	MissedCalls int
	// Silent makes a KindExpiry notification a background push (no alert).
	Silent bool
	// ExpiresAt is when the account expires (KindExpiry).
	ExpiresAt time.Time
	// Alert is the user-visible text; nil means the Dispatcher's texts for
	// the device's app (or the built-in English ones).
	Alert *Alert
	// CallerName and CallerURI name the caller (P-Asserted-Identity, else
	// Remote-Party-ID, else From).
	CallerName string
	CallerURI  string
	// RelayAddress is where the device connects to take the call.
	RelayAddress string
	// Token is the one-time token the device uses to claim the call.
	Token string
	// MessageText is the text of a SIP MESSAGE; set it only when the
	// settings allow message text to travel through the push service.
	MessageText string
	Device      Device
}

// Result describes how a push service answered one notification.
type Result struct {
	// Accepted is true when the push service took the notification.
	Accepted bool
	// TokenInvalid is true when the push service says the device token is
	// dead (unregistered or malformed): forget that token, and only it.
	TokenInvalid bool
	// ConfigError is true when the push service refused because of sipis's
	// or the app's configuration (wrong topic, wrong environment, a bad
	// provider key): the token is kept, the reason counted and shown.
	ConfigError bool
	// Retryable is true when the failure is transient (429, 5xx, network).
	Retryable bool
	// Status is the HTTP status code, 0 when no response arrived.
	Status int
	// Reason is the push service's reason for a failure.
	Reason string
	// ID is the apns-id or the FCM message name of an accepted push.
	ID string
	// RetryAfter is the delay the push service asked for (Retry-After),
	// zero when it asked for none.
	RetryAfter time.Duration
	// Attempts is how many times the notification was sent; set by the
	// [Dispatcher].
	Attempts int
}

// Notifier sends notifications to one push platform. Send returns a nil
// error exactly when the push service accepted the notification; otherwise
// the Result says whether the failure is worth retrying.
type Notifier interface {
	// Platform returns the Device.Platform value this notifier serves.
	Platform() string
	// Send delivers n once, without retrying.
	Send(ctx context.Context, n Notification) (Result, error)
}

// ErrTokenInvalid is matched (errors.Is) by the error of a send that failed
// because the device token is dead.
var ErrTokenInvalid = errors.New("push: device token is invalid")

// ErrNoToken is matched by the error of a send to a device that has no
// token for the notification's kind (an iPhone without an alert token gets
// no messages, one without a VoIP token no calls).
var ErrNoToken = errors.New("push: device has no token for this kind of push")

// ErrNoNotifier is matched by the error of a send to a platform that has no
// notifier configured.
var ErrNoNotifier = errors.New("push: no notifier for platform")

// StatusError is returned when a push service answered but did not accept a
// notification.
type StatusError struct {
	Platform string
	Result   Result
}

// Error implements error.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "push: %s refused the notification: status %d", e.Platform, e.Result.Status)
	if e.Result.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Result.Reason)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrTokenInvalid) true for a dead token.
func (e *StatusError) Is(target error) bool {
	return target == ErrTokenInvalid && e.Result.TokenInvalid
}

// ShortToken shortens a push token (or any secret-ish identifier) for logs:
// the first 8 bytes followed by "…" (half of a token of 8 bytes or fewer).
func ShortToken(tok string) string {
	const keep = 8
	if tok == "" {
		return ""
	}
	if len(tok) <= keep {
		// A token this short is not real; still show only half of it.
		return truncateUTF8(tok, len(tok)/2) + "…"
	}
	return truncateUTF8(tok, keep) + "…"
}

// validate checks what every provider needs; platform is the notifier's.
func (n *Notification) validate(platform string) error {
	if !n.Kind.Valid() {
		return fmt.Errorf("push: unknown notification kind %q", n.Kind)
	}
	if n.Device.Platform != platform {
		return fmt.Errorf("push: device platform %q sent to the %s notifier", n.Device.Platform, platform)
	}
	tok := n.DeviceToken()
	if tok == "" {
		return fmt.Errorf("%w (%s to %s device %q)", ErrNoToken, n.Kind, platform, n.Device.ID)
	}
	if len(tok) > 4096 || !utf8.ValidString(tok) ||
		strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("push: malformed push token %q", ShortToken(tok))
	}
	return nil
}

// DeviceToken is the token n goes to: n.Device.TokenFor(n.Kind).
func (n *Notification) DeviceToken() string { return n.Device.TokenFor(n.Kind) }

// payloadFields returns our fields shared by every platform's payload.
// They are all strings, as FCM data messages require.
func (n *Notification) payloadFields() map[string]string {
	m := map[string]string{
		"kind":     string(n.Kind),
		"selector": n.Selector,
	}
	add := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	add("pairing_id", n.PairingID)
	add("caller_name", n.CallerName)
	add("caller_uri", n.CallerURI)
	add("relay_address", n.RelayAddress)
	add("token", n.Token)
	add("message_text", n.MessageText)
	add("call_id", n.CallID)
	if !n.SentAt.IsZero() {
		m["sent_at"] = n.SentAt.UTC().Format(time.RFC3339Nano)
	}
	if n.Kind == KindMissedCall && n.MissedCalls > 0 {
		m["missed_calls"] = strconv.Itoa(n.MissedCalls)
	}
	if !n.ExpiresAt.IsZero() {
		m["expires_at"] = n.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if n.Kind == KindExpiry && n.Silent {
		m["silent"] = "1"
	}
	return m
}

// logger returns l, or a logger that discards everything when l is nil.
func logger(l logrus.FieldLogger) logrus.FieldLogger {
	if l != nil {
		return l
	}
	d := logrus.New()
	d.SetOutput(io.Discard)
	return d
}

// readBody reads at most 64 KiB of a response body: push services answer
// with small JSON documents and we never want an unbounded read.
func readBody(r io.Reader) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	return b
}

// parseRetryAfter reads a Retry-After header (RFC 9110 §10.2.3): either
// delay-seconds or an HTTP-date. It returns 0 when absent or unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(min(secs, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// retryableStatus reports whether an HTTP status is worth retrying.
func retryableStatus(code int) bool {
	return code == 429 || code >= 500
}

// redactURLError replaces the URL in a *url.Error (which net/http returns
// for transport failures) with shown, so no secret in the URL reaches a log.
func redactURLError(err error, shown string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: shown, Err: ue.Err}
	}
	return err
}
