// Package sipua is sipis's SIP stack: its own transport and transactions, with sipgo only
// parsing. It is the only package of sipis that imports github.com/emiago/sipgo, and it uses
// sipgo only for the message model and the parser (sip.Request, sip.Response, sip.Parser);
// sipgo's transport and transaction layers are not used, because the registration engine runs
// thousands of REGISTER transactions per second on one socket per listener and accounts for
// the bytes of each one, and sipgo's transaction layer allocates timers and goroutines per
// message and offers no per-transaction byte counts.
//
// It owns:
//   - the transport: UDP, TCP and TLS listeners and dialled connections, stream framing by
//     Content-Length (RFC 3261 §18.3), CRLF keep-alives (RFC 5626 §3.5.1), connection limits,
//     per-source byte budgets, and the 400/513/503 answers to what cannot be passed on;
//   - the client transactions: non-INVITE (RFC 3261 §17.1.2, Timers E/F) for REGISTER,
//     OPTIONS and the requests sent inside a relayed dialog, and INVITE (§17.1.1, Timers A/B/D)
//     for forwarded INVITEs;
//   - the server transactions (§17.2): retransmitted requests absorbed and answered with the
//     last response until Timer J, final non-2xx INVITE responses retransmitted (Timers
//     G/H) until the ACK;
//   - digest authentication (RFC 2617, RFC 7616) for REGISTER and OPTIONS as a UAC;
//   - the REGISTER and OPTIONS client (Register, Options), Contact fixed from received/rport;
//   - name resolution of proxies and targets per RFC 3263 (SRV, then A/AAAA; NAPTR is
//     skipped because the transport is always configured);
//   - the stateful proxy core (RFC 3261 §16, proxy.go): Forward, Relay, SendRequest, Flow.
//
// It must not: decide anything about registrations, instances, calls or pushes (which device,
// which response wins, when to refresh: that is the caller's, through Handler and the
// transaction results); touch the store, the web server or the settings file; or leak sipgo
// types through its exported API other than through the small wrappers it defines (Request,
// Response, Header). Byte counts and errors are returned, not logged as policy.
package sipua

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sirupsen/logrus"
)

// ErrTimeout is returned (wrapped) when a transaction got no final response
// before Timer F (Config.TransactionTimeout) or the context's deadline.
var ErrTimeout = errors.New("sipua: no response")

// ErrResolve is returned (wrapped) when a proxy or target host cannot be
// resolved to an address (RFC 3263).
var ErrResolve = errors.New("sipua: cannot resolve")

// ErrClosed is returned when the UA is not started or already closed.
var ErrClosed = errors.New("sipua: user agent not running")

// Listener is one local socket the UA binds.
type Listener struct {
	// Transport is "udp", "tcp" or "tls".
	Transport string
	// Address is "ip:port"; port 0 picks a free one (see UA.Addr).
	Address string
}

