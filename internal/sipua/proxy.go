package sipua

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// This file is the stateful proxy core (RFC 3261 §16) that relays a call between the user's
// proxy and a woken device: requests are forwarded with our Via and Record-Route, responses
// are relayed back with our Via removed. The decisions (which device, which response wins)
// belong to the caller of Forward.
//
// It lives in sipua rather than in a package of its own because it edits sipgo messages
// (Clone, Route, Via, Max-Forwards, Record-Route) and uses the transport's paths, flows and
// server transactions directly; a package beside sipua would need all of that exported, or
// would have to import sipgo itself.

// ErrTooManyHops is returned by Forward for a request whose Max-Forwards is 0; answer it 483
// (RFC 3261 §16.3 item 3).
var ErrTooManyHops = errors.New("sipua: Max-Forwards is 0")

// routeParam marks the URIs of our Record-Route entries, so that we recognise (and remove)
// them in the Route header of later requests (RFC 3261 §16.4).
const routeParam = "sipis"

// Flow is the connection a request arrived on (TCP or TLS), or, for UDP, the address it came
// from through one of our sockets. Requests can be forwarded over it (see
// ForwardOptions.Flow), which is how a device behind NAT is reached (RFC 5626 §5.3).
type Flow struct {
	ua        *UA
	transport string
	sc        *streamConn
	ul        *udpListener
	dst       *net.UDPAddr
}

// Transport returns "udp", "tcp" or "tls".
func (f *Flow) Transport() string { return f.transport }

// Remote returns the peer's "ip:port".
func (f *Flow) Remote() string {
	if f.sc != nil {
		return f.sc.conn.RemoteAddr().String()
	}
	return f.dst.String()
}

// Done is closed when the connection closes; nil (never closed) for UDP.
func (f *Flow) Done() <-chan struct{} {
	if f.sc != nil {
		return f.sc.closed
	}
	return nil
}

// Bind marks the flow as carrying a call (a device proved its token on it): the connection's
// idle limit becomes Config.BoundIdleTimeout, refreshed by any bytes, keep-alives included.
// It does nothing for UDP and dialled connections.
func (f *Flow) Bind() {
	if f != nil && f.sc != nil && f.sc.accepted && !f.sc.bound.Swap(true) {
		f.sc.refreshDeadline()
	}
}

// Same reports whether g is the same connection (or UDP peer on the same socket) as f.
func (f *Flow) Same(g *Flow) bool {
	if f == nil || g == nil {
		return false
	}
	if f.sc != nil || g.sc != nil {
		return f.sc == g.sc
	}
	return f.ul == g.ul && f.dst.String() == g.dst.String()
}

func (f *Flow) path() *path {
	if f.sc != nil {
		return &path{transport: f.transport, sc: f.sc, local: f.sc.conn.LocalAddr(), remote: f.Remote()}
	}
	return &path{transport: "udp", udp: f.ul, dst: f.dst, local: f.ul.conn.LocalAddr(), remote: f.dst.String()}
}

// Flow returns the connection or UDP peer the request came from.
func (r *Request) Flow() *Flow { return r.flow }

// Contact returns a Contact header value for a response of ours to r that creates a dialog
// (a 1xx with our To tag, or a 2xx): RFC 3261 §12.1.1 requires one there. It is r's
// Request-URI user at our address as r's sender reaches us, over r's transport.
func (r *Request) Contact() string {
	user := ""
	if r.msg.Recipient.User != "" {
		user = r.msg.Recipient.User + "@"
	}
	if r.flow == nil {
		return "<sip:" + user + r.msg.Recipient.Host + ">"
	}
	p := r.flow.path()
	host, port := r.ua.contactAddr(p, p.transport)
	return fmt.Sprintf("<sip:%s%s;transport=%s>", user, net.JoinHostPort(host, strconv.Itoa(port)), p.transport)
}

