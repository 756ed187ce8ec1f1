package call

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
)

var tokenRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestCallStagesProgressAndT2 follows a call through the three 180 stages; the device claims
// it but never connects, so T2 ends it.
func TestCallStagesProgressAndT2(t *testing.T) {
	e := newEnv(t)
	inv := e.caller.Invite(e.target, testContact,
		`P-Asserted-Identity: "Bob Builder" <sip:+41445556677@carrier.example>, <tel:+41445556677>`)

	r1 := e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	n := e.pusher.next(t)
	if n.Kind != push.KindCall || n.Selector != testSel || n.CallerName != "Bob Builder" ||
		n.CallerURI != "sip:+41445556677@carrier.example" || n.RelayAddress != "relay.example.org:5070" ||
		!tokenRE.MatchString(n.Token) || !tokenRE.MatchString(n.PairingID) || n.Device.PushToken != testToken {
		t.Fatalf("call push = %+v", n)
	}
	r2 := e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	if tag := toTag(r1); tag == "" || tag != toTag(r2) {
		t.Errorf("180s carry To tags %q and %q, want one early dialog", toTag(r1), toTag(r2))
	}

	// T1 has not expired yet: nothing happens before it.
	e.clock.Advance(DefaultNoResponseTimeout - time.Second)
	code, body := e.post("/sipis/call/progress", "application/json", `{"token":"`+n.Token+`"}`)
	if code != 200 || !strings.Contains(body, n.PairingID) {
		t.Fatalf("progress = %d %s", code, body)
	}
	e.expect(inv.CallID, "INVITE", 180, StatusProgress)
	// A second claim changes nothing and sends no fourth 180.
	if code, _ := e.post("/sipis/call/progress", "application/x-www-form-urlencoded", "token="+n.Token); code != 200 {
		t.Errorf("second progress = %d, want 200", code)
	}
	// T1 was stopped: its deadline passes without a final response.
	e.clock.Advance(2 * time.Second)
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != "" || cs[0].ProgressAt.IsZero() || cs[0].DialogState != store.DialogEarly {
		t.Fatalf("record during T2 = %+v", cs)
	}
	if e.caller.Pending() != 0 {
		t.Fatalf("unexpected response after T1's deadline")
	}
	e.clock.Advance(DefaultProgressTimeout)
	fin := e.expect(inv.CallID, "INVITE", 480, "")
	if got := fin.Header("X-Sipis-Reason"); got != "No-Response-From-Device" {
		t.Errorf("X-Sipis-Reason = %q", got)
	}
	if c := e.pusher.next(t); c.Kind != push.KindMissedCall || c.PairingID != n.PairingID || c.Token != "" ||
		c.DeviceToken() != testAlert || c.CallID != inv.CallID || c.MissedCalls != 1 {
		t.Errorf("after T2: push %+v, want a missed-call alert to the alert token, without call token", c)
	}
	cs := e.calls()
	if len(cs) != 1 {
		t.Fatalf("records = %+v", cs)
	}
	c := cs[0]
	if c.Outcome != store.OutcomeMissed || c.Reason != ReasonNotConnected || c.DialogState != store.DialogTerminated ||
		c.PushedAt.IsZero() || c.EndedAt.IsZero() || c.CallID != inv.CallID || c.CallerName != "Bob Builder" ||
		len(c.Devices) != 1 || c.Devices[0] != "iphone" {
		t.Errorf("record = %+v", c)
	}
	if got := e.outcomes(); got != "total=1 accepted=0 missed=1 rejected=0" {
		t.Errorf("outcomes = %s", got)
	}
	// The token is used up.
	if code, _ := e.post("/sipis/call/progress", "application/json", `{"token":"`+n.Token+`"}`); code != 403 {
		t.Errorf("progress after the end = %d, want 403", code)
	}
}

func toTag(r *siptest.CallResponse) string {
	_, tag, _ := strings.Cut(r.Header("To"), ";tag=")
	return tag
}

