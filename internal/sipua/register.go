package sipua

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Binding is one account's registration as the engine asks for it.
type Binding struct {
	// Selector names the instance in logs and traffic accounting.
	Selector string
	// User is the address-of-record user; AuthUser "" means User.
	User, AuthUser, Password string
	// Domain is the registrar domain (Request-URI, To and From host).
	Domain string
	// Proxy is the host requests are sent to; "" means Domain.
	Proxy string
	// Port 0 means RFC 3263: SRV of Proxy, else A/AAAA with 5060/5061.
	Port int
	// Transport is "udp", "tcp" or "tls".
	Transport   string
	DisplayName string
	// ContactUser is our random Contact user part; it maps incoming
	// requests back to the instance.
	ContactUser string
	// ContactAddr optionally overrides "host:port" of our Contact. The UA
	// never rewrites the Contact by itself: when Result.Received/RPort
	// show the proxy sees us behind a NAT (and Config.PublicHost is not
	// set), the engine may put them here for the following REGISTERs, as
	// RFC 5626 §5 style clients do.
	ContactAddr string
	// CallID stays the same across refreshes (RFC 3261 §10.2.4).
	CallID string
	// CSeq is the last CSeq used; Register uses CSeq+1, and CSeq+2 when
	// it answers a challenge.
	CSeq uint32
	// Expires is the requested lifetime in seconds; 0 removes only our
	// Contact (never "*").
	Expires int
	// Nonce, when set, is the challenge of an earlier cycle (its Result.Nonce): the first
	// REGISTER carries credentials for it with the next nonce count, so a refresh needs no new
	// challenge (RFC 7616 §3.4). Register does not change it.
	Nonce *Nonce
	// ReplaceAddr, when set, is the host:port of an earlier Contact of this binding (same
	// user part, another address: the previous owner's in a cluster) that this REGISTER
	// removes while it adds ours, as a second Contact with expires=0 (replace.go). Ignored
	// when Expires is 0.
	ReplaceAddr string
}

// Result is the outcome of one Register cycle.
type Result struct {
	// Status and Reason of the final response; 0 if none (err != nil).
	Status int
	Reason string
	// Expires granted: our Contact's expires param, else the Expires
	// header, else the requested value (RFC 3261 §10.2.4).
	Expires int
	// MinExpires from a 423 response's Min-Expires header.
	MinExpires int
	// RetryAfter from a Retry-After header (503, 500, 480, ...).
	RetryAfter time.Duration
	// CSeq is the last CSeq used; the engine stores it.
	CSeq uint32
	// Received and RPort are the top Via's received and rport params of
	// the response (RFC 3581 §4): the address the proxy saw us at.
	Received string
	RPort    int
	// ContactAddr is the "host:port" this cycle put in our Contact, to compare
	// with Received/RPort.
	ContactAddr string
	// Request and Response are the last request and the final response as
	// text for the debug page; the digest response= value is redacted.
	Request, Response string
	// BytesOut and BytesIn count the SIP bytes of this cycle, all
	// messages and retransmissions included.
	BytesOut, BytesIn int
	// Challenged is true when a 401/407 was answered with credentials.
	Challenged bool
	// Nonce is the challenge to reuse for the binding's next cycle (Binding.Nonce), with the
	// nonce count this cycle reached; nil when the registrar refused the credentials or
	// never challenged.
	Nonce *Nonce
}