// RespondInvite answers, from a CANCEL, the INVITE it cancels when sipis no longer has that
// INVITE's transaction (it restarted while the call rang), so that the caller is not left
// ringing: the CANCEL repeats the INVITE's Request-URI, Via, From, To, Call-ID and CSeq
// number (RFC 3261 §9.1), which is all a response to the INVITE needs (§8.2.6, §9.2). The
// response is sent once, without the INVITE transaction's retransmissions. Answer the CANCEL
// itself first.
func (r *Request) RespondInvite(code int, reason string) error {
	if r.Method != "CANCEL" {
		return fmt.Errorf("sipua: RespondInvite on a %s, not a CANCEL", r.Method)
	}
	if code < 300 || code > 699 || strings.ContainsAny(reason, "\r\n") {
		return fmt.Errorf("sipua: RespondInvite %d %q is not a final non-2xx response", code, reason)
	}
	res := sip.NewResponseFromRequest(r.msg, code, reason, nil)
	if to := res.To(); to != nil {
		if _, had := to.Params.Get("tag"); !had {
			to.Params.Add("tag", r.toTag)
		}
	}
	if via := res.Via(); via != nil && !via.Params.Has("received") {
		if h, _, err := net.SplitHostPort(r.Source); err == nil && h != strings.Trim(via.Host, "[]") {
			via.Params.Add("received", h)
		}
	}
	cseq := res.CSeq()
	if cseq == nil {
		return errors.New("sipua: RespondInvite: CANCEL without CSeq")
	}
	res.ReplaceHeader(&sip.CSeqHeader{SeqNo: cseq.SeqNo, MethodName: sip.INVITE})
	res.AppendHeader(sip.NewHeader("Server", r.ua.ua))
	if err := r.send([]byte(res.String())); err != nil {
		return fmt.Errorf("sipua: send %d to the INVITE of %s: %w", code, r.Source, err)
	}
	return nil
}

// ToTag returns the tag of the To header ("" outside a dialog).
func (r *Request) ToTag() string {
	t, _ := r.msg.To().Params.Get("tag")
	return t
}

// FromTag returns the tag of the From header.
func (r *Request) FromTag() string {
	t, _ := r.msg.From().Params.Get("tag")
	return t
}

// Response is a response to a forwarded request (see Forward).
type Response struct {
	// Status and Reason are the status line's.
	Status int
	Reason string
	msg    *sip.Response
	local  bool
}