func TestT1Expiry(t *testing.T) {
	e := newEnv(t)
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	n := e.pusher.next(t)
	if n.CallerName != "Proxy Caller" || !strings.HasPrefix(n.CallerURI, "sip:caller@127.0.0.1") {
		t.Errorf("caller from From = %q %q", n.CallerName, n.CallerURI)
	}
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	e.clock.Advance(DefaultNoResponseTimeout)
	fin := e.expect(inv.CallID, "INVITE", 480, "")
	if fin.Header("X-Sipis-Reason") != "No-Response-From-Device" {
		t.Errorf("480 without X-Sipis-Reason:\n%s", fin.Raw)
	}
	if c := e.pusher.next(t); c.Kind != push.KindMissedCall {
		t.Errorf("push after T1 = %+v, want missed-call", c)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonNoResponse {
		t.Errorf("records = %+v", cs)
	}
}

// TestT1ExpiryAnswers408 follows <IncomingCall OnNoResponseFromDevice="Reject408">.
func TestT1ExpiryAnswers408(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.NoResponseAnswer = 408 })
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.pusher.next(t)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	e.clock.Advance(DefaultNoResponseTimeout)
	fin := e.expect(inv.CallID, "INVITE", 408, "")
	if fin.Header("X-Sipis-Reason") != "No-Response-From-Device" {
		t.Errorf("408 without X-Sipis-Reason:\n%s", fin.Raw)
	}
	bad := Options{Instances: e.insts, Store: e.db, Push: e.pusher, Clock: e.clock, SIP: e.ua, NoResponseAnswer: 404}
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "NoResponseAnswer") {
		t.Errorf("NoResponseAnswer 404: %v", err)
	}
}

