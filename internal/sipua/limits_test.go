package sipua_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// dialFrom opens a TCP connection to addr from the local IP from (any 127.0.0.0/8 address).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// optionsOK sends OPTIONS (to sipis itself) on c and reports whether 200 came back.
func optionsOK(t *testing.T, c net.Conn) bool {
	t.Helper()
	l := c.LocalAddr().String()
	req := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%d\r\nMax-Forwards: 70\r\n"+
		"From: <sip:a@sipis.test>;tag=1\r\nTo: <sip:sipis.test>\r\nCall-ID: o-%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		c.RemoteAddr(), l, time.Now().UnixNano(), l)
	if _, err := c.Write([]byte(req)); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	return err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 200")
}

// closedByPeer reports whether the peer closes c within 5 s.
func closedByPeer(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded))
}

// TestConnLimits: beyond MaxConnsPerIP from one IP, and beyond MaxConns in all, accepted
// connections are closed at once; a closed connection frees its place.
func TestConnLimits(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.MaxConns, c.MaxConnsPerIP = 3, 2 })
	addr := u.Addr("tcp")
	a1, a2 := dialFrom(t, "127.0.0.1", addr), dialFrom(t, "127.0.0.1", addr)
	if !optionsOK(t, a1) || !optionsOK(t, a2) {
		t.Fatal("connections within the limits do not work")
	}
	if a3 := dialFrom(t, "127.0.0.1", addr); !closedByPeer(a3) {
		t.Fatal("third connection from one IP stays open with MaxConnsPerIP 2")
	}
	b1 := dialFrom(t, "127.0.0.2", addr)
	if !optionsOK(t, b1) {
		t.Fatal("connection from another IP refused")
	}
	if b2 := dialFrom(t, "127.0.0.2", addr); !closedByPeer(b2) {
		t.Fatal("fourth connection stays open with MaxConns 3")
	}
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialFrom(t, "127.0.0.3", addr)
		if optionsOK(t, c) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection's place is not freed")
		}
		time.Sleep(20 * time.Millisecond) // the server notices a1's close asynchronously
	}
}

// TestIdleTimeout: an accepted connection without messages is closed after IdleTimeout;
// one whose flow is bound survives it, kept by keep-alives.
func TestIdleTimeout(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.IdleTimeout, c.BoundIdleTimeout = 150*time.Millisecond, time.Minute })
	h := &binder{}
	u.SetHandler(h)
	idle := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	start := time.Now()
	if !closedByPeer(idle) {
		t.Fatal("idle connection not closed")
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("closed after %v, before IdleTimeout", d)
	}

	c := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	l := c.LocalAddr().String()
	req := fmt.Sprintf("MESSAGE sip:ct-1@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKbind\r\nMax-Forwards: 70\r\n"+
		"From: <sip:a@sipis.test>;tag=1\r\nTo: <sip:ct-1@sipis.test>\r\nCall-ID: b1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n", u.Addr("tcp"), l)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
		t.Fatalf("MESSAGE: %q %v", buf[:n], err)
	}
	// Four times IdleTimeout; the bound connection must still work.
	until := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(until) {
		if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // keep-alive rhythm, the point of the test
	}
	if !optionsOK(t, c) {
		t.Fatal("bound connection closed by the idle timeout")
	}
}

// binder binds the flow of every request and answers 200.
type binder struct{}

func (binder) HandleRequest(_ string, req *sipua.Request) {
	if req.Method == "ACK" {
		return
	}
	req.Flow().Bind()
	_ = req.Respond(200, "OK")
}

// TestTLSHandshakeTimeout: a TLS connection that never starts the handshake is closed after
// HandshakeTimeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	cert, _ := selfSigned(t)
	u := newUA(t, func(c *sipua.Config) {
		c.Listeners = []sipua.Listener{{Transport: "tls", Address: "127.0.0.1:0"}}
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		c.HandshakeTimeout, c.IdleTimeout = 150*time.Millisecond, time.Minute
	})
	c := dialFrom(t, "127.0.0.1", u.Addr("tls"))
	if !closedByPeer(c) {
		t.Fatal("connection without handshake not closed")
	}
}

// blocker holds every request in the handler until release is closed.
type blocker struct {
	in      chan struct{}
	release chan struct{}
}

func (b *blocker) HandleRequest(_ string, req *sipua.Request) {
	b.in <- struct{}{}
	<-b.release
	_ = req.Respond(200, "OK")
}

// TestMaxInFlight: beyond MaxInFlight requests of one connection in the handler, requests are
// answered 503; once the handlers return, requests are handled again.
func TestMaxInFlight(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.MaxInFlight = 2 })
	b := &blocker{in: make(chan struct{}, 10), release: make(chan struct{})}
	u.SetHandler(b)
	var once sync.Once
	unblock := func() { once.Do(func() { close(b.release) }) }
	t.Cleanup(unblock)
	c := dialFrom(t, "127.0.0.1", u.Addr("tcp"))
	l := c.LocalAddr().String()
	send := func(i int) {
		req := fmt.Sprintf("MESSAGE sip:ct-1@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKm%d\r\nMax-Forwards: 70\r\n"+
			"From: <sip:a@sipis.test>;tag=1\r\nTo: <sip:ct-1@sipis.test>\r\nCall-ID: m%d\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n", u.Addr("tcp"), l, i, i)
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		send(i)
		select {
		case <-b.in:
		case <-time.After(5 * time.Second):
			t.Fatal("handler not called")
		}
	}
	send(2)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 503") || !strings.Contains(string(buf[:n]), "Call-ID: m2") {
		t.Fatalf("third request: %q %v", buf[:n], err)
	}
	unblock()
	var got strings.Builder
	for strings.Count(got.String(), "SIP/2.0 200") < 2 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (%q)", err, got.String())
		}
		got.Write(buf[:n])
	}
	send(3)
	select {
	case <-b.in:
	case <-time.After(5 * time.Second):
		t.Fatal("handler not called after the slots were freed")
	}
}
