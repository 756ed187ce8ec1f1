package call

import (
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
)

// TestCancelOnlyFromInviteSource: a CANCEL with the INVITE's Call-ID and branch sent from
// another address (same host, other port; and another loopback address) gets 481 and changes
// nothing: no 487 to the caller, no cancel push, the call still rings. The caller's own CANCEL
// then ends the call (issue 12 point 4).
func TestCancelOnlyFromInviteSource(t *testing.T) {
	e := newEnv(t)
	inv, _ := e.ring()
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:0"} {
		attacker := siptest.NewCallerOn(t, addr)
		spoof := inv.Through(attacker)
		spoof.Cancel()
		r, err := attacker.Next(inv.CallID, "CANCEL", waitSIP)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != 481 {
			t.Fatalf("CANCEL from %s answered %d, want 481", attacker.Addr(), r.Status)
		}
		if n := attacker.Count(inv.CallID, "INVITE", 487); n != 0 {
			t.Fatalf("attacker got %d 487s", n)
		}
	}
	if e.m.ActiveCalls(testSel) != 1 {
		t.Fatalf("active calls %d after the forged CANCELs", e.m.ActiveCalls(testSel))
	}
	if cs := e.calls(); len(cs) != 1 || cs[0].Outcome != "" {
		t.Fatalf("record after the forged CANCELs: %+v", cs)
	}
	select {
	case n := <-e.pusher.ch:
		t.Fatalf("push after a forged CANCEL: %+v", n)
	default:
	}
	inv.Cancel()
	e.expect(inv.CallID, "CANCEL", 200, "")
	e.expect(inv.CallID, "INVITE", 487, "")
	if n := e.pusher.next(t); n.Kind != push.KindMissedCall {
		t.Errorf("push after the caller's CANCEL: %+v", n)
	}
	waitFor(t, func() bool {
		cs := e.calls()
		return len(cs) == 1 && cs[0].Outcome == store.OutcomeMissed && cs[0].Reason == ReasonCancelled
	})
}

// TestRingingCarriesContact: each of sipis's own 180s carries its To tag and a Contact with
// our Contact user at the address the caller sent the INVITE to, since a 1xx with a To tag
// creates an early dialog and RFC 3261 §12.1.1 requires a Contact in it (issue 10 point 2).
func TestRingingCarriesContact(t *testing.T) {
	e := newEnv(t)
	inv := e.caller.Invite(e.target, testContact)
	check := func(r interface{ Header(string) string }, status string) {
		t.Helper()
		want := "<sip:" + testContact + "@" + e.target + ";transport=udp>"
		if !strings.Contains(r.Header("To"), "tag=") || r.Header("Contact") != want {
			t.Fatalf("180 %s: To %q Contact %q, want a tag and %s", status, r.Header("To"), r.Header("Contact"), want)
		}
	}
	check(e.expect(inv.CallID, "INVITE", 180, StatusAlerting), StatusAlerting)
	n := e.pusher.next(t)
	check(e.expect(inv.CallID, "INVITE", 180, StatusPushSent), StatusPushSent)
	if code, _ := e.post("/sipis/call/progress", "", `{"token":"`+n.Token+`"}`); code != 200 {
		t.Fatalf("progress %d", code)
	}
	check(e.expect(inv.CallID, "INVITE", 180, StatusProgress), StatusProgress)
}
