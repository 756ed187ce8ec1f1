package sipua

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// wireRequest is what the UA reads from a request's text itself, without sipgo's parser:
// the start line and the literal header fields a response copies (RFC 3261 §8.2.6.2). A
// response built from it carries Via, From, To, Call-ID and CSeq exactly as the request
// had them (unfolded), so that a request sipgo cannot parse can still be answered and a
// parsed one is not answered with sipgo's re-serialisation of its headers (RFC 4475
// §3.1.1.1 wsinv: parameters keep their spelling, a To tag is never added twice).
type wireRequest struct {
	method, uri, version string
	// startOK is false when the request line is not exactly Method SP Request-URI SP
	// SIP-Version (RFC 3261 §7.1, RFC 4475 §3.1.2.9 lwsruri, §3.1.2.10 lwsstart,
	// §3.1.2.11 trws, §3.1.2.6 ltgtruri).
	startOK bool

	via          []string // every Via value line, in order
	recordRoute  []string
	from, to     string
	callID, cseq string
	// counts of the headers that must appear once (RFC 3261 §20; RFC 4475 §3.1.2.8 multi01,
	// §3.1.2.4 mcl01).
	counts map[string]int
	// contentLengths holds every Content-Length value as written.
	contentLengths []string
	// bareCR is set when the header section has a CR not followed by LF.
	bareCR bool
}

// compactNames maps compact header names (RFC 3261 §7.3.3) to the long form, lower case.
var compactNames = map[string]string{
	"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length", "m": "contact",
	"c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject",
}

// readWire reads raw, a request's bytes (at least its header section). It reports false
// when raw is a response or has no start line.
//
// Its cyclomatic complexity is high (30) because it is one pass over hostile text, one case
// per header it keeps; split into helpers, each would re-check the same line state. The shape
// is kept for that reason; FuzzWireResponse and the RFC 4475 tests hold it.
func readWire(raw []byte) (*wireRequest, bool) {
	head := raw
	if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
		head = head[:i]
	} else if i := bytes.Index(head, []byte("\n\n")); i >= 0 {
		head = head[:i]
	}
	text := strings.ReplaceAll(string(head), "\r\n", "\n")
	// A CR outside CRLF ends no line (RFC 3261 §7.3: lines end in CRLF) and must not reach
	// a response, where it could end a line the peer reads.
	bareCR := strings.Contains(text, "\r")
	text = strings.ReplaceAll(text, "\r", " ")
	lines := strings.Split(text, "\n")
	if len(lines) == 0 || lines[0] == "" || strings.HasPrefix(lines[0], "SIP/") {
		return nil, false
	}
	w := &wireRequest{counts: make(map[string]int), bareCR: bareCR}
	start := lines[0]
	parts := strings.Split(start, " ")
	if len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "" {
		w.method, w.uri, w.version, w.startOK = parts[0], parts[1], parts[2], true
	} else if f := strings.Fields(start); len(f) >= 3 {
		w.method, w.uri, w.version = f[0], f[1], f[len(f)-1]
	} else {
		return nil, false
	}
	// Unfold (RFC 3261 §7.3.1: a line starting with whitespace continues the previous one).
	var fields []string
	for _, l := range lines[1:] {
		if l != "" && (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] = strings.TrimRight(fields[len(fields)-1], " \t") + " " + strings.TrimLeft(l, " \t")
			continue
		}
		fields = append(fields, l)
	}
	for _, f := range fields {
		c := strings.IndexByte(f, ':')
		if c <= 0 {
			continue
		}
		name := strings.ToLower(strings.TrimSpace(f[:c]))
		if long, ok := compactNames[name]; ok {
			name = long
		}
		value := strings.TrimSpace(f[c+1:])
		w.counts[name]++
		switch name {
		case "via":
			w.via = append(w.via, value)
		case "record-route":
			w.recordRoute = append(w.recordRoute, value)
		case "from":
			if w.from == "" {
				w.from = value
			}
		case "to":
			if w.to == "" {
				w.to = value
			}
		case "call-id":
			if w.callID == "" {
				w.callID = value
			}
		case "cseq":
			if w.cseq == "" {
				w.cseq = value
			}
		case "content-length":
			w.contentLengths = append(w.contentLengths, value)
		}
	}
	return w, true
}

