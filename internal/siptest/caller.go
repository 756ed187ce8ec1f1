package siptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
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

	mu      sync.Mutex
	cond    *sync.Cond
	resps   []*CallResponse
	reqs    []*CallRequest
	noAck   bool
	done    bool
	wg      sync.WaitGroup
	counted map[string]int // "status|method|call-id" -> responses received
}

// CallRequest is a request the Caller received (sipis relaying a device's in-dialog request
// upstream); answer it with Caller.Respond.
type CallRequest struct {
	Method, URI, CallID string
	// Raw is the request as received.
	Raw string
	msg *message
	src *net.UDPAddr
}

// Header returns the first value of the named header ("" if absent).
func (r *CallRequest) Header(name string) string {
	n := strings.ToLower(name)
	if full, ok := compact[n]; ok {
		n = full
	}
	return r.msg.get(n)
}

// Body returns the request's body.
func (r *CallRequest) Body() string { return string(r.msg.body) }

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
	src     *net.UDPAddr
}

// Body returns the response's body.
func (r *CallResponse) Body() string { return string(r.msg.body) }

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
	raw                              []byte
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
	c := &Caller{t: t, conn: conn, counted: map[string]int{}}
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
		if err != nil {
			continue
		}
		if m.request {
			r := &CallRequest{Method: m.method, URI: m.uri, CallID: m.get("call-id"), Raw: string(buf[:n]), msg: m, src: src}
			c.mu.Lock()
			c.reqs = append(c.reqs, r)
			c.cond.Broadcast()
			c.mu.Unlock()
			continue
		}
		num, method, _ := strings.Cut(m.get("cseq"), " ")
		r := &CallResponse{Status: m.status, Reason: m.reason, CallID: m.get("call-id"),
			Method: strings.TrimSpace(method), Raw: string(buf[:n]), Arrived: time.Now(), msg: m, src: src}
		c.mu.Lock()
		noAck := c.noAck
		c.mu.Unlock()
		if r.Method == "INVITE" && r.Status >= 300 && !noAck {
			c.ack(m, num, src)
		}
		c.mu.Lock()
		c.resps = append(c.resps, r)
		c.counted[strconv.Itoa(r.Status)+"|"+r.Method+"|"+r.CallID]++
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

// SetAutoAck turns the automatic ACK of final non-2xx responses to INVITE off (to watch
// sipis retransmit them, RFC 3261 §17.2.1 Timer G) or back on; Ack then sends it by hand.
func (c *Caller) SetAutoAck(on bool) {
	c.mu.Lock()
	c.noAck = !on
	c.mu.Unlock()
}

// Ack acknowledges a final non-2xx response to an INVITE by hand (see SetAutoAck).
func (c *Caller) Ack(res *CallResponse) {
	num, _, _ := strings.Cut(res.msg.get("cseq"), " ")
	c.ack(res.msg, num, res.src)
}

// Count returns how many responses with status to method of callID arrived so far,
// including those already returned by Next.
func (c *Caller) Count(callID, method string, status int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counted[strconv.Itoa(status)+"|"+method+"|"+callID]
}

// Retransmit sends the INVITE again, byte for byte (RFC 3261 §17.1.1.2 Timer A).
func (inv *CallInvite) Retransmit() {
	inv.c.t.Helper()
	dst, err := net.ResolveUDPAddr("udp", inv.Target)
	if err != nil {
		inv.c.t.Fatalf("siptest: %v", err)
	}
	if _, err := inv.c.conn.WriteToUDP(inv.raw, dst); err != nil {
		inv.c.t.Fatalf("siptest: retransmit INVITE: %v", err)
	}
}

// NextRequest returns the next received request with callID and method, waiting up to
// timeout.
func (c *Caller) NextRequest(callID, method string, timeout time.Duration) (*CallRequest, error) {
	return take(c, &c.reqs, func(r *CallRequest) bool { return r.CallID == callID && r.Method == method },
		timeout, "caller got no "+method+" "+callID)
}

// take waits up to timeout for the first element of *list that match accepts, and removes
// and returns it; c.cond is signalled whenever the lists grow or the caller closes.
func take[T any](c *Caller, list *[]T, match func(T) bool, timeout time.Duration, missing string) (T, error) {
	var zero T
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
		for i, x := range *list {
			if match(x) {
				*list = append((*list)[:i], (*list)[i+1:]...)
				return x, nil
			}
		}
		if c.done {
			return zero, errors.New("siptest: caller closed")
		}
		if !time.Now().Before(deadline) {
			return zero, fmt.Errorf("siptest: %s within %v", missing, timeout)
		}
		c.cond.Wait()
	}
}

