package sipua_test

// Transaction-level conformance tests in the style of sipgo's FSM tests: each runs a UA on an
// in-memory UDP socket inside a testing/synctest bubble, so the RFC 3261 §17 timers run on the
// bubble's fake clock, and asserts the exact schedule of what the UA sends (T1 = 500 ms,
// T2 = 4 s, §17.1.1.1).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// memSent is one datagram the UA wrote, with the bubble time it was written at.
type memSent struct {
	at   time.Time
	to   string
	data string
}

// memConn is an in-memory UDP socket: what the test injects is read by the UA, what the UA
// writes is recorded. Blocking on its channels is durable, so synctest's clock advances.
type memConn struct {
	local *net.UDPAddr
	in    chan memPacket
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	sent  []memSent
}

type memPacket struct {
	b    []byte
	from *net.UDPAddr
}

func newMemConn() *memConn {
	return &memConn{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060},
		in: make(chan memPacket, 16), done: make(chan struct{})}
}

func (c *memConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.from, nil
	case <-c.done:
		return 0, nil, net.ErrClosed
	}
}

func (c *memConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, memSent{at: time.Now(), to: addr.String(), data: string(b)})
	c.mu.Unlock()
	return len(b), nil
}

func (c *memConn) LocalAddr() net.Addr { return c.local }

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// inject delivers msg to the UA as if sent from "ip:port" from.
func (c *memConn) inject(from, msg string) {
	a, err := net.ResolveUDPAddr("udp", from)
	if err != nil {
		panic(err)
	}
	c.in <- memPacket{b: []byte(strings.ReplaceAll(msg, "\n", "\r\n")), from: a}
}

// sends returns the datagrams sent to "ip:port" to whose first line starts with prefix.
func (c *memConn) sends(to, prefix string) []memSent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []memSent
	for _, s := range c.sent {
		if s.to == to && strings.HasPrefix(s.data, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// schedule returns the send times relative to the first one.
func schedule(ss []memSent) []time.Duration {
	var out []time.Duration
	for _, s := range ss {
		out = append(out, s.at.Sub(ss[0].at))
	}
	return out
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func sameSchedule(got, want []time.Duration) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// startMemUA starts a UA on a memConn inside the current bubble; it is closed at cleanup.
func startMemUA(t *testing.T, h sipua.Handler) (*sipua.UA, *memConn) {
	t.Helper()
	u, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:5060"}}})
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		u.SetHandler(h)
	}
	c := newMemConn()
	sipua.StartOnConn(u, c)
	t.Cleanup(func() { u.Close() })
	return u, c
}

type handlerFunc func(user string, req *sipua.Request)

func (f handlerFunc) HandleRequest(user string, req *sipua.Request) { f(user, req) }

// responseTo builds a response to the request text req: its Via, From, Call-ID and CSeq
// lines, its To with toTag.
func responseTo(req string, code int, reason, toTag string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\n", code, reason)
	for _, l := range strings.Split(req, "\r\n") {
		name, _, _ := strings.Cut(l, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "from", "call-id", "cseq":
			b.WriteString(l + "\n")
		case "to":
			b.WriteString(l + ";tag=" + toTag + "\n")
		}
	}
	b.WriteString("Content-Length: 0\n\n")
	return b.String()
}

const phone = "127.0.0.2:5060"

func inviteFrom(branch string) string { return inviteWithBody(branch, "") }

// inviteWithBody is inviteFrom with a text/plain body.
func inviteWithBody(branch, body string) string {
	ct := ""
	if body != "" {
		ct = "Content-Type: text/plain\n"
	}
	return "INVITE sip:alice@127.0.0.1:5060 SIP/2.0\n" +
		"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=" + branch + "\n" +
		"Max-Forwards: 70\n" +
		"From: <sip:carol@127.0.0.2>;tag=c1\n" +
		"To: <sip:alice@127.0.0.1>\n" +
		"Call-ID: fsm-" + branch + "\n" +
		"CSeq: 1 INVITE\n" +
		"Contact: <sip:carol@127.0.0.2:5060>\n" + ct +
		fmt.Sprintf("Content-Length: %d\n\n", len(body)) + body
}

// Timer E/F (RFC 3261 §17.1.2.2): a non-INVITE request over UDP is retransmitted at T1,
// doubling up to T2, and the transaction gives up at Timer F = 64*T1.
func TestTxFSMNonInviteClientTimerEF(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u, c := startMemUA(t, nil)
		start := time.Now()
		_, err := u.Options(context.Background(), "sip:"+phone, "udp")
		if !errors.Is(err, sipua.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d != 32*time.Second {
			t.Errorf("gave up after %v, want Timer F = 64*T1 = 32s", d)
		}
		got := schedule(c.sends(phone, "OPTIONS "))
		want := ms(0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500)
		if !sameSchedule(got, want) {
			t.Errorf("OPTIONS sent at %v, want %v", got, want)
		}
	})
}

// A final response ends a non-INVITE client transaction; a retransmission of it that comes
// later matches nothing and is dropped (RFC 3261 §17.1.2.2 Timer K, §18.1.2): nothing is sent.
func TestTxFSMNonInviteClientAbsorbsRetransmittedFinal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u, c := startMemUA(t, nil)
		done := make(chan error, 1)
		go func() {
			_, err := u.Options(context.Background(), "sip:"+phone, "udp")
			done <- err
		}()
		synctest.Wait()
		req := c.sends(phone, "OPTIONS ")
		if len(req) != 1 {
			t.Fatalf("%d OPTIONS sent, want 1", len(req))
		}
		res := responseTo(req[0].data, 200, "OK", "p1")
		time.Sleep(200 * time.Millisecond)
		c.inject(phone, res)
		if err := <-done; err != nil {
			t.Fatalf("Options: %v", err)
		}
		time.Sleep(time.Second)
		c.inject(phone, res) // the retransmitted final
		time.Sleep(40 * time.Second)
		synctest.Wait()
		if n := len(c.sends(phone, "")); n != 1 {
			t.Errorf("%d datagrams sent, want only the one OPTIONS (no retransmission after the 200)", n)
		}
	})
}

