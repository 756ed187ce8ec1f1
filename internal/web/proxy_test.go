package web

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestForwardedHeadersBelievedOnlyFromTrustedProxies(t *testing.T) {
	f := newFake()
	f.seedN(1)
	s, _ := newTestServer(t, f, func(o *Options) {
		o.AuthFailures = 1
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")}
	})
	bad := []string{"admin", "x"}
	const stranger = "192.0.2.99:5000"
	// From an untrusted peer X-Forwarded-For is ignored: the failure is the peer's.
	do(t, s, req{path: "/debug?s=00000000", basic: bad, remote: stranger, header: map[string]string{"X-Forwarded-For": "198.51.100.1"}})
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin, remote: stranger, header: map[string]string{"X-Forwarded-For": "198.51.100.2"}}); w.Code != 429 {
		t.Errorf("untrusted peer chose its address with X-Forwarded-For: %d, want 429", w.Code)
	}
	// From an untrusted peer X-Forwarded-Host does not make another origin ours.
	token := s.csrfToken("admin")
	form := url.Values{"s": {"00000000"}, "csrf": {token}}
	hdr := map[string]string{"Origin": "https://front.example", "X-Forwarded-Host": "front.example"}
	if w := do(t, s, req{method: "POST", path: "/stats/actions/turnoff", form: form, basic: admin, remote: "192.0.2.100:1", header: hdr}); w.Code != 403 {
		t.Errorf("X-Forwarded-Host from an untrusted peer: %d, want 403", w.Code)
	}
	if w := do(t, s, req{method: "POST", path: "/stats/actions/turnoff", form: form, basic: admin, remote: "10.1.2.3:1", header: hdr}); w.Code != 200 {
		t.Errorf("X-Forwarded-Host from a trusted proxy: %d, want 200", w.Code)
	}
	if got := f.changes(); got != "[00000000] 0 [] [] 0" {
		t.Errorf("changes = %s", got)
	}

	for _, c := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"192.0.2.1:1", []string{"198.51.100.7"}, "192.0.2.1"},                      // untrusted peer
		{"10.0.0.1:1", nil, "10.0.0.1"},                                             // trusted, no header
		{"10.0.0.1:1", []string{"198.51.100.7"}, "198.51.100.7"},                    // one proxy
		{"10.0.0.1:1", []string{"6.6.6.6, 198.51.100.7, 10.0.0.2"}, "198.51.100.7"}, // two proxies, client-written left part
		{"10.0.0.1:1", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},         // two header lines
		{"10.0.0.1:1", []string{"198.51.100.7:4711"}, "198.51.100.7"},               // with a port
		{"10.0.0.1:1", []string{"[2001:db8::7]:4711"}, "2001:db8::7"},
		{"10.0.0.1:1", []string{"10.0.0.3"}, "10.0.0.3"},                  // all trusted: the left-most proxy
		{"10.0.0.1:1", []string{"198.51.100.7, junk"}, "10.0.0.1"},        // a hop no proxy writes
		{"[::ffff:10.0.0.1]:1", []string{"198.51.100.8"}, "198.51.100.8"}, // v4-mapped peer
		{"[2001:db8:1::5]:1", []string{"198.51.100.9"}, "198.51.100.9"},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.remote
		for _, v := range c.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := s.clientAddr(r); got != c.want {
			t.Errorf("peer %s, X-Forwarded-For %q: client %s, want %s", c.remote, c.xff, got, c.want)
		}
	}
	if k := clientKey("2001:db8:5:6:7:8:9:a"); k != "2001:db8:5:6::/64" {
		t.Errorf("IPv6 key %s, want its /64", k)
	}
	if k := clientKey("::ffff:192.0.2.1"); k != "192.0.2.1" {
		t.Errorf("v4-mapped key %s", k)
	}
}

