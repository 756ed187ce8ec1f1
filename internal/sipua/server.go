package sipua

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// Handler receives requests addressed to our contacts, routed by the
// Request-URI user part (our random Contact user). It is called on its own
// goroutine and must answer through req.Respond (except for ACK), possibly
// later and more than once (provisional, then final).
//
// A CANCEL is passed on only once the handler of the INVITE it cancels (same top Via branch
// and sent-by, RFC 3261 §9.2) has sent a response to that INVITE or returned, so that it
// finds whatever the INVITE started even when both arrived back to back; the wait is
// bounded by cancelWait.
//
// Without a handler the UA answers 200 to OPTIONS, 405 (with Allow) to
// methods it does not support, 481 to CANCEL and 404 to everything else.
// With a handler, OPTIONS without a user part (addressed to sipis itself)
// and unsupported methods are still answered by the UA.
type Handler interface {
	HandleRequest(contactUser string, req *Request)
}

// supported lists the methods passed to a Handler (RFC 3261 §20.5 Allow).
var supported = map[string]bool{
	"INVITE": true, "ACK": true, "CANCEL": true, "BYE": true, "OPTIONS": true,
	"MESSAGE": true, "INFO": true, "UPDATE": true, "PRACK": true, "NOTIFY": true,
	"REFER": true, "REGISTER": true,
}

const allowHeader = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, PRACK, NOTIFY, REFER"

// Header is one header field of a response.
type Header struct {
	Name, Value string
}

// Request is a received SIP request.
type Request struct {
	// Method is the request method, e.g. "INVITE" or "MESSAGE".
	Method string
	// URI is the Request-URI.
	URI string
	// From, To and CallID are those headers' values.
	From, To, CallID string
	// Body is the message body (may be empty).
	Body []byte
	// Source is the "ip:port" the request came from.
	Source string
	// Transport is "udp", "tcp" or "tls".
	Transport string

	msg   *sip.Request
	wire  *wireRequest
	raw   []byte
	ua    *UA
	send  func([]byte) error
	toTag string
	stx   *serverTx
	flow  *Flow
}

// Header returns the first value of the named header ("" if absent);
// compact forms are understood.
func (r *Request) Header(name string) string {
	if h := r.msg.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// Headers returns every value of the named header.
func (r *Request) Headers(name string) []string {
	var out []string
	for _, h := range r.msg.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

// String returns the request as received.
func (r *Request) String() string { return string(r.raw) }

// Respond sends a response (RFC 3261 §8.2.6): Via, From, To (with our tag,
// the same for every response to this request), Call-ID and CSeq are
// copied from the request; headers are appended. A final response is
// remembered and resent to retransmissions of the request (§17.2).
func (r *Request) Respond(code int, reason string, headers ...Header) error {
	return r.respond(code, reason, "", nil, headers)
}

// RespondBody is Respond with a body of the given content type.
func (r *Request) RespondBody(code int, reason, contentType string, body []byte, headers ...Header) error {
	if contentType == "" || strings.ContainsAny(contentType, "\r\n") {
		return fmt.Errorf("sipua: bad content type %q", contentType)
	}
	return r.respond(code, reason, contentType, body, headers)
}

func (r *Request) respond(code int, reason, contentType string, body []byte, headers []Header) error {
	if r.Method == "ACK" {
		return errors.New("sipua: ACK is not answered")
	}
	if code < 100 || code > 699 {
		return fmt.Errorf("sipua: response code %d out of range", code)
	}
	if strings.ContainsAny(reason, "\r\n") {
		return errors.New("sipua: reason contains a line break")
	}
	for _, h := range headers {
		if h.Name == "" || strings.ContainsAny(h.Name, ": \r\n") || strings.ContainsAny(h.Value, "\r\n") {
			return fmt.Errorf("sipua: bad response header %q", h.Name)
		}
	}
	// Built from the request's own header lines, not sipgo's re-serialisation of them
	// (RFC 3261 §8.2.6.2; RFC 4475 §3.1.1.1: one To tag, Via parameters as sent).
	b := r.wire.response(code, reason, r.Source, r.toTag, r.ua.ua, headers, contentType, body)
	// Recorded before it leaves: a retransmission the peer sends as soon as it has the
	// response must find it (or, for a 2xx to INVITE, be absorbed), not an older one.
	var sent func()
	if r.stx != nil {
		sent = r.ua.srvTxs.answered(r.stx, b, code)
	}
	err := r.send(b)
	if sent != nil {
		sent()
	}
	if err != nil {
		return fmt.Errorf("sipua: send %d to %s/%s: %w", code, r.Transport, r.Source, err)
	}
	return nil
}

// serverTx remembers the last response to a request so that UDP
// retransmissions are answered without the handler (RFC 3261 §17.2.2,
// Timer J = 64*T1 for non-INVITE). For an INVITE over UDP a final non-2xx
// response is retransmitted (Timer G) until the ACK comes or Timer H
// (64*T1) fires (§17.2.1); after a 2xx the transaction is Accepted (RFC
// 6026 §7.1) and absorbs retransmitted INVITEs.
type serverTx struct {
	key      string
	last     []byte
	final    bool
	code     int
	exp      time.Time
	send     func([]byte) error
	invite   bool
	reliable bool
	acked    bool
	g        *time.Timer
	gEvery   time.Duration
	gUntil   time.Time
	// onFinal, if set, is called once when the first final response is recorded (a stream
	// connection counts the requests it still owes an answer).
	onFinal func()
	// ready, for an INVITE, is closed once it has a response or its handler returned; a
	// CANCEL of it waits for that before its own handler runs (see Handler).
	ready   chan struct{}
	isReady bool
}

type serverTxTable struct {
	seed   maphash.Seed
	t1, t2 time.Duration
	shards [txShards]struct {
		mu sync.Mutex
		m  map[string]*serverTx
	}
}

func (t *serverTxTable) init(t1, t2 time.Duration) {
	t.t1, t.t2 = t1, t2
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string]*serverTx)
	}
}

