package registration

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
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
//
// Open derives the key's X25519 form on every call; a server opening many registrations with
// one key pair uses an Opener instead, which does that once.
func Open(sealed []byte, public, private *Key) (*Registration, error) {
	o, err := NewOpener(public, private)
	if err != nil {
		return nil, err
	}
	return o.Open(sealed)
}

// Opener opens registrations sealed to one server key pair. It is safe for concurrent use.
//
// The format is NaCl's anonymous box (box.SealAnonymous): an ephemeral X25519 public key, then
// a secretbox under the key HSalsa20(X25519(private, ephemeral)) with the nonce
// BLAKE2b-192(ephemeral || public). box.OpenAnonymous computes exactly that, but through
// curve25519.ScalarMult, which since x/crypto moved onto crypto/ecdh builds an ecdh.PrivateKey
// per call and so derives the server's public key each time: two scalar multiplications where
// the format needs one. An Opener holds the ecdh.PrivateKey made once, so each registration
// costs one X25519.
type Opener struct {
	public Key
	priv   *ecdh.PrivateKey
}

// NewOpener returns an Opener for the server key pair public/private.
func NewOpener(public, private *Key) (*Opener, error) {
	if public == nil || private == nil {
		return nil, errors.New("registration: no server key")
	}
	priv, err := ecdh.X25519().NewPrivateKey(private[:])
	if err != nil {
		return nil, fmt.Errorf("registration: server private key: %w", err)
	}
	return &Opener{public: *public, priv: priv}, nil
}

// Open is the package's Open with the Opener's key pair.
func (o *Opener) Open(sealed []byte) (*Registration, error) {
	if len(sealed) <= box.AnonymousOverhead {
		return nil, ErrTruncated
	}
	msg, ok := o.openAnonymous(sealed)
	if !ok {
		return nil, ErrNotOurs
	}
	if len(msg) > MaxPlaintext {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, MaxPlaintext)
	}
	return Decode(msg)
}

// openAnonymous is box.OpenAnonymous with the server's ecdh.PrivateKey made once. An
// ephemeral key of small order (X25519 gives the all-zero secret) is refused: box.Precompute
// would go on with a key that anyone can compute, which no honest sealer produces.
func (o *Opener) openAnonymous(sealed []byte) ([]byte, bool) {
	eph, err := ecdh.X25519().NewPublicKey(sealed[:32])
	if err != nil {
		return nil, false
	}
	secret, err := o.priv.ECDH(eph)
	if err != nil {
		return nil, false
	}
	var shared [32]byte
	copy(shared[:], secret)
	salsa.HSalsa20(&shared, &zero16, &shared, &salsa.Sigma) // as box.Precompute
	h, err := blake2b.New(24, nil)
	if err != nil {
		return nil, false
	}
	h.Write(sealed[:32])
	h.Write(o.public[:])
	var nonce [24]byte
	h.Sum(nonce[:0])
	return secretbox.Open(nil, sealed[32:], &nonce, &shared)
}

// zero16 is HSalsa20's all-zero input in box.Precompute.
var zero16 [16]byte

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
