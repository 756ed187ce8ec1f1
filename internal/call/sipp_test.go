package call

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// TestSIPpCallerCancels drives the SIPp scenario testdata/sipp/cancel_uac.xml (a caller that
// waits for both wake-up 180s, then cancels) against the Manager. Skipped without sipp.
func TestSIPpCallerCancels(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp not installed (Debian package sip-tester)")
	}
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
	if n := e.pusher.next(t); n.Kind != push.KindCancel {
		t.Errorf("second push = %+v, want cancel", n)
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonCancelled {
		t.Errorf("records = %+v", cs)
	}
}
