package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Secret holds a password or key. Every way of printing it — fmt verbs,
// encoding/json, encoding/xml, any encoding.TextMarshaler user — shows only
// "Not Empty" or "Empty", so a secret cannot be logged or rendered by
// accident. Value returns the secret itself.
type Secret struct {
	value string
}

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{value: v} }

// Value returns the secret itself. Never log or render it.
func (s Secret) Value() string { return s.value }

// IsEmpty reports whether the secret is empty.
func (s Secret) IsEmpty() bool { return s.value == "" }

// String returns "Not Empty" or "Empty", never the secret.
func (s Secret) String() string {
	if s.value == "" {
		return "Empty"
	}
	return "Not Empty"
}

// Format implements fmt.Formatter so that every verb, %#v and %x included,
// prints String instead of the secret.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(strconv.Quote(s.String())))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// GoString implements fmt.GoStringer; see String.
func (s Secret) GoString() string { return s.String() }

// MarshalText implements encoding.TextMarshaler (used by encoding/json and
// encoding/xml); it yields String, never the secret.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// isBcrypt reports whether p looks like a bcrypt hash.
func isBcrypt(p string) bool {
	return strings.HasPrefix(p, "$2a$") || strings.HasPrefix(p, "$2b$") || strings.HasPrefix(p, "$2y$")
}

// Enabled reports whether the admin pages are enabled, that is whether a
// password is set.
func (a Administrator) Enabled() bool { return !a.Password.IsEmpty() }

// CheckPassword reports whether user and pass are the administrator's
// credentials. It is false whenever no password is set. A bcrypt hash is
// checked with bcrypt; a plain password and the user name are compared in
// constant time (over SHA-256 digests so that lengths do not leak either).
func (a Administrator) CheckPassword(user, pass string) bool {
	if a.Password.IsEmpty() {
		return false
	}
	userOK := equalConstantTime(user, a.UserName)
	var passOK bool
	if p := a.Password.Value(); isBcrypt(p) {
		passOK = bcrypt.CompareHashAndPassword([]byte(p), []byte(pass)) == nil
	} else {
		passOK = equalConstantTime(pass, p)
	}
	return userOK && passOK
}

func equalConstantTime(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
