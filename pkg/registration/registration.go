// Package registration is the wire format of the sipis registration API: the document a mobile
// app (or its backend, or a test tool) builds when it hands a SIP account to sipis, and the
// functions that seal it to the server's X25519 public key and open it again.
//
// The plaintext is a small versioned JSON document. It is sealed with an anonymous NaCl box
// (golang.org/x/crypto/nacl/box SealAnonymous), so that the TLS proxy in front of sipis never
// sees SIP passwords: only the holder of the server's private key can open it.
//
// It also holds the key files' format and CallProof, the proof a woken device sends to take a
// call. It is public API for programs outside sipis (docs/app-protocol.md describes the
// protocol): it must not import anything of internal/, and must not change what a field of a
// published Version means (Open refuses unknown fields, so a new field needs care both ways).
package registration

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Version is the version of the plaintext document this package writes and accepts.
const Version = 1

// Mode is what the app wants sipis to do with its account.
type Mode string

// The modes an app can ask for.
const (
	// ModeBackground: the app went to the background; sipis holds its registration.
	ModeBackground Mode = "background"
	// ModeForeground: the app is in the foreground and registers by itself; sipis releases
	// the registration (unREGISTER) and keeps the instance idle.
	ModeForeground Mode = "foreground"
	// ModeOff: forget the instance and its credentials.
	ModeOff Mode = "off"
)

// Push platforms a device may name.
const (
	PlatformAPNs    = "apns"
	PlatformFCM     = "fcm"
	PlatformWebhook = "webhook"
	PlatformNone    = "none"
)

// Limits the validator applies.
const (
	MinSelectorLen = 8
	MaxSelectorLen = 64
	MinNonceLen    = 16
	MaxNonceLen    = 128
	MaxFieldLen    = 256  // any other string field
	MaxTokenLen    = 4096 // push tokens
	MaxExpires     = 7 * 24 * 3600
)

// Registration is the plaintext document an app sends.
type Registration struct {
	Version   int       `json:"version"`
	Selector  string    `json:"selector"`
	Mode      Mode      `json:"mode"`
	Account   Account   `json:"account"`
	Device    Device    `json:"device"`
	Timestamp time.Time `json:"timestamp"`
	Nonce     string    `json:"nonce"`
}

// Account is the user's SIP account.
type Account struct {
	User     string `json:"user"`
	AuthUser string `json:"authUser,omitempty"` // "" means User
	Password string `json:"password,omitempty"`
	Domain   string `json:"domain"`
	Proxy    string `json:"proxy,omitempty"` // "" means Domain
	// Port 0 means: find the port by DNS SRV (RFC 3263) or use the transport's default.
	Port        int    `json:"port,omitempty"`
	Transport   string `json:"transport,omitempty"` // udp (default), tcp, tls
	Expires     int    `json:"expires,omitempty"`   // seconds; 0 means the server's default
	DisplayName string `json:"displayName,omitempty"`
}

// Device is the phone that sent the registration.
type Device struct {
	ID       string `json:"id"`
	Platform string `json:"platform"` // apns, fcm, webhook, none
	// PushToken is the token calls are pushed to: on apns the PushKit (VoIP) token, valid only
	// for topic appId+".voip"; on fcm the registration token; on webhook the receiver's address.
	// An older app that sends one apns token sends its VoIP token here.
	PushToken string `json:"pushToken,omitempty"`
	// AlertToken is, on apns only, the remote-notification (alert) token, valid only for topic
	// appId: messages, missed calls, test pushes and expiry notices go to it. Either apns token
	// may be missing; a device without AlertToken gets no alerts, one without PushToken no calls.
	AlertToken string `json:"alertToken,omitempty"`
	AppID      string `json:"appId,omitempty"` // bundle id / APNs topic, or Android package
	Sandbox    bool   `json:"sandbox,omitempty"`
	// Secret authenticates the device when it fetches waiting messages or claims a call.
	Secret     string `json:"secret,omitempty"`
	AppVersion string `json:"appVersion,omitempty"`
	Locale     string `json:"locale,omitempty"`
}

// ValidationError says which field of a registration is wrong.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("registration: %s: %s", e.Field, e.Reason)
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Normalize lowercases the selector, transport and platform and fills defaults that do not
// change meaning (transport udp). Validate calls it.
func (r *Registration) Normalize() {
	r.Selector = strings.ToLower(strings.TrimSpace(r.Selector))
	r.Account.Transport = strings.ToLower(strings.TrimSpace(r.Account.Transport))
	if r.Account.Transport == "" {
		r.Account.Transport = "udp"
	}
	r.Device.Platform = strings.ToLower(strings.TrimSpace(r.Device.Platform))
}

// Validate normalizes r and checks every field; the error names the first bad field.
// It does not check the timestamp's age or the nonce's freshness: the server does.
func (r *Registration) Validate() error {
	r.Normalize()
	if r.Version != Version {
		return invalid("version", "unsupported version %d (this server speaks %d)", r.Version, Version)
	}
	if err := ValidateSelector(r.Selector); err != nil {
		return err
	}
	switch r.Mode {
	case ModeBackground, ModeForeground, ModeOff:
	case "":
		return invalid("mode", "missing")
	default:
		return invalid("mode", "unknown mode %q (want background, foreground or off)", clip(string(r.Mode)))
	}
	if r.Timestamp.IsZero() {
		return invalid("timestamp", "missing")
	}
	if n := len(r.Nonce); n < MinNonceLen || n > MaxNonceLen {
		return invalid("nonce", "must be %d to %d characters, is %d", MinNonceLen, MaxNonceLen, n)
	}
	if err := r.Device.validate(); err != nil {
		return err
	}
	if r.Mode != ModeBackground && r.Account == (Account{Transport: r.Account.Transport}) {
		return nil // foreground and off need no account
	}
	return r.Account.Validate()
}

