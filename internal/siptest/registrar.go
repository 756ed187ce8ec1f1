package siptest

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Behaviour is how the fake registrar answers a REGISTER that carries no
// credentials. Requests with credentials are always checked against the
// password table: right ones get 200, wrong ones a fresh challenge.
type Behaviour struct {
	kind int
	n    int
}

const (
	kindChallenge = iota
	kindOK
	kind423
	kind503
	kind403
	kindNoAnswer
	kindGarbage
	kindOKForeign
)

var (
	// ChallengeThenOK answers 401 (407 with WithProxyAuth) and accepts
	// the authenticated retry. It is the default.
	ChallengeThenOK = Behaviour{kind: kindChallenge}
	// AlwaysOK accepts without authentication.
	AlwaysOK = Behaviour{kind: kindOK}
	// Answer403 refuses with 403 Forbidden.
	Answer403 = Behaviour{kind: kind403}
	// NoAnswer drops the request.
	NoAnswer = Behaviour{kind: kindNoAnswer}
	// Garbage answers bytes that are not SIP.
	Garbage = Behaviour{kind: kindGarbage}
	// OKForeignContact answers 200 without authentication and without
	// storing the request's Contact: the response lists only another
	// device's binding and carries "Expires: 3600", like a registrar that
	// silently dropped ours.
	OKForeignContact = Behaviour{kind: kindOKForeign}
)

// Answer423 answers 423 Interval Too Brief with Min-Expires: minExpires
// to requests asking for 0 < Expires < minExpires, and challenges the rest.
func Answer423(minExpires int) Behaviour { return Behaviour{kind: kind423, n: minExpires} }

// Answer503 answers 503 Service Unavailable with Retry-After.
func Answer503(retryAfter time.Duration) Behaviour {
	return Behaviour{kind: kind503, n: int(retryAfter / time.Second)}
}

func (b Behaviour) String() string {
	switch b.kind {
	case kindChallenge:
		return "ChallengeThenOK"
	case kindOK:
		return "AlwaysOK"
	case kind423:
		return fmt.Sprintf("Answer423(%d)", b.n)
	case kind503:
		return fmt.Sprintf("Answer503(%ds)", b.n)
	case kind403:
		return "Answer403"
	case kindNoAnswer:
		return "NoAnswer"
	case kindGarbage:
		return "Garbage"
	case kindOKForeign:
		return "OKForeignContact"
	}
	return "?"
}

// RegistrarOption configures NewRegistrar.
type RegistrarOption func(*Registrar)

// WithBehaviour sets the default behaviour for every user.
func WithBehaviour(b Behaviour) RegistrarOption { return func(r *Registrar) { r.def = b } }

// WithRealm sets the digest realm (default "sipis.test").
func WithRealm(realm string) RegistrarOption { return func(r *Registrar) { r.realm = realm } }

// WithPassword sets the password of one auth user. Users without one have
// the password "pw-"+user.
func WithPassword(user, password string) RegistrarOption {
	return func(r *Registrar) { r.passwords[user] = password }
}

// WithProxyAuth makes the registrar challenge like a proxy: 407 with
// Proxy-Authenticate, checking Proxy-Authorization (RFC 3261 §22.3).
func WithProxyAuth() RegistrarOption { return func(r *Registrar) { r.proxyAuth = true } }

// WithAlgorithm sets the digest algorithm offered: "MD5" (default) or
// "SHA-256" (RFC 7616).
func WithAlgorithm(alg string) RegistrarOption { return func(r *Registrar) { r.alg = alg } }

// WithMaxExpires caps granted lifetimes (default 3600).
func WithMaxExpires(sec int) RegistrarOption { return func(r *Registrar) { r.maxExpires = sec } }

// WithExpiresHeader adds "Expires: sec" to every 200, to check that
// clients prefer their Contact's expires parameter.
func WithExpiresHeader(sec int) RegistrarOption { return func(r *Registrar) { r.expiresHeader = sec } }

// WithClock replaces time.Now for binding expiry.
func WithClock(now func() time.Time) RegistrarOption { return func(r *Registrar) { r.now = now } }

