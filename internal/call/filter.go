package call

import (
	"fmt"
	"strconv"
	"strings"
)

// HeaderOp is how a HeaderMatch compares a header's value.
type HeaderOp int

// The comparisons of a HeaderMatch (the original product's <Header Equal|Contains|UintGt|UintLt>).
const (
	// Equal: the value equals Value, without case. For Content-Type, a Value without
	// parameters is compared with the media type only, so "text/plain" matches
	// "text/plain;charset=utf-8".
	Equal HeaderOp = iota
	// Contains: the value contains Value, without case.
	Contains
	// UintGt: the value is a whole number greater than Value.
	UintGt
	// UintLt: the value is a whole number less than Value.
	UintLt
)

// HeaderMatch is one condition of a Filter on a header of the MESSAGE. A header that is absent
// (or, for UintGt and UintLt, not a whole number) never matches. Content-Length is always the
// length of the body as received, whatever the header says.
type HeaderMatch struct {
	Name  string
	Op    HeaderOp
	Value string
}

// checkFilters rejects filters that could never work as meant.
func checkFilters(filters []Filter) error {
	for i, f := range filters {
		if f.ContentType == "" && len(f.Headers) == 0 {
			return fmt.Errorf("call: filter %d: neither a content type nor a header to match", i)
		}
		if f.ContentType != "" {
			ct := strings.ToLower(strings.TrimSpace(f.ContentType))
			typ, sub, ok := strings.Cut(ct, "/")
			if !ok || typ == "" || sub == "" || strings.ContainsAny(ct, "; \t") || (typ == "*" && sub != "*") {
				return fmt.Errorf("call: filter %d: content type %q is not type/subtype, type/* or */*", i, f.ContentType)
			}
		}
		if f.Action < Accept || f.Action > Reject {
			return fmt.Errorf("call: filter %d (%s): unknown action %d", i, f.ContentType, f.Action)
		}
		for _, h := range f.Headers {
			if h.Name == "" || strings.ContainsAny(h.Name, ": \t\r\n") {
				return fmt.Errorf("call: filter %d: %q is not a header name", i, h.Name)
			}
			switch h.Op {
			case Equal, Contains:
			case UintGt, UintLt:
				if _, err := strconv.ParseUint(strings.TrimSpace(h.Value), 10, 64); err != nil {
					return fmt.Errorf("call: filter %d: header %s: %q is not a whole number", i, h.Name, h.Value)
				}
			default:
				return fmt.Errorf("call: filter %d: header %s: unknown comparison %d", i, h.Name, h.Op)
			}
		}
		if f.Code != 0 && (f.Code < 400 || f.Code > 699) {
			return fmt.Errorf("call: filter %d: reject code %d is not a SIP error status", i, f.Code)
		}
		if strings.ContainsFunc(f.Phrase, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("call: filter %d: reject phrase has control characters", i)
		}
	}
	return nil
}

// matches reports whether f applies to a MESSAGE with media type mt.
func (f Filter) matches(req *inbound, mt string) bool {
	if f.ContentType != "" {
		typ, _, _ := strings.Cut(mt, "/")
		want := strings.ToLower(strings.TrimSpace(f.ContentType))
		if !(want == mt || want == "*/*" || (strings.HasSuffix(want, "/*") && strings.TrimSuffix(want, "/*") == typ)) {
			return false
		}
	}
	for _, h := range f.Headers {
		if !h.matches(req) {
			return false
		}
	}
	return true
}

func (h HeaderMatch) matches(req *inbound) bool {
	var v string
	if strings.EqualFold(h.Name, "Content-Length") || strings.EqualFold(h.Name, "l") {
		v = strconv.Itoa(len(req.body))
	} else {
		v = strings.TrimSpace(req.header(h.Name))
		if v == "" {
			return false
		}
	}
	want := strings.TrimSpace(h.Value)
	switch h.Op {
	case Equal:
		if strings.EqualFold(h.Name, "Content-Type") && !strings.Contains(want, ";") {
			return mediaType(v) == strings.ToLower(want)
		}
		return strings.EqualFold(v, want)
	case Contains:
		return strings.Contains(strings.ToLower(v), strings.ToLower(want))
	case UintGt, UintLt:
		n, err := strconv.ParseUint(v, 10, 64)
		w, werr := strconv.ParseUint(want, 10, 64)
		if err != nil || werr != nil {
			return false
		}
		if h.Op == UintGt {
			return n > w
		}
		return n < w
	}
	return false
}
