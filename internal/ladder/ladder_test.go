package ladder

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// TestKeptOnlyWhenNeeded: nothing is kept for an instance nobody looks at, whose log is off
// and whose REGISTER succeeds; a failure, a Watch or the log keep a ring, and a watched ring is
// dropped once the watch ends.
func TestKeptOnlyWhenNeeded(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	b := New(c.now)
	ok := []Msg{{At: c.t, From: Sipis, To: Proxy, Label: "REGISTER"}, {At: c.t, From: Proxy, To: Sipis, Label: "200 OK"}}
	for i := 0; i < 100; i++ {
		sel := fmt.Sprintf("%04x", i)
		b.Register(sel, c.t, ok, "registered", false)
		b.Message(sel, "cid", "INVITE", Msg{At: c.t, From: Proxy, To: Sipis, Label: "INVITE"})
		b.Push(sel, "p", PushForCall, c.t, c.t, "call push", "accepted")
	}
	if n := b.Len(); n != 0 {
		t.Fatalf("%d rings kept for instances nobody looks at", n)
	}
	b.Register("e1", c.t, ok[:1], "timeout", true)
	b.SetLogging("l1", true)
	b.Watch("w1")
	if n := b.Len(); n != 3 {
		t.Fatalf("%d rings, want 3 (error, log, watched)", n)
	}
	c.t = c.t.Add(WatchFor + time.Second)
	b.Message("w1", "x", "INVITE", Msg{At: c.t, Label: "INVITE"})
	if got := b.Get("w1"); len(got.Calls) != 0 || b.Len() != 2 {
		t.Fatalf("watch expired but ring kept: %+v, %d rings", got, b.Len())
	}
	// A success after the error lets the ring go.
	b.Register("e1", c.t, ok, "registered", false)
	b.Register("e1", c.t, ok, "registered", false)
	if b.Len() != 1 {
		t.Fatalf("%d rings after e1 recovered, want 1 (the log)", b.Len())
	}
}

// TestBounds: a ring holds at most MaxTransactions transactions, MaxCalls calls and
// MaxMessages arrows each, newest kept.
func TestBounds(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	b := New(c.now)
	b.Watch("s")
	for i := 0; i < 3*MaxTransactions; i++ {
		b.Register("s", c.t, []Msg{{Label: fmt.Sprint("REGISTER ", i)}}, "", false)
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprint("call", i)
		for j := 0; j < 2*MaxMessages; j++ {
			method := ""
			if j == 0 {
				method = "INVITE"
			}
			b.Message("s", id, method, Msg{Label: fmt.Sprint(j)})
		}
	}
	l := b.Get("s")
	if len(l.Transactions) != MaxTransactions || l.Transactions[MaxTransactions-1].Msgs[0].Label != fmt.Sprint("REGISTER ", 3*MaxTransactions-1) {
		t.Fatalf("transactions: %d, last %+v", len(l.Transactions), l.Transactions[len(l.Transactions)-1])
	}
	if len(l.Calls) != MaxCalls || l.Calls[MaxCalls-1].Key != "call9" || l.Calls[0].Key != "call7" {
		t.Fatalf("calls: %d %+v", len(l.Calls), l.Calls)
	}
	for _, e := range l.Calls {
		if len(e.Msgs) != MaxMessages {
			t.Fatalf("call %s has %d arrows", e.Key, len(e.Msgs))
		}
	}
	for i := 0; i < MaxRings+10; i++ {
		b.Watch(fmt.Sprint("w", i))
	}
	if b.Len() > MaxRings {
		t.Fatalf("%d rings > %d", b.Len(), MaxRings)
	}
}

// TestBodiesAndSecrets: bodies are kept only while the log is on, and Authorization values
// never, even then.
func TestBodiesAndSecrets(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	b := New(c.now)
	text := "REGISTER sip:example.com SIP/2.0\r\nAuthorization: Digest username=\"alice\", response=\"abc\"\r\n" +
		"proxy-authorization:Digest x\r\nX-Sipis-Token: t0ken\r\nCall-ID: 1\r\n"
	b.Watch("s")
	b.Register("s", c.t, []Msg{{Label: "REGISTER", Body: text}}, "", false)
	b.SetLogging("s", true)
	b.Register("s", c.t, []Msg{{Label: "REGISTER", Body: text}}, "", false)
	l := b.Get("s")
	if l.Transactions[0].Msgs[0].Body != "" {
		t.Errorf("body kept with the log off: %q", l.Transactions[0].Msgs[0].Body)
	}
	got := l.Transactions[1].Msgs[0].Body
	if !strings.Contains(got, "Call-ID: 1") || !strings.Contains(got, "Authorization: Not Empty") {
		t.Errorf("body with the log on: %q", got)
	}
	for _, secret := range []string{"alice", "abc", "Digest x", "t0ken"} {
		if strings.Contains(got, secret) {
			t.Errorf("%q in the kept body %q", secret, got)
		}
	}
}

