package sipua

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// udpListener is one bound UDP socket. Requests to proxies are sent from it
// too, so that the proxy sees the same address as in our Via and Contact
// and NAT bindings stay valid for incoming requests (RFC 3581 §1).
type udpListener struct {
	ua   *UA
	conn *net.UDPConn
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
		l.ua.countIn(n)
		raw := make([]byte, n)
		copy(raw, buf[:n])
		l.ua.handleMessage(raw, "udp", src, l, nil)
	}
}

func (l *udpListener) writeTo(b []byte, dst *net.UDPAddr) error {
	_, err := l.conn.WriteToUDP(b, dst)
	if err != nil {
		return err
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

// remoteIP returns the IP of c's peer.
func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	return host
}

// admit counts a new accepted connection from ip, or reports false when Config.MaxConns or
// Config.MaxConnsPerIP would be exceeded.
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
	r := bufio.NewReaderSize(&countingReader{r: sc.conn, ua: sc.ua, sc: sc}, 16<<10)
	for {
		sc.refreshDeadline()
		raw, err := readStreamMessage(r)
		if err != nil {
			select {
			case <-sc.ua.done:
			default:
				sc.ua.log.WithFields(logrus.Fields{"remote": sc.conn.RemoteAddr().String(), "transport": sc.transport, "err": err}).Debug("sip: stream closed")
			}
			return
		}
		sc.ua.msgsIn.Add(1)
		sc.ua.handleMessage(raw, sc.transport, nil, nil, sc)
	}
}

// refreshDeadline sets the read deadline of an accepted connection: IdleTimeout from now, or
// BoundIdleTimeout once its flow is bound.
func (sc *streamConn) refreshDeadline() {
	if !sc.accepted {
		return
	}
	d := sc.ua.cfg.IdleTimeout
	if sc.bound.Load() {
		d = sc.ua.cfg.BoundIdleTimeout
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

// readStreamMessage reads one SIP message from a stream, framed by the
// blank line and Content-Length (mandatory on streams, RFC 3261 §18.3).
// Leading CRLFs (keep-alives, RFC 5626 §3.5.1) are skipped.
func readStreamMessage(r *bufio.Reader) ([]byte, error) {
	var head bytes.Buffer
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%w: header line too long", errFraming)
		}
		if err != nil {
			return nil, err
		}
		if head.Len() == 0 && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			continue // keep-alive
		}
		head.Write(line)
		if head.Len() > 64<<10 {
			return nil, fmt.Errorf("%w: headers longer than 64 KiB", errFraming)
		}
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			break
		}
	}
	n, err := contentLength(head.Bytes())
	if err != nil {
		return nil, err
	}
	msg := make([]byte, head.Len()+n)
	copy(msg, head.Bytes())
	if _, err := ioReadFull(r, msg[head.Len():]); err != nil {
		return nil, err
	}
	return msg, nil
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
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
		if err != nil || n < 0 || n > maxMessage {
			return 0, fmt.Errorf("%w: Content-Length %q", errFraming, v)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%w: no Content-Length", errFraming)
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
