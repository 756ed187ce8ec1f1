package sipua_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// cancelHandler is a UAS core shaped like sipis's calls: an INVITE becomes known only after
// some work (the store look-ups of the call package), then gets its 180; a CANCEL finds the
// INVITE's call and answers 200, or 481 when there is none (RFC 3261 §9.2).
type cancelHandler struct {
	mu    sync.Mutex
	calls map[string]bool
}

func (h *cancelHandler) HandleRequest(_ string, req *sipua.Request) {
	switch req.Method {
	case "INVITE":
		time.Sleep(time.Millisecond) // stands for the work before the call is known, not a wait
		h.mu.Lock()
		h.calls[req.CallID] = true
		h.mu.Unlock()
		_ = req.Respond(180, "Ringing")
	case "CANCEL":
		h.mu.Lock()
		known := h.calls[req.CallID]
		h.mu.Unlock()
		if known {
			_ = req.Respond(200, "OK")
			return
		}
		_ = req.Respond(481, "Call/Transaction Does Not Exist")
	}
}

// TestCancelAfterInviteBackToBack sends INVITE+CANCEL pairs back to back, as a proxy does
// when the caller hangs up at once: every CANCEL must find its INVITE (RFC 3261 §9.2), so the
// UA must hand them to the handler in the order they arrived, the CANCEL after its INVITE's
// handler answered it.
func TestCancelAfterInviteBackToBack(t *testing.T) {
	u := newUA(t)
	u.SetHandler(&cancelHandler{calls: make(map[string]bool)})
	p := newRawPeer(t)
	_ = p.conn.SetReadBuffer(1 << 20)
	addr := u.Addr("udp")
	const pairs, burst = 200, 10
	ringing, cancelled := 0, 0
	var refused []string
	for i := 0; i < pairs; i += burst {
		for j := i; j < i+burst; j++ {
			branch := fmt.Sprintf("z9hG4bK-order-%d", j)
			ruri := "sip:ct-" + branch + "@" + addr
			p.send(addr, p.request("INVITE", ruri, branch, "", ""))
			p.send(addr, p.request("CANCEL", ruri, branch, "", ""))
		}
		for range 2 * burst {
			got := p.read()
			switch {
			case strings.HasPrefix(got, "SIP/2.0 180 "):
				ringing++
			case strings.HasPrefix(got, "SIP/2.0 200 ") && strings.Contains(got, " CANCEL\r\n"):
				cancelled++
			default:
				refused = append(refused, strings.SplitN(got, "\r\n", 2)[0])
			}
		}
	}
	if ringing != pairs || cancelled != pairs {
		t.Fatalf("%d pairs: %d INVITEs rang, %d CANCELs found their INVITE; other answers (%d): %q",
			pairs, ringing, cancelled, len(refused), refused[:min(len(refused), 5)])
	}
}
