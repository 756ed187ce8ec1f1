package push_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

// newAPNs returns a notifier pointed at fake for both environments.
func newAPNs(t testing.TB, fake *pushtest.APNs, mod func(*push.APNsOptions)) *push.APNs {
	t.Helper()
	o := push.APNsOptions{
		Endpoint:        fake.URL,
		SandboxEndpoint: fake.URL,
		KeyFile:         fake.KeyFile,
		KeyID:           fake.KeyID,
		TeamID:          fake.TeamID,
		RootCAs:         fake.RootCAs(),
	}
	if mod != nil {
		mod(&o)
	}
	a, err := push.NewAPNs(o)
	if err != nil {
		t.Fatalf("NewAPNs: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestAPNsCallPush(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)

	res, err := a.Send(context.Background(), n)
	if err != nil || !res.Accepted || res.Status != http.StatusOK {
		t.Fatalf("Send = %+v, %v; want accepted", res, err)
	}
	got := fake.Pushes()
	if len(got) != 1 {
		t.Fatalf("fake got %d pushes, want 1", len(got))
	}
	p := got[0]
	if p.Proto != "HTTP/2.0" {
		t.Errorf("protocol %q, want HTTP/2.0", p.Proto)
	}
	if p.Token != pushtest.TokenOK {
		t.Errorf("path token %q", p.Token)
	}
	if res.ID == "" || res.ID != p.Header.Get("apns-id") {
		t.Errorf("Result.ID %q, request apns-id %q", res.ID, p.Header.Get("apns-id"))
	}
	for k, want := range map[string]string{
		"apns-topic":       fake.Topic + ".voip",
		"apns-push-type":   "voip",
		"apns-priority":    "10",
		"apns-expiration":  "0",
		"apns-collapse-id": "pair-42",
		"content-type":     "application/json",
	} {
		if v := p.Header.Get(k); v != want {
			t.Errorf("header %s = %q, want %q", k, v, want)
		}
	}
	for k, want := range map[string]string{
		"kind":          "call",
		"selector":      "5e1ec7",
		"pairing_id":    "pair-42",
		"caller_name":   "Alice Example",
		"caller_uri":    "sip:alice@example.org",
		"relay_address": "relay.example.net:5061",
		"token":         "one-time-call-token",
	} {
		if v, _ := p.Payload[k].(string); v != want {
			t.Errorf("payload %s = %q, want %q", k, v, want)
		}
	}
	if _, ok := p.Payload["aps"].(map[string]any); !ok {
		t.Errorf("payload has no aps dictionary: %s", p.Body)
	}
	if _, ok := p.Payload["message_text"]; ok {
		t.Errorf("call payload carries message_text: %s", p.Body)
	}
	verifyJWT(t, p.JWT, fake)
}

// verifyJWT checks the provider token independently of the fake.
func verifyJWT(t *testing.T, jwt string, fake *pushtest.APNs) {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("JWT has %d parts", len(parts))
	}
	var hdr, claims map[string]any
	for i, v := range []*map[string]any{&hdr, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("JWT segment %d: %v", i, err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("JWT segment %d: %v", i, err)
		}
	}
	if hdr["alg"] != "ES256" || hdr["kid"] != fake.KeyID {
		t.Errorf("JWT header %v", hdr)
	}
	if claims["iss"] != fake.TeamID {
		t.Errorf("JWT iss %v, want %s", claims["iss"], fake.TeamID)
	}
	if iat, ok := claims["iat"].(float64); !ok || time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute {
		t.Errorf("JWT iat %v is not now", claims["iat"])
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("JWT signature: %d bytes, %v", len(sig), err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&fake.Key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("JWT signature does not verify with the key's public half")
	}
}

func TestAPNsMessageAndTestPush(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	clk := newFakeClock()
	fake.SetNow(clk.Now)
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Now = clk.Now })

	n := notice(push.KindMessage, push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	n.MessageText = "see you at 8"
	if _, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("message: %v", err)
	}
	n.Kind, n.MessageText = push.KindTest, ""
	if _, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("test push: %v", err)
	}
	got := fake.Pushes()
	if len(got) != 2 {
		t.Fatalf("fake got %d pushes", len(got))
	}
	wantExp := strconv.FormatInt(clk.Now().Add(push.DefaultAPNsMessageTTL).Unix(), 10)
	for i, p := range got {
		for k, want := range map[string]string{
			"apns-topic":       fake.Topic,
			"apns-push-type":   "alert",
			"apns-priority":    "10",
			"apns-expiration":  wantExp,
			"apns-collapse-id": "",
		} {
			if v := p.Header.Get(k); v != want {
				t.Errorf("push %d: header %s = %q, want %q", i, k, v, want)
			}
		}
		aps, _ := p.Payload["aps"].(map[string]any)
		if _, ok := aps["alert"].(map[string]any); !ok {
			t.Errorf("push %d: no aps.alert: %s", i, p.Body)
		}
	}
	alert := got[0].Payload["aps"].(map[string]any)["alert"].(map[string]any)
	if alert["body"] != "see you at 8" || alert["title"] != "Alice Example" {
		t.Errorf("message alert %v", alert)
	}
	if got[0].Payload["message_text"] != "see you at 8" || got[0].Payload["kind"] != "message" {
		t.Errorf("message payload %s", got[0].Body)
	}
}

