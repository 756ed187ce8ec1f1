package call

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil"
)

// quiet is how long a test watches for a message that must not come. It outlasts the first
// UDP retransmission interval (T1 = 500 ms, RFC 3261 §17.1.1.2) with margin.
const quiet = 1200 * time.Millisecond

// answeredCall is a relayed call that a device answered and the caller acknowledged.
type answeredCall struct {
	inv *siptest.CallInvite
	ok  *siptest.CallResponse // the 200 as the caller got it
	d   *siptest.Device
	in  *siptest.DeviceMessage // the INVITE as the device got it
}

// answer rings, connects a device on the listener dev, answers 200 and acknowledges it.
func (e *env) answer(dev string) *answeredCall {
	e.t.Helper()
	t := e.t.(*testing.T)
	inv, token := e.ring()
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER with the token: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 {
		t.Fatalf("final %d", ok.Status)
	}
	inv.InDialog(ok, "ACK", 0)
	deviceNext(t, d, "ACK")
	return &answeredCall{inv: inv, ok: ok, d: d, in: in}
}

// noDeviceMessage fails if the device gets a request with method within quiet.
func noDeviceMessage(t *testing.T, d *siptest.Device, method string) {
	t.Helper()
	if m, err := d.Next(method, false, quiet); err == nil {
		t.Fatalf("device got an unexpected %s:\n%s", method, m.Raw)
	}
}

// TestRelayFinalRetransmittedUntilAck: the device's 486 reaches the caller over UDP; while the
// caller does not acknowledge it sipis retransmits it (Timer G, RFC 3261 §17.2.1); the
// caller's ACK is absorbed hop by hop (not relayed to the device, which got sipis's own ACK)
// and stops the retransmissions.
func TestRelayFinalRetransmittedUntilAck(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	e.caller.SetAutoAck(false)
	inv, token := e.ring()
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); code != 200 {
		t.Fatal(code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 486, "Busy Here", "")
	first := e.nextNonTrying(inv.CallID, "INVITE")
	if first.Status != 486 {
		t.Fatalf("final %d", first.Status)
	}
	deviceNext(t, d, "ACK") // sipis's own ACK of the 486
	again := e.nextNonTrying(inv.CallID, "INVITE")
	if again.Status != 486 || again.Raw != first.Raw {
		t.Fatalf("retransmission %d differs:\n%s\nfirst:\n%s", again.Status, again.Raw, first.Raw)
	}
	if gap := again.Arrived.Sub(first.Arrived); gap < 400*time.Millisecond {
		t.Errorf("retransmitted after %v, want about T1", gap)
	}
	e.caller.Ack(again)
	n := e.caller.Count(inv.CallID, "INVITE", 486)
	noDeviceMessage(t, d, "ACK")
	if got := e.caller.Count(inv.CallID, "INVITE", 486); got != n {
		t.Errorf("486 sent %d more times after the ACK", got-n)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Reason != ReasonBusy {
		t.Fatalf("records %+v", cs)
	}
}

// TestRelayInviteRetransmissionAbsorbed: after the 2xx was relayed, a retransmitted INVITE
// (same branch) is absorbed by the Accepted server transaction (RFC 6026 §7.1): neither
// relayed to the device again nor answered by sipis itself; the device's own 2xx
// retransmissions (RFC 3261 §13.3.1.4) are relayed upstream each time (RFC 6026 §7.2).
func TestRelayInviteRetransmissionAbsorbed(t *testing.T) {
	e := newEnv(t)
	inv, d, in := e.deviceGetsInvite()
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 {
		t.Fatalf("final %d", ok.Status)
	}
	inv.Retransmit()
	d.Respond(in, 200, "OK", "v=0\r\n") // the device's UAS core retransmits its 2xx
	again := e.nextNonTrying(inv.CallID, "INVITE")
	if again.Status != 200 || again.Header("To") != ok.Header("To") {
		t.Fatalf("relayed 2xx retransmission %d:\n%s", again.Status, again.Raw)
	}
	noDeviceMessage(t, d, "INVITE")
	if got := e.caller.Count(inv.CallID, "INVITE", 200); got != 2 {
		t.Errorf("caller got %d 200s, want 2 (the device's two)", got)
	}
	inv.InDialog(ok, "ACK", 0)
	deviceNext(t, d, "ACK")
	if e.m.ActiveCalls(testSel) != 1 {
		t.Errorf("active calls %d", e.m.ActiveCalls(testSel))
	}
}

// TestRelayDeviceHangsUp: the device's BYE goes upstream (our Route entries consumed, Via
// added), the caller's 200 comes back, and the dialog ends: record terminated, no active call.
func TestRelayDeviceHangsUp(t *testing.T) {
	e := newEnv(t)
	a := e.answer(e.deviceListener())
	a.d.Bye(a.in)
	bye, err := e.caller.NextRequest(a.inv.CallID, "BYE", waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	if bye.Header("Route") != "" || !strings.HasPrefix(bye.URI, "sip:caller@") ||
		!strings.Contains(bye.Raw, "SIP/2.0/TCP") || !strings.Contains(bye.Header("Via"), "SIP/2.0/UDP") {
		t.Fatalf("relayed BYE:\n%s", bye.Raw)
	}
	e.caller.Respond(bye, 200, "OK", "")
	if r, err := a.d.Next("BYE", true, waitSIP); err != nil || r.Status != 200 {
		t.Fatalf("device got %v %v for its BYE", r, err)
	}
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].DialogState == store.DialogTerminated && !cs[0].EndedAt.IsZero()
	})
	if n := e.m.ActiveCalls(testSel); n != 0 {
		t.Errorf("active calls %d", n)
	}
}