// forwardInvite starts a UA whose handler forwards the phone's INVITE to target, and returns
// what its OnResponse received.
func forwardInvite(t *testing.T, target string) (*memConn, func() []int) {
	t.Helper()
	var mu sync.Mutex
	var got []int
	var u *sipua.UA
	u, c := startMemUA(t, handlerFunc(func(_ string, req *sipua.Request) {
		if req.Method != "INVITE" {
			return
		}
		_, err := u.Forward(context.Background(), req, sipua.ForwardOptions{
			RequestURI: "sip:bob@" + target,
			OnResponse: func(r *sipua.Response) {
				mu.Lock()
				got = append(got, r.Status)
				mu.Unlock()
			},
		})
		if err != nil {
			t.Errorf("Forward: %v", err)
		}
	}))
	c.inject(phone, inviteFrom("z9hG4bK-fsm-a"))
	synctest.Wait()
	return c, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got...)
	}
}

// Timer A/B (RFC 3261 §17.1.1.2): a forwarded INVITE over UDP is retransmitted at T1 doubling
// without a cap, and without any response the transaction ends at Timer B = 64*T1 with a
// local 408.
func TestTxFSMInviteClientTimerAB(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bob = "127.0.0.3:5060"
		start := time.Now()
		c, got := forwardInvite(t, bob)
		time.Sleep(31900 * time.Millisecond)
		synctest.Wait()
		if g := got(); len(g) != 0 {
			t.Fatalf("responses before Timer B: %v", g)
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if g := got(); len(g) != 1 || g[0] != 408 {
			t.Fatalf("responses after Timer B: %v, want a local 408", g)
		}
		sent := c.sends(bob, "INVITE ")
		if len(sent) == 0 || sent[0].at != start {
			t.Fatalf("INVITE not sent at once: %v", sent)
		}
		want := ms(0, 500, 1500, 3500, 7500, 15500, 31500)
		if s := schedule(sent); !sameSchedule(s, want) {
			t.Errorf("INVITE sent at %v, want %v", s, want)
		}
	})
}

// A final non-2xx response to a forwarded INVITE is ACKed and stops Timer A; its
// retransmission is absorbed in Completed (§17.1.1.2: ACKed again, not passed up), and once
// Timer D has ended the transaction a further copy matches nothing.
func TestTxFSMInviteClientAbsorbsRetransmittedFinal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const bob = "127.0.0.3:5060"
		c, got := forwardInvite(t, bob)
		time.Sleep(time.Second) // INVITE sent at 0 and 0.5 s
		inv := c.sends(bob, "INVITE ")
		if len(inv) != 2 {
			t.Fatalf("%d INVITEs by 1 s, want 2", len(inv))
		}
		res := responseTo(inv[0].data, 486, "Busy Here", "b1")
		c.inject(bob, res)
		synctest.Wait()
		if n := len(c.sends(bob, "ACK ")); n != 1 {
			t.Fatalf("%d ACKs after the 486, want 1", n)
		}
		time.Sleep(time.Second)
		c.inject(bob, res) // retransmitted final, in Completed
		synctest.Wait()
		if n := len(c.sends(bob, "ACK ")); n != 2 {
			t.Errorf("%d ACKs after the retransmitted 486, want 2", n)
		}
		time.Sleep(40 * time.Second) // past Timer D (32 s)
		c.inject(bob, res)
		synctest.Wait()
		if n := len(c.sends(bob, "ACK ")); n != 2 {
			t.Errorf("%d ACKs after Timer D, want still 2", n)
		}
		if n := len(c.sends(bob, "INVITE ")); n != 2 {
			t.Errorf("%d INVITEs in all, want 2 (Timer A stops at the final)", n)
		}
		if g := got(); len(g) != 1 || g[0] != 486 {
			t.Errorf("OnResponse got %v, want one 486", g)
		}
	})
}

