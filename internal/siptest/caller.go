package siptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Caller plays the user's proxy delivering requests to sipis over UDP: it sends INVITE, CANCEL
// and MESSAGE from its own socket on 127.0.0.1:0 and records every response, acknowledging
// final non-2xx responses to an INVITE as a client transaction must (RFC 3261 §17.1.1.3).
// It speaks raw SIP text, so tests of packages that may not import sipgo can use it.
type Caller struct {
	t    testing.TB
	conn *net.UDPConn

	mu    sync.Mutex
	cond  *sync.Cond
	resps []*CallResponse
	done  bool
	wg    sync.WaitGroup
}

// CallResponse is one response the Caller received.
type CallResponse struct {
	Status int
	Reason string
	// CallID and Method (of the CSeq) say which request it answers.
	CallID, Method string
	// Raw is the response as received.
	Raw     string
	Arrived time.Time
	msg     *message
}

// Header returns the first value of the named header ("" if absent).
func (r *CallResponse) Header(name string) string {
	n := strings.ToLower(name)
	if full, ok := compact[n]; ok {
		n = full
	}
	return r.msg.get(n)
}

// CallInvite is an INVITE the Caller sent; Cancel cancels it.
type CallInvite struct {
	c                                *Caller
	Target, URI, CallID, Branch, Tag string
	CSeq                             int
}

// NewCaller starts a Caller on 127.0.0.1:0, closed when the test ends.
func NewCaller(t testing.TB) *Caller { return NewCallerOn(t, "127.0.0.1:0") }

// NewCallerOn starts a Caller bound to addr (any 127.0.0.0/8 address works on Linux), closed
// when the test ends.
func NewCallerOn(t testing.TB, addr string) *Caller {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatalf("siptest: caller address %q: %v", addr, err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatalf("siptest: caller listen %s: %v", addr, err)
	}
	c := &Caller{t: t, conn: conn}
	c.cond = sync.NewCond(&c.mu)
	c.wg.Add(1)
	go c.read()
	t.Cleanup(c.Close)
	return c
}

// Addr returns the Caller's "ip:port".
func (c *Caller) Addr() string { return c.conn.LocalAddr().String() }

// Close stops the Caller; it is also done when the test ends.
func (c *Caller) Close() {
	c.conn.Close()
	c.wg.Wait()
}

