package push_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

const hookSecret = "0123456789abcdef-webhook-secret"

func newWebhook(t testing.TB, url, secret string, now func() time.Time) *push.Webhook {
	t.Helper()
	w, err := push.NewWebhook(push.WebhookOptions{URL: url, Secret: secret, Now: now})
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestWebhookSignedDelivery(t *testing.T) {
	recv := pushtest.NewWebhook(t, hookSecret)
	clk := newFakeClock()
	w := newWebhook(t, recv.URL, hookSecret, clk.Now)
	n := call(push.PlatformWebhook, "self-hosted:device-77", "org.example.softphone")
	res, err := w.Send(context.Background(), n)
	if err != nil || !res.Accepted || res.Status != 204 {
		t.Fatalf("Send = %+v, %v; want accepted", res, err)
	}
	ds := recv.Deliveries()
	if len(ds) != 1 || !ds[0].SignatureValid {
		t.Fatalf("receiver got %d deliveries, signature valid: %v", len(ds), len(ds) == 1 && ds[0].SignatureValid)
	}
	d := ds[0]
	sig := d.Header.Get(push.WebhookSignatureHeader)
	if !strings.HasPrefix(sig, "sha256=") || !push.VerifySignature([]byte(hookSecret), d.Body, sig) {
		t.Errorf("signature %q does not verify", sig)
	}
	if push.VerifySignature([]byte("another secret entirely"), d.Body, sig) {
		t.Error("signature verifies under another secret")
	}
	if ts := d.Header.Get(push.WebhookTimestampHeader); ts != strconv.FormatInt(clk.Now().Unix(), 10) {
		t.Errorf("timestamp header %q, want %d", ts, clk.Now().Unix())
	}
	dev, _ := d.Fields["device"].(map[string]any)
	if d.Fields["kind"] != "call" || d.Fields["token"] != "one-time-call-token" || dev["push_token"] != "self-hosted:device-77" {
		t.Errorf("body %s", d.Body)
	}
	if strings.Contains(string(d.Body), hookSecret) {
		t.Error("body carries the webhook secret")
	}
}

func TestWebhookWrongSecretDetected(t *testing.T) {
	recv := pushtest.NewWebhook(t, hookSecret)
	w := newWebhook(t, recv.URL, "a-different-secret-of-16+", nil)
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, w)
	res, err := d.Send(context.Background(), call(push.PlatformWebhook, pushtest.TokenOK, ""))
	if err == nil || res.Accepted || res.Retryable || res.TokenInvalid || res.Status != 401 || res.Attempts != 1 {
		t.Fatalf("Send = %+v, %v; want a plain 401 failure", res, err)
	}
	if ds := recv.Deliveries(); len(ds) != 1 || ds[0].SignatureValid {
		t.Fatal("receiver did not flag the wrong signature")
	}
	if res.Reason != "bad signature" {
		t.Errorf("reason %q", res.Reason)
	}
}

func TestWebhookOutcomes(t *testing.T) {
	recv := pushtest.NewWebhook(t, hookSecret)
	w := newWebhook(t, recv.URL, hookSecret, nil)
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, w)

	res, err := d.Send(context.Background(), call(push.PlatformWebhook, pushtest.TokenUnregistered, ""))
	if !errors.Is(err, push.ErrTokenInvalid) || res.Attempts != 1 || res.Status != 410 {
		t.Errorf("410: %+v, %v", res, err)
	}
	res, err = d.Send(context.Background(), call(push.PlatformWebhook, pushtest.TokenBusyOnce, ""))
	if err != nil || res.Attempts != 2 {
		t.Errorf("429 then 2xx: %+v, %v", res, err)
	}
	recv.Script(pushtest.TokenOK, pushtest.Reply{Status: 503, RetryAfter: "2"}, pushtest.Reply{})
	waits = waits[:0]
	res, err = d.Send(context.Background(), call(push.PlatformWebhook, pushtest.TokenOK, ""))
	if err != nil || res.Attempts != 2 || len(waits) != 1 || waits[0] != 2*time.Second {
		t.Errorf("503 Retry-After 2: %+v, %v, waits %v", res, err, waits)
	}
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Second))
	defer cancel()
	res, err = d.Send(ctx, call(push.PlatformWebhook, pushtest.TokenBroken, ""))
	if err == nil || !res.Retryable || res.Status != 500 {
		t.Errorf("500: %+v, %v", res, err)
	}
}

func TestNewWebhookRejectsBadOptions(t *testing.T) {
	for name, tc := range map[string]struct {
		o    push.WebhookOptions
		want string
	}{
		"no URL":       {push.WebhookOptions{Secret: hookSecret}, "URL"},
		"ftp URL":      {push.WebhookOptions{URL: "ftp://example.org/", Secret: hookSecret}, `scheme "ftp"`},
		"short secret": {push.WebhookOptions{URL: "https://example.org/", Secret: "short"}, "Secret"},
	} {
		if _, err := push.NewWebhook(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewWebhook error %v, want one naming %q", name, err, tc.want)
		}
	}
}

func TestWebhookURLNeverInErrors(t *testing.T) {
	const secretPath = "/hook/tok-3f9a7c"
	if _, err := push.NewWebhook(push.WebhookOptions{URL: "ftp://example.com" + secretPath, Secret: "0123456789abcdef"}); err == nil ||
		strings.Contains(err.Error(), "tok-3f9a7c") {
		t.Errorf("constructor error %v", err)
	}
	// Nothing listens on this port: a transport error, whose net/http text holds the URL.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	w, err := push.NewWebhook(push.WebhookOptions{URL: "http://" + addr + secretPath, Secret: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.Send(context.Background(), push.Notification{Kind: push.KindTest, Selector: "abcdef12",
		Device: push.Device{ID: "d", Platform: push.PlatformWebhook, PushToken: "tok"}})
	if err == nil || strings.Contains(err.Error(), "tok-3f9a7c") {
		t.Errorf("send error %v", err)
	}
}