// Header returns the first value of the named header ("" if absent).
func (r *Response) Header(name string) string {
	if r.msg == nil {
		return ""
	}
	if h := r.msg.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// ToTag returns the tag of the To header, which names the dialog a 1xx or 2xx creates.
func (r *Response) ToTag() string {
	if r.msg == nil || r.msg.To() == nil {
		return ""
	}
	t, _ := r.msg.To().Params.Get("tag")
	return t
}

// Local reports that the response was made up here because none came: 408 when the
// transaction timed out, 503 when the flow closed or could not be written (RFC 3261 §8.1.3.1,
// §16.7 step 6). A local response must not be relayed.
func (r *Response) Local() bool { return r.local }

// Relay sends res, a response to a forwarded copy of r, back to where r came from (RFC 3261
// §16.7 step 9): our Via is removed, everything else, To tag and body included, stays. A
// final response ends r's server transaction as Respond does; a 2xx to an INVITE may be relayed
// again (retransmissions, RFC 6026 §7.2).
func (r *Request) Relay(res *Response) error {
	if r.Method == "ACK" {
		return errors.New("sipua: ACK is not answered")
	}
	if res == nil || res.msg == nil || res.local {
		return errors.New("sipua: only a received response can be relayed")
	}
	c := res.msg.Clone()
	c.RemoveHeader("Via")
	if c.Via() == nil {
		return errors.New("sipua: response has no Via left to relay it by")
	}
	b := []byte(c.String())
	var sent func()
	if r.stx != nil { // before sending, as in respond
		sent = r.ua.srvTxs.answered(r.stx, b, res.Status)
	}
	err := r.send(b)
	if sent != nil { // a connection draining after a bad message may close now
		sent()
	}
	if err != nil {
		return fmt.Errorf("sipua: relay %d to %s/%s: %w", res.Status, r.Transport, r.Source, err)
	}
	return nil
}

// ForwardOptions says where and how Forward sends a request.
type ForwardOptions struct {
	// Flow sends the request over this flow (a device's connection). Nil sends it to the first
	// Route entry left after ours, else to the Request-URI (RFC 3261 §16.6 steps 6-7, loose
	// routing), resolved as RFC 3263 says.
	Flow *Flow
	// RequestURI replaces the Request-URI (the device's contact); "" keeps it.
	RequestURI string
	// RecordRoute adds our Record-Route (with lr) so that the dialog's later requests come
	// through us (§16.6 step 4); two entries when the request leaves over another socket than
	// it came in on (RFC 5658 §4).
	RecordRoute bool
	// OnResponse receives each response (not 100 Trying, which is hop-by-hop), in order, on
	// one goroutine per transaction; it must not block for long. When no final response comes
	// it receives a Local 408 or 503. For an INVITE, 2xx retransmissions arrive too, for 64*T1
	// after the first (RFC 6026 §8.4 Timer M). Unused for ACK.
	OnResponse func(*Response)
}

// ClientTx is the client transaction of a forwarded request (RFC 3261 §17.1).
type ClientTx struct {
	ua     *UA
	p      *path
	key    string
	method string
	fwd    *sip.Request
	on     func(*Response)
	rx     chan *sip.Response

	mu          sync.Mutex
	provisional bool
	final       bool
	cancelWant  bool
	cancelSent  bool
	cancelled   chan struct{}
}

// Forward sends a copy of req on as a stateful proxy does (RFC 3261 §16.6): our own Route
// entries are removed from the top (§16.4), Max-Forwards is decremented (70 when absent),
// the Request-URI replaced when asked, Record-Route added when asked, and our Via with a new
// branch put on top; the body is untouched. ACK is sent without a transaction (nil ClientTx).
// CANCEL is not forwarded: cancel the ClientTx of the INVITE.
func (u *UA) Forward(ctx context.Context, req *Request, o ForwardOptions) (*ClientTx, error) {
	if req.Method == "CANCEL" {
		return nil, errors.New("sipua: CANCEL is not forwarded; use ClientTx.Cancel")
	}
	fwd := req.msg.Clone()
	for rt := fwd.Route(); rt != nil && rt.Address.UriParams != nil && rt.Address.UriParams.Has(routeParam); rt = fwd.Route() {
		fwd.RemoveHeader("Route")
	}
	if mf := fwd.MaxForwards(); mf != nil {
		if *mf == 0 {
			return nil, ErrTooManyHops
		}
		*mf = *mf - 1
	} else {
		fwd.AppendHeader(sip.NewHeader("Max-Forwards", "70"))
	}
	if o.RequestURI != "" {
		var uri sip.Uri
		if err := sip.ParseUri(strings.Trim(strings.TrimSpace(o.RequestURI), "<>"), &uri); err != nil {
			return nil, fmt.Errorf("sipua: Request-URI %q: %w", o.RequestURI, err)
		}
		fwd.Recipient = uri
	}
	ou, p, err := u.nextHop(ctx, o.Flow, fwd)
	if err != nil {
		return nil, err
	}
	if o.RecordRoute {
		inHost, inPort := req.ua.socketAddr(req.flow.path(), req.Transport)
		outHost, outPort := ou.socketAddr(p, p.transport)
		if req.ua != ou || req.Transport != p.transport || inHost != outHost || inPort != outPort {
			fwd.PrependHeader(sip.NewHeader("Record-Route", routeURI(inHost, inPort, req.Transport)))
		}
		fwd.PrependHeader(sip.NewHeader("Record-Route", routeURI(outHost, outPort, p.transport)))
	}
	return ou.startTx(p, fwd, o.OnResponse)
}

// nextHop is where a request goes: over flow when set, else to the first Route entry, else to
// the Request-URI (RFC 3261 §16.6 steps 6-7, loose routing), resolved as RFC 3263 says. It
// returns the UA whose socket sends it.
func (u *UA) nextHop(ctx context.Context, flow *Flow, m *sip.Request) (*UA, *path, error) {
	if flow != nil {
		return flow.ua, flow.path(), nil
	}
	target := m.Recipient
	if rt := m.Route(); rt != nil {
		target = rt.Address
	}
	transport := "udp"
	if tp, ok := target.UriParams.Get("transport"); ok && tp != "" {
		transport = strings.ToLower(tp)
	}
	if target.IsEncrypted() {
		transport = "tls"
	}
	p, err := u.pathTo(ctx, target.Host, target.Port, transport)
	if err != nil {
		return nil, nil, err
	}
	return u, p, nil
}

// startTx puts our Via with a new branch on top of m and sends it over p, as a client
// transaction for everything but ACK (which is sent once, nil ClientTx).
func (u *UA) startTx(p *path, m *sip.Request, on func(*Response)) (*ClientTx, error) {
	method := string(m.Method)
	host, port := u.socketAddr(p, p.transport)
	branch := newBranch()
	via := fmt.Sprintf("SIP/2.0/%s %s:%d;branch=%s", strings.ToUpper(p.transport), host, port, branch)
	if p.transport == "udp" {
		via += ";rport"
	}
	m.PrependHeader(sip.NewHeader("Via", via))
	b := []byte(m.String())
	if method == "ACK" {
		if err := p.send(b); err != nil {
			return nil, fmt.Errorf("sipua: forward ACK to %s/%s: %w", p.transport, p.remote, err)
		}
		return nil, nil
	}
	// Reparse so that the Via we added is a parsed header for ACK and CANCEL.
	parsed, err := u.parser.ParseSIP(b)
	if err != nil {
		return nil, fmt.Errorf("sipua: %s to send does not parse: %w", method, err)
	}
	tx := &ClientTx{ua: u, p: p, key: branch + "|" + method, method: method, fwd: parsed.(*sip.Request),
		on: on, rx: make(chan *sip.Response, 8), cancelled: make(chan struct{})}
	if tx.on == nil {
		tx.on = func(*Response) {}
	}
	u.ptxs.Store(tx.key, tx)
	if err := p.send(b); err != nil {
		u.ptxs.Delete(tx.key)
		return nil, fmt.Errorf("sipua: send %s to %s/%s: %w", method, p.transport, p.remote, err)
	}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		u.ptxs.Delete(tx.key)
		return nil, ErrClosed
	}
	u.wg.Add(1)
	u.mu.Unlock()
	go tx.run(b)
	return tx, nil
}

