package sipua

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// This file is the part of a REGISTER that moves a binding from another Contact address to
// ours in one request (Binding.ReplaceAddr): a node taking over an instance from a dead node
// removes the dead node's Contact and adds its own with the same Call-ID and a higher CSeq.
// RFC 3261 §10.2.1 allows several Contacts in one REGISTER and §10.2.2 removes one by its
// expires=0 parameter; the registrar applies the whole request under one lock on the
// address-of-record (§10.3 steps 6–8), so no query ever sees the binding at both Contacts or at
// neither, and one challenged cycle does what an unREGISTER and a REGISTER did in two.

// validReplaceAddr checks Binding.ReplaceAddr: empty, or host:port.
func validReplaceAddr(addr string) error {
	if addr == "" {
		return nil
	}
	if strings.ContainsAny(addr, "\r\n\x00 \t<>;,\"@") {
		return fmt.Errorf("sipua: binding ReplaceAddr %q has characters not allowed in a host:port", addr)
	}
	if _, p, err := net.SplitHostPort(addr); err != nil || p == "" {
		return fmt.Errorf("sipua: binding ReplaceAddr %q is not host:port", addr)
	}
	return nil
}

// writeReplaced writes, after our Contact header's value, a second Contact header with the
// Contact of r's binding at ReplaceAddr and expires=0. It writes nothing when ReplaceAddr is
// empty or is our own Contact's address (removing it would remove the binding we are adding).
// The URI is spelled as build spells ours (same user part, transport parameter), because a
// registrar matches the Contact to remove by its URI.
func (r *registerRequest) writeReplaced(s *bytes.Buffer) {
	b := r.b
	if b.ReplaceAddr == "" || b.Expires == 0 {
		return
	}
	h, p, err := net.SplitHostPort(b.ReplaceAddr)
	if err != nil {
		return // validate refused it already
	}
	host := hostForURI(h)
	if host == r.contactHost && p == strconv.Itoa(r.contactPort) {
		return
	}
	s.WriteString("\r\nContact: <sip:")
	s.WriteString(b.ContactUser)
	s.WriteByte('@')
	s.WriteString(host)
	s.WriteByte(':')
	s.WriteString(p)
	s.WriteString(";transport=")
	s.WriteString(b.Transport)
	s.WriteString(">;expires=0")
}
