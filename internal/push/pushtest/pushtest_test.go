package pushtest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

// The fakes must be strict, or the push tests prove nothing: these check
// that they refuse what the real services refuse.

func apnsNotifier(t *testing.T, fake *pushtest.APNs, keyFile string) *push.APNs {
	t.Helper()
	a, err := push.NewAPNs(push.APNsOptions{
		Endpoint: fake.URL, SandboxEndpoint: fake.URL, KeyFile: keyFile,
		KeyID: fake.KeyID, TeamID: fake.TeamID, RootCAs: fake.RootCAs(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func apnsCall(topic string) push.Notification {
	return push.Notification{Kind: push.KindCall, Selector: "s", PairingID: "p",
		Device: push.Device{Platform: push.PlatformAPNs, PushToken: pushtest.TokenOK, AppID: topic}}
}

func TestAPNsFakeRefusesWhatAppleRefuses(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	otherKey, _ := pushtest.GenerateKey(t)
	res, _ := apnsNotifier(t, fake, otherKey).Send(context.Background(), apnsCall(fake.Topic))
	if res.Status != 403 || res.Reason != "InvalidProviderToken" {
		t.Errorf("JWT from another key: %+v", res)
	}
	a := apnsNotifier(t, fake, fake.KeyFile)
	if res, _ := a.Send(context.Background(), apnsCall("com.example.other")); res.Reason != "TopicDisallowed" {
		t.Errorf("foreign topic: %+v", res)
	}
	if _, err := a.Send(context.Background(), apnsCall(fake.Topic)); err != nil {
		t.Fatalf("good push refused: %v", err)
	}
	jwt := fake.Pushes()[2].JWT

	post := func(c *http.Client, mod func(h http.Header), body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, fake.URL+"/3/device/"+pushtest.TokenOK, strings.NewReader(body))
		req.Header.Set("authorization", "bearer "+jwt)
		req.Header.Set("apns-topic", fake.Topic+".voip")
		req.Header.Set("apns-push-type", "voip")
		mod(req.Header)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Reason string }
		json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r.Reason
	}
	h2 := fake.Client()
	for name, tc := range map[string]struct {
		mod    func(http.Header)
		body   string
		status int
		reason string
	}{
		"good":           {func(http.Header) {}, `{"aps":{}}`, 200, ""},
		"no auth":        {func(h http.Header) { h.Del("authorization") }, `{}`, 403, "MissingProviderToken"},
		"garbage JWT":    {func(h http.Header) { h.Set("authorization", "bearer a.b.c") }, `{}`, 403, "InvalidProviderToken"},
		"voip on alert":  {func(h http.Header) { h.Set("apns-topic", fake.Topic) }, `{}`, 400, "InvalidPushType"},
		"no topic":       {func(h http.Header) { h.Del("apns-topic") }, `{}`, 400, "MissingTopic"},
		"bad priority":   {func(h http.Header) { h.Set("apns-priority", "7") }, `{}`, 400, "BadPriority"},
		"bad expiration": {func(h http.Header) { h.Set("apns-expiration", "soon") }, `{}`, 400, "BadExpirationDate"},
		"bad apns-id":    {func(h http.Header) { h.Set("apns-id", "42") }, `{}`, 400, "BadMessageId"},
		"long collapse":  {func(h http.Header) { h.Set("apns-collapse-id", strings.Repeat("x", 65)) }, `{}`, 400, "BadCollapseId"},
		"empty payload":  {func(http.Header) {}, ``, 400, "PayloadEmpty"},
		"huge payload":   {func(http.Header) {}, `{"x":"` + strings.Repeat("a", 6000) + `"}`, 413, "PayloadTooLarge"},
	} {
		if st, reason := post(h2, tc.mod, tc.body); st != tc.status || reason != tc.reason {
			t.Errorf("%s: got %d %q, want %d %q", name, st, reason, tc.status, tc.reason)
		}
	}
	// HTTP/1.1 is refused (APNs speaks only HTTP/2).
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: fake.RootCAs()}}}
	defer h1.CloseIdleConnections()
	if st, reason := post(h1, func(http.Header) {}, `{}`); st != 400 || reason != "HTTP2Required" {
		t.Errorf("HTTP/1.1: got %d %q", st, reason)
	}
}

func TestFCMFakeChecksAuthAndData(t *testing.T) {
	fake := pushtest.NewFCM(t)
	c := fake.Client()
	send := func(auth, body string) int {
		req, _ := http.NewRequest(http.MethodPost, fake.URL+"/v1/projects/"+fake.ProjectID+"/messages:send", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := send("", `{"message":{"token":"x"}}`); st != 401 {
		t.Errorf("no bearer: %d", st)
	}
	if st := send("Bearer ya29.made-up", `{"message":{"token":"x"}}`); st != 401 {
		t.Errorf("unknown bearer: %d", st)
	}
	if n := len(fake.Messages()); n != 2 || fake.Messages()[0].Status != 401 {
		t.Errorf("refusals not recorded: %d", n)
	}
	// A real token from the fake's endpoint, through the notifier.
	f, err := push.NewFCM(push.FCMOptions{Endpoint: fake.URL, ServiceAccountJSON: fake.Account.JSON, HTTPClient: c})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := push.Notification{Kind: push.KindCall, Selector: "s", Device: push.Device{Platform: push.PlatformFCM, PushToken: "tok"}}
	if _, err := f.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	bearer := fake.Messages()[2].Header.Get("Authorization")
	if st := send(bearer, `{"message":{"token":"x","data":{"n":1}}}`); st != 400 {
		t.Errorf("non-string data: %d", st)
	}
	if st := send(bearer, `{"message":{"token":"x","android":{"ttl":"5 minutes"}}}`); st != 400 {
		t.Errorf("bad ttl: %d", st)
	}
	if st := send(bearer, `{"message":{"token":"x","data":{"n":"1"},"android":{"priority":"high","ttl":"0s"}}}`); st != 200 {
		t.Errorf("good message: %d", st)
	}
}

func TestWebhookFakeChecksTimestamp(t *testing.T) {
	const secret = "0123456789abcdef"
	recv := pushtest.NewWebhook(t, secret)
	body := []byte(`{"timestamp":100,"device":{"push_token":"t"}}`)
	for name, tc := range map[string]struct {
		ts     string
		status int
	}{
		"matching": {"100", 204},
		"stale":    {"99", 401},
		"missing":  {"", 401},
	} {
		req, _ := http.NewRequest(http.MethodPost, recv.URL, bytes.NewReader(body))
		req.Header.Set(push.WebhookSignatureHeader, push.Sign([]byte(secret), body))
		req.Header.Set(push.WebhookTimestampHeader, tc.ts)
		resp, err := recv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s timestamp: %d, want %d", name, resp.StatusCode, tc.status)
		}
	}
}
