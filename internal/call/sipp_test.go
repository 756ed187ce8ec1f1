package call

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
)

// TestSIPpCallerCancels drives the SIPp scenario testdata/sipp/cancel_uac.xml (a caller that
// waits for both wake-up 180s, then cancels) against the Manager. Skipped without sipp.
func TestSIPpCallerCancels(t *testing.T) {
	sipp := siptest.SIPp(t)
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// -p 0: SIPp binds a free port itself.
	cmd := exec.CommandContext(ctx, sipp, "-sf", "testdata/sipp/cancel_uac.xml", "-s", testContact,
		"-i", "127.0.0.1", "-p", "0", "-m", "1", "-l", "1", "-timeout", "20s", "-timeout_error",
		"-nostdin", "-trace_err", "-error_file", t.TempDir()+"/errors.log", e.target)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sipp failed: %v\n%s", err, out)
	}
	if n := e.pusher.next(t); n.Kind != push.KindCall || n.CallerURI != "sip:+41000000001@sipp.example" {
		t.Errorf("call push = %+v", n)
	}
	if n := e.pusher.next(t); n.Kind != push.KindMissedCall {
		t.Errorf("second push = %+v, want missed-call", n)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonCancelled {
		t.Errorf("records = %+v", cs)
	}
}

// TestSIPpAnsweredCall drives testdata/sipp/answered_uac.xml (SIPp as the user's proxy: a call
// answered by a device, ACK and BYE along sipis's Record-Route) while a siptest device takes
// the call over TCP. Skipped without sipp.
func TestSIPpAnsweredCall(t *testing.T) {
	sipp := siptest.SIPp(t)
	e := newEnv(t)
	dev := e.deviceListener()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sipp, "-sf", "testdata/sipp/answered_uac.xml", "-s", testContact,
		"-i", "127.0.0.1", "-p", "0", "-m", "1", "-l", "1", "-timeout", "20s", "-timeout_error",
		"-nostdin", "-trace_err", "-error_file", t.TempDir()+"/errors.log", e.target)
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := cmd.CombinedOutput()
		done <- result{out, err}
	}()
	n := e.pusher.next(t)
	if n.Kind != push.KindCall || n.CallerURI != "sip:+41000000002@sipp.example" {
		t.Fatalf("call push = %+v", n)
	}
	d := siptest.DialDevice(t, dev)
	if code, err := d.Register(n.Token, "iphone", testSecret); err != nil || code != 200 {
		t.Fatalf("REGISTER: %d %v", code, err)
	}
	in := deviceNext(t, d, "INVITE")
	d.Respond(in, 180, "Ringing", "")
	d.Respond(in, 200, "OK", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n")
	deviceNext(t, d, "ACK")
	bye := deviceNext(t, d, "BYE")
	d.Respond(bye, 200, "OK", "")
	r := <-done
	if r.err != nil {
		t.Fatalf("sipp failed: %v\n%s", r.err, r.out)
	}
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].Outcome == store.OutcomeAccepted && cs[0].DialogState == store.DialogTerminated
	})
	if e.m.ActiveCalls(testSel) != 0 {
		t.Errorf("active calls %d", e.m.ActiveCalls(testSel))
	}
}
