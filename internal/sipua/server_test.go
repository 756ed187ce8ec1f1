package sipua_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// rawPeer is a bare UDP socket speaking SIP by hand.
type rawPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawPeer(t *testing.T) *rawPeer {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c}
}

func (p *rawPeer) request(method, ruri, branch, extra, body string) string {
	l := p.conn.LocalAddr().String()
	return fmt.Sprintf("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:proxy@sipis.test>;tag=f1\r\nTo: <%s>\r\nCall-ID: %s\r\nCSeq: 1 %s\r\n%sContent-Length: %d\r\n\r\n%s",
		method, ruri, l, branch, ruri, branch+"-call", method, extra, len(body), body)
}

func (p *rawPeer) send(to, msg string) {
	p.t.Helper()
	a, _ := net.ResolveUDPAddr("udp", to)
	if _, err := p.conn.WriteToUDP([]byte(msg), a); err != nil {
		p.t.Fatal(err)
	}
}

func (p *rawPeer) read() string {
	p.t.Helper()
	buf := make([]byte, 65535)
	p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := p.conn.ReadFromUDP(buf)
	if err != nil {
		p.t.Fatalf("no response: %v", err)
	}
	return string(buf[:n])
}

func TestDefaultAnswers(t *testing.T) {
	u := newUA(t)
	p := newRawPeer(t)
	addr := u.Addr("udp")
	for _, tc := range []struct{ method, ruri, want string }{
		{"OPTIONS", "sip:" + addr, "SIP/2.0 200 OK"},
		{"OPTIONS", "sip:someone@" + addr, "SIP/2.0 200 OK"},
		{"INVITE", "sip:nobody@" + addr, "SIP/2.0 404 "},
		{"MESSAGE", "sip:nobody@" + addr, "SIP/2.0 404 "},
		{"SUBSCRIBE", "sip:nobody@" + addr, "SIP/2.0 405 "},
	} {
		p.send(addr, p.request(tc.method, tc.ruri, "z9hG4bK-"+tc.method+tc.ruri[:6], "", ""))
		got := p.read()
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s %s: got\n%s", tc.method, tc.ruri, got)
		}
		if tc.want == "SIP/2.0 405 " && !strings.Contains(got, "Allow: INVITE") {
			t.Errorf("405 without Allow:\n%s", got)
		}
		if !strings.Contains(got, "received=127.0.0.1") || !strings.Contains(got, "rport=") {
			t.Errorf("top Via lacks received/rport:\n%s", got)
		}
	}
}

type recordingHandler struct {
	mu    sync.Mutex
	calls []string
	got   chan *sipua.Request
}

func (h *recordingHandler) HandleRequest(user string, req *sipua.Request) {
	h.mu.Lock()
	h.calls = append(h.calls, user+" "+req.Method)
	h.mu.Unlock()
	h.got <- req
}

