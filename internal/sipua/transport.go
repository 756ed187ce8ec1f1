package sipua

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// udpListener is one bound UDP socket. Requests to proxies are sent from it
// too, so that the proxy sees the same address as in our Via and Contact
// and NAT bindings stay valid for incoming requests (RFC 3581 §1).
//
// It writes through its one handle. Four extra (dup'ed) write handles were tried, so that a
// write stalled inside sendto would not hold up the others behind Go's per-handle write lock;
// measured interleaved in the call-path benchmark they did not lower the first 180's p50 or
// p99, and they were removed.
type udpListener struct {
	ua   *UA
	conn packetConn
}

// close closes the socket.
func (l *udpListener) close() { l.conn.Close() }

// packetConn is the part of *net.UDPConn a udpListener uses; the transaction tests put an
// in-memory socket behind it, so that they run on testing/synctest's clock.
type packetConn interface {
	ReadFromUDP(b []byte) (int, *net.UDPAddr, error)
	WriteToUDP(b []byte, addr *net.UDPAddr) (int, error)
	LocalAddr() net.Addr
	Close() error
}

func (l *udpListener) serve() {
	defer l.ua.wg.Done()
	buf := make([]byte, maxUDPMessage)
	for {
		n, src, err := l.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.ua.log.WithField("err", err).Debug("sip: udp read")
			select {
			case <-l.ua.done:
				return
			default:
			}
			continue
		}
		if tap := l.ua.cfg.Wiretap; tap != nil {
			tap(false, "udp", buf[:n])
		}
		l.ua.countIn(n)
		l.ua.budget.received(sourceKey(src.IP), n)
		raw := make([]byte, n)
		copy(raw, buf[:n])
		l.ua.handleMessage(raw, "udp", src, l, nil)
	}
}

func (l *udpListener) writeTo(b []byte, dst *net.UDPAddr) error {
	if _, err := l.conn.WriteToUDP(b, dst); err != nil {
		return err
	}
	if tap := l.ua.cfg.Wiretap; tap != nil {
		tap(true, "udp", b)
	}
	l.ua.countOut(len(b))
	return nil
}

// streamListener accepts TCP or TLS connections.
type streamListener struct {
	ua        *UA
	ln        net.Listener
	transport string
}

func (l *streamListener) serve() {
	defer l.ua.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.ua.log.WithField("err", err).Warn("sip: accept")
			select {
			case <-l.ua.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		ip := remoteIP(c)
		if !l.ua.admit(ip) {
			l.ua.log.WithFields(logrus.Fields{"remote": c.RemoteAddr().String(), "transport": l.transport}).Debug("sip: connection limit reached, closing")
			c.Close()
			continue
		}
		if l.transport == "tls" {
			c = tls.Server(c, l.ua.cfg.TLSConfig)
		}
		if _, err := l.ua.addAccepted(c, l.transport, ip); err != nil {
			c.Close()
		}
	}
}

// remoteIP returns the key c's peer is counted by for Config.MaxConnsPerIP: its address,
// or its /64 for IPv6 (sourceKey).
func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return sourceKey(a.IP)
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	if ip := net.ParseIP(host); ip != nil {
		return sourceKey(ip)
	}
	return host
}

// admit counts a new accepted connection from ip (a sourceKey), or reports false when
// Config.MaxConns or Config.MaxConnsPerIP would be exceeded.
func (u *UA) admit(ip string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if (u.cfg.MaxConns > 0 && u.accepted >= u.cfg.MaxConns) || (u.cfg.MaxConnsPerIP > 0 && u.perIP[ip] >= u.cfg.MaxConnsPerIP) {
		return false
	}
	u.accepted++
	u.perIP[ip]++
	return true
}

// release undoes admit.
func (u *UA) release(ip string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.accepted--
	if u.perIP[ip]--; u.perIP[ip] <= 0 {
		delete(u.perIP, ip)
	}
}

// streamConn is one TCP or TLS connection, accepted or dialled. Both kinds
// are kept in UA.conns by remote address so that requests to a proxy reuse
// a connection it opened and vice versa.
type streamConn struct {
	ua        *UA
	conn      net.Conn
	transport string
	key       string
	wmu       sync.Mutex
	closed    chan struct{}
	closeOnce sync.Once

	// For accepted connections: the counted remote IP, the idle deadline, the handler slots.
	accepted bool
	ip       string
	bound    atomic.Bool
	slots    chan struct{}
	// valid is set once a parsable message arrived (Config.FirstMessageTimeout).
	valid atomic.Bool

	// The requests read from the connection that have no final response yet, so that a
	// connection closed for a bad message answers them first.
	pmu     sync.Mutex
	owed    int
	settled chan struct{} // closed when owed drops to 0 while a close waits
}

