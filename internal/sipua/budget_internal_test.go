package sipua

import (
	"net"
	"testing"
	"time"
)

// TestSourceKey: IPv4 addresses count alone, IPv6 ones by their /64 (RFC 4291 §2.5.1), an
// IPv4-mapped IPv6 address as its IPv4 address.
func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"192.0.2.7", "::ffff:192.0.2.7"},
	} {
		if ka, kb := sourceKey(net.ParseIP(tc.a)), sourceKey(net.ParseIP(tc.b)); ka != kb {
			t.Errorf("%s counts as %q, %s as %q: want one key", tc.a, ka, tc.b, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.7", "192.0.2.8"},
	} {
		if ka, kb := sourceKey(net.ParseIP(tc.a)), sourceKey(net.ParseIP(tc.b)); ka == kb {
			t.Errorf("%s and %s both count as %q", tc.a, tc.b, ka)
		}
	}
}

// TestAdmitPerSlash64: MaxConnsPerIP counts the connections of a whole IPv6 /64 together.
func TestAdmitPerSlash64(t *testing.T) {
	u, err := New(Config{Listeners: []Listener{{Transport: "tcp", Address: "127.0.0.1:0"}}, MaxConnsPerIP: 2})
	if err != nil {
		t.Fatal(err)
	}
	key := func(s string) string { return sourceKey(net.ParseIP(s)) }
	if !u.admit(key("2001:db8::1")) || !u.admit(key("2001:db8::2")) {
		t.Fatal("first two connections of a /64 refused")
	}
	if u.admit(key("2001:db8::3")) {
		t.Fatal("third connection from the same /64 admitted with MaxConnsPerIP 2")
	}
	if !u.admit(key("2001:db8:0:1::1")) {
		t.Fatal("connection from another /64 refused")
	}
	u.release(key("2001:db8::1"))
	if !u.admit(key("2001:db8::4")) {
		t.Fatal("a released place of the /64 is not free again")
	}
}

// TestBudget: retransmissions to a source stay within budgetFactor times what it sent; first
// answers always go out; a new window starts afresh.
func TestBudget(t *testing.T) {
	b := newBudget(time.Minute)
	b.received("s", 100)
	b.sent("s", 150)
	if !b.allowRetransmit("s", 150) {
		t.Fatal("retransmission within 3x refused")
	}
	if b.allowRetransmit("s", 1) {
		t.Fatal("retransmission beyond 3x allowed")
	}
	if b.allowRetransmit("other", 1) {
		t.Fatal("retransmission to a source that sent nothing allowed")
	}
	now := time.Now()
	b.rotate(now.Add(time.Minute))
	if b.allowRetransmit("s", 1) {
		t.Fatal("the previous window's use is forgotten after one rotation")
	}
	b.rotate(now.Add(2 * time.Minute))
	b.received("s", 10)
	if !b.allowRetransmit("s", 30) {
		t.Fatal("a fresh window has no budget")
	}
}