// validate rejects bindings that would produce a broken or injected
// request.
func (b *Binding) validate() error {
	fields := []struct{ name, v string }{
		{"User", b.User}, {"AuthUser", b.AuthUser}, {"Domain", b.Domain}, {"Proxy", b.Proxy},
		{"DisplayName", b.DisplayName}, {"ContactUser", b.ContactUser}, {"ContactAddr", b.ContactAddr}, {"CallID", b.CallID},
		{"Selector", b.Selector},
	}
	for _, f := range fields {
		if strings.ContainsAny(f.v, "\r\n\x00") {
			return fmt.Errorf("sipua: binding %s contains a line break or NUL", f.name)
		}
	}
	if strings.ContainsAny(b.Password, "\r\n\x00") {
		return errors.New("sipua: binding Password contains a line break or NUL")
	}
	switch {
	case b.User == "":
		return errors.New("sipua: binding User is empty")
	case b.Domain == "":
		return errors.New("sipua: binding Domain is empty")
	case strings.ContainsAny(b.Domain, " @<>;,\"\t") || strings.ContainsAny(b.Proxy, " @<>;,\"\t"):
		return fmt.Errorf("sipua: binding Domain %q or Proxy %q is not a host name", b.Domain, b.Proxy)
	case b.ContactUser == "":
		return errors.New("sipua: binding ContactUser is empty")
	case strings.ContainsAny(b.ContactUser, " @<>;,:?\"\t"):
		return fmt.Errorf("sipua: binding ContactUser %q has characters not allowed in a SIP user", b.ContactUser)
	case b.CallID == "" || strings.ContainsAny(b.CallID, " \t<>\""):
		return fmt.Errorf("sipua: binding CallID %q is empty or has blanks", b.CallID)
	case b.Port < 0 || b.Port > 65535:
		return fmt.Errorf("sipua: binding Port %d out of range", b.Port)
	case b.Expires < 0:
		return fmt.Errorf("sipua: binding Expires %d is negative", b.Expires)
	}
	switch b.Transport {
	case "udp", "tcp", "tls":
	default:
		return fmt.Errorf("sipua: binding Transport %q (want udp, tcp or tls)", b.Transport)
	}
	if b.ContactAddr != "" {
		if _, p, err := net.SplitHostPort(b.ContactAddr); err != nil || p == "" {
			return fmt.Errorf("sipua: binding ContactAddr %q is not host:port", b.ContactAddr)
		}
	}
	return validReplaceAddr(b.ReplaceAddr)
}

// Register runs one REGISTER cycle (RFC 3261 §10.2): a REGISTER, and if
// the registrar or proxy challenges it (401 WWW-Authenticate or 407
// Proxy-Authenticate, §22.2/§22.3) exactly one more with digest
// credentials. A second challenge is returned as the final result. With
// b.Nonce the first REGISTER already carries credentials; a challenge to it
// is answered as above, and any other 4xx/6xx refusal but 423 makes it start
// over without the old nonce (at most four requests in all). err is
// non-nil only when no final response arrived (ErrTimeout, ErrResolve,
// transport errors) or the binding is invalid; SIP failures such as 403 are
// in Result.Status.
func (u *UA) Register(ctx context.Context, b Binding) (Result, error) {
	res := Result{CSeq: b.CSeq}
	if err := b.validate(); err != nil {
		return res, err
	}
	proxy := b.Proxy
	if proxy == "" {
		proxy = b.Domain
	}
	p, err := u.pathTo(ctx, proxy, b.Port, b.Transport)
	if err != nil {
		return res, err
	}
	contactHost, contactPort := u.contactAddr(p, b.Transport)
	if b.ContactAddr != "" {
		h, ps, _ := net.SplitHostPort(b.ContactAddr)
		contactHost = hostForURI(h)
		contactPort, _ = strconv.Atoi(ps)
	}
	viaHost, viaPort := u.contactAddr(p, b.Transport)
	res.ContactAddr = net.JoinHostPort(strings.Trim(contactHost, "[]"), strconv.Itoa(contactPort))

	rb := registerRequest{
		b:           &b,
		ua:          u.ua,
		viaHost:     viaHost,
		viaPort:     viaPort,
		contactHost: contactHost,
		contactPort: contactPort,
		fromTag:     randHex(8),
	}
	uri := "sip:" + b.Domain
	var auth *Nonce // the credentials the next request carries, if any
	if b.Nonce != nil && b.Nonce.nonce != "" {
		n := *b.Nonce // a copy: its count goes up here, the caller's stays as it was
		auth = &n
	}
	reused := auth != nil // the first request carries a nonce of an earlier cycle
	answered := false     // a challenge of this cycle was answered
	for {
		res.CSeq++
		branch := newBranch()
		authHeader := ""
		if auth != nil {
			authHeader = auth.credentials(&b, uri)
		}
		req := rb.build(branch, res.CSeq, authHeader)
		ex, err := u.transact(ctx, p, branch, "REGISTER", req)
		res.BytesOut += ex.bytesOut
		res.BytesIn += ex.bytesIn
		if err != nil {
			res.Request = redactAuth(req)
			res.Nonce = auth // no answer says nothing about the nonce
			return res, err
		}
		fillResult(&res, &b, ex)
		code := ex.res.StatusCode
		switch {
		case (code == 401 || code == 407) && !answered:
			// A first challenge, or the registrar no longer takes the nonce we reused (stale=true,
			// or it restarted): answer this challenge, once.
			n, err := chooseChallenge(ex.res)
			if err != nil {
				// An unanswerable challenge is a final answer, but say why.
				u.log.WithField("selector", b.Selector).WithField("err", err).Warn("sip: cannot answer challenge")
				res.Request = redactAuth(req)
				return res, nil
			}
			auth, answered, reused = n, true, false
			res.Challenged = true
			continue
		case reused && code >= 400 && code != 423 && code < 500 || reused && code >= 600:
			// Refused with a nonce of an earlier cycle in a way that is not a challenge (some
			// registrars answer 403 or 400 to a nonce they do not take again): start over
			// without it, as a first REGISTER does.
			auth, reused = nil, false
			continue
		}
		res.Request = redactAuth(req)
		switch {
		case code == 401 || code == 407 || code == 403:
			res.Nonce = nil // credentials refused: the next cycle starts with a fresh challenge
		case code >= 200 && code < 300 && auth != nil:
			if nn := nextNonce(ex.res, auth.proxy); nn != "" {
				auth.nonce, auth.nc = strings.Clone(nn), 0
			}
			res.Nonce = auth
		default:
			res.Nonce = auth
		}
		return res, nil
	}
}