// Config configures a UA. The zero value of every field is usable except
// Listeners, which needs at least one entry.
type Config struct {
	Listeners []Listener
	// TLSConfig is the server side configuration for "tls" listeners.
	TLSConfig *tls.Config
	// ClientTLS is used for outgoing TLS connections to proxies; nil means
	// the system roots and the proxy host name as ServerName.
	ClientTLS *tls.Config
	// ClientCertificates are presented to the proxies they name when they ask for a client
	// certificate (<TlsClientCertificates>); the first match wins.
	ClientCertificates []ClientCertificate
	// PublicHost is the host put in Via and Contact; empty means the bound
	// IP of the listener (or, when bound to an unspecified address, the
	// local IP the kernel would use to reach the destination).
	PublicHost string
	// UserAgent is the User-Agent header value; empty means "sipis".
	UserAgent string
	// TransactionTimeout bounds one client transaction (Timer F); default
	// 32 s, that is 64*T1 (RFC 3261 §17.1.2.2).
	TransactionTimeout time.Duration
	// KeepAlive, when positive, sends a double-CRLF ping (RFC 5626 §3.5.1) on every TCP
	// and TLS connection this often, so that NATs and firewalls on the way keep them open
	// and a dead connection is noticed (its write fails and it is closed).
	KeepAlive time.Duration
	// Resolver is used for SRV and A/AAAA lookups (RFC 3263); nil means
	// net.DefaultResolver.
	Resolver *net.Resolver

	// Limits of the connections the TCP and TLS listeners accept (those the UA dials are not
	// counted). Zero means the default; a negative value turns the limit off.

	// MaxConns bounds the accepted connections open at once (default 20,000); more are
	// closed at once.
	MaxConns int
	// MaxConnsPerIP bounds the accepted connections open at once from one remote IP
	// (default 50).
	MaxConnsPerIP int
	// HandshakeTimeout bounds the TLS handshake of an accepted connection (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes an accepted connection on which no message arrived for this long
	// (default 30 s), unless its Flow was bound (Flow.Bind); FirstMessageTimeout applies
	// instead until the first parsable message.
	IdleTimeout time.Duration
	// BoundIdleTimeout replaces IdleTimeout once the connection's Flow is bound (default
	// 10 min); any bytes, keep-alives included (RFC 5626 §3.5.1), keep it open.
	BoundIdleTimeout time.Duration
	// MaxInFlight bounds the requests of one TCP or TLS connection that are in the Handler
	// at once (default 16); beyond it requests are answered 503 (ACKs dropped).
	MaxInFlight int
	// FirstMessageTimeout closes an accepted connection on which no parsable message has
	// arrived yet after this long (default 10 s), replacing IdleTimeout until the first one:
	// a connection that has proved nothing holds a slot only briefly.
	FirstMessageTimeout time.Duration
	// MaxUDPInFlight bounds the UDP requests in the Handler at once, over all UDP listeners
	// (default 4096); beyond it requests are answered 503 with Retry-After (ACKs dropped).
	MaxUDPInFlight int
	// Logger receives the UA's log lines; nil discards them.
	Logger logrus.FieldLogger
	// Wiretap, when set, is told of every UDP datagram and stream message right after it is
	// read from its socket (out false) and right after it is written to it (out true), on
	// the goroutine that read or wrote it; it must return at once and must not keep b. It
	// lets a benchmark time sipis's own part of a transaction at the socket (e.g. INVITE in
	// to first 180 out); production leaves it nil.
	Wiretap func(out bool, transport string, b []byte)
}

// Defaults of the connection limits of Config.
const (
	DefaultMaxConns            = 20000
	DefaultMaxConnsPerIP       = 50
	DefaultMaxInFlight         = 16
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultIdleTimeout         = 30 * time.Second
	DefaultBoundIdleTimeout    = 10 * time.Minute
	DefaultFirstMessageTimeout = 10 * time.Second
	DefaultMaxUDPInFlight      = 4096
)

