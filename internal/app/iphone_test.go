package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// iphoneAtKamailio starts Kamailio and sipis with the strict APNs fake, and holds one iOS
// device's instance with its two tokens.
type iphoneEnv struct {
	t      *testing.T
	a      *App
	k      *siptest.Kamailio
	apns   *pushtest.APNs
	phone  *pushtest.IPhone
	caller *siptest.Caller
	sel    string
	user   string
}

func newIPhoneEnv(t *testing.T, sel, user string) *iphoneEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	a := startApp(t, apnsSettings(t, t.TempDir(), apns, ""))
	t.Cleanup(a.Stop)
	phone := pushtest.NewIPhone(t, apns)
	holdDeviceAtKamailio(t, a, k, sel, user, registration.Device{ID: "iphone", Platform: "apns",
		PushToken: phone.VoIPToken, AlertToken: phone.AlertToken, AppID: apns.Topic, Secret: "device-secret-77"})
	return &iphoneEnv{t: t, a: a, k: k, apns: apns, phone: phone, caller: siptest.NewCaller(t), sel: sel, user: user}
}

// next waits for the next non-100 response to method of the call.
func (e *iphoneEnv) next(inv *siptest.CallInvite, method string) *siptest.CallResponse {
	e.t.Helper()
	for {
		res, err := e.caller.Next(inv.CallID, method, 5*time.Second)
		if err != nil {
			e.t.Fatalf("waiting for a response to %s: %v", method, err)
		}
		if res.Status != 100 {
			return res
		}
	}
}

// ring calls the user through Kamailio and returns the call and its VoIP push.
func (e *iphoneEnv) ring() (*siptest.CallInvite, pushtest.APNsPush) {
	e.t.Helper()
	before := len(e.phone.VoIPPushes())
	inv := e.caller.Invite(e.k.Addr(), e.user, `P-Asserted-Identity: "Alice" <sip:+41441234567@example.org>`)
	if r := e.next(inv, "INVITE"); r.Status != 180 || r.Header("X-Sipis-Push-Status") != "Alerting-Device" {
		e.t.Fatalf("first answer %d %q", r.Status, r.Header("X-Sipis-Push-Status"))
	}
	if r := e.next(inv, "INVITE"); r.Status != 180 || r.Header("X-Sipis-Push-Status") != "Push-Notification-Sent" {
		e.t.Fatalf("second answer %d %q (refused pushes: %v)", r.Status, r.Header("X-Sipis-Push-Status"), e.phone.Refused())
	}
	v := e.phone.VoIPPushes()
	if len(v) != before+1 {
		e.t.Fatalf("%d VoIP pushes, want %d", len(v), before+1)
	}
	p := v[len(v)-1]
	if p.Payload["call_id"] != inv.CallID || p.Payload["pairing_id"] == nil || p.Payload["sent_at"] == nil {
		e.t.Errorf("VoIP push payload %s", p.Body)
	}
	return inv, p
}

// alerts returns the kinds of the alerts the phone got, in order.
func (e *iphoneEnv) alerts() []string {
	var out []string
	for _, p := range e.phone.Alerts() {
		out = append(out, fmt.Sprint(p.Payload["kind"]))
	}
	return out
}

// waitAlerts waits until the phone got n alerts.
func (e *iphoneEnv) waitAlerts(n int) []string {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.phone.Alerts()) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("alerts %v, want %d (refused: %v)", e.alerts(), n, e.phone.Refused())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return e.alerts()
}

