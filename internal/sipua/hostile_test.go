package sipua_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

// okHandler answers every request 200 on its own goroutine, as the call package does after
// reading the store.
type okHandler struct{}

func (okHandler) HandleRequest(_ string, req *sipua.Request) {
	if req.Method != "ACK" {
		go func() { _ = req.Respond(200, "OK") }()
	}
}

// tcpRequest is a request over TCP from c with a body of n bytes.
func tcpRequest(c net.Conn, method, callID string, n int) string {
	l := c.LocalAddr().String()
	return fmt.Sprintf("%s sip:ct-1@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:proxy@sipis.test>;tag=1\r\nTo: <sip:ct-1@sipis.test>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n"+
		"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", method, c.RemoteAddr(), l, callID, callID, method, n, strings.Repeat("x", n))
}

// readResponse reads one response (header section and body) from r.
func readResponse(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read response: %v (so far %q)", err, b.String())
		}
		b.WriteString(line)
		if line == "\r\n" {
			return b.String()
		}
	}
}

// TestTooLargeMessageAnswered: a 70,000-byte MESSAGE over TCP (more than the parser's
// 65,535) gets 513 naming the limit (RFC 3261 §21.5.11), and the connection goes on serving
// the next request; one announcing more than can be skipped gets its 513, then the close.
func TestTooLargeMessageAnswered(t *testing.T) {
	u := newUA(t)
	u.SetHandler(okHandler{})
	c := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if _, err := io.WriteString(c, tcpRequest(c, "MESSAGE", "big-1", 70000)); err != nil {
		t.Fatal(err)
	}
	res := readResponse(t, r)
	if !strings.HasPrefix(res, "SIP/2.0 513 Message Too Large (limit 65535 bytes)\r\n") || !strings.Contains(res, "Call-ID: big-1\r\n") {
		t.Fatalf("70,000-byte MESSAGE answered:\n%s", res)
	}
	if _, err := io.WriteString(c, tcpRequest(c, "MESSAGE", "small-2", 100)); err != nil {
		t.Fatal(err)
	}
	if res := readResponse(t, r); !strings.HasPrefix(res, "SIP/2.0 200 ") || !strings.Contains(res, "Call-ID: small-2\r\n") {
		t.Fatalf("the request after the large one:\n%s", res)
	}

	c2 := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	_ = c2.SetDeadline(time.Now().Add(10 * time.Second))
	head, _, _ := strings.Cut(tcpRequest(c2, "MESSAGE", "huge-3", 0), "Content-Length: 0")
	if _, err := io.WriteString(c2, head+"Content-Length: 50000000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r2 := bufio.NewReader(c2)
	if res := readResponse(t, r2); !strings.HasPrefix(res, "SIP/2.0 513 ") || !strings.Contains(res, "Call-ID: huge-3\r\n") {
		t.Fatalf("50 MB MESSAGE answered:\n%s", res)
	}
	if _, err := r2.ReadByte(); err == nil {
		t.Fatal("connection announcing 50 MB stays open")
	}

	// A header section longer than the limit: 513 from what was read, then the close.
	c3 := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	_ = c3.SetDeadline(time.Now().Add(10 * time.Second))
	head, _, _ = strings.Cut(tcpRequest(c3, "MESSAGE", "long-4", 0), "Content-Length: 0")
	go func() { // the server may close before the whole section is written
		_, _ = io.WriteString(c3, head+"X-Long: "+strings.Repeat("y", 70000)+"\r\nContent-Length: 0\r\n\r\n")
	}()
	r3 := bufio.NewReader(c3)
	if res := readResponse(t, r3); !strings.HasPrefix(res, "SIP/2.0 513 ") || !strings.Contains(res, "Call-ID: long-4\r\n") {
		t.Fatalf("70,000-byte header answered:\n%s", res)
	}
}

// TestRequestThenBadMessage: a request followed on the same connection by a message that
// cannot be framed is answered before the connection closes, 20 times out of 20; the bad
// message itself gets a 400 when its header section names where to send it.
func TestRequestThenBadMessage(t *testing.T) {
	u := newUA(t)
	u.SetHandler(okHandler{})
	for i := range 20 {
		c := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		bad := "garbage without a blank line\r\n\r\n"
		if i%2 == 1 { // a readable request without Content-Length (RFC 3261 §18.3)
			bad = strings.Replace(tcpRequest(c, "OPTIONS", fmt.Sprintf("bad-%d", i), 0), "Content-Length: 0\r\n", "", 1)
		}
		if _, err := io.WriteString(c, tcpRequest(c, "MESSAGE", fmt.Sprintf("good-%d", i), 10)+bad); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("%d: read: %v", i, err)
		}
		if !strings.Contains(string(all), "SIP/2.0 200 OK\r\n") || !strings.Contains(string(all), fmt.Sprintf("Call-ID: good-%d\r\n", i)) {
			t.Fatalf("%d: the request before the bad message was not answered; got %q", i, all)
		}
		if i%2 == 1 && !strings.Contains(string(all), "SIP/2.0 400 ") {
			t.Fatalf("%d: the unframable request got no 400: %q", i, all)
		}
	}
}

