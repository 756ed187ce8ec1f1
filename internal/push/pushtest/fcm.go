package pushtest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fcmScope is the OAuth2 scope needed to send messages.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// FCM is a fake of the FCM HTTP v1 API together with Google's OAuth2 token
// endpoint for service accounts (the JWT bearer grant, RFC 7523). Its
// fields are set by NewFCM; do not change them.
type FCM struct {
	// URL is the base URL (https://127.0.0.1:port) to use as the FCM
	// endpoint; TokenURL is the token endpoint, also the service
	// account's token_uri.
	URL, TokenURL string
	// ProjectID is the only project the fake serves.
	ProjectID string
	// Account is a service account the token endpoint trusts.
	Account *ServiceAccount

	srv      *httptest.Server
	clock    clock
	script   *script
	messages record[FCMMessage]

	mu       sync.Mutex
	issued   map[string]time.Time // access token -> expiry
	requests int
}

// FCMMessage is one send request the fake received, with its answer.
type FCMMessage struct {
	// Token is message.token.
	Token string
	// Data is message.data, when every value was a string.
	Data map[string]string
	// Android is message.android.
	Android struct {
		Priority    string `json:"priority"`
		TTL         string `json:"ttl"`
		CollapseKey string `json:"collapse_key"`
	}
	// Body is the raw request body and Header its headers.
	Body    []byte
	Header  http.Header
	Proto   string
	Status  int
	Reason  string
	Arrived time.Time
}

// NewFCM starts a fake FCM and token endpoint on 127.0.0.1:0 (HTTP/2 over
// TLS) with a fresh service account, closed when the test ends.
func NewFCM(t testing.TB) *FCM {
	t.Helper()
	s := &FCM{
		ProjectID: "sipis-test",
		issued:    map[string]time.Time{},
		script: newScript(
			Reply{Status: http.StatusNotFound, Reason: "UNREGISTERED"},
			Reply{Status: http.StatusBadRequest, Reason: "INVALID_ARGUMENT"},
			Reply{Status: http.StatusTooManyRequests, Reason: "QUOTA_EXCEEDED"},
			Reply{Status: http.StatusInternalServerError, Reason: "INTERNAL"},
		),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", s.serveToken)
	mux.HandleFunc("/v1/", s.serveSend)
	s.srv = httptest.NewUnstartedServer(mux)
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	s.URL = s.srv.URL
	s.TokenURL = s.srv.URL + "/token"
	s.Account = NewServiceAccount(t, s.ProjectID, s.TokenURL)
	t.Cleanup(s.Close)
	return s
}

// Client returns an HTTP client that trusts the fake's certificate.
func (s *FCM) Client() *http.Client { return s.srv.Client() }

// Close shuts the fake down; it is also done when the test ends.
func (s *FCM) Close() { s.srv.Close() }

// SetNow replaces the clock used to judge assertions and access tokens.
func (s *FCM) SetNow(now func() time.Time) { s.clock.set(now) }

// Script makes the next sends to token get replies in order (Reason is
// the FCM errorCode); the last reply repeats.
func (s *FCM) Script(token string, replies ...Reply) { s.script.set(token, replies) }

// Messages returns every send request received so far.
func (s *FCM) Messages() []FCMMessage { return s.messages.all() }

// TokenRequests returns how many access tokens were requested.
func (s *FCM) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// RevokeTokens invalidates every access token issued so far, as if they
// had been revoked: the next send with one gets 401.
func (s *FCM) RevokeTokens() {
	s.mu.Lock()
	clear(s.issued)
	s.mu.Unlock()
}

func (s *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.mu.Unlock()
	fail := func(desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		fail("bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("unsupported grant_type")
		return
	}
	if desc := s.checkAssertion(r.PostForm.Get("assertion")); desc != "" {
		fail(desc)
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	tok := "ya29.fake-" + hex.EncodeToString(b[:])
	s.mu.Lock()
	s.issued[tok] = s.clock.get().Add(time.Hour)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3599, "token_type": "Bearer"})
}

// checkAssertion verifies an RS256 JWT from the service account (RFC 7523
// §3): issuer, audience, scope and lifetime. It returns "" when good.
func (s *FCM) checkAssertion(a string) string {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return "malformed assertion"
	}
	var hdr struct{ Alg, Kid string }
	var cl struct {
		Iss, Scope, Aud string
		Iat, Exp        int64
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &cl) != nil {
		return "malformed assertion"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || hdr.Alg != "RS256" {
		return "bad signature algorithm"
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&s.Account.Key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "Invalid JWT Signature."
	}
	now := s.clock.get().Unix()
	switch {
	case cl.Iss != s.Account.Email:
		return "wrong issuer"
	case cl.Aud != s.TokenURL:
		return "wrong audience"
	case !slices.Contains(strings.Fields(cl.Scope), fcmScope):
		return "missing scope " + fcmScope
	case cl.Exp <= now || cl.Iat > now+300 || cl.Exp-cl.Iat > 3600:
		return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
	}
	return ""
}

var (
	sendPathRE = regexp.MustCompile(`^/v1/projects/([^/]+)/messages:send$`)
	ttlRE      = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)
)