// owe counts a request that awaits its final response.
func (sc *streamConn) owe() {
	sc.pmu.Lock()
	sc.owed++
	sc.pmu.Unlock()
}

// paid counts a final response to a request counted by owe.
func (sc *streamConn) paid() {
	sc.pmu.Lock()
	defer sc.pmu.Unlock()
	if sc.owed--; sc.owed <= 0 && sc.settled != nil {
		close(sc.settled)
		sc.settled = nil
	}
}

// settle waits until every request read from the connection has its final response, or
// 64*T1 (the longest a non-INVITE server transaction lives, RFC 3261 §17.2.2), or Close.
func (sc *streamConn) settle() {
	sc.pmu.Lock()
	if sc.owed <= 0 {
		sc.pmu.Unlock()
		return
	}
	ch := make(chan struct{})
	sc.settled = ch
	sc.pmu.Unlock()
	t := time.NewTimer(64 * sc.ua.t1)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-sc.closed:
	case <-sc.ua.done:
	}
}

func connKey(transport, addr string) string { return transport + "|" + addr }

// addConn registers c, a dialled connection, and starts its reader.
func (u *UA) addConn(c net.Conn, transport string) (*streamConn, error) {
	return u.add(&streamConn{ua: u, conn: c, transport: transport, key: connKey(transport, c.RemoteAddr().String()), closed: make(chan struct{})})
}

// addAccepted registers c, an accepted connection counted by admit for ip, and starts its
// reader; on error the count is released.
func (u *UA) addAccepted(c net.Conn, transport, ip string) (*streamConn, error) {
	sc := &streamConn{ua: u, conn: c, transport: transport, key: connKey(transport, c.RemoteAddr().String()),
		closed: make(chan struct{}), accepted: true, ip: ip}
	if u.cfg.MaxInFlight > 0 {
		sc.slots = make(chan struct{}, u.cfg.MaxInFlight)
	}
	out, err := u.add(sc)
	if err != nil {
		u.release(ip)
	}
	return out, err
}

func (u *UA) add(sc *streamConn) (*streamConn, error) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, ErrClosed
	}
	// The newest connection to a peer is used for new requests; an older
	// one keeps serving its reader until it dies.
	u.conns[sc.key] = sc
	u.allConns[sc] = struct{}{}
	u.wg.Add(1)
	u.mu.Unlock()
	go sc.serve()
	return sc, nil
}

func (sc *streamConn) close() {
	sc.closeOnce.Do(func() {
		close(sc.closed)
		sc.conn.Close()
		sc.ua.mu.Lock()
		if sc.ua.conns[sc.key] == sc {
			delete(sc.ua.conns, sc.key)
		}
		delete(sc.ua.allConns, sc)
		sc.ua.mu.Unlock()
		if sc.accepted {
			sc.ua.release(sc.ip)
		}
	})
}

func (sc *streamConn) serve() {
	defer sc.ua.wg.Done()
	defer sc.close()
	if tc, ok := sc.conn.(*tls.Conn); ok && sc.accepted && sc.ua.cfg.HandshakeTimeout > 0 {
		// A peer that connects and says nothing must not hold a connection slot.
		ctx, cancel := context.WithTimeout(context.Background(), sc.ua.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			sc.ua.log.WithFields(logrus.Fields{"remote": sc.conn.RemoteAddr().String(), "err": err}).Debug("sip: tls handshake")
			return
		}
	}
	r := bufio.NewReaderSize(&countingReader{r: sc.conn, ua: sc.ua, sc: sc}, streamBufferSize)
	for {
		sc.refreshDeadline()
		raw, err := readStreamMessage(r, maxMessage)
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) && len(fe.head) > 0 {
				sc.ua.msgsIn.Add(1)
				if w, ok := readWire(fe.head); ok {
					code, reason := 400, "Bad Request (framing)"
					if len(fe.why) <= 64 { // the why may quote the peer's bytes
						reason = "Bad Request (framing: " + fe.why + ")"
					}
					if fe.tooLarge {
						code, reason = 513, tooLargeReason
					}
					sc.ua.reject(w, code, reason, sc.transport, nil, nil, sc)
				}
				if fe.tooLarge && fe.length >= 0 && fe.length <= maxDiscard {
					// RFC 3261 §18.3: the body's end is known; skip it and keep the connection.
					if _, err := io.CopyN(io.Discard, r, int64(fe.length)); err == nil {
						continue
					}
				}
			}
			select {
			case <-sc.ua.done:
			default:
				sc.ua.log.WithFields(logrus.Fields{"remote": sc.conn.RemoteAddr().String(), "transport": sc.transport, "err": err}).Debug("sip: stream closed")
			}
			// Nothing more is read; what was read before is still answered (RFC 3261 §18.3
			// leaves no boundary to resynchronise on, but the earlier requests were whole).
			if tc, ok := sc.conn.(*net.TCPConn); ok {
				_ = tc.CloseRead()
			}
			sc.settle()
			return
		}
		if tap := sc.ua.cfg.Wiretap; tap != nil {
			tap(false, sc.transport, raw)
		}
		sc.ua.msgsIn.Add(1)
		sc.ua.handleMessage(raw, sc.transport, nil, nil, sc)
	}
}

