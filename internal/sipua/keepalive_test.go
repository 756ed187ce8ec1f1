package sipua_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// TestKeepAlivePingsStreamConnections: with KeepAlive set, a TCP connection the UA opened
// to a proxy receives double-CRLF pings (RFC 5626 §3.5.1).
func TestKeepAlivePingsStreamConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var all []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(all, []byte("\r\n\r\n\r\n\r\n")) { // past the OPTIONS: two pings
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			all = append(all, buf[:n]...)
		}
		got <- all
	}()
	ua := newUA(t, func(c *sipua.Config) {
		c.KeepAlive = 50 * time.Millisecond
		c.TransactionTimeout = 300 * time.Millisecond
	})
	// An OPTIONS nobody answers opens the connection.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ua.Options(ctx, "sip:"+ln.Addr().String(), "tcp")
	select {
	case all := <-got:
		if !bytes.HasPrefix(all, []byte("OPTIONS ")) || !bytes.HasSuffix(all, []byte("\r\n\r\n\r\n\r\n")) {
			t.Errorf("the proxy received %q", all)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no keep-alive arrived")
	}
}
