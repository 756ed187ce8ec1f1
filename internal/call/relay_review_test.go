package call

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
)

// answerWith connects a device with token, has it answer 200 and returns the device, the INVITE it
// got and the 200 the caller got.
func (e *env) answerWith(dev string, inv *siptest.CallInvite, token string) (*siptest.Device, *siptest.DeviceMessage, *siptest.CallResponse) {
	e.t.Helper()
	t := e.t.(*testing.T)
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 {
		t.Fatalf("final %d\n%s", ok.Status, ok.Raw)
	}
	return d, in, ok
}

// TestRelayForkedSameCallID: a forking proxy sends one INVITE (same Call-ID and From tag,
// other Via branch) twice; both calls are answered by different devices, and each dialog's
// ACK and BYE reach the device that answered it.
func TestRelayForkedSameCallID(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	inv, token1 := e.ring()
	d1, _, ok1 := e.answerWith(dev, inv, token1)

	inv2 := inv.Fork()
	e.expect(inv2.CallID, "INVITE", 180, StatusAlerting)
	e.expect(inv2.CallID, "INVITE", 180, StatusPushSent)
	token2 := ""
	for token2 == "" { // the first call's answered-elsewhere push may come first
		if n := e.pusher.next(t); n.Kind == push.KindCall {
			token2 = n.Token
		}
	}
	if token2 == token1 {
		t.Fatal("the forked call has the first call's token")
	}
	d2, _, ok2 := e.answerWith(dev, inv2, token2)

	inv.InDialog(ok1, "ACK", 0)
	deviceNext(t, d1, "ACK")
	inv2.InDialog(ok2, "ACK", 0)
	deviceNext(t, d2, "ACK")

	inv.InDialog(ok1, "BYE", 2)
	bye := deviceNext(t, d1, "BYE")
	d1.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE of the first call answered %d", r.Status)
	}
	if m, err := d2.Next("BYE", false, quiet); err == nil {
		t.Fatalf("the second device got the first call's BYE:\n%s", m.Raw)
	}
	inv2.InDialog(ok2, "BYE", 2)
	bye = deviceNext(t, d2, "BYE")
	d2.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE of the second call answered %d", r.Status)
	}
}

// TestRelayRegisterAfterCancel: a device connecting after the caller's CANCEL is refused and
// gets no INVITE.
func TestRelayRegisterAfterCancel(t *testing.T) {
	e := newEnv(t)
	e.addDevices("ipad")
	dev := e.deviceListener()
	inv, token := e.ring()
	d1 := siptest.DialDevice(t, dev)
	if code, err := d1.Register(token, "iphone", testSecret); code != 200 {
		t.Fatal(code, err)
	}
	in := deviceNext(t, d1, "INVITE")
	d1.Respond(in, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	c := deviceNext(t, d1, "CANCEL")

	d2 := siptest.DialDevice(t, dev)
	r, err := d2.RegisterResponse(token, "ipad", testSecret)
	if err != nil || r.Status != 403 || !strings.Contains(r.Raw, "Call Cancelled") {
		t.Fatalf("REGISTER after CANCEL: %v\n%v", err, r)
	}
	if m, err := d2.Next("INVITE", false, quiet); err == nil {
		t.Fatalf("the late device got the INVITE:\n%s", m.Raw)
	}
	d1.Respond(c, 200, "OK", "")
	d1.Respond(in, 487, "Request Terminated", "")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 487 {
		t.Fatalf("final %d", r.Status)
	}
}

// TestRelayRegisterRefresh: a repeated REGISTER on the same connection is answered 200 with a
// long expiry and adds no branch, also after the call was answered.
func TestRelayRegisterRefresh(t *testing.T) {
	e := newEnv(t)
	e.addDevices("ipad")
	dev := e.deviceListener()
	inv, token := e.ring()
	d := siptest.DialDevice(t, dev)
	for i := range 2 {
		r, err := d.RegisterResponse(token, "iphone", testSecret)
		if err != nil || r.Status != 200 || !strings.Contains(r.Header("Contact"), "expires=3600") {
			t.Fatalf("REGISTER %d: %v\n%v", i, err, r)
		}
	}
	in := deviceNext(t, d, "INVITE")
	if m, err := d.Next("INVITE", false, quiet); err == nil {
		t.Fatalf("a second INVITE on the same connection:\n%s", m.Raw)
	}
	d.Respond(in, 200, "OK", "v=0\r\n")
	if ok := e.nextNonTrying(inv.CallID, "INVITE"); ok.Status != 200 {
		t.Fatalf("final %d", ok.Status)
	}
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("refresh after the answer: %d %v", code, err)
	}
	// Another connection cannot join an answered call.
	if code, _ := siptest.DialDevice(t, dev).Register(token, "ipad", testSecret); code != 403 {
		t.Fatalf("REGISTER of another device after the answer: %d", code)
	}
}