// streamBufferSize is the read buffer of a stream connection; header lines longer than it
// are still read (readStreamMessage), it only has to hold what one Read returns.
const streamBufferSize = 4 << 10

// refreshDeadline sets the read deadline of an accepted connection: IdleTimeout from now, or
// BoundIdleTimeout once its flow is bound.
func (sc *streamConn) refreshDeadline() {
	if !sc.accepted {
		return
	}
	d := sc.ua.cfg.IdleTimeout
	switch {
	case sc.bound.Load():
		d = sc.ua.cfg.BoundIdleTimeout
	case !sc.valid.Load() && sc.ua.cfg.FirstMessageTimeout > 0 && (d <= 0 || sc.ua.cfg.FirstMessageTimeout < d):
		d = sc.ua.cfg.FirstMessageTimeout
	}
	if d > 0 {
		_ = sc.conn.SetReadDeadline(time.Now().Add(d))
	} else {
		_ = sc.conn.SetReadDeadline(time.Time{})
	}
}

func (sc *streamConn) write(b []byte) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if err := sc.conn.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := sc.conn.Write(b); err != nil {
		sc.close()
		return err
	}
	if tap := sc.ua.cfg.Wiretap; tap != nil {
		tap(true, sc.transport, b)
	}
	sc.ua.countOut(len(b))
	return nil
}

// countingReader counts stream bytes as they arrive; messages are counted
// when framed.
type countingReader struct {
	r  net.Conn
	ua *UA
	sc *streamConn
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.ua.bytesIn.Add(int64(n))
	if n > 0 && c.sc.bound.Load() {
		c.sc.refreshDeadline() // keep-alives keep a bound flow open
	}
	return n, err
}

// errFraming is returned for a stream that cannot be framed; the connection
// is closed because there is no message boundary to resynchronise on.
var errFraming = errors.New("sipua: bad SIP framing on stream")

// frameError is a message the framer cannot pass on. head is its header section when it
// was read whole (so that it can be answered); tooLarge means the announced message is
// larger than the limit, length being its Content-Length.
type frameError struct {
	why      string
	head     []byte
	tooLarge bool
	length   int
}

// headTooLong is the frameError of a header section longer than max: answered 513 from
// what was read (its Via and the rest come first in any sane request), then the connection
// closes, since the section's end is unknown.
func headTooLong(head []byte, max int) *frameError {
	return &frameError{why: fmt.Sprintf("header section longer than %d bytes", max), head: head, tooLarge: true, length: -1}
}

func (e *frameError) Error() string { return errFraming.Error() + ": " + e.why }
func (e *frameError) Unwrap() error { return errFraming }

