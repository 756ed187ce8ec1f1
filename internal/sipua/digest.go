package sipua

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// challenge is a parsed digest challenge (RFC 7616 §3.3, RFC 3261 §22.4).
type challenge struct {
	realm, nonce, opaque, algorithm string
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

// authorization answers the strongest digest challenge we support: RFC
// 8760 lets a server offer several, and SHA-256 is preferred over MD5 (RFC
// 7616 §3.7). qop=auth is used when offered (auth-int alone is refused:
// REGISTER has no body worth protecting and few servers ask for it).
func authorization(res *sip.Response, b *Binding, uri string) (string, error) {
	hdrName, credName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		hdrName, credName = "Proxy-Authenticate", "Proxy-Authorization"
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
		return "", fmt.Errorf("sipua: %d challenge: %w", res.StatusCode, lastErr)
	}
	user := b.AuthUser
	if user == "" {
		user = b.User
	}
	newHash, _ := hasher(best.algorithm)
	h := newHash()
	sum := func(parts ...string) string {
		h.Reset()
		for i, p := range parts {
			if i > 0 {
				h.Write([]byte{':'})
			}
			h.Write([]byte(p))
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	// RFC 7616 §3.4.1 (RFC 2617 §3.2.2.1 for MD5).
	ha1 := sum(user, best.realm, b.Password)
	ha2 := sum("REGISTER", uri)
	var s strings.Builder
	s.Grow(300)
	s.WriteString(credName)
	s.WriteString(`: Digest username="`)
	s.WriteString(quoteEscape(user))
	s.WriteString(`", realm="`)
	s.WriteString(quoteEscape(best.realm))
	s.WriteString(`", nonce="`)
	s.WriteString(quoteEscape(best.nonce))
	s.WriteString(`", uri="`)
	s.WriteString(uri)
	s.WriteString(`", response="`)
	if best.offersQOP("auth") {
		const nc = "00000001"
		cnonce := randHex(8)
		s.WriteString(sum(ha1, best.nonce, nc, cnonce, "auth", ha2))
		s.WriteString(`", cnonce="`)
		s.WriteString(cnonce)
		s.WriteString(`", qop=auth, nc=`)
		s.WriteString(nc)
	} else {
		s.WriteString(sum(ha1, best.nonce, ha2))
		s.WriteString(`"`)
	}
	if best.algorithm != "" {
		s.WriteString(", algorithm=")
		s.WriteString(best.algorithm)
	}
	if best.opaque != "" {
		s.WriteString(`, opaque="`)
		s.WriteString(quoteEscape(best.opaque))
		s.WriteString(`"`)
	}
	return s.String(), nil
}

func quoteEscape(v string) string {
	if !strings.ContainsAny(v, `"\`) {
		return v
	}
	v = strings.ReplaceAll(v, `\`, `\\`)
	return strings.ReplaceAll(v, `"`, `\"`)
}
