package push_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

func newFCM(t testing.TB, fake *pushtest.FCM, mod func(*push.FCMOptions)) *push.FCM {
	t.Helper()
	o := push.FCMOptions{
		Endpoint:           fake.URL,
		ServiceAccountJSON: fake.Account.JSON,
		HTTPClient:         fake.Client(),
	}
	if mod != nil {
		mod(&o)
	}
	f, err := push.NewFCM(o)
	if err != nil {
		t.Fatalf("NewFCM: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFCMCallPush(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	res, err := f.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenOK, "org.example.softphone"))
	if err != nil || !res.Accepted || res.Status != 200 {
		t.Fatalf("Send = %+v, %v; want accepted", res, err)
	}
	if !strings.HasPrefix(res.ID, "projects/"+fake.ProjectID+"/messages/") {
		t.Errorf("Result.ID %q is not a message name", res.ID)
	}
	msgs := fake.Messages()
	if len(msgs) != 1 {
		t.Fatalf("fake got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.Proto != "HTTP/2.0" || m.Token != pushtest.TokenOK {
		t.Errorf("proto %q token %q", m.Proto, push.ShortToken(m.Token))
	}
	if m.Android.Priority != "high" || m.Android.TTL != "0s" || m.Android.CollapseKey != "pair-42" {
		t.Errorf("android %+v, want high priority, ttl 0s, collapse key", m.Android)
	}
	want := map[string]string{
		"kind": "call", "selector": "5e1ec7", "pairing_id": "pair-42", "caller_name": "Alice Example",
		"caller_uri": "sip:alice@example.org", "relay_address": "relay.example.net:5061", "token": "one-time-call-token",
	}
	if len(m.Data) != len(want) {
		t.Errorf("data %v", m.Data)
	}
	for k, v := range want {
		if m.Data[k] != v {
			t.Errorf("data %s = %q, want %q", k, m.Data[k], v)
		}
	}
	if !strings.HasPrefix(m.Header.Get("Authorization"), "Bearer ya29.fake-") {
		t.Errorf("authorization header not a fetched bearer token")
	}
}

func TestFCMMessageKeepsTTL(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, func(o *push.FCMOptions) { o.MessageTTL = time.Hour })
	n := call(push.PlatformFCM, pushtest.TokenOK, "")
	n.Kind, n.MessageText = push.KindMessage, "hello"
	if _, err := f.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	m := fake.Messages()[0]
	if m.Android.TTL != "3600s" || m.Android.CollapseKey != "" || m.Data["message_text"] != "hello" {
		t.Errorf("message: android %+v data %v", m.Android, m.Data)
	}
}

func TestFCMAccessTokenFetchedOnce(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			n := call(push.PlatformFCM, pushtest.TokenOK, "")
			n.PairingID = "pair-" + string(rune('a'+i))
			if _, err := f.Send(context.Background(), n); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(fake.Messages()); got != 20 {
		t.Errorf("fake got %d messages, want 20", got)
	}
	if n := fake.TokenRequests(); n != 1 {
		t.Errorf("access token fetched %d times for 20 sends, want 1", n)
	}
}

func TestFCMRevokedTokenIsReplaced(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, f)
	n := call(push.PlatformFCM, pushtest.TokenOK, "")
	if _, err := d.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	res, err := d.Send(context.Background(), n)
	if err != nil || res.Attempts != 2 {
		t.Fatalf("Send after revocation = %+v, %v; want accepted on attempt 2", res, err)
	}
	if n := fake.TokenRequests(); n != 2 {
		t.Errorf("token requests %d, want 2", n)
	}
}

func TestFCMDeadTokenNotRetried(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	var waits []time.Duration
	d := quickDispatcher(newFakeClock(), &waits, f)
	for _, tc := range []struct {
		token  string
		status int
	}{
		{pushtest.TokenUnregistered, http.StatusNotFound},
		{pushtest.TokenBad, http.StatusBadRequest},
	} {
		before := len(fake.Messages())
		res, err := d.Send(context.Background(), call(push.PlatformFCM, tc.token, ""))
		if !errors.Is(err, push.ErrTokenInvalid) || !res.TokenInvalid || res.Attempts != 1 || res.Status != tc.status {
			t.Errorf("%d: Send = %+v, %v; want TokenInvalid after 1 attempt", tc.status, res, err)
		}
		if got := len(fake.Messages()) - before; got != 1 {
			t.Errorf("%d: fake got %d messages, want 1", tc.status, got)
		}
	}
	// INVALID_ARGUMENT about something other than the token is our
	// fault, not the device's.
	fake.Script(pushtest.TokenOK, pushtest.Reply{Status: 400, Reason: "UNSPECIFIED_ERROR"})
	res, err := d.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenOK, ""))
	if err == nil || res.TokenInvalid || res.Retryable {
		t.Errorf("other 400: %+v, %v", res, err)
	}
	if len(waits) != 0 {
		t.Errorf("dispatcher waited %v", waits)
	}
}

