package web

import (
	"net/http"

	"github.com/gorilla/mux"
)

// DeviceHandlers serve the routes woken devices call. web owns their paths and
// methods, and wraps them in the device throttle (throttleDevices) and the request
// log like every other route; internal/call gives the handlers.
//
// The decoding of the bodies and the answers stay in internal/call on purpose: the
// device API's wire format (32-hex call tokens, JSON or form bodies, the message
// and call-answer documents) is the call package's contract with the app, decided
// by the call state machine (a used-up token is 403, a busy decline is 486), and
// the call tests exercise it end to end against that state machine without a web
// server. Moving the decoding here would make web import the store's message type
// or need one more adapter, for no change a reader would see.
type DeviceHandlers struct {
	// Progress serves POST /sipis/call/progress: the device is coming (180).
	Progress http.Handler
	// Decline serves POST /sipis/call/decline: 603 Decline, or 486 Busy Here.
	Decline http.Handler
	// Messages serves GET /sipis/messages?s=: the instance's waiting messages.
	Messages http.Handler
	// Ack serves POST /sipis/messages/ack?s=: delete fetched messages.
	Ack http.Handler
}

// registerDeviceRoutes mounts the device routes that have a handler.
func (s *Server) registerDeviceRoutes(r *mux.Router) {
	d := s.opts.Devices
	if d == nil {
		return
	}
	for _, rt := range []struct {
		path, method string
		h            http.Handler
	}{
		{"/sipis/call/progress", http.MethodPost, d.Progress},
		{"/sipis/call/decline", http.MethodPost, d.Decline},
		{"/sipis/messages", http.MethodGet, d.Messages},
		{"/sipis/messages/ack", http.MethodPost, d.Ack},
	} {
		if rt.h != nil {
			r.Handle(rt.path, rt.h).Methods(rt.method)
		}
	}
}