// contactAddr is our host and port as the next hop should see them.
func (u *UA) contactAddr(p *path, transport string) (string, int) {
	var dstIP net.IP
	if p.dst != nil {
		dstIP = p.dst.IP
	} else if a, ok := p.sc.conn.RemoteAddr().(*net.TCPAddr); ok {
		dstIP = a.IP
	}
	host := u.localHost(p.local, dstIP)
	port := portOf(p.local)
	if p.reliable() {
		// Prefer our listening port so the proxy can open a new connection
		// to us (RFC 3261 §18.2.2); else the ephemeral one.
		if lp := u.listenPort(transport); lp != 0 {
			port = lp
		}
	}
	return host, port
}

type registerRequest struct {
	b           *Binding
	ua          string
	viaHost     string
	viaPort     int
	contactHost string
	contactPort int
	fromTag     string
}

// build writes the REGISTER as text. The header set follows RFC 3261
// §10.2; rport is requested in Via (RFC 3581 §3).
func (r *registerRequest) build(branch string, cseq uint32, auth string) []byte {
	b := r.b
	tp := strings.ToUpper(b.Transport)
	aor := "sip:" + escapeUser(b.User) + "@" + b.Domain
	s := bytes.NewBuffer(make([]byte, 0, 700+len(auth)+len(b.DisplayName)*2+len(r.ua))) // one allocation, returned as is
	s.WriteString("REGISTER sip:")
	s.WriteString(b.Domain)
	s.WriteString(" SIP/2.0\r\nVia: SIP/2.0/")
	s.WriteString(tp)
	s.WriteByte(' ')
	s.WriteString(r.viaHost)
	s.WriteByte(':')
	s.WriteString(strconv.Itoa(r.viaPort))
	s.WriteString(";branch=")
	s.WriteString(branch)
	s.WriteString(";rport\r\nMax-Forwards: 70\r\nFrom: ")
	if b.DisplayName != "" {
		s.WriteString(quoteDisplayName(b.DisplayName))
		s.WriteByte(' ')
	}
	s.WriteByte('<')
	s.WriteString(aor)
	s.WriteString(">;tag=")
	s.WriteString(r.fromTag)
	s.WriteString("\r\nTo: ")
	if b.DisplayName != "" {
		s.WriteString(quoteDisplayName(b.DisplayName))
		s.WriteByte(' ')
	}
	s.WriteByte('<')
	s.WriteString(aor)
	s.WriteString(">\r\nCall-ID: ")
	s.WriteString(b.CallID)
	s.WriteString("\r\nCSeq: ")
	s.WriteString(strconv.FormatUint(uint64(cseq), 10))
	s.WriteString(" REGISTER\r\nContact: <sip:")
	s.WriteString(b.ContactUser)
	s.WriteByte('@')
	s.WriteString(r.contactHost)
	s.WriteByte(':')
	s.WriteString(strconv.Itoa(r.contactPort))
	s.WriteString(";transport=")
	s.WriteString(b.Transport)
	s.WriteString(">;expires=")
	s.WriteString(strconv.Itoa(b.Expires))
	r.writeReplaced(s)
	s.WriteString("\r\nExpires: ")
	s.WriteString(strconv.Itoa(b.Expires))
	s.WriteString("\r\n")
	if auth != "" {
		s.WriteString(auth)
		s.WriteString("\r\n")
	}
	s.WriteString("User-Agent: ")
	s.WriteString(r.ua)
	s.WriteString("\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, PRACK, NOTIFY\r\nContent-Length: 0\r\n\r\n")
	return s.Bytes()
}