func TestHandlerAndRetransmission(t *testing.T) {
	u := newUA(t)
	h := &recordingHandler{got: make(chan *sipua.Request, 4)}
	u.SetHandler(h)
	p := newRawPeer(t)
	addr := u.Addr("udp")
	msg := p.request("MESSAGE", "sip:ct-42@"+addr, "z9hG4bKmsg1", "Content-Type: text/plain\r\n", "hello")
	p.send(addr, msg)
	var req *sipua.Request
	select {
	case req = <-h.got:
	case <-time.After(3 * time.Second):
		t.Fatal("handler not called")
	}
	if req.Method != "MESSAGE" || string(req.Body) != "hello" || req.Header("Content-Type") != "text/plain" ||
		req.Transport != "udp" || req.Source != p.conn.LocalAddr().String() || !strings.Contains(req.From, "proxy@sipis.test") {
		t.Fatalf("request %+v", req)
	}
	if err := req.Respond(200, "OK", sipua.Header{Name: "X-Test", Value: "1"}); err != nil {
		t.Fatal(err)
	}
	first := p.read()
	if !strings.HasPrefix(first, "SIP/2.0 200 OK") || !strings.Contains(first, "X-Test: 1") || !strings.Contains(first, ";tag=") {
		t.Fatalf("response:\n%s", first)
	}
	// A retransmission is answered from the server transaction.
	p.send(addr, msg)
	if again := p.read(); again != first {
		t.Fatalf("retransmission answered differently:\n%s\nvs\n%s", again, first)
	}
	h.mu.Lock()
	calls := len(h.calls)
	h.mu.Unlock()
	if calls != 1 {
		t.Fatalf("handler called %d times", calls)
	}
	if err := req.Respond(200, "OK\r\nX: y"); err == nil {
		t.Error("reason with CRLF accepted")
	}
	if err := req.Respond(99, "x"); err == nil {
		t.Error("code 99 accepted")
	}
	// OPTIONS to sipis itself is still answered by the UA.
	p.send(addr, p.request("OPTIONS", "sip:"+addr, "z9hG4bKopt", "", ""))
	if got := p.read(); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("OPTIONS: %s", got)
	}
	// The counters move after the write returns, so the peer may read the answer first:
	// wait (bounded) for the third answer to be counted.
	tr := u.Traffic()
	for deadline := time.Now().Add(3 * time.Second); tr.MessagesOut < 3 && time.Now().Before(deadline); tr = u.Traffic() {
		time.Sleep(time.Millisecond)
	}
	if tr.MessagesIn != 3 || tr.MessagesOut != 3 || tr.BytesIn < int64(2*len(msg)) {
		t.Errorf("traffic %+v", tr)
	}
}

func TestRespondBodyOverTCP(t *testing.T) {
	u := newUA(t)
	h := &recordingHandler{got: make(chan *sipua.Request, 1)}
	u.SetHandler(h)
	c, err := net.Dial("tcp", u.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := c.LocalAddr().String()
	req := fmt.Sprintf("INVITE sip:ct-7@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKinv\r\nMax-Forwards: 70\r\n"+
		"From: <sip:a@sipis.test>;tag=1\r\nTo: <sip:ct-7@sipis.test>\r\nCall-ID: inv1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", u.Addr("tcp"), l)
	if _, err := c.Write([]byte("\r\n\r\n" + req)); err != nil { // with a keep-alive first
		t.Fatal(err)
	}
	var r *sipua.Request
	select {
	case r = <-h.got:
	case <-time.After(3 * time.Second):
		t.Fatal("handler not called")
	}
	if r.Transport != "tcp" || r.Method != "INVITE" {
		t.Fatalf("%+v", r)
	}
	if err := r.Respond(180, "Ringing", sipua.Header{Name: "X-Sipis-Push-Status", Value: "Alerting-Device"}); err != nil {
		t.Fatal(err)
	}
	if err := r.RespondBody(486, "Busy Here", "text/plain", []byte("busy")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 8192)
	var got strings.Builder
	for !strings.Contains(got.String(), "busy") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	s := got.String()
	if !strings.HasPrefix(s, "SIP/2.0 180 Ringing") || !strings.Contains(s, "X-Sipis-Push-Status: Alerting-Device") ||
		!strings.Contains(s, "SIP/2.0 486 Busy Here") || !strings.Contains(s, "Content-Type: text/plain") {
		t.Fatalf("responses:\n%s", s)
	}
	// Both responses carry the same To tag (RFC 3261 §8.2.6.2).
	tags := strings.Count(s, "To: <sip:ct-7@sipis.test>;tag=")
	i := strings.Index(s, ";tag=")
	tag := s[i : i+21]
	if tags != 2 || strings.Count(s, tag) < 2 {
		t.Errorf("To tags differ:\n%s", s)
	}
}

func TestCloseWhileInFlight(t *testing.T) {
	u := newUA(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	done := make(chan error)
	go func() {
		_, err := u.Options(context.Background(), "sip:"+silent.LocalAddr().String(), "udp")
		done <- err
	}()
	// Close while the request is in flight: once the silent peer has received it.
	if err := silent.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := silent.ReadFrom(make([]byte, 65535)); err != nil {
		t.Fatalf("the OPTIONS did not go out: %v", err)
	}
	u.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("no error after Close")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Options still blocked after Close")
	}
	if _, err := u.Options(context.Background(), "sip:"+silent.LocalAddr().String(), "udp"); err == nil {
		t.Fatal("Options after Close succeeded")
	}
}
