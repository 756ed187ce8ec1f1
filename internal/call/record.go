package call

import "github.com/sipis/sipis/internal/sipua"

// Recorder is told of the SIP requests that reach an instance's Contact (INVITE, CANCEL, ACK,
// BYE, MESSAGE ...) and of each response sipis sends to them, for the SIP ladder on /debug.
// Its methods run on the request's path: they must return at once.
type Recorder interface {
	// Request is a request from the network to the instance sel; text returns the message
	// as received, for a recorder that keeps message bodies.
	Request(sel, callID, method, source string, text func() string)
	// Response is sipis's response to such a request.
	Response(sel, callID, method string, code int, reason string, hs []sipua.Header)
}

// recorded tells opts.Recorder of req and returns req with its responses told too; requests
// for no instance are not recorded.
func (m *Manager) recorded(user string, req *inbound) *inbound {
	rec := m.opts.Recorder
	sel, ok := m.opts.Instances.ByContact(user)
	if rec == nil || !ok {
		return req
	}
	text := func() string { return "" }
	if req.sip != nil {
		text = req.sip.String
	}
	rec.Request(sel, req.callID, req.method, req.source, text)
	cp := *req
	respond := req.respond
	cp.respond = func(code int, reason string, hs ...sipua.Header) error {
		rec.Response(sel, req.callID, req.method, code, reason, hs)
		return respond(code, reason, hs...)
	}
	return &cp
}
