package call

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sipis/sipis/internal/store"
)

// maxRequestBody bounds what a device may POST to us.
const maxRequestBody = 64 << 10

// The device-facing HTTP calls. internal/web routes them (web.DeviceHandlers, which says
// why their decoding stays here) and throttles wrong tokens and secrets:
//
//	POST /sipis/call/progress   {"token": "…"}                  the device is coming: 180 Device-Making-Progress
//	POST /sipis/call/decline    {"token": "…", "reason": "busy"} 603 Decline (486 Busy Here with reason busy)
//	GET  /sipis/messages?s=SEL                                    waiting messages (X-Sipis-Device, X-Sipis-Secret)
//	POST /sipis/messages/ack?s=SEL {"ids": [1, 2]}                 delete fetched messages (same headers)
//
// Bodies may also be form-encoded (token=…&reason=…, ids=1,2). Errors are a status with a
// one-line text reason, and change nothing.

// ProgressHandler serves POST /sipis/call/progress.
func (m *Manager) ProgressHandler() http.Handler { return http.HandlerFunc(m.handleProgress) }

// DeclineHandler serves POST /sipis/call/decline.
func (m *Manager) DeclineHandler() http.Handler { return http.HandlerFunc(m.handleDecline) }

// MessagesHandler serves GET /sipis/messages?s=SEL.
func (m *Manager) MessagesHandler() http.Handler { return http.HandlerFunc(m.handleMessages) }

// AckHandler serves POST /sipis/messages/ack?s=SEL.
func (m *Manager) AckHandler() http.Handler { return http.HandlerFunc(m.handleAck) }

// CallsHandler serves GET /sipis/calls?s=SELECTOR[&limit=N]: the newest call records of an
// instance as JSON, for support staff. It checks no credentials: wrap it in the admin check.
func (m *Manager) CallsHandler() http.Handler { return http.HandlerFunc(m.handleCalls) }

// deviceRequest is the body of the progress, decline and ack calls.
type deviceRequest struct {
	Token  string  `json:"token"`
	Reason string  `json:"reason"`
	IDs    []int64 `json:"ids"`
}

// readDeviceRequest decodes a JSON or form body.
func readDeviceRequest(w http.ResponseWriter, r *http.Request) (deviceRequest, error) {
	var req deviceRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		return req, fmt.Errorf("request body: %v", err)
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" || (mt == "" && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{"))) {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return req, fmt.Errorf("JSON body: %v", err)
		}
		return req, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := r.ParseForm(); err != nil {
		return req, fmt.Errorf("form body: %v", err)
	}
	req.Token, req.Reason = r.PostForm.Get("token"), r.PostForm.Get("reason")
	for _, v := range r.PostForm["ids"] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return req, fmt.Errorf("id %q is not a number", s)
			}
			req.IDs = append(req.IDs, id)
		}
	}
	return req, nil
}

// callOfToken finds the call of the request's token or answers the error.
func (m *Manager) callOfToken(w http.ResponseWriter, req deviceRequest) *call {
	if len(req.Token) != 32 || strings.Trim(req.Token, "0123456789abcdef") != "" {
		http.Error(w, "token must be 32 lowercase hex digits", http.StatusBadRequest)
		return nil
	}
	c := m.lookupToken(req.Token)
	if c == nil {
		http.Error(w, "no call for this token", http.StatusNotFound)
	}
	return c
}

type callAnswer struct {
	PairingID    string `json:"pairing_id"`
	Selector     string `json:"selector"`
	RelayAddress string `json:"relay_address,omitempty"`
}

