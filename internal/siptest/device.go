package siptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/pkg/registration"
)

// Device plays a woken phone on the device-facing listener of sipis: it connects over TCP,
// claims a call with REGISTER, X-Sipis-Token and the proof of its device secret on that
// connection, then receives the relayed
// INVITE and answers it as a UAS, all in raw SIP text over the one connection.
type Device struct {
	t    testing.TB
	conn net.Conn
	tag  string

	mu    sync.Mutex
	cond  *sync.Cond
	msgs  []*DeviceMessage
	done  bool
	wg    sync.WaitGroup
	wmu   sync.Mutex
	cseq  int
	local string
	tp    string // "tcp" or "tls"
}

// DeviceMessage is a request or response the Device received.
type DeviceMessage struct {
	// Method is the request's method, or the CSeq method of a response.
	Method string
	// Status is 0 for a request.
	Status int
	// URI is a request's Request-URI.
	URI string
	// Raw is the message as received.
	Raw string
	msg *message
}

// Header returns the first value of the named header ("" if absent).
func (m *DeviceMessage) Header(name string) string {
	n := strings.ToLower(name)
	if full, ok := compact[n]; ok {
		n = full
	}
	return m.msg.get(n)
}

// Body returns the message body.
func (m *DeviceMessage) Body() string { return string(m.msg.body) }

// DialDevice connects a Device to addr ("ip:port", TCP); it is closed when the test ends.
func DialDevice(t testing.TB, addr string) *Device {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("siptest: device dial %s: %v", addr, err)
	}
	return newDevice(t, c, "tcp")
}

// DialDeviceTLS connects a Device to addr over TLS with cfg (RFC 3261 §26.2.1: the device
// checks the listener's certificate); it is closed when the test ends.
func DialDeviceTLS(t testing.TB, addr string, cfg *tls.Config) *Device {
	t.Helper()
	dl := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(dl, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("siptest: device dial tls %s: %v", addr, err)
	}
	return newDevice(t, c, "tls")
}

func newDevice(t testing.TB, c net.Conn, transport string) *Device {
	d := &Device{t: t, conn: c, tag: callerRandom()[:10], local: c.LocalAddr().String(), tp: transport}
	d.cond = sync.NewCond(&d.mu)
	d.wg.Add(1)
	go d.read()
	t.Cleanup(d.Close)
	return d
}

// Close closes the connection.
func (d *Device) Close() {
	d.conn.Close()
	d.wg.Wait()
}

func (d *Device) read() {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		d.done = true
		d.cond.Broadcast()
		d.mu.Unlock()
	}()
	br := bufio.NewReader(d.conn)
	for {
		raw, err := readFramed(br)
		if err != nil {
			return
		}
		m, err := parseMessage(raw)
		if err != nil {
			continue
		}
		dm := &DeviceMessage{Method: m.method, Status: m.status, URI: m.uri, Raw: string(raw), msg: m}
		if !m.request {
			_, method, _ := strings.Cut(m.get("cseq"), " ")
			dm.Method = strings.TrimSpace(method)
		}
		d.mu.Lock()
		d.msgs = append(d.msgs, dm)
		d.cond.Broadcast()
		d.mu.Unlock()
	}
}

func (d *Device) write(s string) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if _, err := d.conn.Write([]byte(s)); err != nil {
		d.t.Errorf("siptest: device write: %v", err)
	}
}

// Next returns the next received message with method (requests: status 0; responses: the
// CSeq method and a status), waiting up to timeout.
func (d *Device) Next(method string, response bool, timeout time.Duration) (*DeviceMessage, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
	defer timer.Stop()
	d.mu.Lock()
	defer d.mu.Unlock()
	for {
		for i, m := range d.msgs {
			if m.Method == method && (m.Status != 0) == response {
				d.msgs = append(d.msgs[:i], d.msgs[i+1:]...)
				return m, nil
			}
		}
		if d.done {
			return nil, errors.New("siptest: device connection closed")
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("siptest: device got no %s within %v", method, timeout)
		}
		d.cond.Wait()
	}
}

// Register claims a call as a woken app does (docs/app-protocol.md, step 4): REGISTER with
// X-Sipis-Token, X-Sipis-Device (when deviceID is not empty) and X-Sipis-Proof, the
// registration.CallProof of secret (none when secret is empty). It returns the final
// response's status.
func (d *Device) Register(token, deviceID, secret string) (int, error) {
	r, err := d.RegisterResponse(token, deviceID, secret)
	if err != nil {
		return 0, err
	}
	return r.Status, nil
}

