package errs

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorCodeAndMessage(t *testing.T) {
	cause := errors.New("cause")
	e := Wrap(Conflict, cause, "nonce %s used", "n1")
	wrapped := fmt.Errorf("outer: %w", e)
	if got := ErrorCode(wrapped); got != Conflict {
		t.Errorf("ErrorCode = %q, want %q", got, Conflict)
	}
	if got := ErrorMessage(wrapped); got != "nonce n1 used" {
		t.Errorf("ErrorMessage = %q", got)
	}
	if !errors.Is(wrapped, cause) {
		t.Error("the cause is not in the chain")
	}
	if e.Error() != "nonce n1 used" {
		t.Errorf("Error() = %q", e.Error())
	}
	plain := errors.New("plain")
	if ErrorCode(plain) != "" || ErrorMessage(plain) != "" || ErrorCode(nil) != "" {
		t.Error("an error without an *Error has a code or message")
	}
	if got := Errorf(Invalid, "bad %d", 1); got.Code != Invalid || got.Message != "bad 1" || got.Err != nil {
		t.Errorf("Errorf = %+v", got)
	}
}
