package push

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"
)

// APNs endpoints and token lifetimes. Apple refuses a provider token older
// than one hour (403 ExpiredProviderToken) and one refreshed more often than
// every 20 minutes (429 TooManyProviderTokenUpdates).
const (
	APNsProductionEndpoint = "https://api.push.apple.com"
	APNsSandboxEndpoint    = "https://api.sandbox.push.apple.com"

	DefaultAPNsTokenRefresh = 50 * time.Minute
	apnsMinTokenAge         = 20 * time.Minute

	// DefaultAPNsMessageTTL is how long APNs keeps an undelivered message
	// or test alert; calls are never stored (apns-expiration 0).
	DefaultAPNsMessageTTL = 24 * time.Hour

	apnsMaxPayload        = 4096 // bytes, for alert and background pushes
	apnsMaxVoIPPayload    = 5120 // bytes, for VoIP pushes
	apnsMaxCollapseID     = 64
	defaultRequestTimeout = 30 * time.Second
)

// APNsOptions configures an APNs notifier using token-based authentication.
type APNsOptions struct {
	// Endpoint and SandboxEndpoint are the base URLs of the production and
	// development services; empty means Apple's. Device.Sandbox picks one.
	Endpoint, SandboxEndpoint string
	// KeyFile names the .p8 file (PKCS#8 EC P-256 key) from the Apple
	// developer account; Key holds its content instead.
	KeyFile string
	Key     []byte
	// KeyID is the key's identifier (the JWT "kid"); TeamID is the
	// developer team (the JWT "iss").
	KeyID, TeamID string
	// TokenRefresh is the age at which the provider JWT is replaced;
	// default 50 minutes, never less than 20 minutes.
	TokenRefresh time.Duration
	// MessageTTL is how long APNs may hold a message alert for an offline
	// device (apns-expiration); default 24 hours.
	MessageTTL time.Duration
	// RootCAs replaces the system roots when verifying the APNs server;
	// nil means the system's.
	RootCAs *x509.CertPool
	// HTTPClient replaces the HTTP/2 client; nil builds one long-lived
	// client over golang.org/x/net/http2.
	HTTPClient *http.Client
	// Logger receives debug entries per push; nil discards them.
	Logger logrus.FieldLogger
	// Now replaces the clock (JWT iat and apns-expiration) in tests.
	Now func() time.Time
}

// APNs sends notifications through Apple Push Notification service over
// one long-lived HTTP/2 connection per endpoint, authenticating with a JWT
// signed by the team's .p8 key.
type APNs struct {
	prod, sandbox string
	client        *http.Client
	ownClient     bool
	signer        *apnsSigner
	messageTTL    time.Duration
	log           logrus.FieldLogger
	now           func() time.Time
}

// NewAPNs checks the options, loads the key and returns a notifier. It
// makes no network connection.
func NewAPNs(o APNsOptions) (*APNs, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	prod, err := checkEndpoint("Endpoint", o.Endpoint, APNsProductionEndpoint)
	if err != nil {
		return nil, err
	}
	sandbox, err := checkEndpoint("SandboxEndpoint", o.SandboxEndpoint, APNsSandboxEndpoint)
	if err != nil {
		return nil, err
	}
	if err := checkIdent("KeyID", o.KeyID); err != nil {
		return nil, err
	}
	if err := checkIdent("TeamID", o.TeamID); err != nil {
		return nil, err
	}
	keyPEM, what := o.Key, "APNs key"
	if len(keyPEM) == 0 {
		if o.KeyFile == "" {
			return nil, errors.New("push: apns: neither KeyFile nor Key is set")
		}
		what = "APNs key file " + strconv.Quote(o.KeyFile)
		if keyPEM, err = os.ReadFile(o.KeyFile); err != nil {
			return nil, fmt.Errorf("push: apns: reading key file: %w", err)
		}
	}
	key, err := parseP8(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("push: apns: %s: %w", what, err)
	}
	refresh := o.TokenRefresh
	if refresh == 0 {
		refresh = DefaultAPNsTokenRefresh
	}
	if refresh < apnsMinTokenAge || refresh >= time.Hour {
		return nil, fmt.Errorf("push: apns: TokenRefresh %v must be between %v and 1h", refresh, apnsMinTokenAge)
	}
	ttl := o.MessageTTL
	if ttl == 0 {
		ttl = DefaultAPNsMessageTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("push: apns: negative MessageTTL %v", ttl)
	}
	a := &APNs{
		prod:       prod,
		sandbox:    sandbox,
		client:     o.HTTPClient,
		messageTTL: ttl,
		log:        logger(o.Logger),
		now:        now,
		signer: &apnsSigner{
			key:     key,
			kid:     o.KeyID,
			iss:     o.TeamID,
			refresh: refresh,
			now:     now,
		},
	}
	if a.client == nil {
		a.ownClient = true
		// APNs speaks HTTP/2 only: ask net/http for nothing else.
		var protocols http.Protocols
		protocols.SetHTTP2(true)
		a.client = &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
			Protocols:       &protocols,
			HTTP2: &http.HTTP2Config{
				// Ping an idle connection so a silently dropped one is noticed
				// before the next call push has to wait for it.
				SendPingTimeout: 60 * time.Second,
				PingTimeout:     15 * time.Second,
			},
		}}
	}
	return a, nil
}