func TestAPNsLongMessageIsShortened(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	n := notice(push.KindMessage, push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	n.MessageText = strings.Repeat("é\"", 3000)
	if res, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("Send = %+v, %v", res, err)
	}
	p := fake.Pushes()[0]
	if len(p.Body) > 4096 {
		t.Errorf("payload is %d bytes", len(p.Body))
	}
	if txt, _ := p.Payload["message_text"].(string); !strings.HasSuffix(txt, "…") || len(txt) < 500 {
		t.Errorf("message text not shortened sensibly: %d bytes", len(txt))
	}
}

func TestAPNsJWTReusedThenRefreshed(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	clk := newFakeClock()
	fake.SetNow(clk.Now)
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Now = clk.Now })
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	send := func() string {
		t.Helper()
		if res, err := a.Send(context.Background(), n); err != nil {
			t.Fatalf("Send = %+v, %v", res, err)
		}
		ps := fake.Pushes()
		return ps[len(ps)-1].JWT
	}

	first := send()
	for range 3 {
		if got := send(); got != first {
			t.Fatal("JWT changed between pushes made at the same time")
		}
	}
	clk.Advance(49 * time.Minute)
	if got := send(); got != first {
		t.Fatal("JWT refreshed before 50 minutes")
	}
	clk.Advance(2 * time.Minute)
	second := send()
	if second == first {
		t.Fatal("JWT not refreshed after 51 minutes")
	}
	ps := fake.Pushes()
	if iat := ps[len(ps)-1].Iat; !iat.Equal(clk.Now().Truncate(time.Second)) {
		t.Errorf("new JWT iat %v, want %v", iat, clk.Now())
	}
	clk.Advance(time.Minute)
	if got := send(); got != second {
		t.Fatal("refreshed JWT not reused")
	}
}

func TestAPNsExpiredProviderTokenRefreshesOnce(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	clk := newFakeClock()
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Now = clk.Now })
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	if _, err := a.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	// The service's clock runs 61 minutes ahead: it calls our JWT
	// expired. We have held it only 30 minutes, so we sign a new one.
	clk.Advance(30 * time.Minute)
	fake.SetNow(func() time.Time { return clk.Now().Add(31 * time.Minute) })
	res, err := a.Send(context.Background(), n)
	if err == nil || res.Status != http.StatusForbidden || res.Reason != "ExpiredProviderToken" || !res.Retryable {
		t.Fatalf("Send = %+v, %v; want retryable 403 ExpiredProviderToken", res, err)
	}
	fake.SetNow(clk.Now)
	if res, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("after refresh: %+v, %v", res, err)
	}
	ps := fake.Pushes()
	if ps[2].JWT == ps[0].JWT {
		t.Error("JWT not replaced after ExpiredProviderToken")
	}
}