// escapeUser percent-encodes what RFC 3261 §25.1 does not allow unescaped
// in a user part.
func escapeUser(u string) string {
	const ok = "-_.!~*'()&=+$,;?/"
	var s strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(ok, c) >= 0 {
			s.WriteByte(c)
			continue
		}
		fmt.Fprintf(&s, "%%%02X", c)
	}
	return s.String()
}

// quoteDisplayName returns a quoted-string (RFC 3261 §25.1).
func quoteDisplayName(n string) string {
	n = strings.ReplaceAll(n, `\`, `\\`)
	n = strings.ReplaceAll(n, `"`, `\"`)
	return `"` + n + `"`
}

// fillResult copies what the engine needs from the final response.
func fillResult(r *Result, b *Binding, ex exchange) {
	res := ex.res
	r.Status = res.StatusCode
	r.Reason = res.Reason
	r.Response = string(ex.raw)
	r.Received, r.RPort = "", 0
	if via := res.Via(); via != nil {
		r.Received, _ = via.Params.Get("received")
		if v, ok := via.Params.Get("rport"); ok {
			r.RPort, _ = strconv.Atoi(v)
		}
	}
	r.MinExpires = 0
	if h := res.GetHeader("Min-Expires"); h != nil {
		r.MinExpires, _ = strconv.Atoi(strings.TrimSpace(h.Value()))
	}
	r.RetryAfter = retryAfter(res)
	r.Expires = grantedExpires(res, b)
}

// retryAfter reads delta-seconds from Retry-After (RFC 3261 §20.33),
// ignoring its comment and parameters.
func retryAfter(res *sip.Response) time.Duration {
	h := res.GetHeader("Retry-After")
	if h == nil {
		return 0
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexAny(v, " ;("); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// grantedExpires reads the lifetime the registrar granted our binding: a
// 2xx lists every current contact of the AOR (RFC 3261 §10.3 step 8); ours
// is found by its unique user part and its expires param wins, then the
// Expires header, then what we asked for. A 2xx that lists contacts but not
// ours did not bind us, whatever its Expires header says: 0.
func grantedExpires(res *sip.Response, b *Binding) int {
	if res.StatusCode < 200 || res.StatusCode >= 300 {
		return 0
	}
	if b.Expires == 0 {
		return 0
	}
	listed, ours := false, false
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		listed = true
		if c.Address.User != b.ContactUser {
			continue
		}
		ours = true
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
				return n
			}
		}
	}
	if listed && !ours {
		return 0
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return n
		}
	}
	return b.Expires
}

// redactAuth hides the digest response= value of the Authorization or
// Proxy-Authorization header of a request we built (so the header's exact
// spelling is known). The password itself is never in a request.
func redactAuth(req []byte) string {
	i := bytes.Index(req, []byte("Authorization: Digest "))
	if i < 0 {
		return string(req)
	}
	eol := bytes.Index(req[i:], []byte("\r\n"))
	if eol < 0 {
		eol = len(req) - i
	}
	line := req[i : i+eol]
	j := bytes.Index(line, []byte("response="))
	if j < 0 {
		return string(req)
	}
	j += len("response=")
	k := j
	if k < len(line) && line[k] == '"' {
		k++
		for k < len(line) && line[k] != '"' {
			k++
		}
		if k < len(line) {
			k++
		}
	} else {
		for k < len(line) && line[k] != ',' {
			k++
		}
	}
	// One allocation: this runs for every REGISTER.
	const redacted = `"[redacted]"`
	var out strings.Builder
	out.Grow(len(req) - (k - j) + len(redacted))
	out.Write(req[:i+j])
	out.WriteString(redacted)
	out.Write(req[i+k:])
	return out.String()
}
