// Package errs owns the kinds of error sipis refuses a request with (invalid, conflict,
// forbidden, not found), so that the packages that decide a refusal (instance) and the one that
// answers it (web) share a vocabulary without sharing a transport.
//
// It must not know about HTTP, SIP or any other protocol: mapping a kind to a status code is the
// job of the package that speaks the protocol (internal/web does it in one function). It imports
// nothing of sipis. The shape follows benbjohnson/wtf's error.go.
package errs

import (
	"errors"
	"fmt"
)

// Kinds of refusal. Code is one of these.
const (
	Invalid   = "invalid"   // the request is malformed or fails validation; the sender can fix it
	Conflict  = "conflict"  // the request collides with what is stored (e.g. a replayed nonce)
	Forbidden = "forbidden" // the sender has not proved it may do this
	NotFound  = "not found" // the request names something that does not exist
)

// Error is a refusal of kind Code with a one-line Message that is safe to show to the sender
// (it never holds a secret or an internal detail). Err, if set, is the cause, for errors.Is/As
// and logs.
type Error struct {
	Code    string
	Message string
	Err     error
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of kind code with a formatted message and no cause.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of kind code with a formatted message and cause err.
func Wrap(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the kind of the first *Error in err's chain, "" if there is none.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrorMessage returns the message of the first *Error in err's chain, "" if there is none.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return ""
}