// ValidateSelector checks that s is a lowercase hex string of an acceptable length.
func ValidateSelector(s string) error {
	if s == "" {
		return invalid("selector", "missing")
	}
	if len(s) < MinSelectorLen || len(s) > MaxSelectorLen {
		return invalid("selector", "must be %d to %d hex digits, is %d characters", MinSelectorLen, MaxSelectorLen, len(s))
	}
	if _, err := hex.DecodeString(padEven(s)); err != nil || strings.ToLower(s) != s {
		return invalid("selector", "must be lowercase hex digits")
	}
	return nil
}

func padEven(s string) string {
	if len(s)%2 == 1 {
		return "0" + s
	}
	return s
}

// Validate checks an account's fields; Registration.Validate calls it for every background
// registration, and for any other that carries an account.
func (a *Account) Validate() error {
	if a.User == "" {
		return invalid("account.user", "missing")
	}
	if a.Domain == "" {
		return invalid("account.domain", "missing")
	}
	for _, f := range []struct{ name, v string }{
		{"account.user", a.User}, {"account.authUser", a.AuthUser}, {"account.password", a.Password},
		{"account.domain", a.Domain}, {"account.proxy", a.Proxy}, {"account.displayName", a.DisplayName},
	} {
		if len(f.v) > MaxFieldLen {
			return invalid(f.name, "longer than %d bytes", MaxFieldLen)
		}
		if strings.ContainsAny(f.v, "\r\n\x00") {
			return invalid(f.name, "contains a control character")
		}
	}
	for _, f := range []struct{ name, v string }{{"account.user", a.User}, {"account.authUser", a.AuthUser}} {
		if strings.ContainsAny(f.v, " <>\"@:;") {
			return invalid(f.name, "contains a character not allowed in a SIP user part")
		}
	}
	for _, f := range []struct{ name, v string }{{"account.domain", a.Domain}, {"account.proxy", a.Proxy}} {
		if f.v != "" && !validHost(f.v) {
			return invalid(f.name, "%q is not a host name or IP address", clip(f.v))
		}
	}
	if a.Port < 0 || a.Port > 65535 {
		return invalid("account.port", "%d is not a port (0 to 65535)", a.Port)
	}
	switch a.Transport {
	case "udp", "tcp", "tls":
	default:
		return invalid("account.transport", "unknown transport %q (want udp, tcp or tls)", clip(a.Transport))
	}
	if a.Expires < 0 || a.Expires > MaxExpires {
		return invalid("account.expires", "%d seconds is out of range (0 to %d)", a.Expires, MaxExpires)
	}
	return nil
}

func (d *Device) validate() error {
	if d.ID == "" {
		return invalid("device.id", "missing")
	}
	for _, f := range []struct{ name, v string }{
		{"device.id", d.ID}, {"device.appId", d.AppID}, {"device.secret", d.Secret},
		{"device.appVersion", d.AppVersion}, {"device.locale", d.Locale},
	} {
		if len(f.v) > MaxFieldLen {
			return invalid(f.name, "longer than %d bytes", MaxFieldLen)
		}
	}
	if len(d.PushToken) > MaxTokenLen {
		return invalid("device.pushToken", "longer than %d bytes", MaxTokenLen)
	}
	if len(d.AlertToken) > MaxTokenLen {
		return invalid("device.alertToken", "longer than %d bytes", MaxTokenLen)
	}
	if d.AlertToken != "" && d.Platform != PlatformAPNs {
		return invalid("device.alertToken", "only for platform apns (fcm and webhook have one token)")
	}
	if d.AlertToken != "" && d.AlertToken == d.PushToken {
		return invalid("device.alertToken", "is the same as pushToken: APNs gives a PushKit (VoIP) token and an alert token, and each is valid for one topic only")
	}
	switch d.Platform {
	case PlatformAPNs:
		if d.PushToken == "" && d.AlertToken == "" {
			return invalid("device.pushToken", "missing for platform apns (give pushToken, the VoIP token, and/or alertToken)")
		}
	case PlatformFCM, PlatformWebhook:
		if d.PushToken == "" {
			return invalid("device.pushToken", "missing for platform %s", d.Platform)
		}
	case PlatformNone:
	case "":
		return invalid("device.platform", "missing")
	default:
		return invalid("device.platform", "unknown platform %q (want apns, fcm, webhook or none)", clip(d.Platform))
	}
	if d.Platform == PlatformAPNs && d.AppID == "" {
		return invalid("device.appId", "missing for platform apns (it is the APNs topic)")
	}
	return nil
}

// validHost accepts an IP address or a DNS name (RFC 1123 labels).
func validHost(h string) bool {
	if net.ParseIP(strings.Trim(h, "[]")) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// clip shortens a value echoed in an error so a hostile input cannot make errors huge.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// ErrTruncated, ErrNotOurs and ErrMalformed are the ways a sealed registration can fail to open.
var (
	ErrTruncated = errors.New("registration: sealed data is truncated")
	ErrNotOurs   = errors.New("registration: cannot open: not sealed to this server's key, or corrupted")
	ErrMalformed = errors.New("registration: plaintext is not a valid registration document")
)