// WithOneTimeNonces makes the registrar take each nonce once: credentials with a nonce it
// already accepted are answered with code, or, when code is 0, with a new challenge marked
// stale=true (RFC 7616 §3.3). By default a nonce is good until ExpireNonces.
func WithOneTimeNonces(code int) RegistrarOption {
	return func(r *Registrar) { r.oneTime, r.reuseCode = true, code }
}

// Registrar is a fake SIP registrar on 127.0.0.1, UDP and TCP on the same
// port.
type Registrar struct {
	udp           *net.UDPConn
	tcp           net.Listener
	def           Behaviour
	realm         string
	alg           string
	proxyAuth     bool
	maxExpires    int
	expiresHeader int
	now           func() time.Time
	key           []byte
	oneTime       bool
	reuseCode     int

	mu        sync.Mutex
	nonceKey  []byte              // signs nonces; ExpireNonces replaces it
	used      map[string]struct{} // with oneTime: nonces accepted once
	passwords map[string]string
	perUser   map[string]Behaviour
	scripts   map[string][]Behaviour
	bindings  map[string]map[string]time.Time // user -> contact URI -> expiry
	last      map[string]string
	times     map[string][]time.Time
	requests  int
	// Answers to recent requests by branch, in two generations rotated
	// every 32 s (Timer J), for retransmissions.
	txCache, txCacheOld map[string][]byte
	txRotated           time.Time
	conns               map[net.Conn]struct{}

	wg     sync.WaitGroup
	closed bool
}

// Contact is one registered contact.
type Contact struct {
	URI     string
	Expires int
}

// NewRegistrar starts a fake registrar; it stops in t.Cleanup.
func NewRegistrar(t testing.TB, opts ...RegistrarOption) *Registrar {
	t.Helper()
	r, err := StartRegistrar(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartRegistrar starts a fake registrar outside a test (the load tool uses it); the caller
// closes it.
func StartRegistrar(opts ...RegistrarOption) (*Registrar, error) {
	r := &Registrar{
		realm:      "sipis.test",
		alg:        "MD5",
		maxExpires: 3600,
		now:        time.Now,
		key:        make([]byte, 16),
		nonceKey:   make([]byte, 16),
		used:       map[string]struct{}{},
		passwords:  map[string]string{},
		perUser:    map[string]Behaviour{},
		scripts:    map[string][]Behaviour{},
		bindings:   map[string]map[string]time.Time{},
		last:       map[string]string{},
		times:      map[string][]time.Time{},
		txCache:    map[string][]byte{},
		txRotated:  time.Now(),
		conns:      map[net.Conn]struct{}{},
	}
	_, _ = rand.Read(r.key)
	_, _ = rand.Read(r.nonceKey)
	for _, o := range opts {
		o(r)
	}
	var err error
	for range 20 {
		r.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, fmt.Errorf("siptest: listen udp: %w", err)
		}
		_ = r.udp.SetReadBuffer(4 << 20)
		_ = r.udp.SetWriteBuffer(4 << 20)
		r.tcp, err = net.Listen("tcp", r.udp.LocalAddr().String())
		if err == nil {
			break
		}
		r.udp.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("siptest: listen tcp on the udp port: %w", err)
	}
	for range 2 {
		r.wg.Add(1)
		go r.serveUDP()
	}
	r.wg.Add(1)
	go r.serveTCP()
	return r, nil
}

// Close stops the registrar; it is called by t.Cleanup.
func (r *Registrar) Close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.udp.Close()
	r.tcp.Close()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Addr returns "127.0.0.1:port" (UDP and TCP).
func (r *Registrar) Addr() string { return r.udp.LocalAddr().String() }

// Host returns "127.0.0.1".
func (r *Registrar) Host() string { return "127.0.0.1" }

// Port returns the UDP and TCP port.
func (r *Registrar) Port() int { return r.udp.LocalAddr().(*net.UDPAddr).Port }

// SetBehaviour sets how REGISTERs without credentials for user are
// answered.
func (r *Registrar) SetBehaviour(user string, b Behaviour) {
	r.mu.Lock()
	r.perUser[user] = b
	r.mu.Unlock()
}

// SetScript queues behaviours for user's next REGISTERs without
// credentials, one each; after the script the user's or default behaviour
// applies again.
func (r *Registrar) SetScript(user string, bs ...Behaviour) {
	r.mu.Lock()
	r.scripts[user] = append([]Behaviour(nil), bs...)
	r.mu.Unlock()
}

// Requests returns how many requests were received (retransmissions
// included).
func (r *Registrar) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests
}