// Respond answers a received request (RFC 3261 §8.2.6): every Via, From, To, Call-ID and
// CSeq copied, to the address it came from; a 2xx to INVITE carries our Contact, and body
// (if not empty) goes as application/sdp.
func (c *Caller) Respond(req *CallRequest, code int, reason, body string) {
	c.t.Helper()
	b := &strings.Builder{}
	fmt.Fprintf(b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range req.msg.all("via") {
		fmt.Fprintf(b, "Via: %s\r\n", v)
	}
	fmt.Fprintf(b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n", req.msg.get("from"), req.msg.get("to"), req.CallID, req.msg.get("cseq"))
	if req.Method == "INVITE" && code < 300 {
		fmt.Fprintf(b, "Contact: <sip:caller@%s>\r\n", c.conn.LocalAddr().String())
	}
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := c.conn.WriteToUDP([]byte(b.String()), req.src); err != nil {
		c.t.Errorf("siptest: caller respond: %v", err)
	}
}

// Send sends one request: method to sip:user@target (target "ip:port"), with the given
// Call-ID, Via branch and CSeq, extra header lines ("Name: value") and body.
func (c *Caller) Send(target, method, user, callID, branch, fromTag string, cseq int, extra []string, contentType string, body []byte) error {
	_, err := c.send(target, method, user, callID, branch, fromTag, cseq, extra, contentType, body)
	return err
}

func (c *Caller) send(target, method, user, callID, branch, fromTag string, cseq int, extra []string, contentType string, body []byte) ([]byte, error) {
	dst, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("siptest: caller target %q: %w", target, err)
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
	return msg, err
}

// sdpOffer is a minimal SDP offer (RFC 4566) for test INVITEs; sipis never reads it.
const sdpOffer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// Invite sends an INVITE with an SDP offer to sip:user@target; extra are header lines such as
// "P-Asserted-Identity: <sip:+4144@example.org>".
func (c *Caller) Invite(target, user string, extra ...string) *CallInvite {
	c.t.Helper()
	inv := &CallInvite{c: c, Target: target, URI: user, CallID: callerRandom() + "@siptest",
		Branch: "z9hG4bK" + callerRandom(), Tag: callerRandom()[:10], CSeq: 1}
	raw, err := c.send(target, "INVITE", user, inv.CallID, inv.Branch, inv.Tag, inv.CSeq, extra, "application/sdp", []byte(sdpOffer))
	if err != nil {
		c.t.Fatalf("siptest: send INVITE: %v", err)
	}
	inv.raw = raw
	return inv
}

// Fork sends the INVITE again as a forking proxy sends it to another of its targets (RFC 3261
// §16.6): same Call-ID, From tag and CSeq, a new Via branch. The copy is a call of its own.
func (inv *CallInvite) Fork() *CallInvite {
	c := inv.c
	c.t.Helper()
	f := &CallInvite{c: c, Target: inv.Target, URI: inv.URI, CallID: inv.CallID,
		Branch: "z9hG4bK" + callerRandom(), Tag: inv.Tag, CSeq: inv.CSeq}
	raw, err := c.send(f.Target, "INVITE", f.URI, f.CallID, f.Branch, f.Tag, f.CSeq, nil, "application/sdp", []byte(sdpOffer))
	if err != nil {
		c.t.Fatalf("siptest: send forked INVITE: %v", err)
	}
	f.raw = raw
	return f
}

// Through returns a copy of inv whose later requests (InDialog, Cancel) are sent from other,
// e.g. a caller on another address that should not be trusted; responses go to other.
func (inv *CallInvite) Through(other *Caller) *CallInvite {
	cp := *inv
	cp.c = other
	return &cp
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
	return take(c, &c.resps, func(r *CallResponse) bool { return r.CallID == callID && r.Method == method },
		timeout, "no response to "+method+" "+callID)
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
// (RFC 3261 §12.1.2), through inv.Target. ACK with cseq 0 repeats the INVITE's CSeq number;
// other requests use cseq.
func (inv *CallInvite) InDialog(res *CallResponse, method string, cseq int) {
	inv.c.t.Helper()
	inv.InDialogBody(res, method, cseq, "", "")
}

// InDialogBody is InDialog with a body of contentType (e.g. the SDP of a re-INVITE, or
// application/dtmf-relay for INFO); extra are header lines such as "Refer-To: <sip:x@y>".
func (inv *CallInvite) InDialogBody(res *CallResponse, method string, cseq int, contentType, body string, extra ...string) {
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
	if method == "ACK" && cseq == 0 {
		cseq = inv.CSeq
	}
	fmt.Fprintf(b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n",
		res.msg.get("from"), res.msg.get("to"), inv.CallID, cseq, method)
	if method == "INVITE" {
		fmt.Fprintf(b, "Contact: <sip:caller@%s>\r\n", local.String())
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if contentType != "" {
		fmt.Fprintf(b, "Content-Type: %s\r\n", contentType)
	}
	fmt.Fprintf(b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := c.conn.WriteToUDP([]byte(b.String()), dst); err != nil {
		c.t.Fatalf("siptest: send %s: %v", method, err)
	}
}
