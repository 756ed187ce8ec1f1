// Package siptest provides loopback SIP fakes for tests, shaped like
// net/http/httptest: a scripted registrar (NewRegistrar) that answers
// REGISTER with digest challenges, 423, 503, 403, silence or garbage, and a
// harness that runs a real Kamailio (StartKamailio) on 127.0.0.1.
//
// It does not import sipgo (internal/sipua is its only importer): the fake
// parses the little SIP it needs itself, which also keeps it cheap enough
// to serve thousands of REGISTER transactions per second in benchmarks.
//
// It owns the harnesses that start real peers (Kamailio, SIPp, stunnel) and the fake caller
// and device. Only tests and cmd/sipis-load (its registrar) import it; it must not be imported
// by the server, must listen on loopback only, and must bound every wait.
package siptest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// message is a parsed SIP message, just what the fakes need.
type message struct {
	request bool
	method  string // request
	uri     string // request
	status  int    // response
	reason  string // response
	headers []header
	body    []byte
}

type header struct {
	name  string // lower case, compact forms expanded
	value string
}

var compact = map[string]string{
	"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
	"l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
	"e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events",
}

var errMalformed = errors.New("siptest: malformed SIP message")

// parseMessage parses one complete SIP message (RFC 3261 §7). Header
// folding is undone; the body is cut to Content-Length when present.
func parseMessage(b []byte) (*message, error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, fmt.Errorf("%w: no end of headers", errMalformed)
	}
	head := string(b[:end])
	body := b[end+4:]
	lines := strings.Split(head, "\r\n")
	m := &message{}
	start := lines[0]
	if strings.HasPrefix(start, "SIP/2.0 ") {
		rest := start[len("SIP/2.0 "):]
		code, reason, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(code)
		if err != nil || n < 100 || n > 699 {
			return nil, fmt.Errorf("%w: status line %q", errMalformed, start)
		}
		m.status, m.reason = n, reason
	} else {
		parts := strings.Split(start, " ")
		if len(parts) != 3 || parts[2] != "SIP/2.0" || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("%w: request line %q", errMalformed, start)
		}
		m.request, m.method, m.uri = true, parts[0], parts[1]
	}
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(m.headers) > 0 {
			m.headers[len(m.headers)-1].value += " " + strings.TrimSpace(l)
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("%w: header line %q", errMalformed, l)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			return nil, fmt.Errorf("%w: empty header name", errMalformed)
		}
		if full, ok := compact[name]; ok {
			name = full
		}
		m.headers = append(m.headers, header{name, strings.TrimSpace(value)})
	}
	if cl := m.get("content-length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil || n < 0 || n > len(body) {
			return nil, fmt.Errorf("%w: Content-Length %q with %d body bytes", errMalformed, cl, len(body))
		}
		body = body[:n]
	}
	m.body = body
	return m, nil
}

// get returns the first value of a header (lower-case full name).
func (m *message) get(name string) string {
	for _, h := range m.headers {
		if h.name == name {
			return h.value
		}
	}
	return ""
}

// all returns every value of a header, splitting comma-separated lists
// for the headers that allow it (outside quotes and angle brackets).
func (m *message) all(name string) []string {
	var out []string
	for _, h := range m.headers {
		if h.name != name {
			continue
		}
		if name == "via" || name == "contact" || name == "route" || name == "record-route" {
			out = append(out, splitList(h.value)...)
		} else {
			out = append(out, h.value)
		}
	}
	return out
}

// splitList splits a header value at commas that are not inside quotes or
// angle brackets.
func splitList(v string) []string {
	var out []string
	inQ, inA, start := false, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' && (i == 0 || v[i-1] != '\\'):
			inQ = !inQ
		case c == '<' && !inQ:
			inA = true
		case c == '>' && !inQ:
			inA = false
		case c == ',' && !inQ && !inA:
			out = append(out, strings.TrimSpace(v[start:i]))
			start = i + 1
		}
	}
	if s := strings.TrimSpace(v[start:]); s != "" {
		out = append(out, s)
	}
	return out
}

// nameAddr splits a name-addr or addr-spec header value into its URI and
// its header parameters (RFC 3261 §20.10 rules: without angle brackets the
// parameters belong to the header).
func nameAddr(v string) (uri string, params map[string]string) {
	params = map[string]string{}
	rest := v
	if i := strings.IndexByte(v, '<'); i >= 0 {
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			return strings.TrimSpace(v[i+1:]), params
		}
		uri = v[i+1 : i+j]
		rest = v[i+j+1:]
	} else {
		uri, rest, _ = strings.Cut(v, ";")
		uri = strings.TrimSpace(uri)
		rest = ";" + rest
	}
	for p := range strings.SplitSeq(rest, ";") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		k, val, _ := strings.Cut(p, "=")
		params[strings.ToLower(strings.TrimSpace(k))] = strings.Trim(strings.TrimSpace(val), `"`)
	}
	return uri, params
}

// uriUser returns the user part of a sip: or sips: URI.
func uriUser(uri string) string {
	_, rest, ok := strings.Cut(uri, ":")
	if !ok {
		return ""
	}
	user, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	user, _, _ = strings.Cut(user, ";")
	user, _, _ = strings.Cut(user, ":") // user:password
	return user
}

// authParams parses `Digest k=v, k="v"` into a map.
func authParams(v string) (map[string]string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return nil, false
	}
	out := map[string]string{}
	for len(rest) > 0 {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			break
		}
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, false
		}
		k = strings.ToLower(strings.TrimSpace(k))
		after = strings.TrimLeft(after, " \t")
		var val string
		if strings.HasPrefix(after, `"`) {
			end := strings.IndexByte(after[1:], '"')
			if end < 0 {
				return nil, false
			}
			val, rest = after[1:1+end], after[2+end:]
		} else {
			val, rest, _ = strings.Cut(after, ",")
			val = strings.TrimSpace(val)
		}
		out[k] = val
	}
	return out, true
}
