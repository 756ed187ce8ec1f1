package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

const (
	voipTok  = "9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e"
	alertTok = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
)

// iphone returns a notification to an iPhone with both of its tokens.
func iphone(k push.Kind, topic string) push.Notification {
	n := call(push.PlatformAPNs, voipTok, topic)
	n.Kind, n.Device.AlertToken = k, alertTok
	if k != push.KindCall {
		n.RelayAddress, n.Token = "", ""
	}
	return n
}

// Every kind goes to the token, topic, push type, priority and expiration
// Apple's rules ask for, and the fake, which binds each token to its topic
// as APNs does, accepts them all.
func TestAPNsKindsRoute(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	fake.BindVoIPToken(voipTok)
	fake.BindAlertToken(alertTok)
	clk := newFakeClock()
	fake.SetNow(clk.Now)
	a := newAPNs(t, fake, func(o *push.APNsOptions) { o.Now = clk.Now })
	d := quickDispatcher(clk, new([]time.Duration), a)
	keep := strconv.FormatInt(clk.Now().Add(push.DefaultAPNsMessageTTL).Unix(), 10)
	for _, tc := range []struct {
		kind                                   push.Kind
		silent                                 bool
		token, topic, pushType, prio, exp, aps string
	}{
		{push.KindCall, false, voipTok, fake.Topic + ".voip", "voip", "10", "0", "{}"},
		{push.KindMissedCall, false, alertTok, fake.Topic, "alert", "10", keep, "alert"},
		{push.KindAnsweredElsewhere, false, alertTok, fake.Topic, "alert", "5", keep, "alert"},
		{push.KindMessage, false, alertTok, fake.Topic, "alert", "10", keep, "alert"},
		{push.KindTest, false, alertTok, fake.Topic, "alert", "10", keep, "alert"},
		{push.KindExpiry, false, alertTok, fake.Topic, "alert", "10", keep, "alert"},
		{push.KindExpiry, true, alertTok, fake.Topic, "background", "5", keep, "content-available"},
		{push.KindOff, false, alertTok, fake.Topic, "alert", "10", keep, "alert"},
	} {
		fake.Reset()
		n := iphone(tc.kind, fake.Topic)
		n.Silent = tc.silent
		n.CallID = "call-1@example.org"
		if _, err := d.Send(context.Background(), n); err != nil {
			t.Errorf("%s silent=%v: %v", tc.kind, tc.silent, err)
			continue
		}
		p := fake.Pushes()[0]
		got := []string{p.Token, p.Header.Get("apns-topic"), p.Header.Get("apns-push-type"), p.Header.Get("apns-priority"), p.Header.Get("apns-expiration")}
		want := []string{tc.token, tc.topic, tc.pushType, tc.prio, tc.exp}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s silent=%v: token/topic/type/priority/expiration %q, want %q", tc.kind, tc.silent, got, want)
		}
		aps, _ := p.Payload["aps"].(map[string]any)
		switch tc.aps {
		case "{}":
			if len(aps) != 0 {
				t.Errorf("%s: VoIP push with aps %v", tc.kind, aps)
			}
		case "content-available":
			if aps["content-available"] != float64(1) || len(aps) != 1 {
				t.Errorf("%s silent: aps %v, want only content-available 1", tc.kind, aps)
			}
		default:
			if _, ok := aps["alert"].(map[string]any); !ok {
				t.Errorf("%s: no alert in %s", tc.kind, p.Body)
			}
		}
		if p.Payload["kind"] != string(tc.kind) || p.Payload["call_id"] != "call-1@example.org" || p.Payload["sent_at"] == nil {
			t.Errorf("%s: payload misses kind, call_id or sent_at: %s", tc.kind, p.Body)
		}
	}
}

// The bug of the issue: a message sent with the VoIP token. An iPhone with
// only a VoIP token gets no message push at all (and keeps its token); the
// fake refuses a VoIP token on the bundle topic as APNs does, and sipis
// calls that a configuration error, never a dead token.
func TestAPNsTokenBoundToTopic(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	fake.BindVoIPToken(voipTok)
	a := newAPNs(t, fake, nil)
	d := quickDispatcher(newFakeClock(), new([]time.Duration), a)
	n := call(push.PlatformAPNs, voipTok, fake.Topic)
	n.Kind = push.KindMessage
	if _, err := d.Send(context.Background(), n); !errors.Is(err, push.ErrNoToken) {
		t.Fatalf("message to a VoIP-only device: %v, want ErrNoToken", err)
	}
	if len(fake.Pushes()) != 0 {
		t.Fatal("a message push went out with the VoIP token")
	}
	// An app that sends its VoIP token as its alert token (a bug in the app)
	// gets the answer APNs gives, counted as a configuration error.
	n.Device.AlertToken = voipTok
	var probs push.Problems
	d.Problems = &probs
	res, err := d.Send(context.Background(), n)
	if res.TokenInvalid || !res.ConfigError || res.Reason != "DeviceTokenNotForTopic" || err == nil {
		t.Fatalf("VoIP token on the bundle topic: %+v, %v", res, err)
	}
	if got := probs.For(n.Selector); len(got) != 1 || got[0].Reason != "DeviceTokenNotForTopic" || got[0].Platform != "apns" {
		t.Errorf("problems of the selector: %+v", got)
	}
	// The call still goes through on the VoIP token.
	if _, err := d.Send(context.Background(), call(push.PlatformAPNs, voipTok, fake.Topic)); err != nil {
		t.Errorf("call after the refused message: %v", err)
	}
	// And the reverse: an alert token is refused on the .voip topic.
	fake.BindAlertToken(alertTok)
	res, _ = d.Send(context.Background(), call(push.PlatformAPNs, alertTok, fake.Topic))
	if res.Reason != "DeviceTokenNotForTopic" || !res.ConfigError {
		t.Errorf("alert token on the .voip topic: %+v", res)
	}
}