// Timer G/H (RFC 3261 §17.2.1): a final non-2xx response to an INVITE over UDP is
// retransmitted at T1 doubling up to T2 until Timer H = 64*T1 when no ACK comes. The INVITE
// carries a body so that its source has the response budget for every retransmission (a
// bare INVITE earns fewer: budget.go bounds what a forged source address gets).
func TestTxFSMInviteServerTimerGH(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := startMemUA(t, handlerFunc(func(_ string, req *sipua.Request) {
			if req.Method == "INVITE" {
				_ = req.Respond(486, "Busy Here")
			}
		}))
		c.inject(phone, inviteWithBody("z9hG4bK-fsm-g", strings.Repeat("x", 4000)))
		time.Sleep(60 * time.Second)
		synctest.Wait()
		got := schedule(c.sends(phone, "SIP/2.0 486"))
		want := ms(0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500)
		if !sameSchedule(got, want) {
			t.Errorf("486 sent at %v, want %v", got, want)
		}
	})
}

// The ACK of the final non-2xx response stops Timer G (RFC 3261 §17.2.1, Confirmed).
func TestTxFSMInviteServerACKStopsTimerG(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c := startMemUA(t, handlerFunc(func(_ string, req *sipua.Request) {
			if req.Method == "INVITE" {
				_ = req.Respond(486, "Busy Here")
			}
		}))
		c.inject(phone, inviteFrom("z9hG4bK-fsm-h"))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		res := c.sends(phone, "SIP/2.0 486")
		if len(res) == 0 {
			t.Fatal("no 486 sent")
		}
		toTag := res[0].data[strings.Index(res[0].data, ";tag=")+5:]
		toTag = toTag[:strings.IndexAny(toTag, ";\r>")]
		c.inject(phone, "ACK sip:alice@127.0.0.1:5060 SIP/2.0\n"+
			"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-fsm-h\n"+
			"Max-Forwards: 70\n"+
			"From: <sip:carol@127.0.0.2>;tag=c1\n"+
			"To: <sip:alice@127.0.0.1>;tag="+toTag+"\n"+
			"Call-ID: fsm-z9hG4bK-fsm-h\n"+
			"CSeq: 1 ACK\n"+
			"Content-Length: 0\n\n")
		time.Sleep(60 * time.Second)
		synctest.Wait()
		got := schedule(c.sends(phone, "SIP/2.0 486"))
		if want := ms(0, 500, 1500); !sameSchedule(got, want) {
			t.Errorf("486 sent at %v, want %v (none after the ACK at 2 s)", got, want)
		}
	})
}

// Timer J (RFC 3261 §17.2.2): a retransmitted non-INVITE request is absorbed by its server
// transaction, answered with the last response without reaching the handler, until 64*T1
// after the final response; after that it is a new request.
func TestTxFSMNonInviteServerTimerJ(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		_, c := startMemUA(t, handlerFunc(func(_ string, req *sipua.Request) {
			if req.Method == "MESSAGE" {
				calls.Add(1)
				_ = req.Respond(200, "OK")
			}
		}))
		msg := "MESSAGE sip:alice@127.0.0.1:5060 SIP/2.0\n" +
			"Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-fsm-j\n" +
			"Max-Forwards: 70\n" +
			"From: <sip:carol@127.0.0.2>;tag=c1\n" +
			"To: <sip:alice@127.0.0.1>\n" +
			"Call-ID: fsm-j\n" +
			"CSeq: 1 MESSAGE\n" +
			"Content-Length: 0\n\n"
		c.inject(phone, msg)
		synctest.Wait()
		time.Sleep(time.Second)
		c.inject(phone, msg) // retransmission within Timer J
		synctest.Wait()
		if n := calls.Load(); n != 1 {
			t.Errorf("handler called %d times, want 1 (the retransmission is absorbed)", n)
		}
		if n := len(c.sends(phone, "SIP/2.0 200")); n != 2 {
			t.Errorf("%d 200s sent, want 2 (the retransmission gets the last response)", n)
		}
		time.Sleep(40 * time.Second) // past Timer J (32 s) and the next sweep
		c.inject(phone, msg)
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Errorf("handler called %d times after Timer J, want 2", n)
		}
	})
}
