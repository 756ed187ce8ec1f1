package call

import (
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
)

// TestRelayEarlyDialogPrackUpdate: a device answering with a reliable 183 (RFC 3262) gets the
// caller's PRACK, whose 200 goes back; an UPDATE (RFC 3311) in the early dialog is relayed both
// ways; then the 200 to the INVITE ends the early phase as usual.
func TestRelayEarlyDialogPrackUpdate(t *testing.T) {
	e := newEnv(t)
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 183, "Session Progress", "v=0\r\n", "Require: 100rel", "RSeq: 1")
	early := e.nextNonTrying(inv.CallID, "INVITE")
	if early.Status != 183 || !strings.Contains(early.Header("To"), "tag=") {
		t.Fatalf("183 at the caller:\n%s", early.Raw)
	}

	inv.InDialogBody(early, "PRACK", 2, "", "", "RAck: 1 1 INVITE")
	prack := deviceNext(t, d, "PRACK")
	if prack.Header("RAck") != "1 1 INVITE" {
		t.Fatalf("PRACK at the device:\n%s", prack.Raw)
	}
	d.Respond(prack, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "PRACK"); r.Status != 200 {
		t.Fatalf("PRACK answered %d:\n%s", r.Status, r.Raw)
	}

	const sdp2 = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
	inv.InDialogBody(early, "UPDATE", 3, "application/sdp", sdp2)
	upd := deviceNext(t, d, "UPDATE")
	if upd.Body() != sdp2 {
		t.Fatalf("UPDATE at the device:\n%s", upd.Raw)
	}
	d.Respond(upd, 200, "OK", sdp2)
	if r := e.nextNonTrying(inv.CallID, "UPDATE"); r.Status != 200 {
		t.Fatalf("caller's UPDATE answered %d", r.Status)
	}

	d.InDialog(in, "UPDATE", 1, "application/sdp", sdp2)
	up, err := e.caller.NextRequest(inv.CallID, "UPDATE", waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	if up.Body() != sdp2 || up.Header("Route") != "" {
		t.Fatalf("device's UPDATE upstream:\n%s", up.Raw)
	}
	e.caller.Respond(up, 200, "OK", sdp2)
	if r, err := d.Next("UPDATE", true, waitSIP); err != nil || r.Status != 200 {
		t.Fatalf("device's UPDATE answered %v %v", r, err)
	}

	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 || ok.Header("To") != early.Header("To") {
		t.Fatalf("final %d, To %q (early To %q)", ok.Status, ok.Header("To"), early.Header("To"))
	}
	inv.InDialog(ok, "ACK", 0)
	deviceNext(t, d, "ACK")
}

// TestRelayTimerCCancelsBranch: a device that sends 180 and then nothing has its INVITE
// cancelled when Timer C runs out (RFC 3261 §16.8); its 487 is not relayed as the call's
// answer: the caller gets 480.
func TestRelayTimerCCancelsBranch(t *testing.T) {
	const timerC = 30 * time.Second
	e := newEnv(t, func(o *Options) { o.TimerC = timerC })
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	e.clock.Advance(timerC - time.Second)
	noDeviceMessage(t, d, "CANCEL")
	d.Respond(in, 180, "Ringing", "") // a provisional restarts Timer C (§16.7 step 2)
	e.nextNonTrying(inv.CallID, "INVITE")
	e.clock.Advance(timerC - time.Second)
	noDeviceMessage(t, d, "CANCEL")
	e.clock.Advance(time.Second)
	c := deviceNext(t, d, "CANCEL")
	d.Respond(c, 200, "OK", "")
	d.Respond(in, 487, "Request Terminated", "")
	deviceNext(t, d, "ACK")
	if r := e.nextNonTrying(inv.CallID, "INVITE"); r.Status != 480 {
		t.Fatalf("final %d:\n%s", r.Status, r.Raw)
	}
	waitFor(t, func() bool { return e.m.ActiveCalls(testSel) == 0 })
}

// TestRelayTimerCReinvite: a re-INVITE the device answers only with 183 is cancelled when
// Timer C runs out, and the caller gets 408; the device's later 487 is not relayed.
func TestRelayTimerCReinvite(t *testing.T) {
	const timerC = 30 * time.Second
	e := newEnv(t, func(o *Options) { o.TimerC = timerC })
	a := e.answer(e.deviceListener())
	a.inv.InDialogBody(a.ok, "INVITE", 2, "application/sdp", "v=0\r\n")
	re := deviceNext(t, a.d, "INVITE")
	a.d.Respond(re, 183, "Session Progress", "")
	if r := e.nextNonTrying(a.inv.CallID, "INVITE"); r.Status != 183 {
		t.Fatalf("re-INVITE got %d first", r.Status)
	}
	e.clock.Advance(timerC)
	c := deviceNext(t, a.d, "CANCEL")
	if r := e.nextNonTrying(a.inv.CallID, "INVITE"); r.Status != 408 {
		t.Fatalf("re-INVITE answered %d:\n%s", r.Status, r.Raw)
	}
	a.d.Respond(c, 200, "OK", "")
	a.d.Respond(re, 487, "Request Terminated", "")
	deviceNext(t, a.d, "ACK")
	if r, err := e.caller.Next(a.inv.CallID, "INVITE", quiet); err == nil && r.Status != 408 {
		t.Fatalf("the caller got %d after the 408:\n%s", r.Status, r.Raw)
	}
	// The dialog goes on.
	a.inv.InDialog(a.ok, "BYE", 3)
	bye := deviceNext(t, a.d, "BYE")
	a.d.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(a.inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE answered %d", r.Status)
	}
}

// TestRelayDeviceRequestConfinedToDialog: a device's in-dialog request addressed (by
// Request-URI or by Route) to a host other than the caller's side gets 403 and goes nowhere;
// one addressed to the caller still goes through.
func TestRelayDeviceRequestConfinedToDialog(t *testing.T) {
	e := newEnv(t)
	a := e.answer(e.deviceListener())
	other := siptest.NewCallerOn(t, "127.0.0.2:0")
	cases := []struct {
		name   string
		target string
		extra  []string
	}{
		{"Request-URI", "sip:victim@" + other.Addr(), nil},
		{"Route", "", []string{"Route: <sip:" + other.Addr() + ";lr>"}},
	}
	for i, tc := range cases {
		cseq := 2 + i
		if tc.target != "" {
			a.d.InDialogTo(a.in, tc.target, "INFO", cseq, "", "")
		} else {
			a.d.InDialog(a.in, "INFO", cseq, "", "", tc.extra...)
		}
		r, err := a.d.Next("INFO", true, waitSIP)
		if err != nil || r.Status != 403 {
			t.Fatalf("%s: device's INFO to another host answered %v %v", tc.name, r, err)
		}
		if req, err := other.NextRequest(a.inv.CallID, "INFO", 100*time.Millisecond); err == nil {
			t.Fatalf("%s: the other host got the INFO:\n%s", tc.name, req.Raw)
		}
	}
	a.d.Bye(a.in)
	bye, err := e.caller.NextRequest(a.inv.CallID, "BYE", waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	e.caller.Respond(bye, 200, "OK", "")
	if r, err := a.d.Next("BYE", true, waitSIP); err != nil || r.Status != 200 {
		t.Fatalf("device's BYE answered %v %v", r, err)
	}
}
