package app

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/testutil"
)

// TestCallThroughKamailio calls a user whose instance sipis holds at a real Kamailio: the
// INVITE reaches sipis through Kamailio, sipis answers with the push stages and pushes to the
// APNs fake, the woken device says it is coming, and the caller cancels. A MESSAGE through
// Kamailio is stored and fetched by the device.
func TestCallThroughKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	s := apnsSettings(t, t.TempDir(), apns, "")
	a := startApp(t, s)
	defer a.Stop()

	const sel, user = "ca11ca11ca11ca11", "user0042"
	holdAtKamailio(t, a, k, apns, sel, user, "device-secret-42")

	caller := siptest.NewCaller(t)
	inv := caller.Invite(k.Addr(), user, `P-Asserted-Identity: "Alice" <sip:+41441234567@example.org>`)
	next := func(method string) *siptest.CallResponse {
		t.Helper()
		res, err := caller.Next(inv.CallID, method, 5*time.Second)
		if err != nil {
			t.Fatalf("waiting for a response to %s: %v", method, err)
		}
		return res
	}
	// Kamailio may answer 100 Trying first.
	first := next("INVITE")
	for first.Status == 100 {
		first = next("INVITE")
	}
	if first.Status != 180 || first.Header("X-Sipis-Push-Status") != "Alerting-Device" {
		t.Fatalf("first answer %d %q", first.Status, first.Header("X-Sipis-Push-Status"))
	}
	if second := next("INVITE"); second.Status != 180 || second.Header("X-Sipis-Push-Status") != "Push-Notification-Sent" {
		t.Fatalf("second answer %d %q", second.Status, second.Header("X-Sipis-Push-Status"))
	}
	pushes := apns.Pushes()
	if len(pushes) != 1 {
		t.Fatalf("%d pushes", len(pushes))
	}
	p := pushes[0]
	if p.Header.Get("apns-push-type") != "voip" || p.Header.Get("apns-topic") != apns.Topic+".voip" {
		t.Errorf("push headers %v", p.Header)
	}
	if p.Payload["selector"] != sel || !strings.Contains(fmt.Sprint(p.Payload["caller_uri"]), "+41441234567") || p.Payload["token"] == nil {
		t.Errorf("push payload %v", p.Payload)
	}

	// The woken device says it is coming.
	body := strings.NewReader(fmt.Sprintf(`{"token":%q}`, p.Payload["token"]))
	resp, err := http.Post(a.HTTPURL()+"/sipis/call/progress", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("progress: %s", resp.Status)
	}
	if third := next("INVITE"); third.Status != 180 || third.Header("X-Sipis-Push-Status") != "Device-Making-Progress" {
		t.Fatalf("third answer %d %q", third.Status, third.Header("X-Sipis-Push-Status"))
	}

	// The caller gives up.
	inv.Cancel()
	if res, err := caller.Next(inv.CallID, "CANCEL", 5*time.Second); err != nil || res.Status != 200 {
		t.Fatalf("CANCEL answered %v %v", res, err)
	}
	final := next("INVITE")
	if final.Status != 487 {
		t.Fatalf("INVITE ended with %d, want 487", final.Status)
	}
	b := &backend{app: a}
	if o := b.CallOutcomes(); o.Total != 1 || o.Missed != 1 {
		t.Errorf("call outcomes %+v", o)
	}

	// A MESSAGE through Kamailio is stored, then fetched by the device with its secret.
	callID := caller.Message(k.Addr(), user, "text/plain", []byte("are you there?"))
	res, err := caller.Next(callID, "MESSAGE", 5*time.Second)
	if err != nil || res.Status != 200 {
		t.Fatalf("MESSAGE answered %v %v", res, err)
	}
	req, _ := http.NewRequest(http.MethodGet, a.HTTPURL()+"/sipis/messages?s="+sel, nil)
	req.Header.Set("X-Sipis-Device", "iphone")
	req.Header.Set("X-Sipis-Secret", "device-secret-42")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(got), "are you there?") && !strings.Contains(string(got), "YXJlIHlvdSB0aGVyZT8") {
		t.Errorf("messages: %s %s", resp.Status, got)
	}
	var doc any
	if err := json.Unmarshal(got, &doc); err != nil {
		t.Errorf("messages are not JSON: %v", err)
	}
}

// kamailioCall is a call through Kamailio that a device answered and the caller acknowledged.
type kamailioCall struct {
	a      *App
	sel    string
	caller *siptest.Caller
	inv    *siptest.CallInvite
	ok     *siptest.CallResponse
	d      *siptest.Device
	next   func(method string) *siptest.CallResponse
}

// answerThroughKamailio starts Kamailio and sipis, registers user's instance sel, calls it
// through Kamailio and lets a device take the call over TCP with the token from the push,
// relay a 180 and answer 200; the caller ACKs.
func answerThroughKamailio(t *testing.T, sel, user string) *kamailioCall {
	t.Helper()
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	s := apnsSettings(t, t.TempDir(), apns, "")
	a := startApp(t, s)
	t.Cleanup(a.Stop)

	holdAtKamailio(t, a, k, apns, sel, user, "device-secret-43")
	return callAndAnswer(t, a, k, apns, siptest.NewCaller(t), sel, user, "device-secret-43")
}