// TestRelayBranchCap: at most maxBranches devices get the INVITE of one call.
func TestRelayBranchCap(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range maxBranches {
		ids = append(ids, fmt.Sprintf("phone%d", i))
	}
	e.addDevices(ids...)
	dev := e.deviceListener()
	_, token := e.ring()
	for i := range maxBranches {
		d := siptest.DialDevice(t, dev)
		if code, err := d.Register(token, ids[i], testSecret); code != 200 {
			t.Fatalf("device %d: %d %v", i, code, err)
		}
		deviceNext(t, d, "INVITE")
	}
	r, err := siptest.DialDevice(t, dev).RegisterResponse(token, "iphone", testSecret)
	if err != nil || r.Status != 403 || !strings.Contains(r.Raw, "Too Many Devices") {
		t.Fatalf("device %d: %v\n%v", maxBranches+1, err, r)
	}
}

// TestRelayLateAnswerHungUp: a device answering 200 after the call ended (here T2 ran out)
// gets ACK and then BYE, so that its dialog does not hang.
func TestRelayLateAnswerHungUp(t *testing.T) {
	e := newEnv(t)
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	e.clock.Advance(DefaultProgressTimeout)
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 480 {
		t.Fatalf("final %d", r.Status)
	}
	deviceNext(t, d, "CANCEL")
	d.Respond(in, 200, "OK", "v=0\r\n")
	ack := deviceNext(t, d, "ACK")
	bye := deviceNext(t, d, "BYE")
	if !strings.Contains(ack.Header("CSeq"), "1 ACK") || !strings.Contains(bye.Header("CSeq"), "2 BYE") ||
		!strings.Contains(bye.Header("To"), "tag=") || bye.Header("Call-ID") != inv.CallID {
		t.Fatalf("ACK:\n%s\nBYE:\n%s", ack.Raw, bye.Raw)
	}
	d.Respond(bye, 200, "OK", "")
	if m, err := d.Next("BYE", false, quiet); err == nil {
		t.Fatalf("a second BYE:\n%s", m.Raw)
	}
}

// TestRelayInDialogFromOtherSource: an in-dialog request with the right tags from an address
// that neither sent the INVITE nor is allowed gets 403 and does not reach the device.
func TestRelayInDialogFromOtherSource(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	inv, token := e.ring()
	d, _, ok := e.answerWith(dev, inv, token)
	other := siptest.NewCallerOn(t, "127.0.0.2:0")
	inv.Through(other).InDialog(ok, "BYE", 2)
	r, err := other.Next(inv.CallID, "BYE", waitSIP)
	if err != nil || r.Status != 403 {
		t.Fatalf("BYE from another source: %v %v", err, r)
	}
	if m, err := d.Next("BYE", false, quiet); err == nil {
		t.Fatalf("the device got the foreign BYE:\n%s", m.Raw)
	}
	inv.InDialog(ok, "BYE", 3)
	bye := deviceNext(t, d, "BYE")
	d.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE answered %d", r.Status)
	}
}