func TestParseProxyLine(t *testing.T) {
	for line, want := range map[string]string{
		"PROXY TCP4 192.0.2.1 192.0.2.9 56324 443\r\n": "192.0.2.1:56324",
		"PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n": "[2001:db8::1]:1",
		"PROXY UNKNOWN\r\n":                            "",
		"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n":        "",
		"PROXY TCP4 192.0.2.1 192.0.2.9 56324 443\n":   "error",
		"PROXY TCP4 2001:db8::1 192.0.2.9 1 2\r\n":     "error",
		"PROXY TCP4 192.0.2.1 192.0.2.9 65536 443\r\n": "error",
		"PROXY TCP4 192.0.2.1 192.0.2.9 01 443\r\n":    "error",
		"PROXY TCP4 192.0.2.1 192.0.2.9 1\r\n":         "error",
		"PROXY UDP4 192.0.2.1 192.0.2.9 1 2\r\n":       "error",
		"PROXY TCP4 192.0.2.1  192.0.2.9 1 2\r\n":      "error",
		"PROXY TCP4 not-an-ip 192.0.2.9 1 2\r\n":       "error",
		"PROXY TCP4 192.0.2.1 192.0.2.9 1 99999\r\n":   "error",
		"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n":  "error",
	} {
		a, err := parseProxyLine([]byte(line))
		got := ""
		switch {
		case err != nil:
			got = "error"
		case a != nil:
			got = a.String()
		}
		if got != want {
			t.Errorf("%q: %s (%v), want %s", line, got, err, want)
		}
	}
}

