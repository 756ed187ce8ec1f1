package pushtest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// APNs is a fake of Apple's provider API (HTTP/2 over TLS, token
// authentication). Its fields are set by NewAPNs; do not change them.
type APNs struct {
	// URL is the base URL, https://127.0.0.1:port, to use as both the
	// production and the sandbox endpoint.
	URL string
	// KeyFile is a .p8 file holding the key whose public half the fake
	// checks JWTs with; Key is that key.
	KeyFile string
	Key     *ecdsa.PrivateKey
	// KeyID and TeamID are the expected JWT "kid" and "iss".
	KeyID, TeamID string
	// Topic is the app's bundle id: the fake accepts the topics Topic
	// (alert and background pushes) and Topic+".voip" (VoIP pushes).
	Topic string

	srv    *httptest.Server
	clock  clock
	script *script
	pushes record[APNsPush]

	jwtMu   sync.Mutex
	lastJWT string
	lastIat time.Time

	bindMu sync.Mutex
	bound  map[string]binding
}

// binding is what APNs knows of a token: the topic it was issued for.
type binding struct {
	voip bool
}

// BindVoIPToken makes tok a PushKit (VoIP) token: APNs accepts it only on
// topic Topic+".voip" with push type voip, and answers 400
// DeviceTokenNotForTopic on the bundle topic.
func (s *APNs) BindVoIPToken(tok string) { s.bind(tok, binding{voip: true}) }

// BindAlertToken makes tok a remote-notification token: APNs accepts it
// only on topic Topic (push types alert and background), and answers 400
// DeviceTokenNotForTopic on the .voip topic.
func (s *APNs) BindAlertToken(tok string) { s.bind(tok, binding{}) }

func (s *APNs) bind(tok string, b binding) {
	s.bindMu.Lock()
	defer s.bindMu.Unlock()
	if s.bound == nil {
		s.bound = map[string]binding{}
	}
	s.bound[tok] = b
}

// checkBinding enforces that a token is valid for one topic only, as on the
// real service. A token the test did not bind is bound by its first push
// that passes every other check, so that no token ever serves both topics.
func (s *APNs) checkBinding(tok, topic string) (int, string) {
	voip := strings.HasSuffix(topic, ".voip")
	s.bindMu.Lock()
	defer s.bindMu.Unlock()
	if s.bound == nil {
		s.bound = map[string]binding{}
	}
	b, ok := s.bound[tok]
	if !ok {
		s.bound[tok] = binding{voip: voip}
		return 0, ""
	}
	if b.voip != voip {
		return http.StatusBadRequest, "DeviceTokenNotForTopic"
	}
	return 0, ""
}

// APNsPush is one request the fake received, with its answer.
type APNsPush struct {
	// Token is the device token from the path.
	Token   string
	Header  http.Header
	Body    []byte
	Payload map[string]any
	// JWT is the provider token and Iat its issue time, when it parsed.
	JWT string
	Iat time.Time
	// Proto is the request's protocol, "HTTP/2.0" from a good client.
	Proto   string
	Status  int
	Reason  string
	Arrived time.Time
}