// limitDefault returns def for 0, 0 (no limit) for a negative v, else v.
func limitDefault[T int | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Traffic holds the UA's counters of everything received from and sent to
// the network, over all transports, including retransmissions and messages
// that could not be parsed.
type Traffic struct {
	BytesIn, BytesOut       int64
	MessagesIn, MessagesOut int64
}

// RFC 3261 §17.1.1.1 timer values.
const (
	timerT1 = 500 * time.Millisecond
	timerT2 = 4 * time.Second
)

const (
	udpBufferSize = 4 << 20
	maxUDPMessage = 65507
	// maxMessage is the largest message sipgo's parser accepts (sip.ParseMaxMessageLength);
	// the stream framer uses the same cap so that what it frames can be parsed.
	maxMessage = 65535
	// maxDiscard is the largest body of a too-large message on a stream that is read and
	// thrown away after the 513, keeping the connection (a proxy's carries other calls);
	// beyond it the connection is closed after the 513.
	maxDiscard = 1 << 20
	// shedRetryAfter is the Retry-After of the 503 that sheds load, in seconds.
	shedRetryAfter = "5"
)

// UA is a SIP user agent. All methods are safe for concurrent use.
type UA struct {
	cfg     Config
	log     logrus.FieldLogger
	parser  *sip.Parser
	res     *resolver
	timeout time.Duration
	ua      string

	mu        sync.RWMutex
	started   bool
	closed    bool
	udp       []*udpListener
	streamLns []*streamListener
	conns     map[string]*streamConn // "tcp|ip:port" -> connection
	allConns  map[*streamConn]struct{}
	accepted  int            // accepted stream connections open
	perIP     map[string]int // accepted stream connections open by remote IP
	dials     map[string]*dialing
	handler   Handler

	t1, t2   time.Duration // RFC 3261 timers T1 and T2 of server transactions
	budget   *budget
	udpSlots chan struct{} // Config.MaxUDPInFlight

	txs    txTable
	srvTxs serverTxTable
	ptxs   sync.Map // branch + "|" + method -> *ClientTx of a forwarded request

	bytesIn, bytesOut, msgsIn, msgsOut atomic.Int64

	parseErrs sync.Map // source "ip:port" -> parseFailure, last unparsable message

	wg   sync.WaitGroup
	done chan struct{}
}

// New checks cfg and returns a UA that is not yet listening; call Start.
func New(cfg Config) (*UA, error) {
	if len(cfg.Listeners) == 0 {
		return nil, errors.New("sipua: config has no listeners")
	}
	for i, l := range cfg.Listeners {
		switch l.Transport {
		case "udp", "tcp":
		case "tls":
			if cfg.TLSConfig == nil {
				return nil, fmt.Errorf("sipua: listener %d (%s %s) is tls but Config.TLSConfig is nil", i, l.Transport, l.Address)
			}
		default:
			return nil, fmt.Errorf("sipua: listener %d has unknown transport %q (want udp, tcp or tls)", i, l.Transport)
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			return nil, fmt.Errorf("sipua: listener %d address %q: %w", i, l.Address, err)
		}
	}
	cfg.MaxConns = limitDefault(cfg.MaxConns, DefaultMaxConns)
	cfg.MaxConnsPerIP = limitDefault(cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	cfg.MaxInFlight = limitDefault(cfg.MaxInFlight, DefaultMaxInFlight)
	cfg.HandshakeTimeout = limitDefault(cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	cfg.IdleTimeout = limitDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.BoundIdleTimeout = limitDefault(cfg.BoundIdleTimeout, DefaultBoundIdleTimeout)
	cfg.FirstMessageTimeout = limitDefault(cfg.FirstMessageTimeout, DefaultFirstMessageTimeout)
	cfg.MaxUDPInFlight = limitDefault(cfg.MaxUDPInFlight, DefaultMaxUDPInFlight)
	if cfg.TransactionTimeout < 0 {
		return nil, fmt.Errorf("sipua: negative TransactionTimeout %v", cfg.TransactionTimeout)
	}
	if strings.ContainsAny(cfg.PublicHost, " \r\n\t<>;,") {
		return nil, fmt.Errorf("sipua: PublicHost %q is not a host", cfg.PublicHost)
	}
	if strings.ContainsAny(cfg.UserAgent, "\r\n") {
		return nil, errors.New("sipua: UserAgent contains a line break")
	}
	u := &UA{
		cfg:      cfg,
		log:      cfg.Logger,
		parser:   sip.NewParser(),
		timeout:  cfg.TransactionTimeout,
		ua:       cfg.UserAgent,
		conns:    make(map[string]*streamConn),
		allConns: make(map[*streamConn]struct{}),
		perIP:    make(map[string]int),
		dials:    make(map[string]*dialing),
		done:     make(chan struct{}),
	}
	if u.log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		u.log = l
	}
	if u.timeout == 0 {
		u.timeout = 64 * timerT1
	}
	if u.ua == "" {
		u.ua = "sipis"
	}
	r := cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	u.res = newResolver(r)
	u.txs.init()
	u.setTimers(timerT1, timerT2)
	if cfg.MaxUDPInFlight > 0 {
		u.udpSlots = make(chan struct{}, cfg.MaxUDPInFlight)
	}
	return u, nil
}

// Start binds every listener and starts reading from them. It returns once
// all sockets are bound (so Addr is valid), or the first bind error after
// closing what was bound.
func (u *UA) Start(ctx context.Context) error {
	u.mu.Lock()
	if u.started || u.closed {
		u.mu.Unlock()
		return errors.New("sipua: Start called twice or after Close")
	}
	u.started = true
	u.mu.Unlock()

	var lc net.ListenConfig
	for _, l := range u.cfg.Listeners {
		switch l.Transport {
		case "udp":
			pc, err := lc.ListenPacket(ctx, "udp", l.Address)
			if err != nil {
				u.Close()
				return fmt.Errorf("sipua: listen udp %s: %w", l.Address, err)
			}
			uc := pc.(*net.UDPConn)
			// Bursts of thousands of responses overflow the default
			// receive buffer (about 200 KiB); the kernel caps this at
			// net.core.rmem_max.
			_ = uc.SetReadBuffer(udpBufferSize)
			_ = uc.SetWriteBuffer(udpBufferSize)
			ul := &udpListener{ua: u, conn: uc}
			u.mu.Lock()
			u.udp = append(u.udp, ul)
			u.mu.Unlock()
		case "tcp", "tls":
			ln, err := lc.Listen(ctx, "tcp", l.Address)
			if err != nil {
				u.Close()
				return fmt.Errorf("sipua: listen %s %s: %w", l.Transport, l.Address, err)
			}
			sl := &streamListener{ua: u, ln: ln, transport: l.Transport}
			u.mu.Lock()
			u.streamLns = append(u.streamLns, sl)
			u.mu.Unlock()
		}
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	for _, ul := range u.udp {
		// One reader per socket, so that datagrams are handled in the order they arrived: a
		// CANCEL after its INVITE, an ACK after the retransmission before it (RFC 3261 §9.2,
		// §17.2.1). Handlers run on their own goroutines; parsing is all the reader does.
		u.wg.Add(1)
		go ul.serve()
		u.log.WithField("addr", ul.conn.LocalAddr().String()).Debug("sip udp listener ready")
	}
	for _, sl := range u.streamLns {
		u.wg.Add(1)
		go sl.serve()
		u.log.WithFields(logrus.Fields{"addr": sl.ln.Addr().String(), "transport": sl.transport}).Debug("sip stream listener ready")
	}
	u.wg.Add(1)
	go u.sweep()
	if u.cfg.KeepAlive > 0 {
		u.wg.Add(1)
		go u.keepAlive(u.cfg.KeepAlive)
	}
	return nil
}

// keepAlive pings every stream connection each period until the UA closes.
func (u *UA) keepAlive(period time.Duration) {
	defer u.wg.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	ping := []byte("\r\n\r\n")
	for {
		select {
		case <-u.done:
			return
		case <-t.C:
			u.mu.RLock()
			conns := make([]*streamConn, 0, len(u.conns))
			for _, sc := range u.conns {
				conns = append(conns, sc)
			}
			u.mu.RUnlock()
			for _, sc := range conns {
				_ = sc.write(ping) // a failed write closes the connection
			}
		}
	}
}

// Addr returns the bound "ip:port" of the first listener of transport, or
// "" if there is none (or the UA is not started).
func (u *UA) Addr(transport string) string {
	u.mu.RLock()
	defer u.mu.RUnlock()
	switch transport {
	case "udp":
		if len(u.udp) > 0 {
			return u.udp[0].conn.LocalAddr().String()
		}
	case "tcp", "tls":
		for _, sl := range u.streamLns {
			if sl.transport == transport {
				return sl.ln.Addr().String()
			}
		}
	}
	return ""
}

// Close stops every listener and connection and waits for the UA's
// goroutines. Transactions in flight fail with ErrClosed.
func (u *UA) Close() error {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	close(u.done)
	for _, ul := range u.udp {
		ul.close()
	}
	for _, sl := range u.streamLns {
		sl.ln.Close()
	}
	for c := range u.allConns {
		c.conn.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	u.txs.failAll(ErrClosed)
	return nil
}

// SetHandler installs h for requests addressed to our contacts; nil
// restores the default behaviour (see Handler).
func (u *UA) SetHandler(h Handler) {
	u.mu.Lock()
	u.handler = h
	u.mu.Unlock()
}

// Traffic returns a snapshot of the UA's traffic counters.
func (u *UA) Traffic() Traffic {
	return Traffic{
		BytesIn:     u.bytesIn.Load(),
		BytesOut:    u.bytesOut.Load(),
		MessagesIn:  u.msgsIn.Load(),
		MessagesOut: u.msgsOut.Load(),
	}
}

func (u *UA) countIn(n int) {
	u.bytesIn.Add(int64(n))
	u.msgsIn.Add(1)
}

func (u *UA) countOut(n int) {
	u.bytesOut.Add(int64(n))
	u.msgsOut.Add(1)
}

// sweep expires server transactions (Timer J, RFC 3261 §17.2.2) and the
// remembered parse errors.
func (u *UA) sweep() {
	defer u.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-u.done:
			return
		case now := <-t.C:
			u.srvTxs.expire(now)
			u.budget.rotate(now)
			u.parseErrs.Range(func(k, v any) bool {
				if now.Sub(v.(parseFailure).at) > u.timeout {
					u.parseErrs.Delete(k)
				}
				return true
			})
		}
	}
}

// handleMessage dispatches one received message. raw is owned by the
// callee. It came from src through ul (UDP) or over sc (TCP/TLS).
//
// Every request that can be answered is: one sipgo cannot parse, or that breaks a rule the
// UA checks on its text first (version, URI scheme, headers that must appear once, see
// wireRequest.check), gets its 4xx/505 built from the request's literal headers (RFC 3261
// §8.2, §21.4; RFC 4475 §3.1.2 expects 400 where the transport can carry an answer).
func (u *UA) handleMessage(raw []byte, transport string, src *net.UDPAddr, ul *udpListener, sc *streamConn) {
	if len(raw) <= 4 && strings.Trim(string(raw), "\r\n") == "" {
		return // keep-alive CRLF (RFC 5626 §3.5.1)
	}
	if u.shed(raw, transport, src, ul, sc) {
		return
	}
	msg, err := u.parser.ParseSIP(raw)
	if res, ok := msg.(*sip.Response); ok && err == nil {
		if sc != nil {
			sc.valid.Store(true)
		}
		u.handleResponse(res, raw)
		return
	}
	w, isReq := readWire(raw)
	if err != nil {
		u.noteParseFailure(err, transport, src, sc)
	}
	if !isReq {
		return
	}
	req, code, reason := checkRequest(w, msg, err)
	if code != 0 {
		u.reject(w, code, reason, transport, src, ul, sc)
		return
	}
	if sc != nil {
		sc.valid.Store(true)
	}
	u.handleRequest(req, w, raw, transport, src, ul, sc)
}

// shed answers 503 to a UDP request, before the costly parse, when every UDP handler slot is
// taken, so that the readers keep up with a flood and responses to our own REGISTERs on the
// same socket are still read (RFC 3261 §21.5.4); it reports whether it did.
func (u *UA) shed(raw []byte, transport string, src *net.UDPAddr, ul *udpListener, sc *streamConn) bool {
	if sc != nil || u.udpSlots == nil || len(u.udpSlots) != cap(u.udpSlots) || bytes.HasPrefix(raw, []byte("SIP/")) {
		return false
	}
	if w, ok := readWire(raw); ok && w.method != "ACK" {
		u.reject(w, 503, "Service Unavailable", transport, src, ul, sc, Header{"Retry-After", shedRetryAfter})
		return true
	}
	return false
}

// noteParseFailure remembers that the peer sent something unparsable, so that a transaction
// to it that times out can say so (timeoutError).
func (u *UA) noteParseFailure(err error, transport string, src *net.UDPAddr, sc *streamConn) {
	source := ""
	if src != nil {
		source = src.String()
	} else if sc != nil {
		source = sc.conn.RemoteAddr().String()
	}
	u.parseErrs.Store(source, parseFailure{err: err.Error(), at: time.Now()})
	u.log.WithFields(logrus.Fields{"src": source, "transport": transport, "err": err}).Debug("sip: unparsable message")
}

// checkRequest returns the parsed request w is, or the code and reason of the answer that
// rejects it: the text checks first (wireRequest.check), then the parser's error, then the
// headers every request must have (RFC 3261 §8.1.1).
func checkRequest(w *wireRequest, msg sip.Message, err error) (*sip.Request, int, string) {
	code, reason := w.check()
	switch {
	case code != 0:
	case errors.Is(err, sip.ErrMessageTooLarge):
		code, reason = 513, tooLargeReason
	case err != nil:
		code, reason = 400, "Bad Request"
	}
	req, ok := msg.(*sip.Request)
	if code == 0 && ok && (req.Via() == nil || req.CSeq() == nil || req.CallID() == nil || req.From() == nil || req.To() == nil) {
		code, reason = 400, "Bad Request (missing Via, From, To, Call-ID or CSeq)" // RFC 3261 §8.1.1
	}
	if code == 0 && !ok {
		code, reason = 400, "Bad Request"
	}
	return req, code, reason
}

// tooLargeReason names the limit in the reason phrase of a 513 (RFC 3261 §21.5.11).
var tooLargeReason = fmt.Sprintf("Message Too Large (limit %d bytes)", maxMessage)

// reject answers a request the UA does not pass on, from its literal headers; it is sent
// once, never retransmitted. Without a Via nothing can route the answer and nothing is sent.
func (u *UA) reject(w *wireRequest, code int, reason, transport string, src *net.UDPAddr, ul *udpListener, sc *streamConn, hs ...Header) {
	if !w.canAnswer() {
		return
	}
	source, send, _ := u.replyPath(w, transport, src, ul, sc)
	b := w.response(code, reason, source, randHex(8), u.ua, hs, "", nil)
	if err := send(b); err != nil {
		u.log.WithFields(logrus.Fields{"src": source, "code": code, "err": err}).Debug("sip: send rejection")
	}
}

// setTimers sets the server transactions' T1 and T2 (tests shorten them); called before
// Start.
func (u *UA) setTimers(t1, t2 time.Duration) {
	u.t1, u.t2 = t1, t2
	u.srvTxs.init(t1, t2)
	u.budget = newBudget(64 * t1)
}

// parseFailure remembers that a peer sent something unparsable, so that a
// transaction to it can say so when it times out.
type parseFailure struct {
	err string
	at  time.Time
}

// localHost returns the host for Via/Contact when sending from laddr to
// dst.
func (u *UA) localHost(laddr net.Addr, dst net.IP) string {
	if u.cfg.PublicHost != "" {
		return u.cfg.PublicHost
	}
	var ip net.IP
	switch a := laddr.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	if ip == nil || ip.IsUnspecified() {
		ip = outboundIP(dst)
	}
	return hostForURI(ip.String())
}

// outboundIP asks the kernel which source address it would use for dst; no
// packet is sent.
func outboundIP(dst net.IP) net.IP {
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: dst, Port: 9})
	if err != nil {
		return net.IPv4(127, 0, 0, 1)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP
}

// hostForURI brackets IPv6 literals (RFC 3261 §25.1 IPv6reference).
func hostForURI(h string) string {
	if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}

func portOf(a net.Addr) int {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.Port
	case *net.TCPAddr:
		return a.Port
	}
	_, p, _ := net.SplitHostPort(a.String())
	n, _ := strconv.Atoi(p)
	return n
}
