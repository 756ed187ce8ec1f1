package call

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// deviceListener starts a device-facing TCP listener handled by e's Manager and returns its
// address.
func (e *env) deviceListener() string {
	e.t.Helper()
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "tcp", Address: "127.0.0.1:0"}}})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ua.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	ua.SetHandler(e.m)
	e.t.Cleanup(func() { ua.Close() })
	return ua.Addr("tcp")
}

// ring sends an INVITE and waits for the first two 180s and the call push; it returns the
// INVITE and the token.
func (e *env) ring() (*siptest.CallInvite, string) {
	e.t.Helper()
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	n := e.pusher.next(e.t.(*testing.T))
	if n.Kind != push.KindCall || n.Token == "" {
		e.t.Fatalf("push %+v", n)
	}
	return inv, n.Token
}

func (e *env) nextNonTrying(callID, method string) *siptest.CallResponse {
	e.t.Helper()
	for {
		r, err := e.caller.Next(callID, method, waitSIP)
		if err != nil {
			e.t.Fatal(err)
		}
		if r.Status != 100 {
			return r
		}
	}
}

// deviceGetsInvite rings the instance, connects a device to a new device listener, proves
// the call's token with it and returns the caller's INVITE, the device and the INVITE
// relayed to it.
func (e *env) deviceGetsInvite() (*siptest.CallInvite, *siptest.Device, *siptest.DeviceMessage) {
	e.t.Helper()
	inv, token := e.ring()
	d := siptest.DialDevice(e.t, e.deviceListener())
	if code, err := d.Register(token, "iphone", testSecret); code != 200 {
		e.t.Fatal(code, err)
	}
	return inv, d, deviceNext(e.t, d, "INVITE")
}

func deviceNext(t testing.TB, d *siptest.Device, method string) *siptest.DeviceMessage {
	t.Helper()
	m, err := d.Next(method, false, waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRelayAnsweredCall: a device claims the call over TCP with its token, gets the INVITE
// (SDP untouched, our Via and Record-Route, Max-Forwards decremented), answers 180 and 200;
// the caller gets both, ACKs and hangs up through sipis, and the device gets ACK and BYE.
func TestRelayAnsweredCall(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	inv, token := e.ring()

	d := siptest.DialDevice(t, dev)
	if code, err := d.Register("00000000000000000000000000000000", "iphone", testSecret); err != nil || code != 403 {
		t.Fatalf("REGISTER with a wrong token: %d %v", code, err)
	}
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER with the token: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	if !strings.Contains(in.Body(), "m=audio 40000") || in.Header("Max-Forwards") != "69" ||
		!strings.Contains(in.Header("Record-Route"), ";lr") || !strings.HasPrefix(in.URI, "sip:device@") ||
		!strings.Contains(in.Header("Via"), "SIP/2.0/TCP") {
		t.Fatalf("relayed INVITE:\n%s", in.Raw)
	}
	d.Respond(in, 180, "Ringing", "")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 180 || r.Header("X-Sipis-Push-Status") != "" {
		t.Fatalf("relayed 180: %d\n%s", r.Status, r.Raw)
	}
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 || !strings.Contains(ok.Raw, "v=0") || strings.Count(ok.Raw, "Via:") != 1 {
		t.Fatalf("relayed 200:\n%s", ok.Raw)
	}
	inv.InDialog(ok, "ACK", 0)
	if ack := deviceNext(t, d, "ACK"); !strings.Contains(ack.Header("CSeq"), "ACK") {
		t.Fatalf("ACK %s", ack.Raw)
	}
	// The record is saved just after the 2xx is relayed.
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].Outcome == store.OutcomeAccepted && !cs[0].AnsweredAt.IsZero() &&
			cs[0].DialogState == store.DialogStable
	})
	inv.InDialog(ok, "BYE", 2)
	bye := deviceNext(t, d, "BYE")
	d.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE answered %d", r.Status)
	}
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].DialogState == store.DialogTerminated && !cs[0].EndedAt.IsZero()
	})
	if got := e.outcomes(); !strings.Contains(got, "accepted=1") {
		t.Errorf("outcomes %s", got)
	}
	// The record is written as the dialog ends, just before the call leaves the active set.
	waitFor(t, func() bool { return e.m.ActiveCalls(testSel) == 0 })
	// The token is used up.
	d2 := siptest.DialDevice(t, dev)
	if code, _ := d2.Register(token, "iphone", testSecret); code != 403 {
		t.Errorf("REGISTER with a used token: %d", code)
	}
}

// TestRelayDeviceBusy: the device answers 486; it goes upstream and sipis ACKs the device.
func TestRelayDeviceBusy(t *testing.T) {
	e := newEnv(t)
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 486, "Busy Here", "")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 486 {
		t.Fatalf("final %d", r.Status)
	}
	// sipis acknowledges the device's 486 hop by hop (RFC 3261 §17.1.1.3).
	if ack := deviceNext(t, d, "ACK"); ack == nil {
		t.Fatal("no ACK")
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeRejected || cs[0].Reason != ReasonBusy {
		t.Fatalf("records = %+v", cs)
	}
}

// TestRelayCallerCancels: the caller cancels after the device got the INVITE; the CANCEL goes
// to the device and its 487 upstream.
func TestRelayCallerCancels(t *testing.T) {
	e := newEnv(t)
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	c := deviceNext(t, d, "CANCEL")
	d.Respond(c, 200, "OK", "")
	d.Respond(in, 487, "Request Terminated", "")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 487 {
		t.Fatalf("final %d", r.Status)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonCancelled {
		t.Fatalf("records = %+v", cs)
	}
}

// TestRelayTwoDevicesRace: two devices connect; the second answers first and wins, the other
// gets a CANCEL and an answered-elsewhere push.
func TestRelayTwoDevicesRace(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.db.PutRegistration(ctx, &store.Instance{Selector: testSel, Mode: store.ModeBackground, ContactUser: testContact,
		Account: store.Account{User: "alice", Password: "pw", Domain: "example.org", Proxy: "127.0.0.1", Port: 5060}},
		&store.Device{ID: "ipad", Platform: push.PlatformAPNs, PushToken: testToken + "22", AppID: "com.example.softphone", Secret: testSecret},
		"nonce-2", time.Now()); err != nil {
		t.Fatal(err)
	}
	dev := e.deviceListener()
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	token := ""
	for range 2 {
		n := e.pusher.next(t)
		token = n.Token
	}
	d1, d2 := siptest.DialDevice(t, dev), siptest.DialDevice(t, dev)
	if code, _ := d1.Register(token, "iphone", testSecret); code != 200 {
		t.Fatal(code)
	}
	in1 := deviceNext(t, d1, "INVITE")
	d1.Respond(in1, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	if code, _ := d2.Register(token, "ipad", testSecret); code != 200 {
		t.Fatal(code)
	}
	in2 := deviceNext(t, d2, "INVITE")
	d2.Respond(in2, 200, "OK", "v=0\r\n")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 200 {
		t.Fatalf("final %d", r.Status)
	}
	c := deviceNext(t, d1, "CANCEL")
	d1.Respond(c, 200, "OK", "")
	d1.Respond(in1, 487, "Request Terminated", "")
	if n := e.pusher.next(t); n.Kind != push.KindAnsweredElsewhere || n.Device.ID != "iphone" {
		t.Errorf("push %+v, want answered-elsewhere to iphone", n)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeAccepted {
		t.Fatalf("records = %+v", cs)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitSIP)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