// DialogRequest is a request sipis sends by itself inside a dialog it relays: the BYE that
// ends a dialog when the other side is gone or too old (a proxy acting as a UA for that
// request, RFC 3261 §16.1, §15.1.1). The fields are those of the side sipis stands in for.
type DialogRequest struct {
	// Method is e.g. "BYE".
	Method string
	// RequestURI is the remote target (the peer's Contact URI, RFC 3261 §12.2.1.1).
	RequestURI string
	// Route is the route set, first hop first; our own entries are skipped.
	Route []string
	// From and To are the full header values, tags included; CallID and CSeq the dialog's.
	From, To, CallID string
	CSeq             uint32
	// Flow sends the request over this flow; nil routes it by Route, else RequestURI.
	Flow *Flow
	// OnResponse is as in ForwardOptions.
	OnResponse func(*Response)
}

// SendRequest sends r as a client transaction (RFC 3261 §17.1.2) with Max-Forwards 70 and our
// Via; it fails with a clear error for a malformed field and sends nothing then. An ACK (of a
// 2xx, RFC 3261 §13.2.2.4) is sent once without a transaction and returns a nil *ClientTx.
func (u *UA) SendRequest(ctx context.Context, r DialogRequest) (*ClientTx, error) {
	if r.Method == "" || r.Method == "CANCEL" || r.Method == "INVITE" ||
		strings.ContainsAny(r.Method, " \t\r\n") {
		return nil, fmt.Errorf("sipua: SendRequest method %q is not ACK or a non-INVITE request", r.Method)
	}
	for _, f := range [][2]string{{"RequestURI", r.RequestURI}, {"From", r.From}, {"To", r.To}, {"CallID", r.CallID}} {
		if strings.TrimSpace(f[1]) == "" || strings.ContainsAny(f[1], "\r\n") {
			return nil, fmt.Errorf("sipua: SendRequest %s %q is empty or has a line break", f[0], f[1])
		}
	}
	for _, rt := range r.Route {
		if strings.TrimSpace(rt) == "" || strings.ContainsAny(rt, "\r\n") {
			return nil, fmt.Errorf("sipua: SendRequest Route %q is empty or has a line break", rt)
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "%s %s SIP/2.0\r\nMax-Forwards: 70\r\n", r.Method, strings.Trim(strings.TrimSpace(r.RequestURI), "<>"))
	for _, rt := range r.Route {
		if strings.Contains(rt, ";"+routeParam) {
			continue
		}
		fmt.Fprintf(&s, "Route: %s\r\n", rt)
	}
	fmt.Fprintf(&s, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n",
		r.From, r.To, r.CallID, r.CSeq, r.Method)
	parsed, err := u.parser.ParseSIP([]byte(s.String()))
	if err != nil {
		return nil, fmt.Errorf("sipua: SendRequest %s does not parse: %w", r.Method, err)
	}
	m := parsed.(*sip.Request)
	ou, p, err := u.nextHop(ctx, r.Flow, m)
	if err != nil {
		return nil, err
	}
	return ou.startTx(p, m, r.OnResponse)
}

// socketAddr is our host and port as the peer of p should see them.
func (u *UA) socketAddr(p *path, transport string) (string, int) {
	return u.contactAddr(p, transport)
}

func routeURI(host string, port int, transport string) string {
	return fmt.Sprintf("<sip:%s:%d;transport=%s;lr;%s>", host, port, transport, routeParam)
}

// Cancel cancels a forwarded INVITE (RFC 3261 §9.1): the CANCEL goes once a provisional
// response has come (§9.1 forbids it before), and not at all after a final response. The
// INVITE's final response (normally 487) still arrives at OnResponse.
func (t *ClientTx) Cancel() {
	if t.method != "INVITE" {
		return
	}
	t.mu.Lock()
	t.cancelWant = true
	send := t.provisional && !t.final && !t.cancelSent
	if send {
		t.cancelSent = true
	}
	t.mu.Unlock()
	if send {
		t.sendCancel()
	}
}

func (t *ClientTx) sendCancel() {
	b := t.hopRequest("CANCEL", t.fwd.To().Value())
	_ = t.p.send(b)
	close(t.cancelled)
	// The 200 to the CANCEL is not needed; over UDP retransmit a few times (Timer E), bounded.
	if !t.p.reliable() {
		t.ua.wg.Add(1)
		go func() {
			defer t.ua.wg.Done()
			iv := timerT1
			for range 4 {
				select {
				case <-time.After(iv):
				case <-t.ua.done:
					return
				}
				t.mu.Lock()
				fin := t.final
				t.mu.Unlock()
				if fin {
					return
				}
				_ = t.p.send(b)
				iv = min(2*iv, timerT2)
			}
		}()
	}
}

// hopRequest builds the ACK of a non-2xx final response or a CANCEL (RFC 3261 §17.1.1.3,
// §9.1): Request-URI, top Via, Route, From, Call-ID and CSeq number of the forwarded INVITE.
func (t *ClientTx) hopRequest(method, to string) []byte {
	f := t.fwd
	var s strings.Builder
	fmt.Fprintf(&s, "%s %s SIP/2.0\r\nVia: %s\r\n", method, f.Recipient.String(), f.Via().Value())
	for _, h := range f.GetHeaders("Route") {
		fmt.Fprintf(&s, "Route: %s\r\n", h.Value())
	}
	fmt.Fprintf(&s, "Max-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n",
		f.From().Value(), to, f.CallID().Value(), f.CSeq().SeqNo, method)
	return []byte(s.String())
}

// run is the transaction: retransmissions over UDP (Timer A/E), the timeout (Timer B/F), ACK
// of a non-2xx final response, and 2xx retransmissions for 64*T1 (Timer M). One goroutine owns
// the timers and the state in txRun; the select below only routes events to txRun's methods.
func (t *ClientTx) run(req []byte) {
	u := t.ua
	defer u.wg.Done()
	defer u.ptxs.Delete(t.key)
	s := &txRun{t: t, timeout: time.NewTimer(64 * timerT1), iv: timerT1}
	defer s.timeout.Stop()
	if !t.p.reliable() {
		s.rt = time.NewTimer(s.iv)
		defer s.rt.Stop()
		s.resend = s.rt.C
	}
	var closed <-chan struct{}
	if t.p.sc != nil {
		closed = t.p.sc.closed
	}
	cancelled := t.cancelled
	for {
		select {
		case res := <-t.rx:
			if s.handle(res) {
				return
			}
		case <-s.resend:
			if !s.retransmit(req) {
				return
			}
		case <-cancelled:
			// No final response within 64*T1 of the CANCEL ends the branch (§16.8).
			cancelled = nil
			s.timeout.Reset(64 * timerT1)
		case <-s.timeout.C:
			s.localFinal(408, "Request Timeout")
			return
		case <-closed:
			if s.connClosed() {
				return
			}
		case <-u.done:
			s.localFinal(503, "Service Unavailable")
			return
		}
	}
}

// txRun is the state of a ClientTx that only its run goroutine touches: the retransmission
// timer (Timer A/E, nil over a reliable transport), the transaction timer (B/F, then D or M),
// the ACK of a non-2xx final to repeat, and whether a final response came.
type txRun struct {
	t       *ClientTx
	timeout *time.Timer
	rt      *time.Timer
	resend  <-chan time.Time
	iv      time.Duration
	ack     []byte
	final   bool
}

// markFinal records that a final response came (read by Cancel and the CANCEL's resender).
func (s *txRun) markFinal() {
	s.final, s.resend = true, nil
	s.t.mu.Lock()
	s.t.final = true
	s.t.mu.Unlock()
}

// localFinal hands up a made-up final response when none came (RFC 3261 §16.7 step 6).
func (s *txRun) localFinal(code int, reason string) {
	if !s.final {
		s.t.mu.Lock()
		s.t.final = true
		s.t.mu.Unlock()
		s.t.on(&Response{Status: code, Reason: reason, local: true})
	}
}

// retransmit resends the request (Timer A doubles without a cap, §17.1.1.2; Timer E doubles
// up to T2, §17.1.2.2); it reports false when the transaction is over because the send failed.
func (s *txRun) retransmit(req []byte) bool {
	if err := s.t.p.send(req); err != nil {
		s.localFinal(503, "Service Unavailable")
		return false
	}
	if s.t.method == "INVITE" {
		s.iv = 2 * s.iv
	} else {
		s.iv = min(2*s.iv, timerT2)
	}
	s.rt.Reset(s.iv)
	return true
}

// connClosed handles the close of the transaction's connection; it reports whether the
// transaction is over. A response read from the connection is handed to rx before the
// connection is marked closed: a peer that answers and closes in one write must be heard (its
// 200 to a BYE is the dialog's end, not a 503).
func (s *txRun) connClosed() bool {
	select {
	case res := <-s.t.rx:
		return s.handle(res)
	default:
	}
	s.localFinal(503, "Service Unavailable")
	return true
}

// handle processes one received response; it reports whether the transaction is over.
func (s *txRun) handle(res *sip.Response) bool {
	code := res.StatusCode
	switch {
	case code < 200:
		s.provisional(res)
	case code < 300 && s.t.method == "INVITE":
		// 2xx: the transaction lives on for 64*T1 to pass up retransmissions (RFC 6026 §8.4
		// Timer M); the ACK is end-to-end, not ours.
		if !s.final {
			s.markFinal()
			s.timeout.Reset(64 * timerT1)
		}
		s.t.on(&Response{Status: code, Reason: res.Reason, msg: res})
	default:
		return s.nonSuccessFinal(res)
	}
	return false
}

// provisional handles a 1xx: Timer A stops (INVITE, §17.1.1.2) or Timer E goes to T2
// (non-INVITE, §17.1.2.2); a CANCEL asked for before it goes now (§9.1).
func (s *txRun) provisional(res *sip.Response) {
	if s.final {
		return
	}
	t := s.t
	t.mu.Lock()
	first := !t.provisional
	t.provisional = true
	send := first && t.cancelWant && !t.cancelSent
	if send {
		t.cancelSent = true
	}
	t.mu.Unlock()
	if t.method == "INVITE" {
		s.resend = nil // Timer A stops after a provisional (§17.1.1.2)
		if first {
			// Timer C (§16.8) is the caller's; wait without Timer B now.
			s.timeout.Stop()
		}
	} else if s.rt != nil {
		s.iv = timerT2
	}
	if send {
		t.sendCancel()
	}
	if res.StatusCode > 100 {
		t.on(&Response{Status: res.StatusCode, Reason: res.Reason, msg: res})
	}
}

// nonSuccessFinal handles a final response other than a 2xx to an INVITE; it reports whether
// the transaction is over. An INVITE's is ACKed (§17.1.1.3) and, over UDP, the transaction
// stays in Completed for Timer D (32 s) to ACK its retransmissions without passing them up.
func (s *txRun) nonSuccessFinal(res *sip.Response) bool {
	t := s.t
	if s.final {
		if s.ack != nil {
			_ = t.p.send(s.ack) // a retransmitted final gets the ACK again
		}
		return false
	}
	s.markFinal()
	if t.method == "INVITE" {
		s.ack = t.hopRequest("ACK", res.To().Value())
		_ = t.p.send(s.ack)
	}
	t.on(&Response{Status: res.StatusCode, Reason: res.Reason, msg: res})
	if t.p.reliable() || t.method != "INVITE" {
		return true
	}
	s.timeout.Reset(32 * time.Second) // Timer D
	return false
}

// proxyResponse hands a response to the forwarded request's transaction; it reports whether
// one matched.
func (u *UA) proxyResponse(res *sip.Response, branch string) bool {
	v, ok := u.ptxs.Load(branch + "|" + string(res.CSeq().MethodName))
	if !ok {
		return false
	}
	select {
	case v.(*ClientTx).rx <- res:
	default: // a flood of retransmissions
	}
	return true
}

// NextHop returns where Forward sends r when no Flow is given: the first Route entry after our
// own (a name-addr), else the Request-URI (RFC 3261 §16.6 steps 6-7, loose routing). Read its
// host and port with URIHostPort.
func (r *Request) NextHop() string {
	for _, h := range r.msg.GetHeaders("Route") {
		for _, v := range strings.Split(h.Value(), ",") {
			if !strings.Contains(v, ";"+routeParam) {
				return strings.TrimSpace(v)
			}
		}
	}
	return r.msg.Recipient.String()
}

// URIHostPort returns the host and port (0 when absent) of a SIP URI, bare or in angle
// brackets (a name-addr, RFC 3261 §25.1), with a clear error when it does not parse.
func URIHostPort(v string) (host string, port int, err error) {
	v = strings.TrimSpace(v)
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		gt := strings.IndexByte(v[lt:], '>')
		if gt < 0 {
			return "", 0, fmt.Errorf("sipua: URI %q has no closing '>'", v)
		}
		v = v[lt+1 : lt+gt]
	}
	var uri sip.Uri
	if err := sip.ParseUri(v, &uri); err != nil {
		return "", 0, fmt.Errorf("sipua: URI %q: %w", v, err)
	}
	if uri.Host == "" {
		return "", 0, fmt.Errorf("sipua: URI %q has no host", v)
	}
	return strings.ToLower(strings.Trim(uri.Host, "[]")), uri.Port, nil
}
