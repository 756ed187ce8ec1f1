package siptest

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestStunnelSendsProxyLine checks the harness: stunnel terminates TLS and
// opens the plain connection with a PROXY line naming the real client.
func TestStunnelSendsProxyLine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan [2]string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		proxy, _ := br.ReadString('\n')
		request, _ := br.ReadString('\n')
		lines <- [2]string{proxy, request}
		_, _ = c.Write([]byte("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
	}()
	st := StartStunnel(t, StunnelOptions{Connect: ln.Addr().String(), ProxyProtocol: true})
	resp, err := st.Client("127.0.0.2").Get(st.URL() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("status %d through stunnel, want 204", resp.StatusCode)
	}
	got := <-lines
	if !strings.HasPrefix(got[0], "PROXY TCP4 127.0.0.2 ") || !strings.HasSuffix(got[0], "\r\n") {
		t.Errorf("first line %q, want a PROXY line from 127.0.0.2", got[0])
	}
	if got[1] != "GET /x HTTP/1.1\r\n" {
		t.Errorf("request line %q", got[1])
	}
}
