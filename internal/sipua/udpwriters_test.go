package sipua_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// TestUDPResponsesLeaveFromTheBoundAddress: every response, sent by many handlers together,
// comes from the UDP listener's one address (RFC 3261 §18.2.2, RFC 3581: a proxy matches
// responses and keeps NAT bindings by it), the Wiretap sees every one of them leave, and Close
// releases the socket.
func TestUDPResponsesLeaveFromTheBoundAddress(t *testing.T) {
	fdsBefore := openFDs(t)
	var mu sync.Mutex
	out := 0
	u, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}},
		Wiretap: func(o bool, transport string, b []byte) {
			if o && transport == "udp" && strings.HasPrefix(string(b), "SIP/2.0 200 ") {
				mu.Lock()
				out++
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := u.Addr("udp")
	// 200 requests in bursts of 20: enough to have several responses written at once, few
	// enough that no socket buffer overflows (a datagram's kernel cost is a few KB, and a burst
	// of 200 lost some on a loaded machine).
	const n, burst = 200, 20
	p := newRawPeer(t)
	buf := make([]byte, 65535)
	for b := 0; b < n; b += burst {
		for i := b; i < b+burst; i++ {
			p.send(addr, p.request("OPTIONS", "sip:someone@"+addr, fmt.Sprintf("z9hG4bK-writers-%d", i), "", ""))
		}
		for range burst {
			p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, src, err := p.conn.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("response missing: %v", err)
			}
			if src.String() != addr || !strings.HasPrefix(string(buf[:k]), "SIP/2.0 200 ") {
				t.Fatalf("response from %s, want %s:\n%s", src, addr, buf[:k])
			}
		}
	}
	u.Close() // waits for the readers, which answered (and told the Wiretap) after writing
	mu.Lock()
	if out != n {
		t.Errorf("Wiretap saw %d responses leave, want %d", out, n)
	}
	mu.Unlock()
	if fdsBefore >= 0 {
		// The peer's socket is still open; the UA's socket is not.
		if after := openFDs(t); after > fdsBefore+1 {
			t.Errorf("%d descriptors open after Close, %d before (plus the peer's)", after, fdsBefore)
		}
	}
}

// openFDs counts this process's open descriptors, or -1 where /proc does not list them.
func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}
