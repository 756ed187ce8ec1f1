package call

import (
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/siptest"
)

// TestClaimNeedsDeviceProof: the call's token alone does not take a call (issue 12 point 9).
// The REGISTER must name a device the call was pushed to and prove that device's secret;
// each device's token is used once, so a copy of a successful claim on another connection is
// refused and gets no INVITE (with the caller's SDP). Another pushed device may still join.
func TestClaimNeedsDeviceProof(t *testing.T) {
	e := newEnv(t)
	e.addDevices("ipad")
	dev := e.deviceListener()
	inv, token := e.ring()
	for _, tc := range []struct {
		name, device, secret string
		code                 int
	}{
		{"no device", "", testSecret, 400},
		{"no proof", "iphone", "", 400},
		{"wrong secret", "iphone", "not-the-secret", 403},
		{"other device's id", "ghost", testSecret, 403},
	} {
		d := siptest.DialDevice(t, dev)
		r, err := d.RegisterResponse(token, tc.device, tc.secret)
		if err != nil || r.Status != tc.code {
			t.Fatalf("%s: REGISTER answered %v %v, want %d", tc.name, r, err, tc.code)
		}
		if strings.Contains(r.Raw, testSecret) {
			t.Fatalf("%s: the answer shows the secret:\n%s", tc.name, r.Raw)
		}
		if m, err := d.Next("INVITE", false, 0); err == nil {
			t.Fatalf("%s: got the INVITE:\n%s", tc.name, m.Raw)
		}
	}
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER with the proof: %d %v", code, err)
	}
	deviceNext(t, d, "INVITE")

	copycat := siptest.DialDevice(t, dev)
	r, err := copycat.RegisterResponse(token, "iphone", testSecret)
	if err != nil || r.Status != 403 || !strings.Contains(r.Raw, "Token Already Used") {
		t.Fatalf("second connection with the used token: %v\n%v", err, r)
	}
	noDeviceMessage(t, copycat, "INVITE")

	ipad := siptest.DialDevice(t, dev)
	if code, err := ipad.Register(token, "ipad", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER of the second pushed device: %d %v", code, err)
	}
	deviceNext(t, ipad, "INVITE")
	if e.caller.Count(inv.CallID, "INVITE", 200) != 0 {
		t.Fatal("call answered")
	}
}
