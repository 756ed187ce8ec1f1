package hook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxBody caps every request body of the API; the largest legitimate one (log-metrics/) is a
// few hundred bytes.
const maxBody = 16 << 10

// maxText is the longest free-text value accepted (vialer's CharField max_length).
const maxText = 255

// badRequest is an input error; its message is shown to the caller.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func bad(format string, args ...any) error { return &badRequest{msg: fmt.Sprintf(format, args...)} }

// params are a request's fields: the form-encoded or JSON body, over the query string.
type params map[string]string

// readParams reads the fields of r. A JSON body must be one object whose values are strings,
// numbers, booleans or null; a form body is application/x-www-form-urlencoded. DELETE bodies
// are read too (net/http's ParseForm skips them, vialer's apps send them).
func readParams(w http.ResponseWriter, r *http.Request) (params, error) {
	p := params{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			p[k] = v[0]
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return nil, bad("request body larger than %d bytes", maxBody)
		}
		return nil, bad("cannot read the request body")
	}
	if len(body) == 0 {
		return p, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" || (ct == "" && len(body) > 0 && body[0] == '{') {
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, bad("body is not a JSON object")
		}
		for k, v := range doc {
			switch v := v.(type) {
			case string:
				p[k] = v
			case bool:
				p[k] = strconv.FormatBool(v)
			case float64:
				p[k] = strconv.FormatFloat(v, 'f', -1, 64)
			case nil:
			default:
				return nil, bad("%s: must be a string, number or boolean", k)
			}
		}
		return p, nil
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, bad("body is not form-encoded")
	}
	for k, v := range vals {
		if len(v) > 0 {
			p[k] = v[0]
		}
	}
	return p, nil
}

// text returns field name: required or not, at most max bytes of printable UTF-8.
func (p params) text(name string, required bool, max int) (string, error) {
	v := strings.TrimSpace(p[name])
	if v == "" {
		if required {
			return "", bad("%s: required", name)
		}
		return "", nil
	}
	if len(v) > max {
		return "", bad("%s: longer than %d bytes", name, max)
	}
	if !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", bad("%s: must be printable text", name)
	}
	return v, nil
}

// word is text without spaces (tokens, app ids, keys).
func (p params) word(name string, required bool, max int) (string, error) {
	v, err := p.text(name, required, max)
	if err == nil && strings.ContainsAny(v, " \t") {
		err = bad("%s: must not contain spaces", name)
	}
	return v, err
}

// sipUserID is the account: 1 to 64 letters, digits or ._-+ (vialer's are 9-digit numbers).
func (p params) sipUserID() (string, error) {
	v, err := p.text("sip_user_id", true, 64)
	if err != nil {
		return "", err
	}
	for _, c := range []byte(v) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '_' || c == '-' || c == '+') {
			return "", bad("sip_user_id: only letters, digits and . _ - + are allowed")
		}
	}
	return v, nil
}

// boolean reads a Django-style boolean ("true", "True", "1", "yes" ...); def when absent.
func (p params) boolean(name string, def bool) (bool, error) {
	v, ok := p[name]
	if !ok || strings.TrimSpace(v) == "" {
		return def, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on", "t", "y":
		return true, nil
	case "false", "0", "no", "off", "f", "n":
		return false, nil
	}
	return false, bad("%s: must be true or false", name)
}

// number reads a finite float.
func (p params) number(name string, required bool) (float64, bool, error) {
	v := strings.TrimSpace(p[name])
	if v == "" {
		if required {
			return 0, false, bad("%s: required", name)
		}
		return 0, false, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, bad("%s: not a number", name)
	}
	return f, true, nil
}

// writeText answers with a plain-text body of known length.
func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// writeError answers a failed request: a badRequest with 400 and its message, anything else
// with the code given and a fixed message (internal errors are logged, never shown).
func (h *Hook) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var br *badRequest
	var ae *authError
	switch {
	case errors.As(err, &br):
		writeText(w, http.StatusBadRequest, "bad request: "+br.msg+"\n")
	case errors.As(err, &ae):
		if ae.code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="sipis", charset="UTF-8"`)
		}
		writeText(w, ae.code, ae.msg+"\n")
	default:
		h.log.WithFields(map[string]any{"path": r.URL.Path, "err": err}).Error("PBX-hook request failed")
		writeText(w, http.StatusInternalServerError, "internal error\n")
	}
}

// fields reads a request's parameters one after another and keeps the first error, so that a
// handler lists the fields it needs and checks once (the "errors are values" pattern): after an
// error every further read returns the zero value and leaves err as it is.
type fields struct {
	p   params
	err error
}

func (f *fields) text(name string, required bool, max int) string {
	return keep(f, func() (string, error) { return f.p.text(name, required, max) })
}

func (f *fields) word(name string, required bool, max int) string {
	return keep(f, func() (string, error) { return f.p.word(name, required, max) })
}

func (f *fields) sipUserID() string { return keep(f, f.p.sipUserID) }

func (f *fields) boolean(name string, def bool) bool {
	return keep(f, func() (bool, error) { return f.p.boolean(name, def) })
}

// number returns the value and whether the field was present.
func (f *fields) number(name string, required bool) (float64, bool) {
	if f.err != nil {
		return 0, false
	}
	v, ok, err := f.p.number(name, required)
	f.err = err
	return v, ok
}

// check records err (a badRequest made with bad) unless an earlier read already failed.
func (f *fields) check(err error) {
	if f.err == nil {
		f.err = err
	}
}

// keep runs read unless f already failed, and records its error.
func keep[T any](f *fields, read func() (T, error)) T {
	var zero T
	if f.err != nil {
		return zero
	}
	v, err := read()
	f.err = err
	return v
}

// readFields reads r's parameters and then the fields read asks for. On an error it has
// answered the request, and returns nil.
func (h *Hook) readFields(w http.ResponseWriter, r *http.Request, read func(f *fields)) *fields {
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return nil
	}
	f := &fields{p: p}
	read(f)
	if f.err != nil {
		h.writeError(w, r, f.err)
		return nil
	}
	return f
}

// readAuthorized is readFields followed by the account's credentials check (the app's HTTP
// Basic login for sip_user_id, see authorize): read returns the sip_user_id the request acts
// for. It returns false, having answered the request, when any step fails.
func (h *Hook) readAuthorized(w http.ResponseWriter, r *http.Request, read func(f *fields) (sipUserID string)) bool {
	var user string
	if h.readFields(w, r, func(f *fields) { user = read(f) }) == nil {
		return false
	}
	if err := h.authorize(r, user); err != nil {
		h.writeError(w, r, err)
		return false
	}
	return true
}