// TestRelayMidDialogBothWays: a re-INVITE (with its ACK) and an INFO from each side reach the
// other side with their bodies, and their responses come back.
func TestRelayMidDialogBothWays(t *testing.T) {
	e := newEnv(t)
	a := e.answer(e.deviceListener())
	const sdp2 = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
	const dtmf = "Signal=5\r\nDuration=160\r\n"

	// Caller -> device.
	a.inv.InDialogBody(a.ok, "INVITE", 2, "application/sdp", sdp2)
	re := deviceNext(t, a.d, "INVITE")
	if re.Body() != sdp2 || !strings.Contains(re.Header("CSeq"), "2 INVITE") {
		t.Fatalf("re-INVITE at the device:\n%s", re.Raw)
	}
	a.d.Respond(re, 200, "OK", sdp2)
	r := e.nextNonTrying(a.inv.CallID, "INVITE")
	if r.Status != 200 || r.Body() != sdp2 {
		t.Fatalf("re-INVITE answered %d:\n%s", r.Status, r.Raw)
	}
	a.inv.InDialog(a.ok, "ACK", 2)
	if ack := deviceNext(t, a.d, "ACK"); !strings.Contains(ack.Header("CSeq"), "2 ACK") {
		t.Fatalf("ACK of the re-INVITE:\n%s", ack.Raw)
	}
	a.inv.InDialogBody(a.ok, "INFO", 3, "application/dtmf-relay", dtmf)
	info := deviceNext(t, a.d, "INFO")
	if info.Body() != dtmf {
		t.Fatalf("INFO at the device:\n%s", info.Raw)
	}
	a.d.Respond(info, 200, "OK", "")
	if r := e.nextNonTrying(a.inv.CallID, "INFO"); r.Status != 200 {
		t.Fatalf("INFO answered %d", r.Status)
	}

	// Device -> caller.
	a.d.InDialog(a.in, "INVITE", 1, "application/sdp", sdp2)
	up, err := e.caller.NextRequest(a.inv.CallID, "INVITE", waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	if up.Body() != sdp2 || up.Header("Route") != "" {
		t.Fatalf("device's re-INVITE upstream:\n%s", up.Raw)
	}
	e.caller.Respond(up, 200, "OK", sdp2)
	if r, err := a.d.Next("INVITE", true, waitSIP); err != nil || r.Status != 200 || r.Body() != sdp2 {
		t.Fatalf("device's re-INVITE answered %v %v", r, err)
	}
	a.d.InDialog(a.in, "ACK", 1, "", "")
	if _, err := e.caller.NextRequest(a.inv.CallID, "ACK", waitSIP); err != nil {
		t.Fatal(err)
	}
	a.d.InDialog(a.in, "INFO", 2, "application/dtmf-relay", dtmf)
	upInfo, err := e.caller.NextRequest(a.inv.CallID, "INFO", waitSIP)
	if err != nil || upInfo.Body() != dtmf {
		t.Fatalf("device's INFO upstream: %v %v", upInfo, err)
	}
	e.caller.Respond(upInfo, 200, "OK", "")
	if r, err := a.d.Next("INFO", true, waitSIP); err != nil || r.Status != 200 {
		t.Fatalf("device's INFO answered %v %v", r, err)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].DialogState != store.DialogStable {
		t.Fatalf("records %+v", cs)
	}
}

// TestRelayReferNeverActedOn: a REFER from either side is relayed to the other side and its
// 202 relayed back, and sipis itself never contacts the Refer-To target (DESIGN: sipis
// never follows REFER on a user's behalf).
func TestRelayReferNeverActedOn(t *testing.T) {
	e := newEnv(t)
	elsewhere, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer elsewhere.Close()
	referTo := "Refer-To: <sip:transfer@" + elsewhere.LocalAddr().String() + ">"
	a := e.answer(e.deviceListener())

	a.inv.InDialogBody(a.ok, "REFER", 2, "", "", referTo)
	ref := deviceNext(t, a.d, "REFER")
	if !strings.Contains(ref.Header("Refer-To"), elsewhere.LocalAddr().String()) {
		t.Fatalf("REFER at the device:\n%s", ref.Raw)
	}
	a.d.Respond(ref, 202, "Accepted", "")
	if r := e.nextNonTrying(a.inv.CallID, "REFER"); r.Status != 202 {
		t.Fatalf("REFER answered %d", r.Status)
	}

	a.d.InDialog(a.in, "REFER", 1, "", "", referTo)
	up, err := e.caller.NextRequest(a.inv.CallID, "REFER", waitSIP)
	if err != nil {
		t.Fatal(err)
	}
	e.caller.Respond(up, 202, "Accepted", "")
	if r, err := a.d.Next("REFER", true, waitSIP); err != nil || r.Status != 202 {
		t.Fatalf("device's REFER answered %v %v", r, err)
	}

	_ = elsewhere.SetReadDeadline(time.Now().Add(quiet))
	buf := make([]byte, 2048)
	if n, _, err := elsewhere.ReadFromUDP(buf); err == nil {
		t.Fatalf("sipis acted on the REFER:\n%s", buf[:n])
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeAccepted || cs[0].DialogState != store.DialogStable {
		t.Fatalf("records %+v", cs)
	}
}

// selfSigned returns a server certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	c := testutil.SelfSigned(t, "sipis test", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	return c.TLS, c.Pool
}

// TestRelayOverTLS: a device that reaches the TLS listener (certificate checked) claims the
// call, gets the INVITE with a TLS Via and Record-Route, answers, and the caller hangs up.
func TestRelayOverTLS(t *testing.T) {
	e := newEnv(t)
	cert, pool := selfSigned(t)
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "tls", Address: "127.0.0.1:0"}},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ua.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ua.SetHandler(e.m)
	t.Cleanup(func() { ua.Close() })

	inv, token := e.ring()
	d := siptest.DialDeviceTLS(t, ua.Addr("tls"), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER over TLS: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	if !strings.Contains(in.Header("Via"), "SIP/2.0/TLS") || !strings.Contains(in.Header("Record-Route"), "transport=tls") ||
		!strings.Contains(in.URI, "transport=tls") {
		t.Fatalf("INVITE over TLS:\n%s", in.Raw)
	}
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := e.nextNonTrying(inv.CallID, "INVITE")
	if ok.Status != 200 {
		t.Fatalf("final %d", ok.Status)
	}
	inv.InDialog(ok, "ACK", 0)
	deviceNext(t, d, "ACK")
	inv.InDialog(ok, "BYE", 2)
	bye := deviceNext(t, d, "BYE")
	d.Respond(bye, 200, "OK", "")
	if r := e.nextNonTrying(inv.CallID, "BYE"); r.Status != 200 {
		t.Fatalf("BYE answered %d", r.Status)
	}
	waitFor(t, func() bool { return e.m.ActiveCalls(testSel) == 0 })
}