// TestFirstMessageTimeout: a connection that has sent nothing valid is closed after
// FirstMessageTimeout, although IdleTimeout is long; one that has sent a request keeps
// IdleTimeout.
func TestFirstMessageTimeout(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.FirstMessageTimeout, c.IdleTimeout = 150*time.Millisecond, time.Minute })
	silent := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	if !closedByPeer(silent) {
		t.Fatal("connection that sent nothing not closed by FirstMessageTimeout")
	}
	noise := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	if _, err := io.WriteString(noise, "\r\n\r\n"); err != nil { // keep-alives prove nothing
		t.Fatal(err)
	}
	if !closedByPeer(noise) {
		t.Fatal("connection that sent only keep-alives not closed by FirstMessageTimeout")
	}
	c := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	if !optionsOK(t, c) {
		t.Fatal("OPTIONS not answered")
	}
	time.Sleep(400 * time.Millisecond) // more than FirstMessageTimeout must pass: the point of the test
	if !optionsOK(t, c) {
		t.Fatal("connection that sent a valid request closed by FirstMessageTimeout")
	}
}

// newTimedUA starts a UA (UDP only) whose server transactions use t1 as T1 and 8*t1 as T2.
func newTimedUA(t *testing.T, t1 time.Duration, mod ...func(*sipua.Config)) *sipua.UA {
	t.Helper()
	cfg := sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}, UserAgent: "sipis-test"}
	for _, m := range mod {
		m(&cfg)
	}
	u, err := sipua.NewWithTimers(cfg, t1, 8*t1)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// collect reads every datagram arriving at p until quiet passes without one.
func (p *rawPeer) collect(quiet time.Duration) (n, bytes int) {
	buf := make([]byte, 65535)
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(quiet))
		m, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return n, bytes
		}
		n, bytes = n+1, bytes+m
	}
}

// forgedInvite is a minimal INVITE to an unknown user, about 200 bytes as in the attack.
func (p *rawPeer) forgedInvite(to, branch string) string {
	return fmt.Sprintf("INVITE sip:nobody@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n"+
		"From: <sip:a@b>;tag=1\r\nTo: <sip:nobody@%s>\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
		to, p.conn.LocalAddr(), branch, to, branch)
}