func TestFCMBusyThenAcceptedAndBroken(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, f)
	res, err := d.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenBusyOnce, ""))
	if err != nil || res.Attempts != 2 {
		t.Fatalf("busy: %+v, %v; want accepted on attempt 2", res, err)
	}
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(time.Second))
	defer cancel()
	res, err = d.Send(ctx, call(push.PlatformFCM, pushtest.TokenBroken, ""))
	if err == nil || !res.Retryable || res.Status != 500 || res.Attempts < 2 || !strings.Contains(err.Error(), "INTERNAL") {
		t.Fatalf("broken: %+v, %v", res, err)
	}
}

func TestFCMTokenURLOverrideAndFile(t *testing.T) {
	fake := pushtest.NewFCM(t)
	js := bytes.Replace(fake.Account.JSON, []byte(fake.TokenURL), []byte("https://oauth2.invalid/token"), 1)
	file := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(file, js, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFCM(t, fake, func(o *push.FCMOptions) {
		o.ServiceAccountJSON, o.ServiceAccountFile, o.TokenURL = nil, file, fake.TokenURL
	})
	if _, err := f.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenOK, "")); err != nil {
		t.Fatal(err)
	}
	if fake.TokenRequests() != 1 {
		t.Errorf("token endpoint not used")
	}
}

func TestFCMForeignServiceAccountRefused(t *testing.T) {
	fake := pushtest.NewFCM(t)
	other := pushtest.NewServiceAccount(t, fake.ProjectID, fake.TokenURL)
	f := newFCM(t, fake, func(o *push.FCMOptions) { o.ServiceAccountJSON = other.JSON })
	res, err := f.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenOK, ""))
	if err == nil || res.Retryable || res.Status != 400 || !strings.Contains(err.Error(), "access token") {
		t.Fatalf("Send = %+v, %v; want a non-retryable token failure", res, err)
	}
	if len(fake.Messages()) != 0 {
		t.Error("a message was sent without an access token")
	}
}

func TestNewFCMRejectsBadOptions(t *testing.T) {
	fake := pushtest.NewFCM(t)
	good := fake.Account.JSON
	for name, tc := range map[string]struct {
		o    push.FCMOptions
		want string
	}{
		"nothing":      {push.FCMOptions{}, "ServiceAccountJSON"},
		"missing file": {push.FCMOptions{ServiceAccountFile: filepath.Join(t.TempDir(), "none.json")}, "none.json"},
		"not JSON":     {push.FCMOptions{ServiceAccountJSON: []byte("{")}, "not JSON"},
		"wrong type":   {push.FCMOptions{ServiceAccountJSON: []byte(`{"type":"authorized_user"}`)}, "authorized_user"},
		"no project":   {push.FCMOptions{ServiceAccountJSON: bytes.Replace(good, []byte(`"sipis-test"`), []byte(`""`), 1)}, "project id"},
		"bad project":  {push.FCMOptions{ServiceAccountJSON: good, ProjectID: "a/b"}, `"a/b"`},
		"bad endpoint": {push.FCMOptions{ServiceAccountJSON: good, Endpoint: "ftp://x"}, "Endpoint"},
		"bad tokenURL": {push.FCMOptions{ServiceAccountJSON: good, TokenURL: "nope"}, "TokenURL"},
		"bad TTL":      {push.FCMOptions{ServiceAccountJSON: good, MessageTTL: -time.Second}, "MessageTTL"},
	} {
		if _, err := push.NewFCM(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewFCM error %v, want one naming %q", name, err, tc.want)
		}
	}
}

func TestFCMSlowTokenEndpointHonoursContext(t *testing.T) {
	fake := pushtest.NewFCM(t)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
	}))
	defer slow.Close()
	defer close(release)
	f := newFCM(t, fake, func(o *push.FCMOptions) { o.TokenURL = slow.URL + "/token" })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := f.Send(ctx, call(push.PlatformFCM, pushtest.TokenOK, ""))
	if !errors.Is(err, context.DeadlineExceeded) || res.Accepted {
		t.Fatalf("Send = %+v, %v; want the context's deadline", res, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Send took %v with a 100ms deadline", el)
	}
}