// LastRequest returns the last REGISTER for the AOR user as text.
func (r *Registrar) LastRequest(user string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[user]
}

// RegisterTimes returns when REGISTERs for user arrived.
func (r *Registrar) RegisterTimes(user string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.times[user]...)
}

// Contacts returns user's current bindings, sorted by URI.
func (r *Registrar) Contacts(user string) []Contact {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []Contact
	for uri, exp := range r.bindings[user] {
		if left := int(exp.Sub(now).Round(time.Second) / time.Second); left > 0 {
			out = append(out, Contact{URI: uri, Expires: left})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	return out
}

// Bindings returns user's current contacts as "<uri>;expires=N".
func (r *Registrar) Bindings(user string) []string {
	var out []string
	for _, c := range r.Contacts(user) {
		out = append(out, fmt.Sprintf("<%s>;expires=%d", c.URI, c.Expires))
	}
	return out
}

func (r *Registrar) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, src, err := r.udp.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if out := r.handle(buf[:n], src.String(), "UDP"); out != nil {
			_, _ = r.udp.WriteToUDP(out, src)
		}
	}
}

func (r *Registrar) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.conns, c)
				r.mu.Unlock()
				c.Close()
			}()
			br := bufio.NewReader(c)
			for {
				msg, err := readFramed(br)
				if err != nil {
					return
				}
				if out := r.handle(msg, c.RemoteAddr().String(), "TCP"); out != nil {
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}
		}()
	}
}