// check returns the response the request's wire form calls for before it is parsed, or 0:
// 505 for a SIP version other than 2.0 (RFC 3261 §21.5.10, RFC 4475 §3.1.2.16
// badvers), 416 for a Request-URI scheme other than sip/sips (RFC 3261
// §8.2.2.1, RFC 4475 §3.3.2 unkscm, §3.3.3 novelsc), 400 for a malformed request line or
// a header that must appear once appearing twice (RFC 3261 §7.3.1, §20; RFC 4475
// §3.1.2.8 multi01, §3.1.2.4 mcl01), a CSeq whose method is not the request's, or an
// unbalanced quote in From or To.
func (w *wireRequest) check() (int, string) {
	if !w.startOK {
		return 400, "Bad Request (malformed request line)"
	}
	if w.bareCR {
		return 400, "Bad Request (CR without LF)"
	}
	if w.version != "SIP/2.0" {
		return 505, "Version Not Supported"
	}
	scheme, _, ok := strings.Cut(w.uri, ":")
	if !ok || !validScheme(scheme) {
		return 400, "Bad Request (malformed Request-URI)"
	}
	if s := strings.ToLower(scheme); s != "sip" && s != "sips" {
		return 416, "Unsupported URI Scheme"
	}
	for _, h := range []string{"call-id", "cseq", "from", "to", "max-forwards"} {
		if w.counts[h] > 1 {
			return 400, "Bad Request (more than one " + h + ")"
		}
	}
	for _, v := range w.contentLengths[min(1, len(w.contentLengths)):] {
		if v != w.contentLengths[0] {
			return 400, "Bad Request (conflicting Content-Length)"
		}
	}
	if f := strings.Fields(w.cseq); w.cseq != "" && (len(f) != 2 || f[1] != w.method) {
		// RFC 3261 §8.1.1.5: the CSeq method matches the request's (RFC 4475 §3.1.2.17
		// mismatch01, §3.1.2.18 mismatch02).
		return 400, "Bad Request (CSeq method does not match the request line)"
	}
	for _, h := range []struct{ name, v string }{{"From", w.from}, {"To", w.to}} {
		if h.v != "" && !quotesBalanced(h.v) {
			return 400, "Bad Request (unbalanced quotes in " + h.name + ")"
		}
	}
	return 0, ""
}

// canAnswer reports whether a response can be routed: it needs a Via (RFC 3261 §18.2.2).
func (w *wireRequest) canAnswer() bool { return len(w.via) > 0 && w.method != "ACK" }

// validScheme reports whether s is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3261
// §25.1 scheme).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// quotesBalanced reports whether every quoted string in v is closed (RFC 3261 §25.1
// quoted-string, with quoted-pair escapes; RFC 4475 §3.1.2.7 quotbal).
func quotesBalanced(v string) bool {
	in := false
	for i := 0; i < len(v); i++ {
		switch {
		case in && v[i] == '\\':
			i++
		case v[i] == '"':
			in = !in
		}
	}
	return !in
}

// hasParam reports whether the header value v (outside quoted strings and angle brackets)
// has the parameter name, whatever whitespace surrounds it (RFC 3261 §7.3.1 SEMI, EQUAL).
func hasParam(v, name string) bool {
	_, ok := paramValue(v, name)
	return ok
}

// paramValue returns the value of the header parameter name in v ("" for a parameter
// without value).
func paramValue(v, name string) (string, bool) {
	for _, p := range headerParams(v) {
		k, val, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(val), true
		}
	}
	return "", false
}

// headerParams splits the parameters of the first value of a header field: the parts
// after ';' outside quotes and <>, up to the first ',' outside them.
func headerParams(v string) []string {
	var out []string
	inQ, inA := false, false
	start := -1
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case inQ && c == '\\':
			i++
		case c == '"':
			inQ = !inQ
		case inQ:
		case c == '<':
			inA = true
		case c == '>':
			inA = false
		case inA:
		case c == ';':
			if start >= 0 {
				out = append(out, v[start:i])
			}
			start = i + 1
		case c == ',':
			if start >= 0 {
				out = append(out, v[start:i])
			}
			return out
		}
	}
	if start >= 0 {
		out = append(out, v[start:])
	}
	return out
}

// firstValueEnd returns the index in v where its first comma-separated value ends.
func firstValueEnd(v string) int {
	inQ := false
	for i := 0; i < len(v); i++ {
		switch {
		case inQ && v[i] == '\\':
			i++
		case v[i] == '"':
			inQ = !inQ
		case !inQ && v[i] == ',':
			return i
		}
	}
	return len(v)
}