// TestCancelBeforeWakeUp: the caller gives up while the push is still out.
func TestCancelBeforeWakeUp(t *testing.T) {
	e := newEnv(t)
	hold := make(chan struct{})
	e.pusher.setResult(func(n push.Notification) (push.Result, error) {
		if n.Kind == push.KindCall {
			<-hold // the push service is slow
		}
		return push.Result{Accepted: true}, nil
	})
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	n := e.pusher.next(t)
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	e.expect(inv.CallID, "INVITE", 487, "")
	close(hold)
	if c := e.pusher.next(t); c.Kind != push.KindMissedCall || c.PairingID != n.PairingID || c.DeviceToken() != testAlert {
		t.Errorf("push after CANCEL = %+v, want missed-call", c)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonCancelled || !cs[0].PushedAt.IsZero() {
		t.Errorf("records = %+v", cs)
	}
	if got := e.outcomes(); got != "total=1 accepted=0 missed=1 rejected=0" {
		t.Errorf("outcomes = %s", got)
	}
	// The woken device is too late.
	if code, body := e.post("/sipis/call/progress", "", `{"token":"`+n.Token+`"}`); code != 403 || strings.Count(body, "\n") != 1 {
		t.Errorf("progress after CANCEL = %d %q, want 403 and one line", code, body)
	}
	// A CANCEL crossing the final response still gets 200 (RFC 3261 §9.2); one matching no
	// INVITE gets 481.
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	other := *inv
	other.Branch = "z9hG4bKnosuchbranch"
	other.Cancel()
	e.expect(inv.CallID, "CANCEL", 481, "")
	// After the grace period the call is forgotten.
	e.clock.Advance(endedGrace)
	if code, _ := e.post("/sipis/call/progress", "", `{"token":"`+n.Token+`"}`); code != 404 {
		t.Errorf("progress long after the end = %d, want 404", code)
	}
}

func TestDeclineAndBadTokens(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		reason, form string
		code         int
		why          string
	}{
		{"", `{"token":"%s"}`, 603, ReasonDeclined},
		{"busy", `token=%s&reason=busy`, 486, ReasonBusy},
	} {
		inv := e.caller.Invite(e.target, testContact)
		e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
		n := e.pusher.next(t)
		if n.Kind != push.KindCall {
			t.Fatalf("push %+v, want call (a declined call sends no end-of-call push)", n)
		}
		e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
		ct := "application/json"
		if !strings.HasPrefix(tc.form, "{") {
			ct = "application/x-www-form-urlencoded"
		}
		if code, body := e.post("/sipis/call/decline", ct, fmt.Sprintf(tc.form, n.Token)); code != 200 {
			t.Fatalf("decline %q = %d %s", tc.reason, code, body)
		}
		e.expect(inv.CallID, "INVITE", tc.code, "")
		if code, _ := e.post("/sipis/call/decline", "", `{"token":"`+n.Token+`"}`); code != 403 {
			t.Errorf("second decline = %d, want 403", code)
		}
	}
	if got := e.outcomes(); got != "total=2 accepted=0 missed=0 rejected=2 [busy]=1 [declined]=1" {
		t.Errorf("outcomes = %s", got)
	}

	// Bad requests change nothing.
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	n := e.pusher.next(t)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	for _, tc := range []struct {
		path, ct, body string
		code           int
	}{
		{"/sipis/call/progress", "application/json", `{"token":"xyz"}`, 400},
		{"/sipis/call/progress", "application/json", `{"token":"` + strings.ToUpper(n.Token) + `"}`, 400},
		{"/sipis/call/progress", "application/json", `{"token":"` + strings.Repeat("0", 32) + `"}`, 404},
		{"/sipis/call/progress", "application/json", `{"token":`, 400},
		{"/sipis/call/progress", "application/json", `{"token":"` + n.Token + `","extra":1}`, 400},
		{"/sipis/call/decline", "application/json", `{"token":"` + n.Token + `","reason":"maybe"}`, 400},
		{"/sipis/call/decline", "", "token=" + strings.Repeat("0", 32), 404},
	} {
		if code, body := e.post(tc.path, tc.ct, tc.body); code != tc.code || strings.Count(body, "\n") != 1 {
			t.Errorf("POST %s %s = %d %q, want %d with a one-line reason", tc.path, tc.body, code, body, tc.code)
		}
	}
	if e.caller.Pending() != 0 {
		t.Error("a bad device request produced a SIP response")
	}
	if code, _ := e.post("/sipis/call/progress", "", `{"token":"`+n.Token+`"}`); code != 200 {
		t.Errorf("the good token no longer works after bad requests: %d", code)
	}
	e.expect(inv.CallID, "INVITE", 180, StatusProgress)
}

// TestPushFailuresAndDeadToken: a dead token is marked invalid and the call rejected; with no
// usable token left, the next call is rejected at once.
func TestPushFailuresAndDeadToken(t *testing.T) {
	e := newEnv(t)
	e.pusher.setResult(func(n push.Notification) (push.Result, error) {
		return push.Result{Status: 410, Reason: "Unregistered", TokenInvalid: true}, push.ErrTokenInvalid
	})
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.pusher.next(t)
	if fin := e.expect(inv.CallID, "INVITE", 480, ""); fin.Header("X-Sipis-Reason") != "Push-Failed" {
		t.Errorf("480 = %s", fin.Raw)
	}
	devs, err := e.db.Devices(context.Background(), testSel)
	if err != nil || len(devs) != 1 || !devs[0].TokenInvalid {
		t.Fatalf("device after dead token = %+v, %v", devs, err)
	}
	inv2 := e.caller.Invite(e.target, testContact)
	e.expect(inv2.CallID, "INVITE", 480, "")
	if got := e.outcomes(); got != "total=2 accepted=0 missed=0 rejected=2 [no device]=1 [push failed]=1" {
		t.Errorf("outcomes = %s", got)
	}
	if len(e.calls()) != 2 {
		t.Errorf("records = %+v", e.calls())
	}
	select {
	case n := <-e.pusher.ch:
		t.Errorf("unexpected push %+v", n)
	default:
	}
}

