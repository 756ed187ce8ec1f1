package call

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// alertLog is a Recorder that notes, per Call-ID, that the Alerting-Device 180 was handed to
// the transport.
type alertLog struct {
	mu      sync.Mutex
	alerted map[string]bool
}

func (a *alertLog) Request(sel, callID, method, source string, text func() string) {}

func (a *alertLog) Response(sel, callID, method string, code int, reason string, hs []sipua.Header) {
	for _, h := range hs {
		if h.Name == "X-Sipis-Push-Status" && h.Value == StatusAlerting {
			a.mu.Lock()
			a.alerted[callID] = true
			a.mu.Unlock()
		}
	}
}

func (a *alertLog) has(callID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.alerted[callID]
}

// TestWakeUp180sLeaveInOrder sends bursts of INVITEs over UDP loopback while the push service
// accepts every push at once, so that each Push-Notification-Sent 180 follows its
// Alerting-Device 180 as closely as it can, and checks on the wire that every call's first
// 180 is Alerting-Device and its second Push-Notification-Sent (RFC 3261 §13.3.1.1: the
// provisional responses tell the caller's side how far the wake-up got, in that order), and
// that no push started before its call's first 180 was sent. It runs with the instance's
// device count known (the 180 goes before the store is read) and unknown (after).
func TestWakeUp180sLeaveInOrder(t *testing.T) {
	for _, devices := range []int{1, 0} {
		t.Run(fmt.Sprintf("devices=%d", devices), func(t *testing.T) {
			rec := &alertLog{alerted: make(map[string]bool)}
			e := newEnv(t, func(o *Options) { o.Recorder = rec; o.MaxCalls = 1000 })
			e.insts.set(testSel, Account{Proxy: "127.0.0.1", Port: 5060, Domain: "example.org", Active: true, Devices: devices})
			var mu sync.Mutex
			var early []string // calls pushed before their first 180 was sent
			e.pusher.setResult(func(n push.Notification) (push.Result, error) {
				if !rec.has(n.CallID) {
					mu.Lock()
					early = append(early, n.CallID)
					mu.Unlock()
				}
				return push.Result{Accepted: true, Status: 200, Attempts: 1}, nil
			})
			// Bursts of 10: each call's record is written before its push, through the
			// store's one writer, so a long burst only measures the store under -race.
			const calls, burst = 100, 10
			for range calls / burst {
				var ids []string
				for range burst {
					ids = append(ids, e.caller.Invite(e.target, testContact).CallID)
				}
				for _, id := range ids {
					e.expect(id, "INVITE", 180, StatusAlerting)
					e.expect(id, "INVITE", 180, StatusPushSent)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(early) > 0 {
				t.Errorf("%d of %d calls were pushed before their Alerting-Device 180 was sent", len(early), calls)
			}
		})
	}
}

// TestNoUsableDevice: a call for an instance whose devices have no live push token is rejected
// with 480 No-Device and a record. When the instance says it has no device the 480 comes
// alone; when it counts devices the 180 went first (it leaves before the store is read), and
// the 480 follows it.
func TestNoUsableDevice(t *testing.T) {
	for _, devices := range []int{0, 1} {
		t.Run(fmt.Sprintf("devices=%d", devices), func(t *testing.T) {
			e := newEnv(t)
			e.insts.set(testSel, Account{Proxy: "127.0.0.1", Port: 5060, Domain: "example.org", Active: true, Devices: devices})
			if err := e.db.MarkTokenInvalid(context.Background(), testSel, "iphone", testToken); err != nil {
				t.Fatal(err)
			}
			inv := e.caller.Invite(e.target, testContact)
			if devices > 0 {
				e.expect(inv.CallID, "INVITE", 180, StatusAlerting)
			}
			if r := e.expect(inv.CallID, "INVITE", 480, ""); r.Header("X-Sipis-Reason") != "No-Device" {
				t.Errorf("480 without X-Sipis-Reason No-Device:\n%s", r.Raw)
			}
			cs := e.calls()
			if len(cs) != 1 || cs[0].Outcome != store.OutcomeRejected || cs[0].Reason != ReasonNoDevice || cs[0].EndedAt.IsZero() {
				t.Fatalf("records = %+v", cs)
			}
			if e.m.ActiveCalls(testSel) != 0 {
				t.Errorf("active calls %d after the 480", e.m.ActiveCalls(testSel))
			}
			e.pusher.mu.Lock()
			pushed := len(e.pusher.sent)
			e.pusher.mu.Unlock()
			if pushed != 0 {
				t.Errorf("%d pushes for a call without a usable device", pushed)
			}
		})
	}
}