// RegisterResponse is Register returning the whole final response.
func (d *Device) RegisterResponse(token, deviceID, secret string) (*DeviceMessage, error) {
	d.mu.Lock()
	d.cseq++
	cseq := d.cseq
	d.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:sipis SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n", strings.ToUpper(d.tp), d.local, callerRandom())
	fmt.Fprintf(&b, "From: <sip:device@sipis>;tag=%s\r\nTo: <sip:device@sipis>\r\nCall-ID: reg-%s\r\nCSeq: %d REGISTER\r\n", d.tag, d.tag, cseq)
	fmt.Fprintf(&b, "Contact: <sip:device@%s;transport=%s>\r\nX-Sipis-Token: %s\r\n", d.local, d.tp, token)
	if deviceID != "" {
		fmt.Fprintf(&b, "X-Sipis-Device: %s\r\n", deviceID)
	}
	if secret != "" {
		fmt.Fprintf(&b, "X-Sipis-Proof: %s\r\n", registration.CallProof(secret, deviceID, token))
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	d.write(b.String())
	for {
		r, err := d.Next("REGISTER", true, 5*time.Second)
		if err != nil {
			return nil, err
		}
		if r.Status >= 200 {
			return r, nil
		}
	}
}

// Respond answers a received request: Via, Record-Route, From, Call-ID and CSeq copied, To
// with the device's tag (RFC 3261 §8.2.6, §12.1.1), a Contact for INVITE, and an optional SDP
// body. extra are header lines such as "Require: 100rel" and "RSeq: 1" of a reliable
// provisional response (RFC 3262 §3).
func (d *Device) Respond(req *DeviceMessage, code int, reason, sdp string, extra ...string) {
	d.write(d.response(req, code, reason, sdp, extra...))
}

// RespondAndClose is Respond, closing the connection right behind the response: the last
// bytes written are the response, then the FIN, as a phone that hangs up and drops its
// connection at once does.
func (d *Device) RespondAndClose(req *DeviceMessage, code int, reason string) {
	d.wmu.Lock()
	_, err := d.conn.Write([]byte(d.response(req, code, reason, "")))
	d.conn.Close()
	d.wmu.Unlock()
	if err != nil {
		d.t.Errorf("siptest: device write: %v", err)
	}
	d.wg.Wait()
}

// response builds the text of Respond.
func (d *Device) response(req *DeviceMessage, code int, reason, sdp string, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range req.msg.all("via") {
		fmt.Fprintf(&b, "Via: %s\r\n", v)
	}
	if code > 100 && code < 300 {
		for _, v := range req.msg.all("record-route") {
			fmt.Fprintf(&b, "Record-Route: %s\r\n", v)
		}
	}
	to := req.msg.get("to")
	if code > 100 && !strings.Contains(to, "tag=") {
		to += ";tag=" + d.tag
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n", req.msg.get("from"), to, req.msg.get("call-id"), req.msg.get("cseq"))
	if req.Method == "INVITE" && code < 300 {
		fmt.Fprintf(&b, "Contact: <sip:device@%s;transport=%s>\r\n", d.local, d.tp)
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if sdp != "" {
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(sdp), sdp)
	return b.String()
}

// Bye hangs up the dialog the device answered with inv: BYE to the caller's Contact with the
// route set of the INVITE's Record-Route (RFC 3261 §12.2.1.1), sent on the connection.
func (d *Device) Bye(inv *DeviceMessage) {
	d.InDialog(inv, "BYE", 1, "", "")
}

// InDialog sends a request of the dialog the device answered with inv (re-INVITE, ACK of its
// 2xx, INFO, REFER, BYE…) on the connection: to the caller's Contact, with the INVITE's
// Record-Route as route set (RFC 3261 §12.1.1), From with the device's tag, CSeq cseq (the
// device's own sequence, §12.2.1.1). extra are header lines such as "Refer-To: <sip:x@y>".
func (d *Device) InDialog(inv *DeviceMessage, method string, cseq int, contentType, body string, extra ...string) {
	target, _ := nameAddr(inv.msg.get("contact"))
	d.InDialogTo(inv, target, method, cseq, contentType, body, extra...)
}

// InDialogTo is InDialog with the Request-URI target instead of the caller's Contact: a
// device trying to reach another host through sipis.
func (d *Device) InDialogTo(inv *DeviceMessage, target, method string, cseq int, contentType, body string, extra ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK%s\r\nMax-Forwards: 70\r\n", method, target, strings.ToUpper(d.tp), d.local, callerRandom())
	for _, v := range inv.msg.all("record-route") {
		fmt.Fprintf(&b, "Route: %s\r\n", v)
	}
	fmt.Fprintf(&b, "From: %s;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n",
		inv.msg.get("to"), d.tag, inv.msg.get("from"), inv.msg.get("call-id"), cseq, method)
	if method == "INVITE" {
		fmt.Fprintf(&b, "Contact: <sip:device@%s;transport=%s>\r\n", d.local, d.tp)
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	if contentType != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", contentType)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	d.write(b.String())
}
