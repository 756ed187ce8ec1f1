package probe

import (
	"fmt"
	"strings"
)

// transports are the SIP transports a Target may name (RFC 3261 §18,
// RFC 7118 for WebSocket).
var transports = map[string]bool{"": true, "udp": true, "tcp": true, "tls": true, "ws": true, "wss": true}

// normalize checks t and returns it with the transport in lower case.
func (t Target) normalize() (Target, error) {
	t.Transport = strings.ToLower(strings.TrimSpace(t.Transport))
	if err := checkURI(t.URI); err != nil {
		return t, err
	}
	if !transports[t.Transport] {
		return t, fmt.Errorf("target %q: unknown transport %q (want udp, tcp, tls, ws or wss)", t.URI, t.Transport)
	}
	// RFC 3261 §19.1: a sips URI asks for TLS on every hop, which UDP and
	// plain TCP or WebSocket cannot give.
	if hasPrefixFold(t.URI, "sips:") && t.Transport != "" && t.Transport != "tls" && t.Transport != "wss" {
		return t, fmt.Errorf("target %q: a sips URI cannot use transport %q", t.URI, t.Transport)
	}
	if t.Transport != "" && hasTransportParam(t.URI) {
		return t, fmt.Errorf("target %q: transport given both in the URI and as %q", t.URI, t.Transport)
	}
	if t.Interval < 0 {
		return t, fmt.Errorf("target %q: negative interval %v", t.URI, t.Interval)
	}
	if t.Timeout < 0 {
		return t, fmt.Errorf("target %q: negative timeout %v", t.URI, t.Timeout)
	}
	return t, nil
}

// checkURI accepts sip: and sips: URIs with a host part.
func checkURI(uri string) error {
	if !hasPrefixFold(uri, "sip:") && !hasPrefixFold(uri, "sips:") {
		return fmt.Errorf("target %q: URI must start with \"sip:\" or \"sips:\"", uri)
	}
	for _, r := range uri {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("target %q: URI contains a space or control character", uri)
		}
	}
	if hostOf(uri) == "" {
		return fmt.Errorf("target %q: URI has no host", uri)
	}
	return nil
}

// hostOf returns the host (with port) of a sip or sips URI, or "" when there
// is none: "sip:alice@proxy.example.com:5061;transport=tls" gives
// "proxy.example.com:5061".
func hostOf(uri string) string {
	i := strings.IndexByte(uri, ':')
	if i < 0 {
		return ""
	}
	h := uri[i+1:]
	if j := strings.LastIndexByte(h, '@'); j >= 0 {
		h = h[j+1:]
	}
	if j := strings.IndexAny(h, ";?"); j >= 0 {
		h = h[:j]
	}
	return h
}

// hasTransportParam reports whether uri carries a transport URI parameter.
func hasTransportParam(uri string) bool {
	return strings.Contains(strings.ToLower(uri), ";transport=")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