// viaSentBy returns the host of the sent-by of a Via value ("SIP / 2.0 / UDP host:port;...").
func viaSentBy(v string) string {
	h, _ := viaHostPort(v)
	return h
}

// sentByPort returns the port of the sent-by of a Via value, or 0.
func sentByPort(v string) int {
	_, p := viaHostPort(v)
	return p
}

func viaHostPort(v string) (string, int) {
	v = v[:firstValueEnd(v)]
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	// The sent-protocol may have LWS around its slashes (RFC 4475 §3.1.1.1).
	i := strings.LastIndexByte(v, '/')
	if i < 0 {
		return "", 0
	}
	f := strings.Fields(v[i+1:])
	if len(f) < 2 {
		return "", 0
	}
	hostport := strings.Join(f[1:], "")
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		n, _ := strconv.Atoi(p)
		return h, n
	}
	return strings.Trim(hostport, "[]"), 0
}

// topVia returns the first Via value with received and rport filled in for a request from
// source (RFC 3261 §18.2.1, RFC 3581 §4), other parameters as the request spelled them.
func topVia(v, source string) string {
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return v
	}
	end := firstValueEnd(v)
	first, rest := strings.TrimRight(v[:end], " \t"), v[end:]
	// Rebuild the first value's parameters, filling a bare rport.
	semi := strings.IndexByte(first, ';')
	base, params := first, []string(nil)
	if semi >= 0 {
		base, params = first[:semi], strings.Split(first[semi+1:], ";")
	}
	hasRport, hasReceived := false, false
	for i, p := range params {
		k, val, hasVal := strings.Cut(p, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "rport":
			hasRport = true
			if !hasVal || strings.TrimSpace(val) == "" {
				params[i] = "rport=" + port
			}
		case "received":
			hasReceived = true
		}
	}
	out := base
	for _, p := range params {
		out += ";" + p
	}
	if !hasReceived && (hasRport || host != viaSentBy(v)) {
		out += ";received=" + host
	}
	return out + rest
}

// response builds the bytes of a response to w (RFC 3261 §8.2.6): Via, From, To (with
// toTag when the request's To has none and code > 100), Call-ID and CSeq copied as the
// request had them, Record-Route for the responses that establish a dialog (§12.1.1),
// then headers, the Server header, Content-Type and Content-Length and body. The status
// line is always SIP/2.0 (RFC 4475 §3.1.2.16).
//
// It is written top to bottom in the order of the response's lines, so that it reads as the
// message it builds; its branches (cyclomatic 28) are the RFC's conditions on each line.
func (w *wireRequest) response(code int, reason, source, toTag, server string, headers []Header, contentType string, body []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for i, v := range w.via {
		if i == 0 {
			v = topVia(v, source)
		}
		b.WriteString("Via: " + v + "\r\n")
	}
	if w.method != "REGISTER" && ((code >= 180 && code < 190) || code/100 == 2 || (w.method == "INVITE" && code > 100 && code < 200)) {
		for _, v := range w.recordRoute {
			b.WriteString("Record-Route: " + v + "\r\n")
		}
	}
	if w.from != "" {
		b.WriteString("From: " + w.from + "\r\n")
	}
	if w.to != "" {
		to := w.to
		if code > 100 && toTag != "" && !hasParam(to, "tag") {
			to += ";tag=" + toTag
		}
		b.WriteString("To: " + to + "\r\n")
	}
	if w.callID != "" {
		b.WriteString("Call-ID: " + w.callID + "\r\n")
	}
	if w.cseq != "" {
		b.WriteString("CSeq: " + w.cseq + "\r\n")
	}
	hasServer := false
	for _, h := range headers {
		if strings.EqualFold(h.Name, "Content-Length") || strings.EqualFold(h.Name, "l") ||
			strings.EqualFold(h.Name, "Content-Type") || strings.EqualFold(h.Name, "c") {
			continue
		}
		if strings.EqualFold(h.Name, "Server") || strings.EqualFold(h.Name, "User-Agent") {
			hasServer = true
		}
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	if !hasServer && server != "" {
		b.WriteString("Server: " + server + "\r\n")
	}
	if contentType != "" {
		b.WriteString("Content-Type: " + contentType + "\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	b.Write(body)
	return []byte(b.String())
}
