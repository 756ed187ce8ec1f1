package call

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
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

// TestRelayForkedSameInstance: a forking proxy sends one INVITE (same Call-ID, From tag and
// CSeq, other Via branch) to our contact twice. The second is a merged request (RFC 3261
// §8.2.2.2): 482, and the devices are not woken a second time; the first call goes on.
func TestRelayForkedSameInstance(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	inv, token1 := e.ring()

	inv2 := inv.Fork()
	e.expect(inv2.CallID, "INVITE", 482, "")
	_, _, ok1 := e.answerWith(dev, inv, token1)
	if ok1.Status != 200 {
		t.Fatalf("the first call: %d", ok1.Status)
	}
	for {
		select {
		case n := <-e.pusher.ch:
			if n.Kind == push.KindCall {
				t.Fatalf("the forked INVITE woke the devices again: %+v", n)
			}
			continue
		default:
		}
		break
	}
	waitFor(t, func() bool { return strings.Contains(e.outcomes(), "total=1 accepted=1") })
}

// TestRelayRegisterAfterCancel: a device woken by the VoIP push that connects after the
// caller's CANCEL gets the INVITE and at once CANCEL on its connection, so that its app can
// report the push to CallKit and end the call; its 487 goes nowhere.
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
	if err != nil || r.Status != 200 {
		t.Fatalf("REGISTER after CANCEL: %v\n%v", err, r)
	}
	in2 := deviceNext(t, d2, "INVITE")
	if in2.Header("Call-ID") != inv.CallID {
		t.Errorf("late INVITE of another call:\n%s", in2.Raw)
	}
	d2.Respond(in2, 180, "Ringing", "")
	c2 := deviceNext(t, d2, "CANCEL")
	d2.Respond(c2, 200, "OK", "")
	d2.Respond(in2, 487, "Request Terminated", "")
	// A refresh of its REGISTER does not ring it again.
	if code, _ := d2.Register(token, "ipad", testSecret); code != 200 {
		t.Errorf("late device's second REGISTER: %d", code)
	}
	if m, err := d2.Next("INVITE", false, quiet); err == nil {
		t.Errorf("a second INVITE to the late device:\n%s", m.Raw)
	}

	d1.Respond(c, 200, "OK", "")
	d1.Respond(in, 487, "Request Terminated", "")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 487 {
		t.Fatalf("final %d", r.Status)
	}
	if r, err := e.caller.Next(inv.CallID, "INVITE", quiet); err == nil && r.Status >= 180 {
		t.Errorf("the late device's answers reached the caller: %d", r.Status)
	}
}

// TestLateDeviceAfterTimeout: the call ended by T1 before the woken device connected; it still
// gets INVITE then CANCEL (a 200 crossing the CANCEL is acknowledged and hung up).
func TestLateDeviceAfterTimeout(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	inv, token := e.ring()
	e.clock.Advance(DefaultNoResponseTimeout)
	e.expect(inv.CallID, "INVITE", 480, "")
	if n := e.pusher.next(t); n.Kind != push.KindMissedCall {
		t.Fatalf("push after T1 %+v, want missed-call", n)
	}
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); code != 200 {
		t.Fatal(code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 200, "OK", "v=0\r\n")
	ack := deviceNext(t, d, "ACK")
	bye := deviceNext(t, d, "BYE")
	if ack.Header("Call-ID") != inv.CallID || bye.Header("Call-ID") != inv.CallID {
		t.Errorf("ACK/BYE of another call")
	}
	d.Respond(bye, 200, "OK", "")
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed {
		t.Errorf("records %+v", cs)
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
	// Another device's connection does not join an answered call: it gets the INVITE and at
	// once CANCEL, for its app to report the VoIP push to CallKit and end it.
	late := siptest.DialDevice(t, dev)
	if code, _ := late.Register(token, "ipad", testSecret); code != 200 {
		t.Fatalf("REGISTER of another device after the answer: %d", code)
	}
	lin := deviceNext(t, late, "INVITE")
	late.Respond(lin, 180, "Ringing", "")
	lc := deviceNext(t, late, "CANCEL")
	late.Respond(lc, 200, "OK", "")
	late.Respond(lin, 487, "Request Terminated", "")
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