func (t *serverTxTable) shard(k string) int { return int(maphash.String(t.seed, k) % txShards) }

// begin returns the existing transaction for key (a retransmission) or
// records a new one.
func (t *serverTxTable) begin(key string, send func([]byte) error, invite, reliable bool) (tx *serverTx, retrans bool) {
	s := &t.shards[t.shard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx, ok := s.m[key]; ok {
		return tx, true
	}
	// A handler may take minutes to answer an INVITE; keep the entry.
	tx = &serverTx{key: key, exp: time.Now().Add(5 * time.Minute), send: send, invite: invite, reliable: reliable}
	if invite {
		tx.ready = make(chan struct{})
	}
	s.m[key] = tx
	return tx, false
}

// answered records b, a response with code, as tx's last. When it is the first final
// response it returns tx's onFinal (or nil), which the caller runs once b is sent: a
// connection waiting to close for its owed answers must not close before this one left.
func (t *serverTxTable) answered(tx *serverTx, b []byte, code int) (sent func()) {
	s := &t.shards[t.shard(tx.key)]
	s.mu.Lock()
	if tx.final && !(tx.invite && code/100 == 2) {
		s.mu.Unlock()
		return nil // nothing follows a final response but 2xx retransmissions
	}
	var onFinal func()
	if !tx.final && code >= 200 {
		onFinal, tx.onFinal = tx.onFinal, nil
	}
	tx.last, tx.final, tx.code = b, code >= 200, code
	tx.markReady()
	if code >= 200 {
		tx.exp = time.Now().Add(64 * t.t1)
	}
	if tx.invite && code >= 300 && !tx.reliable && tx.g == nil {
		tx.gEvery, tx.gUntil = t.t1, time.Now().Add(64*t.t1)
		tx.g = time.AfterFunc(tx.gEvery, func() { t.fireG(tx) })
	}
	s.mu.Unlock()
	return onFinal
}

// fireG retransmits a final non-2xx response to an INVITE (Timer G,
// doubling up to T2) until the ACK or Timer H.
func (t *serverTxTable) fireG(tx *serverTx) {
	s := &t.shards[t.shard(tx.key)]
	s.mu.Lock()
	if tx.acked || time.Now().After(tx.gUntil) {
		s.mu.Unlock()
		return
	}
	b := tx.last
	tx.gEvery = min(2*tx.gEvery, t.t2)
	tx.g.Reset(tx.gEvery)
	s.mu.Unlock()
	if err := tx.send(b); errors.Is(err, errBudget) {
		// The source has had its answer; retransmitting more would amplify a forged request.
		s.mu.Lock()
		tx.acked = true
		tx.g.Stop()
		s.mu.Unlock()
	}
}

// ack absorbs the ACK of a final non-2xx response to an INVITE (RFC 3261
// §17.2.1: it has the INVITE's branch); it reports whether key names such
// a transaction.
func (t *serverTxTable) ack(key string) bool {
	s := &t.shards[t.shard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.m[key]
	if tx == nil || !tx.final || tx.code < 300 {
		return false
	}
	tx.acked = true
	if tx.g != nil {
		tx.g.Stop()
	}
	return true
}

// lastResponse returns what to send to a retransmitted request: the last
// response, or nothing for an INVITE answered 2xx (RFC 6026 §7.1 Accepted
// absorbs them; the 2xx retransmissions are the UAS core's).
func (t *serverTxTable) lastResponse(tx *serverTx) []byte {
	s := &t.shards[t.shard(tx.key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx.invite && tx.code/100 == 2 {
		return nil
	}
	return tx.last
}

// markReady closes tx.ready once; the caller holds tx's shard lock.
func (tx *serverTx) markReady() {
	if tx.ready != nil && !tx.isReady {
		tx.isReady = true
		close(tx.ready)
	}
}

// settled marks tx, an INVITE, as ready for its CANCEL: its handler returned.
func (t *serverTxTable) settled(tx *serverTx) {
	s := &t.shards[t.shard(tx.key)]
	s.mu.Lock()
	tx.markReady()
	s.mu.Unlock()
}

// pending returns the ready channel of the INVITE transaction key names when that INVITE
// is still unanswered and its handler still running, else nil.
func (t *serverTxTable) pending(key string) <-chan struct{} {
	s := &t.shards[t.shard(key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx := s.m[key]; tx != nil && tx.ready != nil && !tx.isReady {
		return tx.ready
	}
	return nil
}

// cancelWait bounds how long a CANCEL waits for its INVITE's handler (see Handler): well
// within the 64*T1 the canceller's transaction lives (RFC 3261 §17.1.2.2), so that it still
// gets its answer from a handler that is stuck.
const cancelWait = 4 * time.Second

func (t *serverTxTable) expire(now time.Time) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, tx := range s.m {
			if now.After(tx.exp) {
				if tx.g != nil {
					tx.g.Stop()
				}
				if tx.onFinal != nil {
					go tx.onFinal() // never answered: the connection owes it no more
					tx.onFinal = nil
				}
				tx.markReady()
				delete(s.m, k)
			}
		}
		s.mu.Unlock()
	}
}

// replyPath returns where answers to a request from src (UDP) or over sc go: the source
// "ip:port", send for answers (always sent, counted against the source's budget) and
// resend for retransmissions (sent only within the budget, see budget).
func (u *UA) replyPath(w *wireRequest, transport string, src *net.UDPAddr, ul *udpListener, sc *streamConn) (source string, send, resend func([]byte) error) {
	if sc != nil {
		return sc.conn.RemoteAddr().String(), sc.write, sc.write
	}
	// RFC 3581 §4: with rport answer to the source port; else to the source IP and the Via
	// port (RFC 3261 §18.2.2).
	dst := &net.UDPAddr{IP: src.IP, Port: src.Port}
	if len(w.via) > 0 {
		if v, ok := paramValue(w.via[0], "rport"); !ok || v != "" {
			if p := sentByPort(w.via[0]); p > 0 {
				dst.Port = p
			} else if !ok {
				dst.Port = 5060
			}
		}
	}
	key := sourceKey(src.IP)
	send = func(b []byte) error {
		u.budget.sent(key, len(b))
		return ul.writeTo(b, dst)
	}
	resend = func(b []byte) error {
		if !u.budget.allowRetransmit(key, len(b)) {
			return errBudget
		}
		return ul.writeTo(b, dst)
	}
	return src.String(), send, resend
}

// handleRequest routes a received request; w is its wire form, already checked.
func (u *UA) handleRequest(m *sip.Request, w *wireRequest, raw []byte, transport string, src *net.UDPAddr, ul *udpListener, sc *streamConn) {
	via := m.Via()
	source, send, resend := u.replyPath(w, transport, src, ul, sc)
	flow := &Flow{ua: u, transport: transport, sc: sc, ul: ul, dst: src}
	m.SetSource(source)
	m.SetTransport(strings.ToUpper(transport))

	method := string(m.Method)
	branch, _ := via.Params.Get("branch")
	var stx *serverTx
	if method == "ACK" && u.srvTxs.ack(branch+"|"+via.SentBy()+"|INVITE") {
		return // hop-by-hop ACK of our non-2xx final response
	}
	var invite <-chan struct{} // for a CANCEL: its INVITE, while that is not yet answered
	if method == "CANCEL" {
		invite = u.srvTxs.pending(branch + "|" + via.SentBy() + "|INVITE")
	}
	if method != "ACK" {
		key := branch + "|" + via.SentBy() + "|" + method
		var retrans bool
		stx, retrans = u.srvTxs.begin(key, resend, method == "INVITE", sc != nil)
		if retrans {
			if b := u.srvTxs.lastResponse(stx); b != nil {
				_ = resend(b)
			}
			return
		}
		if sc != nil {
			// A stream closed after a bad message still answers this request first.
			sc.owe()
			u.srvTxs.setOnFinal(stx, sc.paid)
		}
	}
	req := &Request{
		Method:    method,
		URI:       m.Recipient.String(),
		CallID:    m.CallID().Value(),
		From:      m.From().Value(),
		To:        m.To().Value(),
		Body:      m.Body(),
		Source:    source,
		Transport: transport,
		msg:       m,
		wire:      w,
		raw:       raw,
		ua:        u,
		send:      send,
		toTag:     randHex(8),
		stx:       stx,
		flow:      flow,
	}
	user := m.Recipient.User
	u.mu.RLock()
	h := u.handler
	u.mu.RUnlock()

	respond := func(code int, reason string, hs ...Header) {
		if err := req.Respond(code, reason, hs...); err != nil {
			u.log.WithFields(logrus.Fields{"method": method, "src": source, "err": err}).Debug("sip: respond")
		}
	}
	switch {
	case !supported[method]:
		respond(405, "Method Not Allowed", Header{"Allow", allowHeader})
	case method == "OPTIONS" && (h == nil || user == ""):
		respond(200, "OK", Header{"Allow", allowHeader}, Header{"Accept", "application/sdp"})
	case h == nil && method == "ACK":
	case h == nil && method == "CANCEL":
		respond(481, "Call/Transaction Does Not Exist")
	case h == nil:
		respond(404, "Not Found")
	case sc != nil && sc.slots != nil:
		// Bound the handlers one connection can keep busy (Config.MaxInFlight).
		u.dispatch(sc.slots, u.handlerRun(h, user, req, invite), req, respond)
	case sc == nil && u.udpSlots != nil:
		// Bound the handlers UDP requests keep busy (Config.MaxUDPInFlight): a flood of
		// datagrams is shed with 503, not turned into a goroutine each.
		u.dispatch(u.udpSlots, u.handlerRun(h, user, req, invite), req, respond)
	default:
		go u.handlerRun(h, user, req, invite)()
	}
}

// handlerRun returns the call of h for req: after invite (a CANCEL's INVITE still pending)
// is ready, bounded by cancelWait; and for an INVITE, marking it ready once h returns.
func (u *UA) handlerRun(h Handler, user string, req *Request, invite <-chan struct{}) func() {
	return func() {
		if invite != nil {
			t := time.NewTimer(cancelWait)
			select {
			case <-invite:
			case <-t.C:
			case <-u.done:
			}
			t.Stop()
		}
		h.HandleRequest(user, req)
		if req.stx != nil && req.stx.invite {
			u.srvTxs.settled(req.stx)
		}
	}
}

// dispatch runs run, a handler's call, on its own goroutine if slots has room, else answers
// 503 with Retry-After (RFC 3261 §21.5.4; ACKs are dropped).
func (u *UA) dispatch(slots chan struct{}, run func(), req *Request, respond func(int, string, ...Header)) {
	select {
	case slots <- struct{}{}:
		go func() {
			defer func() { <-slots }()
			run()
		}()
	default:
		if req.Method != "ACK" {
			respond(503, "Service Unavailable", Header{"Retry-After", shedRetryAfter})
		}
	}
}

// setOnFinal sets the function called when tx gets its first final response.
func (t *serverTxTable) setOnFinal(tx *serverTx, f func()) {
	s := &t.shards[t.shard(tx.key)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if tx.final {
		go f()
		return
	}
	tx.onFinal = f
}