// TestMovedContact: a request to a Contact this node handed to another node moments ago is
// answered 480 with Retry-After (the account exists, its new binding is on the way), not 404.
func TestMovedContact(t *testing.T) {
	e := newEnv(t)
	e.insts.mu.Lock()
	e.insts.moved = map[string]bool{"handedover": true}
	e.insts.mu.Unlock()
	inv := e.caller.Invite(e.target, "handedover")
	if r := e.expect(inv.CallID, "INVITE", 480, ""); r.Header("Retry-After") != movedRetryAfter {
		t.Errorf("480 for a moved Contact without Retry-After %s:\n%s", movedRetryAfter, r.Raw)
	}
	other := e.caller.Invite(e.target, "nosuchcontact")
	e.expect(other.CallID, "INVITE", 404, "")
}

func TestRejections(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxCalls = 1 })

	inv := e.caller.Invite(e.target, "nosuchcontact")
	e.expect(inv.CallID, "INVITE", 404, "")

	first := e.caller.Invite(e.target, testContact)
	e.expect(first.CallID, "INVITE", 180, StatusAlerting)
	e.pusher.next(t)
	e.expect(first.CallID, "INVITE", 180, StatusPushSent)
	busy := e.caller.Invite(e.target, testContact)
	e.expect(busy.CallID, "INVITE", 486, "")
	first.Cancel()
	e.expect(first.CallID, "INVITE", 487, "")
	if n := e.pusher.next(t); n.Kind != push.KindMissedCall {
		t.Errorf("push after CANCEL = %+v, want missed-call", n)
	}

	e.insts.set(testSel, Account{Proxy: "127.0.0.1", Active: false})
	off := e.caller.Invite(e.target, testContact)
	if r := e.expect(off.CallID, "INVITE", 480, ""); r.Header("X-Sipis-Reason") != "Instance-Off" {
		t.Errorf("instance off: %s", r.Raw)
	}
	want := "total=4 accepted=0 missed=1 rejected=3 [instance off]=1 [too many calls]=1 [unknown contact]=1"
	if got := e.outcomes(); got != want {
		t.Errorf("outcomes = %s\nwant       %s", got, want)
	}
}

// TestSpoofedSource: an INVITE or MESSAGE that does not come from the instance's proxy is
// refused with 403 and wakes nobody, unless its network is allowed.
func TestSpoofedSource(t *testing.T) {
	e := newEnv(t)
	e.insts.set(testSel, Account{Proxy: "127.0.0.2", Port: 5060, Active: true})
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 403, "")
	id := e.caller.Message(e.target, testContact, "text/plain", []byte("hi"))
	e.expect(id, "MESSAGE", 403, "")
	if got := e.outcomes(); got != "total=1 accepted=0 missed=0 rejected=1 [source not allowed]=1" {
		t.Errorf("outcomes = %s", got)
	}
	if len(e.calls()) != 0 {
		t.Errorf("a spoofed INVITE was recorded: %+v", e.calls())
	}
	// The real proxy, bound to 127.0.0.2, gets through.
	proxy := siptest.NewCallerOn(t, "127.0.0.2:0")
	inv = proxy.Invite(e.target, testContact)
	if r, err := proxy.Next(inv.CallID, "INVITE", waitSIP); err != nil || r.Status != 180 {
		t.Fatalf("INVITE from the proxy: %v %v", r, err)
	}
	if n := e.pusher.next(t); n.Kind != push.KindCall {
		t.Errorf("push = %+v", n)
	}
	select {
	case n := <-e.pusher.ch:
		t.Errorf("the spoofed requests pushed %+v", n)
	default:
	}
}

func TestAllowedSources(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AllowedSources = []string{"127.0.0.0/24"} })
	e.insts.set(testSel, Account{Proxy: "192.0.2.1", Port: 5060, Active: true})
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	if _, err := New(Options{Instances: e.insts, Store: e.db, Push: e.pusher, AllowedSources: []string{"10.0.0.0/33"}}); err == nil ||
		!strings.Contains(err.Error(), "10.0.0.0/33") {
		t.Errorf("bad CIDR: %v", err)
	}
}