// TestIPhoneThroughKamailio is the scenario on one iOS device with a strict APNs
// fake: a MESSAGE then an INVITE are both delivered and no token is lost; a cancelled call
// gives a missed-call alert and no second VoIP push; the woken device connecting after the
// CANCEL gets INVITE then CANCEL on its connection; turning the instance off sends the "off"
// alert. The fake iPhone fails the test if a VoIP push is not followed by a call it reports.
func TestIPhoneThroughKamailio(t *testing.T) {
	e := newIPhoneEnv(t, "1f0e1f0e1f0e1f0e", "user0077")

	// MESSAGE first: an alert on the bundle topic with the alert token.
	id := e.caller.Message(e.k.Addr(), e.user, "text/plain", []byte("call me"))
	if res, err := e.caller.Next(id, "MESSAGE", 5*time.Second); err != nil || res.Status != 200 {
		t.Fatalf("MESSAGE answered %v %v", res, err)
	}
	if got := e.waitAlerts(1); got[0] != "message" {
		t.Fatalf("alerts %v", got)
	}
	al := e.phone.Alerts()[0]
	if al.Header.Get("apns-topic") != e.apns.Topic || al.Header.Get("apns-push-type") != "alert" {
		t.Errorf("message push headers %v", al.Header)
	}

	// Then a call: the VoIP token still works. The woken device connects, gets the INVITE
	// (the app reports it to CallKit), and the caller cancels.
	inv, p := e.ring()
	d := siptest.DialDevice(t, e.a.devUA.Addr("tcp"))
	if code, err := d.Register(fmt.Sprint(p.Payload["token"]), "iphone", "device-secret-77"); code != 200 {
		t.Fatalf("device REGISTER: %d %v", code, err)
	}
	in, err := d.Next("INVITE", false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e.phone.ReportCall(fmt.Sprint(p.Payload["pairing_id"]))
	d.Respond(in, 180, "Ringing", "")
	if r := e.next(inv, "INVITE"); r.Status != 180 {
		t.Fatalf("relayed 180: %d", r.Status)
	}
	inv.Cancel()
	c, err := d.Next("CANCEL", false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d.Respond(c, 200, "OK", "")
	d.Respond(in, 487, "Request Terminated", "")
	if r := e.next(inv, "INVITE"); r.Status != 487 {
		t.Fatalf("final %d", r.Status)
	}
	if got := e.waitAlerts(2); got[1] != "missed-call" {
		t.Fatalf("alerts %v, want message then missed-call", got)
	}
	if n := len(e.phone.VoIPPushes()); n != 1 {
		t.Errorf("%d VoIP pushes for one call: a call's end must not be one", n)
	}
	devs, err := e.a.db.Devices(context.Background(), e.sel)
	if err != nil || len(devs) != 1 || devs[0].TokenInvalid || devs[0].AlertTokenInvalid {
		t.Fatalf("a token was lost: %+v %v", devs, err)
	}
	if r := e.phone.Refused(); len(r) != 0 {
		t.Errorf("APNs refused %d pushes, first: %s %s", len(r), r[0].Reason, r[0].Header.Get("apns-topic"))
	}

	// A call cancelled before the woken device connected: missed-call alert, and the device
	// connecting after the CANCEL gets INVITE then CANCEL on its connection.
	inv2, p2 := e.ring()
	inv2.Cancel()
	if r := e.next(inv2, "INVITE"); r.Status != 487 {
		t.Fatalf("final %d", r.Status)
	}
	if got := e.waitAlerts(3); got[2] != "missed-call" {
		t.Fatalf("alerts %v", got)
	}
	d2 := siptest.DialDevice(t, e.a.devUA.Addr("tcp"))
	if code, err := d2.Register(fmt.Sprint(p2.Payload["token"]), "iphone", "device-secret-77"); code != 200 {
		t.Fatalf("late device REGISTER: %d %v", code, err)
	}
	in2, err := d2.Next("INVITE", false, 5*time.Second)
	if err != nil {
		t.Fatalf("the late device got no INVITE: %v", err)
	}
	if !strings.Contains(in2.Raw, inv2.CallID) {
		t.Errorf("late INVITE of another call:\n%s", in2.Raw)
	}
	e.phone.ReportCall(fmt.Sprint(p2.Payload["pairing_id"]))
	d2.Respond(in2, 180, "Ringing", "")
	c2, err := d2.Next("CANCEL", false, 5*time.Second)
	if err != nil {
		t.Fatalf("the late device got no CANCEL: %v", err)
	}
	d2.Respond(c2, 200, "OK", "")
	d2.Respond(in2, 487, "Request Terminated", "")
	if n := len(e.phone.VoIPPushes()); n != 2 {
		t.Errorf("%d VoIP pushes for two calls", n)
	}

	// The administrator turns the instance off: the "off" alert.
	if err := (&backend{app: e.a}).TurnOff(context.Background(), e.sel); err != nil {
		t.Fatal(err)
	}
	if got := e.waitAlerts(4); got[3] != "off" {
		t.Fatalf("alerts %v, want the off alert last", got)
	}
	off := e.phone.Alerts()[3]
	aps, _ := off.Payload["aps"].(map[string]any)
	alert, _ := aps["alert"].(map[string]any)
	if !strings.Contains(fmt.Sprint(alert["body"]), e.user) {
		t.Errorf("off alert %s", off.Body)
	}
}

// TestPushConfigErrorShown: an app that sends its VoIP token as the alert token gets
// DeviceTokenNotForTopic for messages; the token is kept, the call still goes through, and
// the error is counted on /stats, /debug and /metrics.
func TestPushConfigErrorShown(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	a := startApp(t, apnsSettings(t, t.TempDir(), apns, ""))
	t.Cleanup(a.Stop)
	const sel, user = "c0f1c0f1c0f1c0f1", "user0078"
	voip := strings.Repeat("5a", 32)
	apns.BindVoIPToken(voip)
	// The app's bug: its alert token is another VoIP token.
	wrong := strings.Repeat("6b", 32)
	apns.BindVoIPToken(wrong)
	holdDeviceAtKamailio(t, a, k, sel, user, registration.Device{ID: "iphone", Platform: "apns",
		PushToken: voip, AlertToken: wrong, AppID: apns.Topic, Secret: "device-secret-78"})
	caller := siptest.NewCaller(t)
	for i := range 2 {
		id := caller.Message(k.Addr(), user, "text/plain", []byte(fmt.Sprint("hello ", i)))
		if res, err := caller.Next(id, "MESSAGE", 5*time.Second); err != nil || res.Status != 200 {
			t.Fatalf("MESSAGE answered %v %v", res, err)
		}
	}
	b := &backend{app: a}
	waitAll(t, "the configuration error counted", 10*time.Second, func() (bool, string) {
		c := b.PushConfigErrors()
		return c["APNs DeviceTokenNotForTopic"] == 2, fmt.Sprint(c)
	})
	devs, _ := a.db.Devices(context.Background(), sel)
	if len(devs) != 1 || devs[0].TokenInvalid || devs[0].AlertTokenInvalid {
		t.Fatalf("a configuration error killed a token: %+v", devs)
	}
	info, err := b.Debug(context.Background(), sel)
	if err != nil || !strings.Contains(fmt.Sprint(info), "DeviceTokenNotForTopic") {
		t.Errorf("/debug does not show the error: %v %v", err, info)
	}
	code, page := get(t, a.HTTPURL()+"/stats")
	if code != 200 || !strings.Contains(page, "APNs DeviceTokenNotForTopic") {
		t.Errorf("/stats does not show the error: %d", code)
	}
	code, metrics := get(t, a.HTTPURL()+"/metrics")
	if code != 200 || !strings.Contains(metrics, `sipis_push_config_errors_total{platform="apns",reason="DeviceTokenNotForTopic"} 2`) {
		t.Errorf("/metrics does not export the error: %d", code)
	}
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