// expectBye waits for sipis's own BYE at the caller, checks it is the device's side of the
// dialog (From with the device's tag, To with the caller's), and answers 200.
func (e *env) expectBye(a *answeredCall) *siptest.CallRequest {
	e.t.Helper()
	bye, err := e.caller.NextRequest(a.inv.CallID, "BYE", waitSIP)
	if err != nil {
		e.t.Fatal(err)
	}
	if !strings.Contains(bye.Header("From"), a.ok.Header("To")[strings.Index(a.ok.Header("To"), "tag="):]) ||
		!strings.Contains(bye.Header("To"), "tag="+a.inv.Tag) || !strings.HasPrefix(bye.URI, "sip:caller@") {
		e.t.Fatalf("BYE from sipis:\n%s", bye.Raw)
	}
	e.caller.Respond(bye, 200, "OK", "")
	return bye
}

// waitEnded waits until the call's record is terminated with reason why and no call is
// active.
func (e *env) waitEnded(why string) {
	e.t.Helper()
	t := e.t.(*testing.T)
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].DialogState == store.DialogTerminated && cs[0].Reason == why &&
			cs[0].Outcome == store.OutcomeAccepted && e.m.ActiveCalls(testSel) == 0
	})
}

// TestDeviceFlowDropEndsDialog: the answered device's connection drops; sipis sends BYE
// upstream in the device's name, and the record ends with "device connection lost".
func TestDeviceFlowDropEndsDialog(t *testing.T) {
	e := newEnv(t)
	a := e.answer(e.deviceListener())
	if e.m.ActiveCalls(testSel) != 1 {
		t.Fatalf("active calls %d", e.m.ActiveCalls(testSel))
	}
	a.d.Close()
	e.expectBye(a)
	e.waitEnded(ReasonDeviceLost)
}