// Platform returns PlatformAPNs.
func (a *APNs) Platform() string { return PlatformAPNs }

// Close closes the idle connections of the notifier's own HTTP client.
func (a *APNs) Close() error {
	if a.ownClient {
		a.client.CloseIdleConnections()
	}
	return nil
}

// apnsReply is the JSON body of a refusal.
type apnsReply struct {
	Reason string `json:"reason"`
}

// apnsHeaders are the request headers that depend on the kind of push.
type apnsHeaders struct {
	topic, pushType, priority, expiration, collapseID string
}

// APNsTopic is the apns-topic a push of n's kind goes to: AppID+".voip" for a call (the only
// VoIP push, to the PushKit token), the bundle id AppID for everything else (the alert token).
func APNsTopic(n Notification) string {
	if n.Kind == KindCall {
		return n.Device.AppID + ".voip"
	}
	return n.Device.AppID
}

// apnsRoute returns the headers for n, per Apple's rules: a call is the only
// VoIP push (topic AppID+".voip", priority 10, apns-expiration 0: now or
// never); everything else goes to the alert token on topic AppID, as an
// alert (priority 10; "answered elsewhere" 5, it is not urgent) kept for
// MessageTTL, or, for a silent reminder, a background push, which Apple
// requires at priority 5.
func (a *APNs) apnsRoute(n *Notification) apnsHeaders {
	keep := strconv.FormatInt(a.now().Add(a.messageTTL).Unix(), 10)
	h := apnsHeaders{topic: n.Device.AppID, pushType: "alert", priority: "10", expiration: keep}
	switch n.Kind {
	case KindCall:
		h = apnsHeaders{topic: APNsTopic(*n), pushType: "voip", priority: "10", expiration: "0",
			collapseID: n.PairingID}
	case KindMissedCall, KindAnsweredElsewhere:
		// One notice per call: "answered elsewhere" replaces nothing but itself.
		h.collapseID = n.PairingID
		if n.Kind == KindAnsweredElsewhere {
			h.priority = "5"
		}
	case KindExpiry, KindOff:
		// A newer reminder (or the "off" notice) replaces the one before.
		h.collapseID = "sipis-expiry-" + n.Selector
		if n.Kind == KindExpiry && n.Silent {
			h.pushType, h.priority = "background", "5"
		}
	}
	h.collapseID = truncateUTF8(h.collapseID, apnsMaxCollapseID)
	return h
}

