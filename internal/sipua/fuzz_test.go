package sipua

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const seedResponse = "SIP/2.0 401 Unauthorized\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport=5060;received=127.0.0.1\r\n" +
	"From: <sip:a@sipis.test>;tag=1\r\nTo: <sip:a@sipis.test>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n" +
	"WWW-Authenticate: Digest realm=\"sipis.test\", nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\n" +
	"WWW-Authenticate: Digest realm=\"sipis.test\", nonce=\"abc\", qop=\"auth\", algorithm=SHA-256\r\n" +
	"Contact: <sip:ct@127.0.0.1:5070;transport=udp>;expires=60, <sip:x@h>;expires=5\r\n" +
	"Retry-After: 30 (later);duration=5\r\nMin-Expires: 60\r\nContent-Length: 0\r\n\r\n"

// FuzzResponse feeds received responses through everything the UA reads
// from them.
func FuzzResponse(f *testing.F) {
	f.Add([]byte(seedResponse))
	f.Add([]byte("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("SIP/2.0 407 x\r\nProxy-Authenticate: Digest nonce=\"\\\"\r\n\r\n"))
	p := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := p.ParseSIP(data)
		if err != nil {
			return
		}
		res, ok := msg.(*sip.Response)
		if !ok {
			return
		}
		b := Binding{User: "a", Password: "secret", ContactUser: "ct", Expires: 60}
		var r Result
		fillResult(&r, &b, exchange{res: res, raw: data})
		if r.Expires < 0 || r.RetryAfter < 0 {
			t.Fatalf("negative values %+v", r)
		}
		if h, err := authorization(res, &b, "sip:sipis.test"); err == nil && strings.Contains(h, "secret") {
			t.Fatal("password in Authorization")
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Digest realm="sipis.test", nonce="abc", qop="auth,auth-int", algorithm=SHA-256, opaque="o"`)
	f.Add(`Digest nonce=abc,realm=x`)
	f.Add(`Basic realm="x"`)
	f.Add(`Digest realm="unterminated`)
	f.Fuzz(func(t *testing.T, v string) {
		c, err := parseChallenge(v)
		if err == nil && c.nonce == "" {
			t.Fatal("challenge without nonce accepted")
		}
	})
}

// FuzzStreamFraming checks the TCP/TLS framer never panics, never returns
// more than it was given and honours Content-Length.
func FuzzStreamFraming(f *testing.F) {
	f.Add([]byte(seedResponse + seedResponse))
	f.Add([]byte("\r\n\r\nOPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc"))
	f.Add([]byte("INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), streamBufferSize)
		total := 0
		for range 100 {
			msg, err := readStreamMessage(r, maxMessage)
			if err != nil {
				return
			}
			total += len(msg)
			if total > len(data) || len(msg) > maxMessage {
				t.Fatalf("framed %d bytes out of %d", total, len(data))
			}
		}
	})
}

func TestRedactAuth(t *testing.T) {
	req := "REGISTER sip:x SIP/2.0\r\nAuthorization: Digest username=\"a\", response=\"0123abcd\", cnonce=\"c\"\r\n\r\n"
	got := redactAuth([]byte(req))
	if strings.Contains(got, "0123abcd") || !strings.Contains(got, `response="[redacted]", cnonce="c"`) {
		t.Fatalf("got %q", got)
	}
	if redactAuth([]byte("OPTIONS x\r\n\r\n")) != "OPTIONS x\r\n\r\n" {
		t.Fatal("changed a request without credentials")
	}
}

// FuzzWireResponse checks that the UA's own reading of a request's text never panics and
// that the response built from it is one well-formed header section: every line ends in
// CRLF, none is empty before the end, so nothing in a request can inject a header or end
// the response early.
func FuzzWireResponse(f *testing.F) {
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;rport;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"))
	f.Add([]byte("OPTIONS sip:a SIP/7.0\nv: SIP / 2.0 / TCP h ; branch = 1 , SIP/2.0/UDP g\nt: \"q <sip:a>\n\n"))
	f.Add([]byte("INVITE  sip:a  SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5060;received=x\r\nTo:\r\n sip:a ; tag = 1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, ok := readWire(data)
		if !ok {
			return
		}
		w.check()
		b := w.response(400, "Bad Request", "192.0.2.1:5060", "t1", "sipis", nil, "", nil)
		head, body, found := strings.Cut(string(b), "\r\n\r\n")
		if !found || body != "" {
			t.Fatalf("response is not one header section: %q", b)
		}
		for _, l := range strings.Split(head, "\r\n") {
			if l == "" || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("bad line %q in %q", l, b)
			}
		}
	})
}