func TestMessageStoredAcrossRestartAndFetchedOnce(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.PushMessageText = true })
	text := "Grüezi, call me back"
	id := e.caller.Message(e.target, testContact, "text/plain; charset=utf-8", []byte(text))
	e.expect(id, "MESSAGE", 200, "")
	n := e.pusher.next(t)
	if n.Kind != push.KindMessage || n.MessageText != text || n.Selector != testSel || n.CallerName != "Proxy Caller" {
		t.Errorf("message push = %+v", n)
	}
	// Typing indications are dropped, big bodies refused; neither is stored.
	id = e.caller.Message(e.target, testContact, "application/im-iscomposing+xml", []byte("<isComposing/>"))
	e.expect(id, "MESSAGE", 200, "")

	// Restart: the message survives.
	e.stopManager()
	e.openDB()
	e.startManager(func(o *Options) { o.MaxMessageSize = 10 })
	id = e.caller.Message(e.target, testContact, "text/plain", []byte("eleven byte"))
	if r := e.expect(id, "MESSAGE", 413, ""); r.Reason != "Request Entity Too Large (limit 10 bytes)" {
		t.Errorf("413 reason %q, want the limit in it", r.Reason)
	}

	auth := []string{"X-Sipis-Device", "iphone", "X-Sipis-Secret", testSecret}
	code, body := e.get("/sipis/messages?s="+testSel, auth...)
	var got struct {
		Messages []struct {
			ID          int64  `json:"id"`
			From        string `json:"from"`
			ContentType string `json:"content_type"`
			Body        string `json:"body"`
		} `json:"messages"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got.Messages) != 1 ||
		got.Messages[0].Body != text || !strings.Contains(got.Messages[0].From, "Proxy Caller") {
		t.Fatalf("GET messages = %d %s", code, body)
	}
	for _, bad := range [][]string{
		{"X-Sipis-Device", "iphone", "X-Sipis-Secret", testSecret + "x"},
		{"X-Sipis-Device", "android", "X-Sipis-Secret", testSecret},
	} {
		if code, body := e.get("/sipis/messages?s="+testSel, bad...); code != 403 || strings.Contains(body, "Grüezi") {
			t.Errorf("GET with %v = %d %s, want 403", bad, code, body)
		}
	}
	if code, _ := e.get("/sipis/messages?s=" + testSel); code != 401 {
		t.Errorf("GET without credentials = %d, want 401", code)
	}
	if code, _ := e.post("/sipis/messages/ack?s="+testSel, "application/json", `{"ids":[]}`, auth...); code != 400 {
		t.Errorf("ack of nothing = %d, want 400", code)
	}
	code, body = e.post("/sipis/messages/ack?s="+testSel, "application/json", fmt.Sprintf(`{"ids":[%d]}`, got.Messages[0].ID), auth...)
	if code != 200 || !strings.Contains(body, `"deleted":1`) {
		t.Fatalf("ack = %d %s", code, body)
	}
	if code, body := e.get("/sipis/messages?s="+testSel, auth...); code != 200 || !strings.Contains(body, `"messages":[]`) {
		t.Errorf("GET after ack = %d %s, want no messages", code, body)
	}
}

func TestMessageFilters(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.Filters = []Filter{{ContentType: "application/*", Action: Reject}, {ContentType: "image/png", Action: Drop}}
	})
	id := e.caller.Message(e.target, testContact, "application/vnd.example", []byte("x"))
	if r := e.expect(id, "MESSAGE", 415, ""); r.Header("Accept") == "" {
		t.Errorf("415 without Accept: %s", r.Raw)
	}
	id = e.caller.Message(e.target, testContact, "IMAGE/PNG", []byte("png"))
	e.expect(id, "MESSAGE", 200, "")
	id = e.caller.Message(e.target, testContact, "text/html", []byte("<b>hi</b>"))
	e.expect(id, "MESSAGE", 200, "")
	n := e.pusher.next(t)
	if n.MessageText != "" {
		t.Errorf("message text pushed without PushMessageText: %q", n.MessageText)
	}
	msgs, err := e.db.Messages(context.Background(), testSel, 10)
	if err != nil || len(msgs) != 1 || msgs[0].ContentType != "text/html" {
		t.Errorf("stored = %+v, %v; want only the text/html one", msgs, err)
	}
	for _, bad := range []Filter{{ContentType: "text", Action: Drop}, {ContentType: "*/plain"}, {ContentType: "text/plain", Action: 9}} {
		if _, err := New(Options{Instances: e.insts, Store: e.db, Push: e.pusher, Filters: []Filter{bad}}); err == nil {
			t.Errorf("filter %+v accepted", bad)
		}
	}
}

func TestCallsHandler(t *testing.T) {
	e := newEnv(t)
	inv := e.caller.Invite(e.target, testContact, "Remote-Party-ID: \"Carol\" <sip:carol@example.net>;party=calling")
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.pusher.next(t)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	inv.Cancel()
	e.expect(inv.CallID, "INVITE", 487, "")
	code, body := e.get("/sipis/calls?s=" + testSel)
	var got struct {
		Calls []CallRecord `json:"calls"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &got) != nil || len(got.Calls) != 1 {
		t.Fatalf("GET calls = %d %s", code, body)
	}
	c := got.Calls[0]
	if c.CallerName != "Carol" || c.CallerURI != "sip:carol@example.net" || c.Outcome != "missed" || c.Reason != ReasonCancelled ||
		c.Received == "" || c.Ended == "" {
		t.Errorf("record = %+v", c)
	}
	if code, body := e.get("/sipis/calls?s=NOT-HEX"); code != 400 || strings.Count(body, "\n") != 1 {
		t.Errorf("bad selector = %d %q", code, body)
	}
}