// readFramed reads one message from a stream by Content-Length.
func readFramed(br *bufio.Reader) ([]byte, error) {
	var head bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if head.Len() == 0 && strings.TrimRight(line, "\r\n") == "" {
			continue
		}
		head.WriteString(line)
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		if head.Len() > 64<<10 {
			return nil, errMalformed
		}
	}
	n := 0
	for l := range strings.SplitSeq(head.String(), "\n") {
		name, v, ok := strings.Cut(l, ":")
		if ok && (strings.EqualFold(strings.TrimSpace(name), "content-length") || strings.EqualFold(strings.TrimSpace(name), "l")) {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if n < 0 || n > 1<<20 {
		return nil, errMalformed
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	return append(head.Bytes(), body...), nil
}

// handle answers one message; nil means no answer.
func (r *Registrar) handle(raw []byte, src, transport string) []byte {
	m, err := parseMessage(raw)
	if err != nil || !m.request {
		return nil
	}
	vias := m.all("via")
	if len(vias) == 0 || m.get("call-id") == "" || m.get("cseq") == "" {
		return nil
	}
	branch := ""
	if _, ps := viaParams(vias[0]); ps != nil {
		branch = ps["branch"]
	}
	cacheKey := branch + "|" + m.method
	now := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if now.Sub(r.txRotated) > 32*time.Second {
		r.txCacheOld, r.txCache, r.txRotated = r.txCache, map[string][]byte{}, now
	}
	if branch != "" {
		if b, ok := r.txCache[cacheKey]; ok {
			return b // retransmission: same answer (RFC 3261 §17.2.2)
		}
		if b, ok := r.txCacheOld[cacheKey]; ok {
			return b
		}
	}
	var out []byte
	switch m.method {
	case "REGISTER":
		out = r.register(m, raw, src)
	case "OPTIONS":
		out = r.response(m, src, 200, "OK", "Allow: REGISTER, OPTIONS")
	case "ACK":
		return nil
	default:
		out = r.response(m, src, 405, "Method Not Allowed", "Allow: REGISTER, OPTIONS")
	}
	if out != nil && branch != "" {
		r.txCache[cacheKey] = out
	}
	return out
}

func viaParams(via string) (string, map[string]string) {
	sentBy, rest, _ := strings.Cut(via, ";")
	ps := map[string]string{}
	for p := range strings.SplitSeq(rest, ";") {
		k, v, _ := strings.Cut(p, "=")
		ps[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return sentBy, ps
}

// register runs with r.mu held.
func (r *Registrar) register(m *message, raw []byte, src string) []byte {
	toURI, _ := nameAddr(m.get("to"))
	user := uriUser(toURI)
	r.last[user] = string(raw)
	r.times[user] = append(r.times[user], r.now())

	credHdr, chalHdr, chalCode, chalReason := "authorization", "WWW-Authenticate", 401, "Unauthorized"
	if r.proxyAuth {
		credHdr, chalHdr, chalCode, chalReason = "proxy-authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required"
	}
	if cred := m.get(credHdr); cred != "" {
		ok, stale := r.checkDigest(cred, m.method)
		if ok && r.oneTime {
			ps, _ := authParams(cred)
			if _, seen := r.used[ps["nonce"]]; seen {
				if r.reuseCode != 0 {
					return r.response(m, src, r.reuseCode, "Nonce Reused")
				}
				ok, stale = false, true
			}
			r.used[ps["nonce"]] = struct{}{}
		}
		if ok {
			return r.accept(m, src, user)
		}
		if stale {
			return r.response(m, src, chalCode, chalReason, chalHdr+": "+r.challenge()+", stale=true")
		}
		return r.response(m, src, chalCode, chalReason, chalHdr+": "+r.challenge())
	}
	b := r.def
	if bu, ok := r.perUser[user]; ok {
		b = bu
	}
	if s := r.scripts[user]; len(s) > 0 {
		b, r.scripts[user] = s[0], s[1:]
	}
	switch b.kind {
	case kindOK:
		return r.accept(m, src, user)
	case kind403:
		return r.response(m, src, 403, "Forbidden")
	case kind503:
		return r.response(m, src, 503, "Service Unavailable", "Retry-After: "+strconv.Itoa(b.n))
	case kindNoAnswer:
		return nil
	case kindGarbage:
		return []byte("SIP/2.0 2OO OK\r\nVia garbage\x00\x01\xff\r\n\r\n")
	case kindOKForeign:
		return r.response(m, src, 200, "OK", "Contact: <sip:other-device@192.0.2.9:5060>;expires=3600", "Expires: 3600")
	case kind423:
		if e := requestedExpires(m); e > 0 && e < b.n {
			return r.response(m, src, 423, "Interval Too Brief", "Min-Expires: "+strconv.Itoa(b.n))
		}
	}
	return r.response(m, src, chalCode, chalReason, chalHdr+": "+r.challenge())
}

func requestedExpires(m *message) int {
	for _, c := range m.all("contact") {
		if _, ps := nameAddr(c); ps["expires"] != "" {
			n, _ := strconv.Atoi(ps["expires"])
			return n
		}
	}
	n, err := strconv.Atoi(m.get("expires"))
	if err != nil {
		return 3600
	}
	return n
}

// accept updates the bindings (RFC 3261 §10.3 steps 6-8) and answers 200
// with every current contact of the AOR.
func (r *Registrar) accept(m *message, src, user string) []byte {
	now := r.now()
	hdrExp := -1
	if v := m.get("expires"); v != "" {
		hdrExp, _ = strconv.Atoi(v)
	}
	bs := r.bindings[user]
	if bs == nil {
		bs = map[string]time.Time{}
		r.bindings[user] = bs
	}
	for _, c := range m.all("contact") {
		if strings.TrimSpace(c) == "*" {
			if hdrExp == 0 {
				clear(bs)
			}
			continue
		}
		uri, ps := nameAddr(c)
		exp := hdrExp
		if v, ok := ps["expires"]; ok {
			exp, _ = strconv.Atoi(v)
		}
		if exp < 0 {
			exp = 3600
		}
		exp = min(exp, r.maxExpires)
		if exp == 0 {
			delete(bs, uri)
			continue
		}
		bs[uri] = now.Add(time.Duration(exp) * time.Second)
	}
	var extra []string
	uris := make([]string, 0, len(bs))
	for uri, exp := range bs {
		if !exp.After(now) {
			delete(bs, uri)
			continue
		}
		uris = append(uris, uri)
	}
	sort.Strings(uris)
	for _, uri := range uris {
		left := int((bs[uri].Sub(now) + time.Second/2) / time.Second)
		extra = append(extra, fmt.Sprintf("Contact: <%s>;expires=%d", uri, left))
	}
	if r.expiresHeader > 0 {
		extra = append(extra, "Expires: "+strconv.Itoa(r.expiresHeader))
	}
	return r.response(m, src, 200, "OK", extra...)
}

// response builds a response to m (RFC 3261 §8.2.6), adding received and
// rport to the top Via (RFC 3581 §4).
func (r *Registrar) response(m *message, src string, code int, reason string, extra ...string) []byte {
	var b strings.Builder
	b.Grow(512)
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	host, port, _ := net.SplitHostPort(src)
	for i, v := range m.all("via") {
		if i == 0 {
			sentBy, rest, _ := strings.Cut(v, ";")
			var ps []string
			for p := range strings.SplitSeq(rest, ";") {
				k, _, _ := strings.Cut(p, "=")
				switch strings.ToLower(strings.TrimSpace(k)) {
				case "rport":
					p = "rport=" + port
				case "received", "":
					continue
				}
				ps = append(ps, p)
			}
			ps = append(ps, "received="+host)
			v = sentBy + ";" + strings.Join(ps, ";")
		}
		b.WriteString("Via: " + v + "\r\n")
	}
	to := m.get("to")
	if _, ps := nameAddr(to); ps["tag"] == "" && code > 100 {
		to += ";tag=" + hex.EncodeToString(r.key[:4])
	}
	b.WriteString("From: " + m.get("from") + "\r\n")
	b.WriteString("To: " + to + "\r\n")
	b.WriteString("Call-ID: " + m.get("call-id") + "\r\n")
	b.WriteString("CSeq: " + m.get("cseq") + "\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.WriteString("Server: siptest\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String())
}

// challenge returns a stateless digest challenge: the nonce carries its own
// MAC so any number of clients can be challenged without bookkeeping.
func (r *Registrar) challenge() string {
	salt := make([]byte, 8)
	_, _ = rand.Read(salt)
	s := hex.EncodeToString(salt)
	mac := hmac.New(sha256.New, r.nonceKey)
	mac.Write([]byte(s))
	nonce := s + hex.EncodeToString(mac.Sum(nil)[:8])
	return fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"`, r.realm, nonce, r.alg)
}

func (r *Registrar) nonceOK(nonce string) bool {
	if len(nonce) != 32 {
		return false
	}
	mac := hmac.New(sha256.New, r.nonceKey)
	mac.Write([]byte(nonce[:16]))
	return hmac.Equal([]byte(nonce[16:]), []byte(hex.EncodeToString(mac.Sum(nil)[:8])))
}

func (r *Registrar) password(user string) string {
	if p, ok := r.passwords[user]; ok {
		return p
	}
	return "pw-" + user
}

// ExpireNonces makes every nonce given so far stale: the next credentials that carry one are
// answered with a new challenge marked stale=true, as a registrar does once its nonce
// lifetime has passed.
func (r *Registrar) ExpireNonces() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nonceKey = make([]byte, 16)
	_, _ = rand.Read(r.nonceKey)
}

// checkDigest verifies credentials (RFC 2617 §3.2.2, RFC 7616 §3.4.1); stale reports
// credentials that would be right but for a nonce that is no longer good.
func (r *Registrar) checkDigest(cred, method string) (ok, stale bool) {
	ps, ok := authParams(cred)
	if !ok || ps["realm"] != r.realm {
		return false, false
	}
	if !r.nonceOK(ps["nonce"]) {
		return false, len(ps["nonce"]) == 32
	}
	var h func() hash.Hash
	switch strings.ToUpper(ps["algorithm"]) {
	case "", "MD5":
		h = md5.New
	case "SHA-256":
		h = sha256.New
	default:
		return false, false
	}
	if !strings.EqualFold(ps["algorithm"], r.alg) && !(ps["algorithm"] == "" && r.alg == "MD5") {
		return false, false
	}
	hx := func(parts ...string) string {
		d := h()
		d.Write([]byte(strings.Join(parts, ":")))
		return hex.EncodeToString(d.Sum(nil))
	}
	ha1 := hx(ps["username"], r.realm, r.password(ps["username"]))
	ha2 := hx(method, ps["uri"])
	var want string
	if ps["qop"] == "auth" {
		want = hx(ha1, ps["nonce"], ps["nc"], ps["cnonce"], "auth", ha2)
	} else {
		want = hx(ha1, ps["nonce"], ha2)
	}
	return hmac.Equal([]byte(want), []byte(strings.ToLower(ps["response"]))), false
}
