package web

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// The PROXY protocol, version 1 (HAProxy, "The PROXY protocol", section
// 2.1): a TLS proxy that does not speak HTTP (stunnel with
// "protocol = proxy") opens each connection with one line naming the
// client, e.g. "PROXY TCP4 192.0.2.1 192.0.2.9 56324 443\r\n". The line is
// read only on connections from a trusted proxy, and there it is optional,
// so a trusted nginx that sends X-Forwarded-For instead works too. From
// anybody else the bytes are HTTP, so a client cannot name its own address.

// proxyHeaderTimeout bounds the wait for the PROXY line (section 2.1: the
// receiver must not wait forever for it).
const proxyHeaderTimeout = 10 * time.Second

// maxProxyLine is the longest v1 line with its CRLF (section 2.1).
const maxProxyLine = 107

// proxyListener wraps the connections of trusted peers in proxyConn.
type proxyListener struct {
	net.Listener
	trusted func(netip.Addr) bool
}

func (l proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && l.trusted(ap.Addr().Unmap()) {
		return &proxyConn{Conn: c}, nil
	}
	return c, nil
}

// proxyConn reads an optional PROXY line on its first use (RemoteAddr,
// which net/http calls first in the connection's own goroutine, or Read),
// never in Accept, so a slow proxy does not hold up the accept loop.
type proxyConn struct {
	net.Conn
	once   sync.Once
	br     *bufio.Reader
	remote net.Addr
	err    error
}

func (c *proxyConn) init() {
	c.once.Do(func() {
		defer func() {
			if c.err != nil {
				_ = c.Conn.Close() // section 2.1: drop a connection with a bad header, answer nothing
			}
		}()
		c.remote = c.Conn.RemoteAddr()
		c.br = bufio.NewReaderSize(c.Conn, 4096)
		_ = c.Conn.SetReadDeadline(time.Now().Add(proxyHeaderTimeout))
		defer c.Conn.SetReadDeadline(time.Time{})
		p, err := c.br.Peek(6)
		if err != nil || string(p) != "PROXY " {
			return // HTTP (or an error the first Read reports)
		}
		line, err := c.br.ReadSlice('\n')
		if err != nil || len(line) > maxProxyLine {
			c.err = errors.New("web: PROXY header: longer than 107 bytes or cut short")
			return
		}
		addr, err := parseProxyLine(line)
		if err != nil {
			c.err = err
			return
		}
		if addr != nil {
			c.remote = addr
		}
	})
}

// RemoteAddr is the client's address from the PROXY line, else the peer's.
func (c *proxyConn) RemoteAddr() net.Addr {
	c.init()
	return c.remote
}

func (c *proxyConn) Read(p []byte) (int, error) {
	c.init()
	if c.err != nil {
		return 0, c.err
	}
	return c.br.Read(p)
}

// parseProxyLine parses a v1 line, CRLF included. It returns nil for
// "PROXY UNKNOWN" (the proxy does not know the source: keep the peer's).
func parseProxyLine(line []byte) (net.Addr, error) {
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return nil, errors.New("web: PROXY header: no CRLF")
	}
	f := bytes.Split(body, []byte(" "))
	if string(f[0]) != "PROXY" {
		return nil, errors.New("web: PROXY header: does not start with PROXY")
	}
	if len(f) >= 2 && string(f[1]) == "UNKNOWN" {
		return nil, nil
	}
	if len(f) != 6 || (string(f[1]) != "TCP4" && string(f[1]) != "TCP6") {
		return nil, fmt.Errorf("web: PROXY header %q: want PROXY TCP4|TCP6 src dst sport dport", oneLine(string(body)))
	}
	src, err := netip.ParseAddr(string(f[2]))
	if err != nil || src.Is4() != (string(f[1]) == "TCP4") || src.Zone() != "" {
		return nil, fmt.Errorf("web: PROXY header: bad source address %q", oneLine(string(f[2])))
	}
	if _, err := netip.ParseAddr(string(f[3])); err != nil {
		return nil, fmt.Errorf("web: PROXY header: bad destination address %q", oneLine(string(f[3])))
	}
	port, err := strconv.ParseUint(string(f[4]), 10, 16)
	if err != nil || (len(f[4]) > 1 && f[4][0] == '0') {
		return nil, fmt.Errorf("web: PROXY header: bad source port %q", oneLine(string(f[4])))
	}
	if _, err := strconv.ParseUint(string(f[5]), 10, 16); err != nil {
		return nil, fmt.Errorf("web: PROXY header: bad destination port %q", oneLine(string(f[5])))
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, uint16(port))), nil
}