// Send posts n once to /3/device/<token>, the token of the push's kind: the
// VoIP token for calls, the alert token for everything else (see
// apnsRoute). Apple's answers are mapped as its documentation describes
// them: 410 Unregistered and 400 BadDeviceToken kill that token only; a
// wrong topic, push type, environment or provider key is a configuration
// error that keeps the token; ExpiredProviderToken signs a new JWT and is
// retried; 429 and 5xx are retried.
func (a *APNs) Send(ctx context.Context, n Notification) (Result, error) {
	if err := n.validate(PlatformAPNs); err != nil {
		return Result{}, err
	}
	tok := n.DeviceToken()
	if len(tok) > 200 || strings.IndexFunc(tok, func(r rune) bool { return !isHex(r) }) >= 0 {
		return Result{}, fmt.Errorf("push: apns: device token %q is not hexadecimal", ShortToken(tok))
	}
	if n.Device.AppID == "" || strings.ContainsFunc(n.Device.AppID, func(r rune) bool { return r <= ' ' }) {
		return Result{}, fmt.Errorf("push: apns: device %q has no valid app id (topic)", n.Device.ID)
	}
	body, err := apnsPayload(&n)
	if err != nil {
		return Result{}, err
	}
	jwt, err := a.signer.token()
	if err != nil {
		return Result{}, err
	}
	base := a.prod
	if n.Device.Sandbox {
		base = a.sandbox
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/3/device/"+tok, bytes.NewReader(body))
	if err != nil {
		return Result{}, fmt.Errorf("push: apns: %w", err)
	}
	route := a.apnsRoute(&n)
	h := req.Header
	h.Set("authorization", "bearer "+jwt)
	h.Set("content-type", "application/json")
	h.Set("apns-id", newUUID())
	h.Set("apns-topic", route.topic)
	h.Set("apns-push-type", route.pushType)
	h.Set("apns-priority", route.priority)
	h.Set("apns-expiration", route.expiration)
	if route.collapseID != "" {
		h.Set("apns-collapse-id", route.collapseID)
	}
	log := a.log.WithFields(logrus.Fields{"token": ShortToken(tok), "kind": string(n.Kind), "apns_id": h.Get("apns-id"),
		"topic": route.topic, "push_type": route.pushType})

	resp, err := a.client.Do(req)
	if err != nil {
		// The *url.Error names the URL, which holds the device token.
		err = redactURLError(err, base+"/3/device/"+ShortToken(tok))
		log.WithField("err", err).Debug("apns: post failed")
		return Result{Retryable: true}, fmt.Errorf("push: apns: %w", err)
	}
	defer resp.Body.Close()
	raw := readBody(resp.Body)
	res := Result{Status: resp.StatusCode, ID: resp.Header.Get("apns-id")}
	log = log.WithField("status", resp.StatusCode)
	if resp.StatusCode == http.StatusOK {
		res.Accepted = true
		log.Debug("apns: accepted")
		return res, nil
	}
	var rep apnsReply
	_ = json.Unmarshal(raw, &rep)
	res.Reason = rep.Reason
	if res.Reason == "" {
		res.Reason = http.StatusText(resp.StatusCode)
	}
	switch {
	case resp.StatusCode == http.StatusGone, rep.Reason == "Unregistered", rep.Reason == "BadDeviceToken":
		res.TokenInvalid = true
	case rep.Reason == "ExpiredProviderToken":
		// Our JWT aged out (clock skew, or a long pause): sign a new one
		// and let the dispatcher try again.
		a.signer.expire(jwt)
		res.Retryable = true
	case apnsConfigReasons[rep.Reason]:
		res.ConfigError = true
	case retryableStatus(resp.StatusCode):
		res.Retryable = true
		res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), a.now())
	}
	log.WithField("reason", res.Reason).Debug("apns: refused")
	return res, &StatusError{Platform: PlatformAPNs, Result: res}
}

// apnsConfigReasons are Apple's reasons that say the request, not the
// device, is wrong: the token stays valid (a VoIP token sent to the bundle
// topic, a sandbox token sent to production, a revoked or wrong key).
var apnsConfigReasons = map[string]bool{
	"DeviceTokenNotForTopic":    true,
	"TopicDisallowed":           true,
	"BadTopic":                  true,
	"MissingTopic":              true,
	"BadCertificateEnvironment": true,
	"BadCertificate":            true,
	"InvalidProviderToken":      true,
	"MissingProviderToken":      true,
	"InvalidPushType":           true,
	"Forbidden":                 true,
}