func TestCloseEndsCalls(t *testing.T) {
	e := newEnv(t)
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.pusher.next(t)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	e.expect(inv.CallID, "INVITE", 480, "")
	inv2 := e.caller.Invite(e.target, testContact)
	e.expect(inv2.CallID, "INVITE", 503, "")
}

func TestCallerOf(t *testing.T) {
	for _, tc := range []struct{ pai, rpid, from, name, uri string }{
		{`"A \"q\" B" <sip:a@x>;tag=1`, "", "<sip:f@x>", `A "q" B`, "sip:a@x"},
		{"<sip:+1@x;user=phone>, <tel:+1>", "", "", "", "sip:+1@x;user=phone"},
		{"", `Bob <sip:bob@x>;party=calling`, "<sip:f@x>", "Bob", "sip:bob@x"},
		{"", "", "sip:f@x;tag=abc", "", "sip:f@x"},
		{"garbage <no-end", "", `"F" <sip:f@x>;tag=1`, "F", "sip:f@x"},
		{"", "", "", "", ""},
		{"\"Evil\x07Name\" <sip:e@x>", "", "", "EvilName", "sip:e@x"},
	} {
		h := func(n string) string {
			switch n {
			case "P-Asserted-Identity":
				return tc.pai
			case "Remote-Party-ID":
				return tc.rpid
			}
			return ""
		}
		name, uri := callerOf(h, tc.from)
		if name != tc.name || uri != tc.uri {
			t.Errorf("callerOf(%q, %q, %q) = %q, %q; want %q, %q", tc.pai, tc.rpid, tc.from, name, uri, tc.name, tc.uri)
		}
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	p := newFakePusher()
	in := &fakeInstances{}
	for _, o := range []Options{
		{},
		{Instances: in, Push: p},
		{Instances: in, Store: nilStore{}, Push: p, NoResponseTimeout: -1},
		{Instances: in, Store: nilStore{}, Push: p, MaxCalls: -1},
		{Instances: in, Store: nilStore{}, Push: p, RelayAddress: "a\r\nb"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// nilStore is a Store that has nothing; enough for option checks.
type nilStore struct{}

var errNil = errors.New("nil store")

func (nilStore) Devices(context.Context, string) ([]store.Device, error)        { return nil, errNil }
func (nilStore) MarkTokenInvalid(context.Context, string, string, string) error { return errNil }
func (nilStore) PutCall(context.Context, *store.Call) error                     { return errNil }
func (nilStore) Calls(context.Context, string, int) ([]store.Call, error)       { return nil, errNil }
func (nilStore) AddMessage(context.Context, *store.Message) error               { return errNil }
func (nilStore) Messages(context.Context, string, int) ([]store.Message, error) { return nil, errNil }
func (nilStore) AckMessages(context.Context, string, []int64) (int64, error)    { return 0, errNil }
func (nilStore) CheckDeviceSecret(context.Context, string, string, string) error {
	return errNil
}
func (nilStore) CheckDeviceProof(context.Context, string, string, func([]byte) bool) error {
	return errNil
}
func (nilStore) CallOutcomes(context.Context) ([]store.OutcomeCount, error) { return nil, errNil }
func (nilStore) CloseOpenCalls(context.Context, string, time.Time) ([]store.Call, error) {
	return nil, errNil
}

// TestVoIPPushThroughAPNsFake sends the call push through the real APNs notifier to the
// pushtest fake: a VoIP push on the .voip topic carrying the call's fields.
func TestVoIPPushThroughAPNsFake(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	apns, err := push.NewAPNs(push.APNsOptions{Endpoint: fake.URL, SandboxEndpoint: fake.URL, KeyFile: fake.KeyFile,
		KeyID: fake.KeyID, TeamID: fake.TeamID, RootCAs: fake.RootCAs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apns.Close() })
	e := newEnv(t, func(o *Options) { o.Push = push.NewDispatcher(apns) })
	inv := e.caller.Invite(e.target, testContact, "P-Asserted-Identity: <sip:+15551234@carrier.example>")
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	pushes := fake.Pushes()
	if len(pushes) != 1 {
		t.Fatalf("APNs got %d pushes, want 1", len(pushes))
	}
	p := pushes[0]
	if p.Status != 200 || p.Token != testToken || p.Header.Get("apns-push-type") != "voip" ||
		p.Header.Get("apns-topic") != fake.Topic+".voip" || p.Proto != "HTTP/2.0" {
		t.Errorf("push: status %d token %q headers %v proto %s", p.Status, p.Token, p.Header, p.Proto)
	}
	token, _ := p.Payload["token"].(string)
	if p.Payload["kind"] != "call" || p.Payload["selector"] != testSel || p.Payload["caller_uri"] != "sip:+15551234@carrier.example" ||
		!tokenRE.MatchString(token) || p.Payload["relay_address"] != "relay.example.org:5070" || p.Payload["pairing_id"] == nil {
		t.Errorf("payload = %v", p.Payload)
	}
	// The token from the push claims the call.
	if code, body := e.post("/sipis/call/progress", "application/json", `{"token":"`+token+`"}`); code != 200 {
		t.Fatalf("progress = %d %s", code, body)
	}
	e.expect(inv.CallID, "INVITE", 180, StatusProgress)
	inv.Cancel()
	e.expect(inv.CallID, "INVITE", 487, "")
}

// TestDeadTokenThroughAPNsFake: APNs answers 410 Unregistered; the device is marked.
func TestDeadTokenThroughAPNsFake(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	fake.Script(testToken, pushtest.Reply{Status: 410, Reason: "Unregistered"})
	apns, err := push.NewAPNs(push.APNsOptions{Endpoint: fake.URL, SandboxEndpoint: fake.URL, KeyFile: fake.KeyFile,
		KeyID: fake.KeyID, TeamID: fake.TeamID, RootCAs: fake.RootCAs()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apns.Close() })
	e := newEnv(t, func(o *Options) { o.Push = push.NewDispatcher(apns) })
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.expect(inv.CallID, "INVITE", 480, "")
	devs, err := e.db.Devices(context.Background(), testSel)
	if err != nil || len(devs) != 1 || !devs[0].TokenInvalid {
		t.Errorf("devices = %+v, %v; want the token marked invalid", devs, err)
	}
}
