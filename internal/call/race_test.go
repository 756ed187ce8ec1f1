package call

import (
	"testing"

	"github.com/sipis/sipis/internal/store"
)

// TestDeviceClosesWithItsByeAnswer: the caller hangs up and the device answers the BYE 200
// and closes its connection in the same write, 200 times in a row. Every time the caller gets
// the device's 200 (not a 503 for the closed connection, issue 10 point 1), and the dialog
// ends by that BYE: the record has no "device connection lost" reason, which sipis would
// have set had the flow watcher hung up (with a BYE of its own) the dialog already ended.
func TestDeviceClosesWithItsByeAnswer(t *testing.T) {
	e := newEnv(t)
	dev := e.deviceListener()
	n := 200
	if testing.Short() {
		n = 20
	}
	for i := range n {
		a := e.answer(dev)
		a.inv.InDialog(a.ok, "BYE", 2)
		bye := deviceNext(t, a.d, "BYE")
		a.d.RespondAndClose(bye, 200, "OK")
		if r := e.nextNonTrying(a.inv.CallID, "BYE"); r.Status != 200 {
			t.Fatalf("call %d: caller got %d %s for its BYE, want the device's 200", i, r.Status, r.Reason)
		}
		var rec store.Call
		waitFor(t, func() bool {
			cs := e.calls()
			rec = cs[0]
			return rec.CallID == a.inv.CallID && rec.DialogState == store.DialogTerminated && e.m.ActiveCalls(testSel) == 0
		})
		if rec.Outcome != store.OutcomeAccepted || rec.Reason != "" {
			t.Fatalf("call %d: record %s/%q, want accepted with no reason (ended by the caller's BYE)", i, rec.Outcome, rec.Reason)
		}
		if _, err := e.caller.NextRequest(a.inv.CallID, "BYE", 0); err == nil {
			t.Fatalf("call %d: sipis sent a BYE of its own for a dialog the caller ended", i)
		}
	}
}