// apnsPayload builds the JSON body: an "aps" dictionary (empty for VoIP
// pushes, content-available for silent ones, an alert for the others) and
// our fields at the top level. A message text that would push an alert
// over APNs's 4 KiB limit is shortened.
//
// Its cyclomatic complexity (28) is one branch per push kind (VoIP call, silent, alert), one
// per optional alert field and the shortening at the end: flat, in the order the aps
// dictionary is written, which is the clearest way to read it against docs/app-protocol.md.
func apnsPayload(n *Notification) ([]byte, error) {
	build := func(text string) ([]byte, error) {
		doc := make(map[string]any, 10)
		for k, v := range n.payloadFields() {
			doc[k] = v
		}
		delete(doc, "message_text")
		if text != "" {
			doc["message_text"] = text
		}
		aps := map[string]any{}
		switch {
		case n.Kind.IsCall():
			// PushKit hands the whole payload to the app, which reports the
			// call to CallKit: no alert in aps; the texts are for the app.
			if n.Alert != nil {
				doc["alert"] = n.Alert
			}
		case n.Kind == KindExpiry && n.Silent:
			aps["content-available"] = 1
		default:
			al := n.Alert
			if al == nil {
				al = (*Texts)(nil).Render(n)
			}
			alert := map[string]any{}
			if al.Title != "" {
				alert["title"] = al.Title
			}
			body := al.Body
			if n.Kind == KindMessage && text != "" {
				body = text
			}
			if body != "" {
				alert["body"] = body
			}
			if al.TitleLocKey != "" {
				alert["title-loc-key"] = al.TitleLocKey
			}
			if al.LocKey != "" {
				alert["loc-key"] = al.LocKey
				alert["loc-args"] = append([]string{}, al.LocArgs...)
			}
			aps["alert"] = alert
			if al.Sound != "" {
				aps["sound"] = al.Sound
			}
			if al.Badge != nil {
				aps["badge"] = *al.Badge
			}
		}
		doc["aps"] = aps
		b, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("push: apns: encoding payload: %w", err)
		}
		return b, nil
	}
	limit := apnsMaxPayload
	if n.Kind.IsCall() {
		limit = apnsMaxVoIPPayload
	}
	text := n.MessageText
	b, err := build(text)
	if err != nil || len(b) <= limit || text == "" {
		if err == nil && len(b) > limit {
			err = fmt.Errorf("push: apns: payload of %d bytes exceeds %d", len(b), limit)
		}
		return b, err
	}
	// Too big: shorten the text in proportion to what it costs once
	// encoded (it appears twice, JSON-escaped), then trim further by a
	// tenth until it fits.
	bare, err := build("")
	if err != nil {
		return nil, err
	}
	room := limit - len(bare) - 32
	if room <= 0 {
		return nil, fmt.Errorf("push: apns: payload exceeds %d bytes even without the message text", limit)
	}
	keep := len(text) * room / (len(b) - len(bare))
	for range 20 {
		short := truncateUTF8(text, keep) + "…"
		if b, err = build(short); err != nil || len(b) <= limit {
			return b, err
		}
		keep -= keep/10 + 1
	}
	return nil, fmt.Errorf("push: apns: payload exceeds %d bytes", limit)
}

// apnsSigner makes and caches the provider authentication token: a JWT
// (RFC 7519) signed with ES256 (RFC 7518 §3.4), header {alg, kid}, claims
// {iss, iat}, as Apple's "Establishing a token-based connection to APNs"
// describes.
type apnsSigner struct {
	key      *ecdsa.PrivateKey
	kid, iss string
	refresh  time.Duration
	now      func() time.Time

	mu    sync.Mutex
	tok   string
	iat   time.Time
	stale bool
}

// token returns the cached JWT, signing a new one when it is older than the
// refresh age (or marked stale and at least 20 minutes old).
func (s *apnsSigner) token() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	age := now.Sub(s.iat)
	if s.tok != "" && age < s.refresh && !(s.stale && age >= apnsMinTokenAge) && age >= -time.Minute {
		return s.tok, nil
	}
	tok, err := signES256(s.key, s.kid, s.iss, now)
	if err != nil {
		return "", err
	}
	s.tok, s.iat, s.stale = tok, now, false
	return tok, nil
}

// expire marks used as stale after APNs called it expired.
func (s *apnsSigner) expire(used string) {
	s.mu.Lock()
	if s.tok == used {
		s.stale = true
	}
	s.mu.Unlock()
}

// signES256 returns a compact JWS: base64url(header).base64url(claims).
// base64url(R||S) with R and S as 32-byte big-endian integers (RFC 7518
// §3.4), not the ASN.1 form crypto/ecdsa produces by default.
func signES256(key *ecdsa.PrivateKey, kid, iss string, iat time.Time) (string, error) {
	hdr, _ := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}{"ES256", kid})
	cl, _ := json.Marshal(struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}{iss, iat.Unix()})
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(hdr) + "." + enc.EncodeToString(cl)
	sum := sha256.Sum256([]byte(signing))
	r, sg, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		return "", fmt.Errorf("push: apns: signing token: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sg.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

// parseP8 reads an Apple .p8 file: a PEM "PRIVATE KEY" block holding a
// PKCS#8 EC key on P-256.
func parseP8(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block found")
	}
	if blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\"", blk.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("key is not an EC P-256 key")
	}
	return ec, nil
}

// checkEndpoint validates a base URL option (https, host, no query).
func checkEndpoint(name, v, def string) (string, error) {
	if v == "" {
		return def, nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("push: %s %q is not an https base URL", name, v)
	}
	return strings.TrimRight(v, "/"), nil
}

// checkIdent validates a KeyID or TeamID: required, printable, no spaces.
func checkIdent(name, v string) error {
	if v == "" {
		return fmt.Errorf("push: apns: %s is empty", name)
	}
	if len(v) > 64 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r > '~' || r == '"' || r == '\\' }) {
		return fmt.Errorf("push: apns: %s %q is malformed", name, v)
	}
	return nil
}

func isHex(r rune) bool {
	return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F'
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// newUUID returns a random (version 4) UUID in canonical form, as APNs
// expects in apns-id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