// callAndAnswer calls user (held by sipis at Kamailio, device "iphone" with secret) from
// caller through Kamailio; the device takes the call with the token of the newest push and its
// proof, relays a 180 and answers 200; the caller ACKs.
func callAndAnswer(t *testing.T, a *App, k *siptest.Kamailio, apns *pushtest.APNs, caller *siptest.Caller, sel, user, secret string) *kamailioCall {
	t.Helper()
	before := len(apns.Pushes())
	inv := caller.Invite(k.Addr(), user)
	next := func(method string) *siptest.CallResponse {
		t.Helper()
		for {
			res, err := caller.Next(inv.CallID, method, 5*time.Second)
			if err != nil {
				t.Fatalf("waiting for a response to %s: %v", method, err)
			}
			if res.Status != 100 {
				return res
			}
		}
	}
	next("INVITE")
	next("INVITE")
	var token string
	for _, p := range apns.Pushes()[before:] {
		if p.Payload["kind"] == "call" && p.Payload["token"] != nil {
			token = fmt.Sprint(p.Payload["token"])
			// The device is sent where the device listener listens (never 0.0.0.0).
			if got := fmt.Sprint(p.Payload["relay_address"]); got != a.devUA.Addr("tcp") {
				t.Fatalf("pushed relay_address %q, want the device listener %s", got, a.devUA.Addr("tcp"))
			}
		}
	}
	if token == "" {
		t.Fatalf("no call push among %v", apns.Pushes()[before:])
	}
	d := siptest.DialDevice(t, a.devUA.Addr("tcp"))
	if code, err := d.Register(token, "iphone", secret); code != 200 {
		t.Fatalf("device REGISTER: %d %v", code, err)
	}
	in, err := d.Next("INVITE", false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d.Respond(in, 180, "Ringing", "")
	if res := next("INVITE"); res.Status != 180 {
		t.Fatalf("relayed 180: %d", res.Status)
	}
	d.Respond(in, 200, "OK", "v=0\r\n")
	ok := next("INVITE")
	if ok.Status != 200 {
		t.Fatalf("relayed 200: %d", ok.Status)
	}
	inv.InDialog(ok, "ACK", 0)
	if _, err := d.Next("ACK", false, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return &kamailioCall{a: a, sel: sel, caller: caller, inv: inv, ok: ok, d: d, next: next}
}

// TestAnsweredCallThroughKamailio: the woken device connects to the device-facing listener with
// the token from the push, gets the INVITE relayed through Kamailio and sipis, answers; the
// caller gets the 200, ACKs and hangs up through Kamailio, and the device gets ACK and BYE.
func TestAnsweredCallThroughKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	c := answerThroughKamailio(t, "ca11ca11ca11ca12", "user0043")
	c.inv.InDialog(c.ok, "BYE", 2)
	bye, err := c.d.Next("BYE", false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.d.Respond(bye, 200, "OK", "")
	if res := c.next("BYE"); res.Status != 200 {
		t.Fatalf("BYE answered %d", res.Status)
	}
	b := &backend{app: c.a}
	if o := b.CallOutcomes(); o.Total != 1 || o.Accepted != 1 {
		t.Errorf("call outcomes %+v", o)
	}
	waitActive(t, c, 0)
}

// TestDeviceDropThroughKamailio: the answered device's connection drops; the caller gets a
// BYE from sipis in the device's name (RFC 3261 §15.1.1) and the call is no longer active.
func TestDeviceDropThroughKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	c := answerThroughKamailio(t, "ca11ca11ca11ca13", "user0044")
	waitActive(t, c, 1)
	c.d.Close()
	bye, err := c.caller.NextRequest(c.inv.CallID, "BYE", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.caller.Respond(bye, 200, "OK", "")
	waitActive(t, c, 0)
}

// waitActive waits until the instance has n calls in progress.
func waitActive(t *testing.T, c *kamailioCall, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.a.calls.ActiveCalls(c.sel) != n {
		if time.Now().After(deadline) {
			t.Fatalf("active calls %d, want %d", c.a.calls.ActiveCalls(c.sel), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key as PEM files in dir and
// returns a pool that trusts it.
func writeSelfSigned(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	c := testutil.SelfSigned(t, "sipis test", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	c.WritePEM(t, filepath.Join(dir, "devices.crt"), filepath.Join(dir, "devices.key"))
	return c.Pool
}

// TestDeviceListenerTLS: with <TlsServerOptions> the device-facing listener also speaks TLS
// with that certificate; a device that checks it can connect, and a REGISTER with an unknown
// token is refused 403 over it.
func TestDeviceListenerTLS(t *testing.T) {
	dir := t.TempDir()
	pool := writeSelfSigned(t, dir)
	s := testSettings(t, dir, `<TlsServerOptions CertificateFile="devices.crt" KeyFile="devices.key" MinVersion="1.2"/>`)
	a := startApp(t, s)
	defer a.Stop()
	addr := a.devUA.Addr("tls")
	if addr == "" {
		t.Fatal("no TLS device listener")
	}
	d := siptest.DialDeviceTLS(t, addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if code, err := d.Register("0123456789abcdef0123456789abcdef", "iphone", "device-secret-43"); err != nil || code != 403 {
		t.Fatalf("REGISTER with an unknown token over TLS: %d %v", code, err)
	}
	// A device that does not trust the certificate cannot connect.
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("TLS handshake succeeded without trusting the certificate")
	}
}