// TestUDPAmplification: one forged INVITE to an unknown user makes the UA send its 404 once,
// not once per Timer G firing until Timer H (RFC 3261 §17.2.1): the source never acknowledges
// it, and retransmitting beyond budgetFactor times what the source sent would make sipis an
// amplifier. A source that retransmits its request still gets the answer again.
func TestUDPAmplification(t *testing.T) {
	const t1 = 20 * time.Millisecond
	for _, tc := range []struct {
		name string
		h    sipua.Handler
	}{{"404 unknown user", nil}, {"403 source not allowed", forbidder{}}} {
		t.Run(tc.name, func(t *testing.T) {
			u := newTimedUA(t, t1)
			if tc.h != nil {
				u.SetHandler(tc.h)
			}
			p := newRawPeer(t)
			inv := p.forgedInvite(u.Addr("udp"), "amp1")
			p.send(u.Addr("udp"), inv)
			// Timer H is 64*T1 = 1.28 s; Timer G would fire by then at least every T2 = 160 ms.
			n, out := p.collect(64 * t1 / 4)
			factor := float64(out) / float64(len(inv))
			t.Logf("forged INVITE of %d bytes: %d responses, %d bytes back, amplification %.2f", len(inv), n, out, factor)
			if n == 0 || factor > 3 {
				t.Fatalf("forged INVITE of %d bytes got %d responses (%d bytes, factor %.2f), want at most 3 bytes per byte", len(inv), n, out, factor)
			}
		})
	}
	u := newTimedUA(t, t1)
	p := newRawPeer(t)

	// A retransmission of a request is a new sign of life: its answer is sent again.
	inv2 := p.forgedInvite(u.Addr("udp"), "amp2")
	p.send(u.Addr("udp"), inv2)
	if got := p.read(); !strings.HasPrefix(got, "SIP/2.0 404 ") {
		t.Fatalf("got %q", got)
	}
	p.send(u.Addr("udp"), inv2)
	if got := p.read(); !strings.HasPrefix(got, "SIP/2.0 404 ") {
		t.Fatalf("retransmitted INVITE not answered again: %q", got)
	}
}

// forbidder answers every INVITE 403, as the call package does for a source that is not the
// instance's proxy.
type forbidder struct{}

func (forbidder) HandleRequest(_ string, req *sipua.Request) {
	if req.Method != "ACK" {
		_ = req.Respond(403, "Forbidden")
	}
}

// TestUDPRejections: malformed requests over UDP are answered at their source (rport, RFC
// 3581 §4) with the status line SIP/2.0 whatever version they spoke.
func TestUDPRejections(t *testing.T) {
	u := newUA(t)
	p := newRawPeer(t)
	to := u.Addr("udp")
	ok := p.request("OPTIONS", "sip:"+to, "z9hG4bKrej", "", "")
	for _, tc := range []struct{ name, msg, want string }{
		{"version", strings.Replace(ok, " SIP/2.0\r\n", " SIP/7.0\r\n", 1), "SIP/2.0 505 "},
		{"scheme", strings.Replace(ok, "OPTIONS sip:", "OPTIONS nobodyknows:", 1), "SIP/2.0 416 "},
		{"two Call-IDs", strings.Replace(ok, "Call-ID:", "Call-ID: other\r\nCall-ID:", 1), "SIP/2.0 400 "},
		{"unbalanced quote", strings.Replace(ok, "From: <", "From: \"Q <", 1), "SIP/2.0 400 "},
		{"no From", strings.Replace(ok, "From: <sip:proxy@sipis.test>;tag=f1\r\n", "", 1), "SIP/2.0 400 "},
		{"body shorter than Content-Length", strings.Replace(ok, "Content-Length: 0", "Content-Length: 50", 1), "SIP/2.0 400 "},
	} {
		p.send(to, tc.msg)
		got := p.read()
		if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, "Call-ID: ") && tc.name != "two Call-IDs" {
			t.Errorf("%s: got\n%s", tc.name, got)
		}
	}
}

// slowHandler holds every INVITE until release closes (a store that takes its time), and
// counts how many it holds at once.
type slowHandler struct {
	release       chan struct{}
	now, max, all atomic.Int64
}

func (h *slowHandler) HandleRequest(_ string, req *sipua.Request) {
	if req.Method == "ACK" {
		return
	}
	h.all.Add(1)
	n := h.now.Add(1)
	for {
		m := h.max.Load()
		if n <= m || h.max.CompareAndSwap(m, n) {
			break
		}
	}
	<-h.release
	h.now.Add(-1)
	_ = req.Respond(404, "Not Found")
}

