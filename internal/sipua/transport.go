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
		if l.transport == "tls" {
			c = tls.Server(c, l.ua.cfg.TLSConfig)
		}
		if _, err := l.ua.addConn(c, l.transport); err != nil {
			c.Close()
		}
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
}

func connKey(transport, addr string) string { return transport + "|" + addr }

// addConn registers c and starts its reader.
func (u *UA) addConn(c net.Conn, transport string) (*streamConn, error) {
	sc := &streamConn{ua: u, conn: c, transport: transport, key: connKey(transport, c.RemoteAddr().String()), closed: make(chan struct{})}
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
	})
}

func (sc *streamConn) serve() {
	defer sc.ua.wg.Done()
	defer sc.close()
	r := bufio.NewReaderSize(&countingReader{r: sc.conn, ua: sc.ua}, 16<<10)
	for {
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
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.ua.bytesIn.Add(int64(n))
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
		conf := u.cfg.ClientTLS
		if conf == nil {
			conf = &tls.Config{}
		}
		conf = conf.Clone()
		if conf.ServerName == "" {
			conf.ServerName = serverName
		}
		tc := tls.Client(c, conf)
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