func (c *Caller) read() {
	defer c.wg.Done()
	defer func() {
		c.mu.Lock()
		c.done = true
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	buf := make([]byte, 65535)
	for {
		n, src, err := c.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		m, err := parseMessage(append([]byte(nil), buf[:n]...))
		if err != nil || m.request {
			continue
		}
		num, method, _ := strings.Cut(m.get("cseq"), " ")
		r := &CallResponse{Status: m.status, Reason: m.reason, CallID: m.get("call-id"),
			Method: strings.TrimSpace(method), Raw: string(buf[:n]), Arrived: time.Now(), msg: m}
		if r.Method == "INVITE" && r.Status >= 300 {
			c.ack(m, num, src)
		}
		c.mu.Lock()
		c.resps = append(c.resps, r)
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// ack acknowledges a non-2xx final response to an INVITE: same branch, To with the tag of the
// response (RFC 3261 §17.1.1.3).
func (c *Caller) ack(m *message, cseqNum string, dst *net.UDPAddr) {
	via := m.get("via")
	b := &strings.Builder{}
	fmt.Fprintf(b, "ACK sip:%s SIP/2.0\r\n", dst.String())
	fmt.Fprintf(b, "Via: %s\r\n", via)
	fmt.Fprintf(b, "Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s ACK\r\nContent-Length: 0\r\n\r\n",
		m.get("from"), m.get("to"), m.get("call-id"), strings.TrimSpace(cseqNum))
	_, _ = c.conn.WriteToUDP([]byte(b.String()), dst)
}

// Send sends one request: method to sip:user@target (target "ip:port"), with the given
// Call-ID, Via branch and CSeq, extra header lines ("Name: value") and body.
func (c *Caller) Send(target, method, user, callID, branch, fromTag string, cseq int, extra []string, contentType string, body []byte) error {
	dst, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return fmt.Errorf("siptest: caller target %q: %w", target, err)
	}
	local := c.conn.LocalAddr().(*net.UDPAddr)
	b := &strings.Builder{}
	fmt.Fprintf(b, "%s sip:%s@%s SIP/2.0\r\n", method, user, target)
	fmt.Fprintf(b, "Via: SIP/2.0/UDP %s;branch=%s;rport\r\n", local.String(), branch)
	fmt.Fprintf(b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(b, "From: \"Proxy Caller\" <sip:caller@%s>;tag=%s\r\n", local.IP.String(), fromTag)
	fmt.Fprintf(b, "To: <sip:%s@%s>\r\n", user, target)
	fmt.Fprintf(b, "Call-ID: %s\r\nCSeq: %d %s\r\n", callID, cseq, method)
	if method == "INVITE" {
		fmt.Fprintf(b, "Contact: <sip:caller@%s>\r\n", local.String())
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if contentType != "" {
		fmt.Fprintf(b, "Content-Type: %s\r\n", contentType)
	}
	fmt.Fprintf(b, "Content-Length: %d\r\n\r\n", len(body))
	msg := append([]byte(b.String()), body...)
	_, err = c.conn.WriteToUDP(msg, dst)
	return err
}

// sdpOffer is a minimal SDP offer (RFC 4566) for test INVITEs; sipis never reads it.
const sdpOffer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// Invite sends an INVITE with an SDP offer to sip:user@target; extra are header lines such as
// "P-Asserted-Identity: <sip:+4144@example.org>".
func (c *Caller) Invite(target, user string, extra ...string) *CallInvite {
	c.t.Helper()
	inv := &CallInvite{c: c, Target: target, URI: user, CallID: callerRandom() + "@siptest",
		Branch: "z9hG4bK" + callerRandom(), Tag: callerRandom()[:10], CSeq: 1}
	if err := c.Send(target, "INVITE", user, inv.CallID, inv.Branch, inv.Tag, inv.CSeq, extra, "application/sdp", []byte(sdpOffer)); err != nil {
		c.t.Fatalf("siptest: send INVITE: %v", err)
	}
	return inv
}

// Cancel sends a CANCEL for the INVITE: same Request-URI, Call-ID, From, CSeq number and
// branch (RFC 3261 §9.1).
func (inv *CallInvite) Cancel() {
	inv.c.t.Helper()
	if err := inv.c.Send(inv.Target, "CANCEL", inv.URI, inv.CallID, inv.Branch, inv.Tag, inv.CSeq, nil, "", nil); err != nil {
		inv.c.t.Fatalf("siptest: send CANCEL: %v", err)
	}
}

// Message sends a MESSAGE (RFC 3428) to sip:user@target and returns its Call-ID.
func (c *Caller) Message(target, user, contentType string, body []byte, extra ...string) string {
	c.t.Helper()
	callID := callerRandom() + "@siptest"
	if err := c.Send(target, "MESSAGE", user, callID, "z9hG4bK"+callerRandom(), callerRandom()[:10], 1, extra, contentType, body); err != nil {
		c.t.Fatalf("siptest: send MESSAGE: %v", err)
	}
	return callID
}

// Next returns the next response (in arrival order, not yet returned) to the request with
// callID and CSeq method, waiting up to timeout; an error if none came.
func (c *Caller) Next(callID, method string, timeout time.Duration) (*CallResponse, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for i, r := range c.resps {
			if r.CallID == callID && r.Method == method {
				c.resps = append(c.resps[:i], c.resps[i+1:]...)
				return r, nil
			}
		}
		if c.done {
			return nil, errors.New("siptest: caller closed")
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("siptest: no response to %s %s within %v", method, callID, timeout)
		}
		c.cond.Wait()
	}
}

// Pending returns how many received responses were not yet returned by Next.
func (c *Caller) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.resps)
}

func callerRandom() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// InDialog sends an in-dialog request (ACK for a 2xx, BYE, INFO…) of the dialog the 2xx res
// created for inv: to the response's Contact, with the route set of its Record-Route in reverse
// (RFC 3261 §12.1.2), through inv.Target. ACK repeats the INVITE's CSeq number; other
// methods use cseq.
func (inv *CallInvite) InDialog(res *CallResponse, method string, cseq int) {
	c := inv.c
	c.t.Helper()
	dst, err := net.ResolveUDPAddr("udp", inv.Target)
	if err != nil {
		c.t.Fatalf("siptest: %v", err)
	}
	target, _ := nameAddr(res.msg.get("contact"))
	rr := res.msg.all("record-route")
	local := c.conn.LocalAddr().(*net.UDPAddr)
	b := &strings.Builder{}
	fmt.Fprintf(b, "%s %s SIP/2.0\r\n", method, target)
	fmt.Fprintf(b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n", local.String(), callerRandom())
	for i := len(rr) - 1; i >= 0; i-- {
		fmt.Fprintf(b, "Route: %s\r\n", rr[i])
	}
	if method == "ACK" {
		cseq = inv.CSeq
	}
	fmt.Fprintf(b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n",
		res.msg.get("from"), res.msg.get("to"), inv.CallID, cseq, method)
	if _, err := c.conn.WriteToUDP([]byte(b.String()), dst); err != nil {
		c.t.Fatalf("siptest: send %s: %v", method, err)
	}
}