// A configuration error is counted every time but logged once per
// selector and reason.
func TestProblemsLoggedOnce(t *testing.T) {
	lg, hook := logtest.NewNullLogger()
	var p push.Problems
	for range 3 {
		p.Note(lg, "5e1ec7", "apns", "BadCertificateEnvironment")
	}
	p.Note(lg, "5e1ec7", "apns", "TopicDisallowed")
	p.Note(lg, "0the4", "apns", "BadCertificateEnvironment")
	if n := len(hook.AllEntries()); n != 3 {
		t.Errorf("%d log entries, want 3 (one per selector and reason)", n)
	}
	for _, e := range hook.AllEntries() {
		if e.Level != logrus.ErrorLevel || e.Data["reason"] == nil || e.Data["selector"] == nil {
			t.Errorf("entry %v %v", e.Level, e.Data)
		}
	}
	tot := p.Totals()
	if len(tot) != 2 || tot[0].Reason != "BadCertificateEnvironment" || tot[0].Count != 4 || tot[1].Count != 1 {
		t.Errorf("totals %+v", tot)
	}
	if got := p.For("5e1ec7"); len(got) != 2 || got[0].Count != 3 {
		t.Errorf("per selector %+v", got)
	}
}

// FCM: calls are high priority with TTL 0, every other kind normal
// priority with the message TTL and its text in the data.
func TestFCMPriorities(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake, nil)
	d := quickDispatcher(newFakeClock(), new([]time.Duration), f)
	for _, k := range []push.Kind{push.KindCall, push.KindMissedCall, push.KindAnsweredElsewhere, push.KindMessage, push.KindExpiry, push.KindOff} {
		n := call(push.PlatformFCM, pushtest.TokenOK, "com.example.phone")
		n.Kind = k
		if _, err := d.Send(context.Background(), n); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	for i, m := range fake.Messages() {
		if i == 0 {
			if m.Android.Priority != "high" || m.Android.TTL != "0s" || m.Data["title"] != "Incoming call" {
				t.Errorf("call: %+v %v", m.Android, m.Data)
			}
			continue
		}
		if m.Android.Priority != "normal" || m.Android.TTL == "0s" || m.Data["title"] == "" || m.Data["body"] == "" {
			t.Errorf("%s: android %+v data %v", m.Data["kind"], m.Android, m.Data)
		}
	}
	// SENDER_ID_MISMATCH keeps the token.
	fake.Script(pushtest.TokenOK, pushtest.Reply{Status: 403, Reason: "SENDER_ID_MISMATCH"})
	res, err := d.Send(context.Background(), call(push.PlatformFCM, pushtest.TokenOK, ""))
	if res.TokenInvalid || !res.ConfigError || errors.Is(err, push.ErrTokenInvalid) {
		t.Errorf("SENDER_ID_MISMATCH: %+v %v", res, err)
	}
}

// Texts per app with placeholders, sound, badge and loc-key; a kind can be
// turned off; the default reads well.
func TestTexts(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	d := quickDispatcher(newFakeClock(), new([]time.Duration), a)
	d.Texts = &push.Texts{
		Default: push.TextSet{push.KindAnsweredElsewhere: {Off: true}},
		PerApp: map[string]push.TextSet{fake.Topic: {
			push.KindMissedCall: {Title: "Verpasst", Body: "{caller_name} ({caller_number}) an {user}@{domain}", Sound: "ring.caf",
				Badge: "{missed_calls}", LocKey: "MISSED", LocArgs: []string{"{caller}", "{selector}"}},
		}},
	}
	if err := d.Texts.Validate(); err != nil {
		t.Fatal(err)
	}
	n := iphone(push.KindMissedCall, fake.Topic)
	n.User, n.Domain, n.MissedCalls = "bob", "example.org", 3
	if _, err := d.Send(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	aps := fake.Pushes()[0].Payload["aps"].(map[string]any)
	al := aps["alert"].(map[string]any)
	b, _ := json.Marshal(al["loc-args"])
	if al["title"] != "Verpasst" || al["body"] != "Alice Example (alice) an bob@example.org" || al["loc-key"] != "MISSED" ||
		string(b) != `["Alice Example","5e1ec7"]` || aps["sound"] != "ring.caf" || aps["badge"] != float64(3) {
		t.Errorf("missed-call aps %v", aps)
	}
	if _, err := d.Send(context.Background(), iphone(push.KindAnsweredElsewhere, fake.Topic)); !errors.Is(err, push.ErrTurnedOff) {
		t.Errorf("turned-off kind: %v", err)
	}
	// Another app gets the English default.
	n = iphone(push.KindMissedCall, "org.other.app")
	n.CallerName = ""
	al2 := (&push.Texts{}).Render(&n)
	if al2.Body != "Missed call from alice" || al2.Title != "Missed call" || al2.Badge != nil {
		t.Errorf("default missed-call text %+v", al2)
	}
	for _, bad := range []push.Text{{Body: "{nope}"}, {Title: "{caller"}, {Badge: "many"}} {
		ts := push.Texts{PerApp: map[string]push.TextSet{"x": {push.KindMessage: bad}}}
		if err := ts.Validate(); err == nil {
			t.Errorf("text %+v accepted", bad)
		}
	}
}
