package call

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

type fakeRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *fakeRecorder) Request(sel, callID, method, source string, text func() string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, fmt.Sprintf("%s > %s", sel, method))
	if !strings.Contains(text(), "Call-ID: "+callID) {
		r.seen = append(r.seen, "text without its Call-ID")
	}
}

func (r *fakeRecorder) Response(sel, callID, method string, code int, reason string, hs []sipua.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := fmt.Sprintf("%s < %d %s", sel, code, method)
	for _, h := range hs {
		if h.Name == "X-Sipis-Push-Status" {
			s += " " + h.Value
		}
	}
	r.seen = append(r.seen, s)
}

func (r *fakeRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.seen, "\n")
}

// TestRecorderSeesCallAndMessage: the Recorder is told of the INVITE, each 180 with its push
// stage, the CANCEL and its 200, the 487, and a MESSAGE with its 200.
func TestRecorderSeesCallAndMessage(t *testing.T) {
	rec := &fakeRecorder{}
	e := newEnv(t, func(o *Options) { o.Recorder = rec })
	inv := e.caller.Invite(e.target, testContact)
	e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
	if n := e.pusher.next(t); n.Kind != push.KindCall {
		t.Fatalf("push %+v", n)
	}
	e.expect(inv.CallID, "INVITE", 180, StatusPushSent)
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	e.expect(inv.CallID, "INVITE", 487, "")
	msg := e.caller.Message(e.target, testContact, "text/plain", []byte("hello"))
	e.expect(msg, "MESSAGE", 200, "")
	want := strings.Join([]string{
		testSel + " > INVITE", testSel + " < 180 INVITE Alerting-Device", testSel + " < 180 INVITE Push-Notification-Sent",
		testSel + " > CANCEL", testSel + " < 200 CANCEL", testSel + " < 487 INVITE",
		testSel + " > MESSAGE", testSel + " < 200 MESSAGE",
	}, "\n")
	if got := rec.String(); got != want {
		t.Errorf("recorded\n%s\nwant\n%s", got, want)
	}
}

type fakeDeviceRecorder struct{ fakeRecorder }

func (r *fakeDeviceRecorder) DeviceMessage(sel, callID, device string, toDevice bool, label, note string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir := "<"
	if toDevice {
		dir = ">"
	}
	r.seen = append(r.seen, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", device, dir, label, note)))
}

func (r *fakeDeviceRecorder) Relayed(sel, callID string, code int, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, fmt.Sprintf("relayed %d %s", code, reason))
}

// TestDeviceRecorderSeesTheRelay: a Recorder that takes device messages is told of the device
// taking the call, the INVITE relayed to it, its 180 and 200, and both going upstream.
func TestDeviceRecorderSeesTheRelay(t *testing.T) {
	rec := &fakeDeviceRecorder{}
	e := newEnv(t, func(o *Options) { o.Recorder = rec })
	dev := e.deviceListener()
	inv, token := e.ring()
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER with the token: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 180, "Ringing", "")
	e.nextNonTrying(inv.CallID, "INVITE")
	d.Respond(in, 200, "OK", "v=0\r\n")
	if ok := e.nextNonTrying(inv.CallID, "INVITE"); ok.Status != 200 {
		t.Fatalf("relayed %d", ok.Status)
	}
	got := rec.String()
	want := "iphone < REGISTER X-Sipis-Token: Not Empty\niphone > 200 OK\niphone > INVITE relayed\n" +
		"iphone < 180 Ringing\nrelayed 180 Ringing\niphone < 200 OK\nrelayed 200 OK"
	if !strings.HasSuffix(got, want) {
		t.Errorf("recorded\n%s\nwant it to end with\n%s", got, want)
	}
}