func (s *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	m := FCMMessage{Header: r.Header.Clone(), Proto: r.Proto, Arrived: time.Now()}
	m.Body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	status, code, desc, field := s.checkSend(r, &m)
	retryAfter := ""
	if status == 0 {
		rep := s.script.next(m.Token)
		status, code, retryAfter = rep.Status, rep.Reason, rep.RetryAfter
		if code == "INVALID_ARGUMENT" {
			desc, field = "The registration token is not a valid FCM registration token", "message.token"
		}
	}
	m.Status, m.Reason = status, code
	s.messages.add(m)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if status == http.StatusOK {
		var b [8]byte
		_, _ = rand.Read(b[:])
		_ = json.NewEncoder(w).Encode(map[string]string{
			"name": "projects/" + s.ProjectID + "/messages/0:" + hex.EncodeToString(b[:]),
		})
		return
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(fcmErrorBody(status, code, desc, field))
}

// fcmErrorBody builds a google.rpc.Status body as FCM sends it.
func fcmErrorBody(status int, code, desc, field string) map[string]any {
	rpc := map[int]string{400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
		404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}[status]
	if rpc == "" {
		rpc = "UNKNOWN"
	}
	if desc == "" {
		desc = http.StatusText(status)
	}
	details := []any{}
	if code != "" {
		details = append(details, map[string]any{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": code,
		})
	}
	if field != "" {
		details = append(details, map[string]any{
			"@type":           "type.googleapis.com/google.rpc.BadRequest",
			"fieldViolations": []any{map[string]string{"field": field, "description": desc}},
		})
	}
	return map[string]any{"error": map[string]any{
		"code": status, "message": desc, "status": rpc, "details": details,
	}}
}

// checkSend validates a send as FCM does and fills m. It returns a
// non-zero status with the error code, message and offending field of a
// request FCM would refuse.
func (s *FCM) checkSend(r *http.Request, m *FCMMessage) (int, string, string, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "UNSPECIFIED_ERROR", "method not allowed", ""
	}
	sub := sendPathRE.FindStringSubmatch(r.URL.Path)
	if sub == nil {
		return http.StatusNotFound, "UNSPECIFIED_ERROR", "no such method", ""
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, known := s.issued[bearer]
	s.mu.Unlock()
	if !ok || !known || !s.clock.get().Before(exp) {
		// Google's own authentication failure: no FCM error code (FCM's
		// THIRD_PARTY_AUTH_ERROR is about the APNs credentials in the Firebase
		// project, not about the caller's access token).
		return http.StatusUnauthorized, "", "Request had invalid authentication credentials.", ""
	}
	if sub[1] != s.ProjectID {
		return http.StatusForbidden, "SENDER_ID_MISMATCH", "Permission denied on project " + sub[1], ""
	}
	var req struct {
		Message *struct {
			Token   string          `json:"token"`
			Topic   string          `json:"topic"`
			Data    map[string]any  `json:"data"`
			Android json.RawMessage `json:"android"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Body, &req); err != nil || req.Message == nil {
		return http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received.", "message"
	}
	msg := req.Message
	m.Token = msg.Token
	if msg.Token == "" || msg.Topic != "" {
		return http.StatusBadRequest, "INVALID_ARGUMENT", "exactly one of token, topic or condition is required", "message.token"
	}
	m.Data = make(map[string]string, len(msg.Data))
	for k, v := range msg.Data {
		str, ok := v.(string)
		if !ok {
			return http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid value at 'message.data[" + k + "].value' (TYPE_STRING)", "message.data"
		}
		m.Data[k] = str
	}
	if len(msg.Android) > 0 {
		if err := json.Unmarshal(msg.Android, &m.Android); err != nil {
			return http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload at message.android", "message.android"
		}
	}
	switch strings.ToUpper(m.Android.Priority) {
	case "", "NORMAL", "HIGH":
	default:
		return http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'", "message.android.priority"
	}
	if m.Android.TTL != "" && !ttlRE.MatchString(m.Android.TTL) {
		return http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid value at 'message.android.ttl'", "message.android.ttl"
	}
	if len(m.Body) > 4096+512 {
		return http.StatusBadRequest, "INVALID_ARGUMENT", "Android message is too big", "message"
	}
	return 0, "", "", ""
}