// NewAPNs starts a fake APNs on 127.0.0.1:0 with a fresh key, closed when
// the test ends.
func NewAPNs(t testing.TB) *APNs {
	t.Helper()
	keyFile, key := GenerateKey(t)
	s := &APNs{
		KeyFile: keyFile,
		Key:     key,
		KeyID:   "ABC123DEFG",
		TeamID:  "DEF123GHIJ",
		Topic:   "com.example.softphone",
		script: newScript(
			Reply{Status: http.StatusGone, Reason: "Unregistered"},
			Reply{Status: http.StatusBadRequest, Reason: "BadDeviceToken"},
			Reply{Status: http.StatusTooManyRequests, Reason: "TooManyRequests"},
			Reply{Status: http.StatusInternalServerError, Reason: "InternalServerError"},
		),
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.EnableHTTP2 = true
	s.srv.StartTLS()
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Client returns an HTTP/2 client that trusts the fake's certificate.
func (s *APNs) Client() *http.Client { return s.srv.Client() }

// RootCAs returns a pool holding the fake's certificate.
func (s *APNs) RootCAs() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(s.srv.Certificate())
	return p
}

// Close shuts the fake down; it is also done when the test ends.
func (s *APNs) Close() { s.srv.Close() }

// SetNow replaces the clock used to judge the JWT's age.
func (s *APNs) SetNow(now func() time.Time) { s.clock.set(now) }

// Script makes the next pushes to token get replies in order; the last
// reply repeats. No replies removes the script (the token is accepted).
func (s *APNs) Script(token string, replies ...Reply) { s.script.set(token, replies) }

// Pushes returns every request received so far, in order of arrival.
func (s *APNs) Pushes() []APNsPush { return s.pushes.all() }

// Reset forgets the recorded pushes.
func (s *APNs) Reset() { s.pushes.reset() }

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

func (s *APNs) serve(w http.ResponseWriter, r *http.Request) {
	p := APNsPush{Header: r.Header.Clone(), Proto: r.Proto, Arrived: time.Now()}
	p.Body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
	status, reason, retryAfter := s.check(r, &p)
	if status == 0 {
		rep := s.script.next(p.Token)
		status, reason, retryAfter = rep.Status, rep.Reason, rep.RetryAfter
	}
	p.Status, p.Reason = status, reason
	s.pushes.add(p)

	id := r.Header.Get("apns-id")
	if id == "" {
		id = newUUID()
	}
	w.Header().Set("apns-id", id)
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status == http.StatusOK {
		w.WriteHeader(http.StatusOK)
		return
	}
	body := map[string]any{"reason": reason}
	if status == http.StatusGone {
		body["timestamp"] = s.clock.get().UnixMilli()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// check validates the request as APNs does and fills p; it returns a
// non-zero status and Apple's reason for a request APNs would refuse.
//
// It is a flat list of refusals (cyclomatic 34), one per rule of Apple's documentation the fake
// enforces, each returning Apple's status and reason: the fake must refuse what APNs refuses,
// and one list is where that can be read against Apple's table.
func (s *APNs) check(r *http.Request, p *APNsPush) (int, string, string) {
	if r.ProtoMajor != 2 {
		return http.StatusBadRequest, "HTTP2Required", ""
	}
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed", ""
	}
	tok, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok {
		return http.StatusNotFound, "BadPath", ""
	}
	p.Token = tok
	if tok == "" {
		return http.StatusBadRequest, "MissingDeviceToken", ""
	}
	if strings.Trim(tok, "0123456789abcdefABCDEF") != "" {
		return http.StatusBadRequest, "BadDeviceToken", ""
	}
	if st, reason := s.checkJWT(r.Header.Get("authorization"), p); st != 0 {
		return st, reason, ""
	}
	h := r.Header
	for _, k := range []string{"apns-topic", "apns-push-type", "apns-priority", "apns-expiration", "apns-id", "apns-collapse-id"} {
		if len(h.Values(k)) > 1 {
			return http.StatusBadRequest, "DuplicateHeaders", ""
		}
	}
	topic := h.Get("apns-topic")
	switch {
	case topic == "":
		return http.StatusBadRequest, "MissingTopic", ""
	case topic != s.Topic && topic != s.Topic+".voip":
		return http.StatusBadRequest, "TopicDisallowed", ""
	}
	switch pt := h.Get("apns-push-type"); {
	case pt == "voip" && !strings.HasSuffix(topic, ".voip"),
		pt == "alert" && strings.HasSuffix(topic, ".voip"),
		pt != "voip" && pt != "alert" && pt != "background":
		return http.StatusBadRequest, "InvalidPushType", ""
	}
	if v := h.Get("apns-priority"); v != "" && v != "10" && v != "5" && v != "1" {
		return http.StatusBadRequest, "BadPriority", ""
	}
	if v := h.Get("apns-expiration"); v != "" {
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return http.StatusBadRequest, "BadExpirationDate", ""
		}
	}
	if v := h.Get("apns-id"); v != "" && !uuidRE.MatchString(v) {
		return http.StatusBadRequest, "BadMessageId", ""
	}
	if len(h.Get("apns-collapse-id")) > 64 {
		return http.StatusBadRequest, "BadCollapseId", ""
	}
	if len(p.Body) == 0 {
		return http.StatusBadRequest, "PayloadEmpty", ""
	}
	limit := 4096
	if h.Get("apns-push-type") == "voip" {
		limit = 5120
	}
	if len(p.Body) > limit {
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge", ""
	}
	if err := json.Unmarshal(p.Body, &p.Payload); err != nil || p.Payload == nil {
		// Not one of Apple's reasons: the real service drops such pushes.
		return http.StatusBadRequest, "BadPayload", ""
	}
	if _, ok := p.Payload["aps"].(map[string]any); !ok && h.Get("apns-push-type") == "alert" {
		return http.StatusBadRequest, "BadPayload", ""
	}
	if st, reason := s.checkBinding(tok, topic); st != 0 {
		return st, reason, ""
	}
	return 0, "", ""
}

// checkJWT verifies the provider token: ES256 over the fake's key, the
// expected kid and iss, an iat no older than an hour, and no new token
// within 20 minutes of the previous one.
func (s *APNs) checkJWT(auth string, p *APNsPush) (int, string) {
	if auth == "" {
		return http.StatusForbidden, "MissingProviderToken"
	}
	jwt, ok := strings.CutPrefix(auth, "bearer ")
	if !ok {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	p.JWT = jwt
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	var hdr struct{ Alg, Kid string }
	var cl struct {
		Iss string
		Iat *int64
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &cl) != nil || cl.Iat == nil {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 || hdr.Alg != "ES256" || cl.Iss != s.TeamID {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	if hdr.Kid != s.KeyID {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	// The token a provider keeps sending was verified when it first came (lastJWT is only
	// set after that): verifying every push again cost the benchmarks that share the process
	// with this fake a quarter of a millisecond of CPU per push.
	s.jwtMu.Lock()
	verified := jwt == s.lastJWT
	s.jwtMu.Unlock()
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !verified && !ecdsa.Verify(&s.Key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	iat := time.Unix(*cl.Iat, 0)
	p.Iat = iat
	now := s.clock.get()
	if now.Sub(iat) > time.Hour {
		return http.StatusForbidden, "ExpiredProviderToken"
	}
	if iat.Sub(now) > time.Minute {
		return http.StatusForbidden, "InvalidProviderToken"
	}
	s.jwtMu.Lock()
	defer s.jwtMu.Unlock()
	if jwt != s.lastJWT {
		if s.lastJWT != "" && iat.Sub(s.lastIat) < 20*time.Minute {
			return http.StatusTooManyRequests, "TooManyProviderTokenUpdates"
		}
		s.lastJWT, s.lastIat = jwt, iat
	}
	return 0, ""
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CertificatePEM returns the fake's TLS certificate in PEM, for a settings file's
// <TrustedCertificates>.
func (s *APNs) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}
