package call

import (
	"strconv"

	"github.com/sipis/sipis/internal/sipua"
)

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

// DeviceRecorder is implemented by a Recorder that also draws the messages between sipis and
// the devices of a call: a device taking the call (REGISTER with its token), the INVITE
// relayed to it, its responses, and those relayed upstream.
type DeviceRecorder interface {
	// DeviceMessage is one message of call callID of sel between sipis and device (its
	// X-Sipis-Device, "" when it sent none); toDevice says which way.
	DeviceMessage(sel, callID, device string, toDevice bool, label, note string)
	// Relayed is a device's response sent upstream by sipis.
	Relayed(sel, callID string, code int, reason string)
}

func (c *call) deviceRecorder() DeviceRecorder {
	d, _ := c.m.opts.Recorder.(DeviceRecorder)
	return d
}

// recordConnect draws a device taking the call and the INVITE relayed to it.
func (c *call) recordConnect(device string) {
	if d := c.deviceRecorder(); d != nil {
		d.DeviceMessage(c.sel, c.callID, device, false, "REGISTER", "X-Sipis-Token: Not Empty")
		d.DeviceMessage(c.sel, c.callID, device, true, "200 OK", "")
		d.DeviceMessage(c.sel, c.callID, device, true, "INVITE", "relayed")
	}
}

// recordDeviceResponse draws a device's response to the relayed INVITE.
func (c *call) recordDeviceResponse(device string, r *sipua.Response) {
	if d := c.deviceRecorder(); d != nil && !r.Local() {
		d.DeviceMessage(c.sel, c.callID, device, false, strconv.Itoa(r.Status)+" "+r.Reason, "")
	}
}

// recordRelayed draws a device's response going upstream.
func (c *call) recordRelayed(r *sipua.Response) {
	if d := c.deviceRecorder(); d != nil {
		d.Relayed(c.sel, c.callID, r.Status, r.Reason)
	}
}