// TestPushJoinsItsCall: call pushes join the open call and stay with it by pairing id; message
// pushes join the newest MESSAGE; other pushes are transactions of their own.
func TestPushJoinsItsCall(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	b := New(c.now)
	b.Watch("s")
	t0 := c.t
	b.Message("s", "c1", "INVITE", Msg{At: t0, From: Proxy, To: Sipis, Label: "INVITE"})
	b.Message("s", "c1", "", Msg{At: t0.Add(20 * time.Millisecond), From: Sipis, To: Proxy, Label: "180 Ringing"})
	b.Push("s", "P1", PushForCall, t0.Add(10*time.Millisecond), t0.Add(30*time.Millisecond), "call push", "accepted")
	b.End("s", "c1", "missed")
	b.Push("s", "P1", PushForCall, t0.Add(time.Second), t0.Add(time.Second), "cancel push", "accepted")
	b.Message("s", "m1", "MESSAGE", Msg{At: t0, From: Proxy, To: Sipis, Label: "MESSAGE"})
	b.Push("s", "7", PushForMessage, t0, t0, "message push", "accepted")
	b.Push("s", "", PushAlone, t0, t0, "test push", "accepted")
	l := b.Get("s")
	if len(l.Calls) != 1 {
		t.Fatalf("calls %+v", l.Calls)
	}
	var labels []string
	for _, m := range l.Calls[0].Msgs {
		labels = append(labels, m.Label)
	}
	if want := "INVITE,call push,180 Ringing,accepted,cancel push,accepted"; strings.Join(labels, ",") != want {
		t.Errorf("call arrows %s, want %s", strings.Join(labels, ","), want)
	}
	if len(l.Transactions) != 2 || l.Transactions[0].Kind != KindMessage || len(l.Transactions[0].Msgs) != 3 ||
		l.Transactions[1].Kind != KindPush {
		t.Errorf("transactions %+v", l.Transactions)
	}
}

// TestMemoryBudget: MaxRings instances in error, each with its MaxTransactions challenged
// REGISTER cycles, hold less than 12 MiB.
func TestMemoryBudget(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b := New(c.now)
	for i := 0; i < MaxRings+100; i++ {
		sel := fmt.Sprintf("%016x", i)
		for j := 0; j < MaxTransactions+2; j++ {
			b.Register(sel, c.t, []Msg{
				{At: c.t, Timed: true, From: Sipis, To: Proxy, Label: "REGISTER", Note: "expires 3600", Body: "REGISTER sip:x SIP/2.0\r\n"},
				{From: Proxy, To: Sipis, Label: "401 Unauthorized", Note: "digest challenge"},
				{From: Sipis, To: Proxy, Label: "REGISTER", Note: "Authorization: Not Empty"},
				{At: c.t, Timed: true, From: Proxy, To: Sipis, Label: "503 Service Unavailable", Note: "Retry-After 30s"},
			}, "refused: 503 Service Unavailable", true)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if b.Len() != MaxRings {
		t.Fatalf("%d rings, want %d", b.Len(), MaxRings)
	}
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d rings in error: %.1f MiB (%.1f KiB each)", b.Len(), float64(used)/(1<<20), float64(used)/1024/float64(b.Len()))
	if used > 12<<20 {
		t.Errorf("%d rings hold %d bytes, over the 12 MiB budget", b.Len(), used)
	}
	runtime.KeepAlive(b)
}

// TestWatchMakesRoom: when the Book is full of instances in error, looking at one more still
// keeps its ring, in place of one kept only for an error.
func TestWatchMakesRoom(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	b := New(c.now)
	for i := 0; i < MaxRings+50; i++ {
		b.Register(fmt.Sprint("e", i), c.t, []Msg{{Label: "REGISTER"}}, "timeout", true)
	}
	if b.Len() != MaxRings {
		t.Fatalf("%d rings", b.Len())
	}
	b.Watch("looked-at")
	b.Message("looked-at", "c", "INVITE", Msg{Label: "INVITE"})
	if l := b.Get("looked-at"); len(l.Calls) != 1 || b.Len() != MaxRings {
		t.Errorf("watched ring %+v, %d rings", l, b.Len())
	}
}