func TestAPNsDeadTokenNotRetried(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, a)
	for _, tc := range []struct {
		token, reason string
		status        int
	}{
		{pushtest.TokenUnregistered, "Unregistered", http.StatusGone},
		{pushtest.TokenBad, "BadDeviceToken", http.StatusBadRequest},
	} {
		fake.Reset()
		res, err := d.Send(context.Background(), call(push.PlatformAPNs, tc.token, fake.Topic))
		if !errors.Is(err, push.ErrTokenInvalid) || !res.TokenInvalid || res.Accepted || res.Retryable {
			t.Errorf("%s: Send = %+v, %v; want TokenInvalid", tc.reason, res, err)
		}
		if res.Status != tc.status || res.Reason != tc.reason || res.Attempts != 1 {
			t.Errorf("%s: status %d reason %q attempts %d", tc.reason, res.Status, res.Reason, res.Attempts)
		}
		if n := len(fake.Pushes()); n != 1 {
			t.Errorf("%s: fake got %d pushes, want 1", tc.reason, n)
		}
	}
	// A topic mismatch is a configuration error that keeps the token (a
	// VoIP token sent to the bundle topic, or the reverse), and so are the
	// other refusals of sipis's or the app's set-up; they are not retried.
	for _, tc := range []struct {
		status int
		reason string
	}{
		{400, "DeviceTokenNotForTopic"}, {400, "TopicDisallowed"}, {400, "BadTopic"},
		{403, "BadCertificateEnvironment"}, {403, "InvalidProviderToken"},
	} {
		fake.Script(pushtest.TokenOK, pushtest.Reply{Status: tc.status, Reason: tc.reason})
		res, err := d.Send(context.Background(), call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic))
		if res.TokenInvalid || !res.ConfigError || errors.Is(err, push.ErrTokenInvalid) || res.Attempts != 1 || res.Reason != tc.reason {
			t.Errorf("%s: %+v, %v; want a configuration error, token kept", tc.reason, res, err)
		}
	}
	fake.Script(pushtest.TokenOK, pushtest.Reply{Status: 400, Reason: "BadPriority"})
	res, err := d.Send(context.Background(), call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic))
	if err == nil || res.TokenInvalid || res.Retryable || res.Attempts != 1 || !strings.Contains(err.Error(), "BadPriority") {
		t.Errorf("BadPriority: %+v, %v", res, err)
	}
	if len(waits) != 0 {
		t.Errorf("dispatcher waited %v for failures not worth retrying", waits)
	}
}

func TestAPNsBusyThenAccepted(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, a)
	res, err := d.Send(context.Background(), call(push.PlatformAPNs, pushtest.TokenBusyOnce, fake.Topic))
	if err != nil || !res.Accepted || res.Attempts != 2 {
		t.Fatalf("Send = %+v, %v; want accepted on attempt 2", res, err)
	}
	ps := fake.Pushes()
	if len(ps) != 2 || ps[0].Status != 429 || ps[1].Status != 200 {
		t.Fatalf("fake saw %d pushes", len(ps))
	}
	if len(waits) != 1 || waits[0] < push.DefaultMinBackoff/2 || waits[0] > push.DefaultMinBackoff {
		t.Errorf("waits %v, want one within the first backoff step", waits)
	}
}