// TestUDPFlood: 20,000 INVITEs/s to unknown users for 2 s, every one held by a slow handler:
// the handlers running at once stay within MaxUDPInFlight, the rest are shed with 503 and
// Retry-After, goroutines and heap stay bounded, and REGISTER refreshes on the same socket
// keep succeeding throughout.
func TestUDPFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test")
	}
	const slots = 256
	reg := siptest.NewRegistrar(t)
	// Timer F of the refreshes is the default 32 s: they retransmit through the flood.
	u := newUA(t, func(c *sipua.Config) { c.MaxUDPInFlight, c.TransactionTimeout = slots, 0 })
	h := &slowHandler{release: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	u.SetHandler(h)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap, baseG := ms.HeapInuse, runtime.NumGoroutine()

	flooder, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.Close()
	go func() { // drain the 503s so that the flooder's buffer does not matter
		buf := make([]byte, 4096)
		for {
			if _, _, err := flooder.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	dst, _ := net.ResolveUDPAddr("udp", u.Addr("udp"))
	const rate, dur = 20000, 2 * time.Second
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := 0; time.Since(start) < dur; {
			<-tick.C
			want := int(time.Since(start) * rate / time.Second)
			for ; i < want; i++ {
				msg := fmt.Sprintf("INVITE sip:u%d@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKf%d;rport\r\n"+
					"From: <sip:a@b>;tag=1\r\nTo: <sip:u%d@b>\r\nCall-ID: f%d\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
					i, dst, flooder.LocalAddr(), i, i, i)
				if _, err := flooder.WriteToUDP([]byte(msg), dst); err == nil {
					sent.Add(1)
				}
			}
		}
	}()

	var maxHeap uint64
	var maxG int
	regs, fails := 0, 0
	b := binding(reg, "flood")
	for flooding := true; flooding; {
		select {
		case <-done:
			flooding = false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		res, err := u.Register(ctx, b)
		cancel()
		if err != nil || res.Status != 200 {
			fails++
			t.Logf("REGISTER during the flood: %+v %v", res, err)
		} else {
			regs++
			b.CSeq = res.CSeq
		}
		runtime.ReadMemStats(&ms)
		maxHeap, maxG = max(maxHeap, ms.HeapInuse), max(maxG, runtime.NumGoroutine())
	}
	held := h.max.Load()
	release()
	t.Logf("flood: %d INVITEs sent in %v; handlers at once max %d; goroutines max %d (base %d); heap in use max %.1f MiB (base %.1f); %d REGISTERs ok, %d failed",
		sent.Load(), dur, held, maxG, baseG, float64(maxHeap)/(1<<20), float64(baseHeap)/(1<<20), regs, fails)
	if held > slots {
		t.Errorf("%d handlers ran at once, MaxUDPInFlight is %d", held, slots)
	}
	if maxG > baseG+slots+100 {
		t.Errorf("goroutines grew to %d from %d under the flood", maxG, baseG)
	}
	if maxHeap > baseHeap+64<<20 {
		t.Errorf("heap grew by %.1f MiB under the flood", float64(maxHeap-baseHeap)/(1<<20))
	}
	if regs < 3 || fails > 0 {
		t.Errorf("registrations during the flood: %d ok, %d failed", regs, fails)
	}
	if sent.Load() < 1000 {
		t.Errorf("only %d INVITEs sent", sent.Load())
	}
}

// TestUDPShed503: beyond MaxUDPInFlight requests in the handler, a UDP request is answered
// 503 with Retry-After (RFC 3261 §21.5.4).
func TestUDPShed503(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.MaxUDPInFlight = 1 })
	h := &slowHandler{release: make(chan struct{})}
	var once sync.Once
	release := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(release)
	u.SetHandler(h)
	p := newRawPeer(t)
	p.send(u.Addr("udp"), p.forgedInvite(u.Addr("udp"), "shed1"))
	for h.all.Load() == 0 { // the first INVITE is in the handler
		time.Sleep(time.Millisecond)
	}
	p.send(u.Addr("udp"), p.forgedInvite(u.Addr("udp"), "shed2"))
	got := p.read()
	if !strings.HasPrefix(got, "SIP/2.0 503 ") || !strings.Contains(got, "Retry-After: 5\r\n") || !strings.Contains(got, "Call-ID: shed2\r\n") {
		t.Fatalf("second INVITE with the slot taken: %q", got)
	}
	release()
	if got := p.read(); !strings.HasPrefix(got, "SIP/2.0 404 ") || !strings.Contains(got, "Call-ID: shed1\r\n") {
		t.Fatalf("first INVITE: %q", got)
	}
}