func (m *Manager) handleProgress(w http.ResponseWriter, r *http.Request) {
	req, err := readDeviceRequest(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c := m.callOfToken(w, req)
	if c == nil {
		return
	}
	if err := c.progress(); err != nil {
		http.Error(w, "the call has ended; the token is used up", http.StatusForbidden)
		return
	}
	writeJSON(w, callAnswer{PairingID: c.pairing, Selector: c.sel, RelayAddress: m.opts.RelayAddress})
}

func (m *Manager) handleDecline(w http.ResponseWriter, r *http.Request) {
	req, err := readDeviceRequest(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	code, reason, why := 603, "Decline", ReasonDeclined
	switch req.Reason {
	case "", "decline", "declined":
	case "busy":
		code, reason, why = 486, "Busy Here", ReasonBusy
	default:
		http.Error(w, fmt.Sprintf("reason %q is neither \"decline\" nor \"busy\"", req.Reason), http.StatusBadRequest)
		return
	}
	c := m.callOfToken(w, req)
	if c == nil {
		return
	}
	if !c.end(anyPhase, code, reason, store.OutcomeRejected, why, true) {
		http.Error(w, "the call has ended; the token is used up", http.StatusForbidden)
		return
	}
	writeJSON(w, callAnswer{PairingID: c.pairing, Selector: c.sel})
}

// authDevice checks the selector and the device's id and secret headers, or answers the error.
func (m *Manager) authDevice(ctx context.Context, w http.ResponseWriter, r *http.Request) (string, bool) {
	sel := r.URL.Query().Get("s")
	if sel == "" {
		http.Error(w, "missing selector (?s=)", http.StatusBadRequest)
		return "", false
	}
	dev, secret := r.Header.Get("X-Sipis-Device"), r.Header.Get("X-Sipis-Secret")
	if dev == "" || secret == "" {
		http.Error(w, "missing X-Sipis-Device or X-Sipis-Secret header", http.StatusUnauthorized)
		return "", false
	}
	err := m.opts.Store.CheckDeviceSecret(ctx, sel, dev, secret)
	switch {
	case err == nil:
		return sel, true
	case errors.Is(err, store.ErrInvalid):
		http.Error(w, strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "), http.StatusBadRequest)
	case errors.Is(err, store.ErrSecret), errors.Is(err, store.ErrNotFound):
		// One answer for both, so that the device ids of a selector cannot be probed.
		http.Error(w, "device or secret not recognised", http.StatusForbidden)
	default:
		m.log.WithField("err", err).Error("call: check device secret")
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
	return "", false
}

type messageJSON struct {
	ID          int64  `json:"id"`
	From        string `json:"from"`
	ContentType string `json:"content_type"`
	// Body is the body when it is UTF-8 text; BodyBase64 otherwise.
	Body       *string `json:"body,omitempty"`
	BodyBase64 string  `json:"body_base64,omitempty"`
	Received   string  `json:"received"`
}

func (m *Manager) handleMessages(w http.ResponseWriter, r *http.Request) {
	sel, ok := m.authDevice(r.Context(), w, r)
	if !ok {
		return
	}
	n := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			http.Error(w, fmt.Sprintf("limit %q is not a number from 1 to 1000", v), http.StatusBadRequest)
			return
		}
	}
	msgs, err := m.opts.Store.Messages(r.Context(), sel, n)
	if err != nil {
		m.log.WithFields(map[string]any{"selector": sel, "err": err}).Error("call: read messages")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	out := struct {
		Selector string        `json:"selector"`
		Messages []messageJSON `json:"messages"`
	}{Selector: sel, Messages: make([]messageJSON, 0, len(msgs))}
	for _, msg := range msgs {
		j := messageJSON{ID: msg.ID, From: msg.From, ContentType: msg.ContentType, Received: msg.ReceivedAt.Format(time.RFC3339Nano)}
		if utf8.Valid(msg.Body) {
			s := string(msg.Body)
			j.Body = &s
		} else {
			j.BodyBase64 = base64.StdEncoding.EncodeToString(msg.Body)
		}
		out.Messages = append(out.Messages, j)
	}
	writeJSON(w, out)
}

func (m *Manager) handleAck(w http.ResponseWriter, r *http.Request) {
	sel, ok := m.authDevice(r.Context(), w, r)
	if !ok {
		return
	}
	req, err := readDeviceRequest(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.IDs) == 0 {
		http.Error(w, "no message ids to acknowledge", http.StatusBadRequest)
		return
	}
	n, err := m.opts.Store.AckMessages(r.Context(), sel, req.IDs)
	switch {
	case errors.Is(err, store.ErrInvalid):
		http.Error(w, strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "), http.StatusBadRequest)
		return
	case err != nil:
		m.log.WithFields(map[string]any{"selector": sel, "err": err}).Error("call: acknowledge messages")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	writeJSON(w, struct {
		Deleted int64 `json:"deleted"`
	}{n})
}

// CallRecord is one call as GET /sipis/calls shows it.
type CallRecord struct {
	PairingID   string   `json:"pairing_id"`
	CallID      string   `json:"call_id"`
	CallerName  string   `json:"caller_name"`
	CallerURI   string   `json:"caller_uri"`
	Devices     []string `json:"devices"`
	DialogState string   `json:"dialog_state"`
	Outcome     string   `json:"outcome"`
	Reason      string   `json:"reason,omitempty"`
	Received    string   `json:"received"`
	Pushed      string   `json:"pushed,omitempty"`
	Progress    string   `json:"progress,omitempty"`
	Answered    string   `json:"answered,omitempty"`
	Ended       string   `json:"ended,omitempty"`
}

// Records returns the newest limit call records of selector.
func (m *Manager) Records(ctx context.Context, selector string, limit int) ([]CallRecord, error) {
	calls, err := m.opts.Store.Calls(ctx, selector, limit)
	if err != nil {
		return nil, err
	}
	out := make([]CallRecord, 0, len(calls))
	for _, c := range calls {
		devs := c.Devices
		if devs == nil {
			devs = []string{}
		}
		out = append(out, CallRecord{
			PairingID: c.PairingID, CallID: c.CallID, CallerName: c.CallerName, CallerURI: c.CallerURI,
			Devices: devs, DialogState: c.DialogState, Outcome: c.Outcome, Reason: c.Reason,
			Received: rfc3339(c.ReceivedAt), Pushed: rfc3339(c.PushedAt), Progress: rfc3339(c.ProgressAt),
			Answered: rfc3339(c.AnsweredAt), Ended: rfc3339(c.EndedAt),
		})
	}
	return out, nil
}

func (m *Manager) handleCalls(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	sel := r.URL.Query().Get("s")
	n := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			http.Error(w, fmt.Sprintf("limit %q is not a number", v), http.StatusBadRequest)
			return
		}
	}
	recs, err := m.Records(r.Context(), sel, n)
	switch {
	case errors.Is(err, store.ErrInvalid):
		http.Error(w, strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "), http.StatusBadRequest)
		return
	case err != nil:
		m.log.WithFields(map[string]any{"selector": sel, "err": err}).Error("call: read call records")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	writeJSON(w, struct {
		Selector string       `json:"selector"`
		Calls    []CallRecord `json:"calls"`
	}{sel, recs})
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// writeJSON encodes v into a buffer first, so an encoding error is a clean 500.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(append(b, '\n'))
}
