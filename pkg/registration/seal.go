package registration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/nacl/box"
)

// Key is an X25519 key (public or private), 32 bytes.
type Key = [32]byte

// MaxPlaintext caps the size of an opened document; a registration is a few hundred bytes.
const MaxPlaintext = 32 << 10

// Seal validates r, encodes it as JSON and seals it to the server's public key.
// The returned bytes are what an app POSTs to /sipis/register.
func Seal(r *Registration, serverPublic *Key) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	msg, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("registration: encode: %w", err)
	}
	return box.SealAnonymous(nil, msg, serverPublic, rand.Reader)
}

// Open opens a sealed registration with the server's key pair, decodes it strictly (unknown
// fields are an error) and validates it. Errors wrap ErrTruncated, ErrNotOurs, ErrMalformed or
// are a *ValidationError, so a server can answer with a precise 4xx.
func Open(sealed []byte, public, private *Key) (*Registration, error) {
	if len(sealed) <= box.AnonymousOverhead {
		return nil, ErrTruncated
	}
	msg, ok := box.OpenAnonymous(nil, sealed, public, private)
	if !ok {
		return nil, ErrNotOurs
	}
	if len(msg) > MaxPlaintext {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxPlaintext)
	}
	r, err := Decode(msg)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Decode parses and validates a plaintext registration document.
func Decode(msg []byte) (*Registration, error) {
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.DisallowUnknownFields()
	var r Registration
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMalformed, oneLine(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrMalformed)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

func oneLine(s string) string {
	s = clip200(s)
	return string(bytes.ReplaceAll([]byte(s), []byte("\n"), []byte(" ")))
}

func clip200(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// NewNonce returns a fresh random nonce for a registration.
func NewNonce() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return fmt.Sprintf("%x", b[:])
}