// TestMaxDialogAgeEndsDialog: an answered dialog older than MaxDialogAge gets BYE both ways,
// each with the identity of the side sipis stands in for and a CSeq above that side's last.
func TestMaxDialogAgeEndsDialog(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxDialogAge = time.Hour })
	a := e.answer(e.deviceListener())
	a.inv.InDialogBody(a.ok, "INFO", 7, "application/dtmf-relay", "Signal=1\r\n")
	info := deviceNext(t, a.d, "INFO")
	a.d.Respond(info, 200, "OK", "")
	e.nextNonTrying(a.inv.CallID, "INFO")

	e.clock.Advance(59 * time.Minute)
	noDeviceMessage(t, a.d, "BYE")
	e.clock.Advance(time.Minute)
	bye := deviceNext(t, a.d, "BYE")
	if !strings.Contains(bye.Header("CSeq"), "8 BYE") || !strings.Contains(bye.Header("From"), "tag="+a.inv.Tag) ||
		!strings.HasPrefix(bye.URI, "sip:device@") {
		t.Fatalf("BYE to the device (want CSeq above the caller's 7):\n%s", bye.Raw)
	}
	a.d.Respond(bye, 200, "OK", "")
	e.expectBye(a)
	e.waitEnded(ReasonMaxAge)
}

// TestCloseEndsAnsweredDialogs: Manager.Close sends BYE both ways for an answered call,
// waits for the answers, and leaves no active call.
func TestCloseEndsAnsweredDialogs(t *testing.T) {
	e := newEnv(t)
	a := e.answer(e.deviceListener())
	closed := make(chan struct{})
	go func() {
		e.m.Close()
		close(closed)
	}()
	bye := deviceNext(t, a.d, "BYE")
	a.d.Respond(bye, 200, "OK", "")
	e.expectBye(a)
	select {
	case <-closed:
	case <-time.After(waitSIP):
		t.Fatal("Close did not return")
	}
	e.waitEnded(ReasonShutdown)
}
