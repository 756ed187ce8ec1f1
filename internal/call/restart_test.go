package call

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/sipis/sipis/internal/store"
)

// TestRestartClosesRingingCall: sipis is killed while a call rings (its Manager is never
// closed, so the record stays an early dialog with no outcome). The next start closes the
// record (missed, "server restarted"), and the caller's later CANCEL is answered 200 and its
// INVITE 487 instead of 481 (issue 10 point 3).
func TestRestartClosesRingingCall(t *testing.T) {
	e := newEnv(t)
	inv, _ := e.ring()
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != "" || cs[0].DialogState != store.DialogEarly {
		t.Fatalf("record while ringing: %+v", cs)
	}
	// kill -9: the old Manager stops hearing anything and never writes again; a new one starts
	// on the same store.
	e.ua.SetHandler(nil)
	e.startManager()
	if err := e.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	cs := e.calls()
	if len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != ReasonRestarted ||
		cs[0].DialogState != store.DialogTerminated || cs[0].EndedAt.IsZero() {
		t.Fatalf("record after restart: %+v", cs)
	}
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	r := e.expect(inv.CallID, "INVITE", 487, "")
	if r.Header("CSeq") != "1 INVITE" || r.Header("Via") == "" {
		t.Fatalf("487 for the INVITE from before the restart:\n%s", r.Raw)
	}
	if got := e.outcomes(); got != "total=1 accepted=0 missed=1 rejected=0" {
		t.Errorf("outcomes after restart = %s", got)
	}
	// Once the grace period is over, a CANCEL gets 481 again.
	// (A new branch: the same CANCEL again is a retransmission its transaction answers.)
	e.clock.Advance(restartedGrace + 1)
	late := *inv
	late.Branch = "z9hG4bKlatecancel"
	late.Cancel()
	e.expect(inv.CallID, "CANCEL", 481, "")
}

// TestOutcomesSurviveRestart: the call outcomes are counted from the stored records, so a
// restart keeps them, and they agree with /sipis/calls (issue 10 point 4).
func TestOutcomesSurviveRestart(t *testing.T) {
	e := newEnv(t)
	// One declined (rejected), one cancelled (missed).
	inv, token := e.ring()
	if code, body := e.post("/sipis/call/decline", "", `{"token":"`+token+`"}`); code != 200 {
		t.Fatalf("decline %d %s", code, body)
	}
	e.expect(inv.CallID, "INVITE", 603, "")
	inv2, _ := e.ring()
	inv2.Cancel()
	e.expect(inv2.CallID, "INVITE", 487, "")
	want := "total=2 accepted=0 missed=1 rejected=1 [" + ReasonDeclined + "]=1"
	if got := e.outcomes(); got != want {
		t.Fatalf("outcomes = %s, want %s", got, want)
	}
	e.stopManager()
	e.openDB()
	e.startManager()
	if err := e.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.outcomes(); got != want {
		t.Fatalf("outcomes after restart = %s, want %s", got, want)
	}
	code, body := e.get("/sipis/calls?s=" + testSel)
	var page struct {
		Calls []CallRecord `json:"calls"`
	}
	if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
		t.Fatalf("/sipis/calls %d %v %s", code, err, body)
	}
	by := map[string]int{}
	for _, c := range page.Calls {
		by[c.Outcome]++
	}
	total, acc, missed, rej, _ := e.m.Outcomes()
	if total != len(page.Calls) || acc != by[store.OutcomeAccepted] || missed != by[store.OutcomeMissed] || rej != by[store.OutcomeRejected] {
		t.Errorf("outcomes %d/%d/%d/%d disagree with /sipis/calls %v", total, acc, missed, rej, by)
	}
}
