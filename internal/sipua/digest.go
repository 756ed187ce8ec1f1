package sipua

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"unique"

	"github.com/emiago/sipgo/sip"
)

// challenge is a parsed digest challenge (RFC 7616 §3.3, RFC 3261 §22.4).
type challenge struct {
	realm, nonce, opaque, algorithm string
	next                            string // nextnonce, of Authentication-Info
	qop                             []string
}

var errNotDigest = errors.New("not a Digest challenge")

// parseChallenge parses `Digest realm="x", nonce="y", qop="auth,auth-int"`.
// It is written here rather than taken from a library because it runs
// for every challenged REGISTER and must not allocate much.
func parseChallenge(v string) (challenge, error) {
	var c challenge
	v = strings.TrimSpace(v)
	if len(v) < 7 || !strings.EqualFold(v[:6], "Digest") || (v[6] != ' ' && v[6] != '\t') {
		return c, errNotDigest
	}
	rest := v[7:]
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return c, fmt.Errorf("bad auth-param in %q", v)
		}
		key := strings.TrimSpace(rest[:eq])
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				return c, fmt.Errorf("unterminated quoted string in %q", v)
			}
			val = strings.ReplaceAll(rest[1:end], `\`, "")
			rest = rest[end+1:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val = strings.TrimSpace(rest[:end])
			rest = rest[end:]
		}
		switch strings.ToLower(key) {
		case "realm":
			c.realm = val
		case "nonce":
			c.nonce = val
		case "opaque":
			c.opaque = val
		case "nextnonce":
			c.next = val
		case "algorithm":
			c.algorithm = strings.ToUpper(val)
		case "qop":
			for q := range strings.SplitSeq(val, ",") {
				c.qop = append(c.qop, strings.ToLower(strings.TrimSpace(q)))
			}
		}
	}
	if c.nonce == "" {
		return c, fmt.Errorf("challenge without nonce: %q", v)
	}
	return c, nil
}

// hasher returns the hash for an algorithm and its rank (higher is
// stronger); nil if unsupported. "-sess" variants are not supported.
func hasher(alg string) (func() hash.Hash, int) {
	switch alg {
	case "", "MD5":
		return md5.New, 1
	case "SHA-256":
		return sha256.New, 2
	case "SHA-512-256":
		return sha512.New512_256, 3
	}
	return nil, 0
}

func (c *challenge) offersQOP(q string) bool {
	for _, x := range c.qop {
		if x == q {
			return true
		}
	}
	return false
}

// Nonce is a digest challenge kept after it was answered, so that the next REGISTER of the
// same binding carries credentials at once and a refresh is one transaction (REGISTER, 200)
// instead of two (REGISTER, 401, REGISTER, 200). RFC 7616 §3.4 (RFC 2617 §3.2.2) lets a client
// reuse a nonce for later requests with the nonce count increased each time, until the server
// answers 401 with stale=true; Register then answers that new challenge at once. The zero
// value is not useful: a Nonce comes from Result.Nonce.
type Nonce struct {
	realm, nonce, opaque, algorithm string
	qop                             bool   // qop=auth: send cnonce and nc
	proxy                           bool   // a 407: Proxy-Authorization
	nc                              uint32 // the last nonce count sent with this nonce
}

// intern returns the canonical copy of a realm or algorithm: a node holds one nonce per
// instance, most of them from a few registrars, and each would otherwise keep its own copy
// of the same realm. unique frees copies no one holds, so random realms cannot pile up.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// chooseChallenge picks the strongest digest challenge of a 401/407 we support: RFC 8760
// lets a server offer several, and SHA-256 is preferred over MD5 (RFC 7616 §3.7). qop=auth is
// used when offered (auth-int alone is refused: REGISTER has no body worth protecting and few
// servers ask for it).
func chooseChallenge(res *sip.Response) (*Nonce, error) {
	hdrName := "WWW-Authenticate"
	if res.StatusCode == 407 {
		hdrName = "Proxy-Authenticate"
	}
	var best challenge
	bestRank := 0
	var lastErr error
	for _, h := range res.GetHeaders(hdrName) {
		c, err := parseChallenge(h.Value())
		if err != nil {
			lastErr = err
			continue
		}
		_, rank := hasher(c.algorithm)
		if rank == 0 {
			lastErr = fmt.Errorf("unsupported algorithm %q", c.algorithm)
			continue
		}
		if len(c.qop) > 0 && !c.offersQOP("auth") {
			lastErr = fmt.Errorf("unsupported qop %q", strings.Join(c.qop, ","))
			continue
		}
		if rank > bestRank {
			best, bestRank = c, rank
		}
	}
	if bestRank == 0 {
		if lastErr == nil {
			lastErr = fmt.Errorf("no %s header", hdrName)
		}
		return nil, fmt.Errorf("sipua: %d challenge: %w", res.StatusCode, lastErr)
	}
	// Clones: the parsed values point into the whole response, which the Nonce outlives.
	return &Nonce{realm: intern(best.realm), nonce: strings.Clone(best.nonce), opaque: strings.Clone(best.opaque), algorithm: intern(best.algorithm),
		qop: best.offersQOP("auth"), proxy: res.StatusCode == 407}, nil
}

// authorization answers the strongest challenge of res (a 401 or 407) for b.
func authorization(res *sip.Response, b *Binding, uri string) (string, error) {
	n, err := chooseChallenge(res)
	if err != nil {
		return "", err
	}
	return n.credentials(b, uri), nil
}

// credentials returns the Authorization (or Proxy-Authorization) header line for one more
// request with n, counting it in n.nc (RFC 7616 §3.4: nc is the hex count of requests sent
// with this nonce, including this one).
func (n *Nonce) credentials(b *Binding, uri string) string {
	credName := "Authorization"
	if n.proxy {
		credName = "Proxy-Authorization"
	}
	user := b.AuthUser
	if user == "" {
		user = b.User
	}
	newHash, _ := hasher(n.algorithm)
	h := newHash()
	var sumBuf [64]byte
	var hexBuf [128]byte
	sum := func(parts ...string) string {
		h.Reset()
		for i, p := range parts {
			if i > 0 {
				h.Write([]byte{':'})
			}
			io.WriteString(h, p)
		}
		d := h.Sum(sumBuf[:0])
		return string(hex.AppendEncode(hexBuf[:0], d))
	}
	// RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 for MD5).
	ha1 := sum(user, n.realm, b.Password)
	ha2 := sum("REGISTER", uri)
	n.nc++
	var s strings.Builder
	s.Grow(320)
	s.WriteString(credName)
	s.WriteString(`: Digest username="`)
	s.WriteString(quoteEscape(user))
	s.WriteString(`", realm="`)
	s.WriteString(quoteEscape(n.realm))
	s.WriteString(`", nonce="`)
	s.WriteString(quoteEscape(n.nonce))
	s.WriteString(`", uri="`)
	s.WriteString(uri)
	s.WriteString(`", response="`)
	if n.qop {
		var ncBuf [8]byte
		nc := fmt.Appendf(ncBuf[:0], "%08x", n.nc)
		cnonce := randHex(8)
		s.WriteString(sum(ha1, n.nonce, string(nc), cnonce, "auth", ha2))
		s.WriteString(`", cnonce="`)
		s.WriteString(cnonce)
		s.WriteString(`", qop=auth, nc=`)
		s.Write(nc)
	} else {
		s.WriteString(sum(ha1, n.nonce, ha2))
		s.WriteString(`"`)
	}
	if n.algorithm != "" {
		s.WriteString(", algorithm=")
		s.WriteString(n.algorithm)
	}
	if n.opaque != "" {
		s.WriteString(`, opaque="`)
		s.WriteString(quoteEscape(n.opaque))
		s.WriteString(`"`)
	}
	return s.String()
}

// nextNonce returns the nextnonce of a 2xx's Authentication-Info (RFC 7616 §3.5, RFC 2617
// §3.2.3): the server asks that the next request use it, with the count starting again.
func nextNonce(res *sip.Response, proxy bool) string {
	name := "Authentication-Info"
	if proxy {
		name = "Proxy-Authentication-Info"
	}
	h := res.GetHeader(name)
	if h == nil {
		return ""
	}
	c, err := parseChallenge("Digest " + h.Value() + ", nonce=x")
	if err != nil {
		return ""
	}
	return c.next
}

func quoteEscape(v string) string {
	if !strings.ContainsAny(v, `"\`) {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return strings.ReplaceAll(v, `"`, `\"`)
}