// readStreamMessage reads one SIP message of at most max bytes from a stream, framed by
// the blank line and Content-Length (mandatory on streams, RFC 3261 §18.3). Leading CRLFs
// (keep-alives, RFC 5626 §3.5.1) are skipped. The body is read as it arrives, never
// allocated from the announced length: a peer that announces a large body and sends
// nothing costs what it sent.
//
// Its branches (cyclomatic 27) are the framing errors of RFC 3261 §18.3 and the limits, each
// with its own answer (400, 513, close); they are kept in one function so that the order in
// which a hostile stream is checked is visible in one place.
func readStreamMessage(r *bufio.Reader, max int) ([]byte, error) {
	var head []byte
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long header line: keep it and read on.
			head = append(head, line...)
			if len(head) > max {
				return nil, headTooLong(head, max)
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(head)+len(line) > 0 {
				// The peer closed its side inside a message; it can still read the 400.
				return nil, &frameError{why: "stream ended inside the header section", head: append(head, line...)}
			}
			return nil, err
		}
		if len(head) == 0 && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			continue // keep-alive
		}
		end := len(line) == 1 || (len(line) == 2 && line[0] == '\r')
		if end && len(head) > 0 && head[len(head)-1] != '\n' {
			end = false // the tail of a long line
		}
		head = append(head, line...)
		if len(head) > max {
			return nil, headTooLong(head, max)
		}
		if end {
			break
		}
	}
	n, err := contentLength(head)
	if err != nil {
		return nil, &frameError{why: err.Error(), head: head}
	}
	if n > max || len(head)+n > max {
		return nil, &frameError{why: fmt.Sprintf("message of %d bytes", len(head)+n), head: head, tooLarge: true, length: n}
	}
	msg := make([]byte, len(head), len(head)+min(n, streamBufferSize))
	copy(msg, head)
	for len(msg) < len(head)+n {
		if len(msg) == cap(msg) {
			msg = slices.Grow(msg, min(len(head)+n-len(msg), len(msg)))
		}
		m, err := r.Read(msg[len(msg):min(cap(msg), len(head)+n)])
		msg = msg[:len(msg)+m]
		if errors.Is(err, io.EOF) && len(msg) < len(head)+n {
			return nil, &frameError{why: "stream ended before Content-Length bytes", head: head}
		}
		if err != nil && len(msg) < len(head)+n {
			return nil, err
		}
	}
	return msg, nil
}

// contentLength finds Content-Length (or its compact form "l") in a header
// block.
func contentLength(head []byte) (int, error) {
	for len(head) > 0 {
		i := bytes.IndexByte(head, '\n')
		var line []byte
		if i < 0 {
			line, head = head, nil
		} else {
			line, head = head[:i], head[i+1:]
		}
		c := bytes.IndexByte(line, ':')
		if c < 0 {
			continue
		}
		name := bytes.TrimSpace(line[:c])
		if !bytes.EqualFold(name, []byte("Content-Length")) && !bytes.EqualFold(name, []byte("l")) {
			continue
		}
		v := string(bytes.TrimSpace(line[c+1:]))
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("bad Content-Length %q", v)
		}
		return n, nil
	}
	return 0, errors.New("no Content-Length")
}

// streamConnTo returns a connection to dst over transport ("tcp"/"tls"),
// dialling one if none is open. serverName is the proxy's host name for TLS
// verification.
func (u *UA) streamConnTo(ctx context.Context, transport string, dst *net.TCPAddr, serverName string) (*streamConn, error) {
	key := connKey(transport, dst.String())
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return nil, ErrClosed
	}
	if sc := u.conns[key]; sc != nil {
		u.mu.Unlock()
		return sc, nil
	}
	// One dial per peer however many transactions want it.
	if d := u.dials[key]; d != nil {
		u.mu.Unlock()
		select {
		case <-d.done:
			return d.sc, d.err
		case <-ctx.Done():
			return nil, fmt.Errorf("sipua: dial %s %s: %w", transport, dst, ctx.Err())
		}
	}
	d := &dialing{done: make(chan struct{})}
	u.dials[key] = d
	u.mu.Unlock()

	d.sc, d.err = u.dial(ctx, transport, dst, serverName)
	u.mu.Lock()
	delete(u.dials, key)
	u.mu.Unlock()
	close(d.done)
	return d.sc, d.err
}

// dialing is a connection being dialled, shared by its waiters.
type dialing struct {
	done chan struct{}
	sc   *streamConn
	err  error
}

func (u *UA) dial(ctx context.Context, transport string, dst *net.TCPAddr, serverName string) (*streamConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, fmt.Errorf("sipua: dial %s %s: %w", transport, dst, err)
	}
	if transport == "tls" {
		tc := tls.Client(c, u.clientTLS(serverName))
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("sipua: tls handshake with %s (%s): %w", dst, serverName, err)
		}
		c = tc
	}
	sc, err := u.addConn(c, transport)
	if err != nil {
		c.Close()
	}
	return sc, err
}

// udpListenerFor returns the UDP socket used for outgoing UDP requests.
func (u *UA) udpListenerFor() (*udpListener, error) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	if u.closed || !u.started {
		return nil, ErrClosed
	}
	if len(u.udp) == 0 {
		return nil, errors.New("sipua: no udp listener configured")
	}
	return u.udp[0], nil
}

// listenPort returns the port of our listener for transport, or 0.
func (u *UA) listenPort(transport string) int {
	a := u.Addr(transport)
	if a == "" {
		return 0
	}
	_, p, _ := net.SplitHostPort(a)
	n, _ := strconv.Atoi(p)
	return n
}