func TestAPNsRetryAfterHonoured(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	fake.Script(pushtest.TokenOK,
		pushtest.Reply{Status: 503, Reason: "ServiceUnavailable", RetryAfter: "7"},
		pushtest.Reply{})
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, a)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := d.Send(ctx, call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic))
	if err != nil || res.Attempts != 2 {
		t.Fatalf("Send = %+v, %v", res, err)
	}
	if len(waits) != 1 || waits[0] != 7*time.Second {
		t.Errorf("waits %v, want [7s] from Retry-After", waits)
	}
}

func TestAPNsServerErrorBeyondDeadline(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, a)
	d.MaxAttempts = 100
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(2*time.Second))
	defer cancel()
	start := clk.Now()
	res, err := d.Send(ctx, call(push.PlatformAPNs, pushtest.TokenBroken, fake.Topic))
	if err == nil || res.Accepted || !res.Retryable || res.Status != 500 {
		t.Fatalf("Send = %+v, %v; want a retryable 500 failure", res, err)
	}
	if res.Attempts < 3 || res.Attempts != len(fake.Pushes()) || len(waits) != res.Attempts-1 {
		t.Errorf("attempts %d, pushes %d, waits %v", res.Attempts, len(fake.Pushes()), waits)
	}
	if spent := clk.Now().Sub(start); spent > 2*time.Second {
		t.Errorf("retries ran %v past a 2s deadline", spent)
	}
	if !strings.Contains(err.Error(), "500") {
		t.Errorf("error %q does not name the status", err)
	}
}

func TestAPNsServerErrorRealDeadline(t *testing.T) {
	// The same with the real clock: the dispatcher must give up by itself
	// before a short deadline rather than run into it.
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	d := push.NewDispatcher(a)
	d.MinBackoff = 20 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := d.Send(ctx, call(push.PlatformAPNs, pushtest.TokenBroken, fake.Topic))
	if err == nil || res.Status != 500 || res.Attempts < 2 {
		t.Fatalf("Send = %+v, %v", res, err)
	}
	if el := time.Since(start); el > 400*time.Millisecond {
		t.Errorf("Send took %v with a 300ms deadline", el)
	}
}

func TestAPNsSandboxEndpoint(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	var prodHits atomic.Int32
	prod := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prodHits.Add(1)
	}))
	prod.EnableHTTP2 = true
	prod.StartTLS()
	defer prod.Close()
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Endpoint = prod.URL })
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	n.Device.Sandbox = true
	if res, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("sandbox send: %+v, %v", res, err)
	}
	if len(fake.Pushes()) != 1 || prodHits.Load() != 0 {
		t.Errorf("sandbox push went to production (%d) instead of sandbox (%d)", prodHits.Load(), len(fake.Pushes()))
	}
	n.Device.Sandbox = false
	if _, err := a.Send(context.Background(), n); err != nil {
		t.Fatalf("production send: %v", err)
	}
	if prodHits.Load() != 1 {
		t.Errorf("production endpoint got %d pushes, want 1", prodHits.Load())
	}
	a.Close()
}

func TestAPNsBadNotification(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	good := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	for name, tc := range map[string]struct {
		mod  func(*push.Notification)
		want string
	}{
		"non-hex token":  {func(n *push.Notification) { n.Device.PushToken = "zz/../x" }, "not hexadecimal"},
		"empty token":    {func(n *push.Notification) { n.Device.PushToken = "" }, "no token"},
		"alert only":     {func(n *push.Notification) { n.Device.PushToken, n.Device.AlertToken = "", pushtest.TokenOK }, "no token"},
		"no app id":      {func(n *push.Notification) { n.Device.AppID = "" }, "app id"},
		"wrong platform": {func(n *push.Notification) { n.Device.Platform = "fcm" }, `platform "fcm"`},
		"unknown kind":   {func(n *push.Notification) { n.Kind = "ring" }, `kind "ring"`},
	} {
		n := good
		tc.mod(&n)
		res, err := a.Send(context.Background(), n)
		if err == nil || res.Accepted || res.Retryable || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Send = %+v, %v; want error naming %q", name, res, err, tc.want)
		}
	}
	if n := len(fake.Pushes()); n != 0 {
		t.Errorf("bad notifications reached the service: %d", n)
	}
}

func TestNewAPNsRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	keyFile, _ := pushtest.GenerateKey(t)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	rsaFile := filepath.Join(dir, "rsa.p8")
	os.WriteFile(rsaFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	junkFile := filepath.Join(dir, "junk.p8")
	os.WriteFile(junkFile, []byte("not a key"), 0o600)

	base := push.APNsOptions{KeyFile: keyFile, KeyID: "ABC123DEFG", TeamID: "DEF123GHIJ"}
	for name, tc := range map[string]struct {
		mod  func(*push.APNsOptions)
		want string
	}{
		"missing file": {func(o *push.APNsOptions) { o.KeyFile = filepath.Join(dir, "nope.p8") }, "nope.p8"},
		"no key":       {func(o *push.APNsOptions) { o.KeyFile = "" }, "KeyFile"},
		"not PEM":      {func(o *push.APNsOptions) { o.KeyFile = junkFile }, "junk.p8"},
		"RSA key":      {func(o *push.APNsOptions) { o.KeyFile = rsaFile }, "P-256"},
		"P-384 key": {func(o *push.APNsOptions) {
			o.KeyFile, o.Key = "", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der384})
		}, "P-256"},
		"EC PEM type": {func(o *push.APNsOptions) {
			o.KeyFile, o.Key = "", []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
		}, "EC PRIVATE KEY"},
		"empty KeyID":   {func(o *push.APNsOptions) { o.KeyID = "" }, "KeyID"},
		"spaced TeamID": {func(o *push.APNsOptions) { o.TeamID = "A B" }, "TeamID"},
		"http endpoint": {func(o *push.APNsOptions) { o.Endpoint = "http://api.push.apple.com" }, "Endpoint"},
		"bad sandbox":   {func(o *push.APNsOptions) { o.SandboxEndpoint = "::" }, "SandboxEndpoint"},
		"short refresh": {func(o *push.APNsOptions) { o.TokenRefresh = time.Minute }, "TokenRefresh"},
		"long refresh":  {func(o *push.APNsOptions) { o.TokenRefresh = 2 * time.Hour }, "TokenRefresh"},
		"negative TTL":  {func(o *push.APNsOptions) { o.MessageTTL = -time.Second }, "MessageTTL"},
	} {
		o := base
		tc.mod(&o)
		if _, err := push.NewAPNs(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewAPNs error %v, want one naming %q", name, err, tc.want)
		}
	}
	if _, err := push.NewAPNs(base); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	lg, hook := logtest.NewNullLogger()
	lg.SetLevel(logrus.DebugLevel)
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Logger = lg })
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, a)
	d.Logger = lg
	for _, tok := range []string{pushtest.TokenOK, pushtest.TokenBusyOnce, pushtest.TokenUnregistered, pushtest.TokenBroken} {
		n := notice(push.KindMessage, push.PlatformAPNs, tok, fake.Topic)
		n.MessageText = "the secret text"
		d.Send(context.Background(), n)
	}
	key, _ := os.ReadFile(fake.KeyFile)
	jwt := fake.Pushes()[0].JWT
	if len(hook.AllEntries()) == 0 {
		t.Fatal("nothing was logged")
	}
	for _, e := range hook.AllEntries() {
		line, _ := e.String()
		for _, secret := range []string{pushtest.TokenOK, pushtest.TokenBusyOnce, pushtest.TokenUnregistered, pushtest.TokenBroken, "the secret text", jwt, "one-time-call-token"} {
			if strings.Contains(line, secret) {
				t.Errorf("log line holds a secret %q: %s", push.ShortToken(secret), line)
			}
		}
		if bytes.Contains([]byte(line), key[30:60]) {
			t.Errorf("log line holds the key: %s", line)
		}
	}
}