// rawRequest sends a GET with Basic credentials over a fresh connection
// from local (a loopback address), after prefix, and returns the status.
func rawRequest(t *testing.T, s *Server, local, prefix string, basic []string) int {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.DialContext(t.Context(), "tcp", strings.TrimPrefix(s.URL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, _ := http.NewRequest("GET", s.URL()+"/debug?s=00000000", nil)
	r.SetBasicAuth(basic[0], basic[1])
	r.Close = true
	if _, err := io.WriteString(c, prefix); err != nil {
		t.Fatal(err)
	}
	if err := r.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), r)
	if err != nil {
		return 0 // the server closed the connection
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestProxyProtocolFromTrustedProxiesOnly(t *testing.T) {
	f := newFake()
	f.seedN(1)
	s, _ := newTestServer(t, f, func(o *Options) {
		o.AuthFailures = 1
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	proxy := func(src string) string { return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 5000\r\n", src) }
	bad := []string{"admin", "x"}
	// Through the trusted proxy, each client is counted by its own address.
	if c := rawRequest(t, s, "127.0.0.1", proxy("192.0.2.7"), bad); c != 401 {
		t.Fatalf("wrong password via PROXY: %d", c)
	}
	if c := rawRequest(t, s, "127.0.0.1", proxy("192.0.2.7"), admin); c != 429 {
		t.Errorf("same client via PROXY: %d, want 429", c)
	}
	if c := rawRequest(t, s, "127.0.0.1", proxy("192.0.2.8"), admin); c != 200 {
		t.Errorf("other client via PROXY: %d, want 200", c)
	}
	// Without a PROXY line, a trusted peer is a client itself.
	if c := rawRequest(t, s, "127.0.0.1", "", admin); c != 200 {
		t.Errorf("trusted peer without PROXY: %d, want 200", c)
	}
	// A malformed PROXY line from the trusted proxy closes the connection.
	if c := rawRequest(t, s, "127.0.0.1", "PROXY TCP4 192.0.2.7\r\n", admin); c != 0 {
		t.Errorf("malformed PROXY line: %d, want the connection closed", c)
	}
	// From anybody else a PROXY line is not believed: it is a bad request.
	if c := rawRequest(t, s, "127.0.0.2", proxy("192.0.2.9"), admin); c != 400 {
		t.Errorf("PROXY line from an untrusted peer: %d, want 400", c)
	}
	if c := rawRequest(t, s, "127.0.0.2", "", bad); c != 401 {
		t.Fatalf("untrusted peer, wrong password: %d", c)
	}
	if c := rawRequest(t, s, "127.0.0.2", "", admin); c != 429 {
		t.Errorf("untrusted peer counted by its own address: %d, want 429", c)
	}
}

func TestPprofAdminOnly(t *testing.T) {
	f := newFake()
	f.seedN(1)
	s, _ := newTestServer(t, f)
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if w := do(t, s, req{path: p}); w.Code != 401 || strings.Contains(w.Body.String(), "goroutine") {
			t.Errorf("%s without credentials: %d", p, w.Code)
		}
		if w := do(t, s, req{path: p, basic: []string{"admin", "wrong"}}); w.Code != 401 {
			t.Errorf("%s with a wrong password: %d", p, w.Code)
		}
	}
	w := do(t, s, req{path: "/debug/pprof/", basic: admin})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "goroutine") {
		t.Errorf("index: %d %.200s", w.Code, w.Body)
	}
	w = do(t, s, req{path: "/debug/pprof/goroutine?debug=1", basic: admin})
	if w.Code != 200 || !strings.Contains(w.Body.String(), "goroutine profile:") {
		t.Errorf("goroutine profile: %d %.200s", w.Code, w.Body)
	}
	w = do(t, s, req{path: "/debug/pprof/heap", basic: admin})
	if w.Code != 200 || w.Body.Len() == 0 {
		t.Errorf("heap profile: %d, %d bytes", w.Code, w.Body.Len())
	}
	// /debug?s= is still the instance page.
	if w := do(t, s, req{path: "/debug?s=00000000", basic: admin}); w.Code != 200 || strings.Contains(w.Body.String(), "goroutine profile") {
		t.Errorf("/debug?s=: %d", w.Code)
	}
}

// FuzzProxyLine feeds any line to the PROXY parser: it never panics, and
// an address it accepts is a valid source of the family the line names.
func FuzzProxyLine(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 192.0.2.1 192.0.2.9 56324 443\r\n", "PROXY TCP6 2001:db8::1 2001:db8::2 1 443\r\n",
		"PROXY UNKNOWN\r\n", "PROXY TCP4 1.2.3.4\r\n", "PROXY TCP4 ::1 ::1 1 1\r\n", "PROXY \r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		a, err := parseProxyLine([]byte(line))
		if err != nil || a == nil {
			return
		}
		ap, perr := netip.ParseAddrPort(a.String())
		if perr != nil {
			t.Fatalf("%q gave unparsable %s", line, a)
		}
		if strings.HasPrefix(line, "PROXY TCP4 ") != ap.Addr().Is4() {
			t.Fatalf("%q gave %s of the other family", line, a)
		}
	})
}

// FuzzClientAddr feeds any X-Forwarded-For value from a trusted proxy:
// the client address is always a valid address, and never one of the
// header's entries left of an untrusted one.
func FuzzClientAddr(f *testing.F) {
	for _, s := range []string{"198.51.100.7", "6.6.6.6, 198.51.100.7, 10.0.0.2", "junk", "[::1]:80, 10.0.0.9", ",,,", ""} {
		f.Add(s)
	}
	s := New(Options{Backend: newFake(), TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	f.Fuzz(func(t *testing.T, xff string) {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = "10.0.0.1:1"
		r.Header.Set("X-Forwarded-For", xff)
		got := s.clientAddr(r)
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("X-Forwarded-For %q: client %q is not an address", xff, got)
		}
		// The answer is the peer or the right-most untrusted entry.
		parts := strings.Split(xff, ",")
		for i := len(parts) - 1; i >= 0; i-- {
			h, ok := parseHop(parts[i])
			if !ok {
				break
			}
			if !s.trusted(h) {
				if h != a {
					t.Fatalf("X-Forwarded-For %q: client %s, want %s", xff, a, h)
				}
				return
			}
		}
		if !s.trusted(a) {
			t.Fatalf("X-Forwarded-For %q: client %s though no untrusted entry", xff, a)
		}
	})
}
