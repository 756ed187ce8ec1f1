package store

import (
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// sealer seals secrets with XChaCha20-Poly1305. Its 24-byte nonce is large enough to be drawn at
// random for every value without a counter. A sealed value is nonce || ciphertext || tag.
//
// The additional data binds a sealed value to what it is and whose it is (purpose and selector,
// plus the device id for a device secret): a sealed password copied into another row, or into a
// device's secret column, fails to open instead of being accepted. The node name is not part of it,
// so that another node holding the same key can later take an instance over.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("%w: data key: %v", ErrInvalid, err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plain, ad []byte) ([]byte, error) {
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("store: random nonce: %w", err)
	}
	return s.aead.Seal(out, out, plain, ad), nil
}

// open returns ErrDataKey for any value that does not authenticate under this key.
func (s *sealer) open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < chacha20poly1305.NonceSizeX+s.aead.Overhead() {
		return nil, ErrDataKey
	}
	nonce, box := sealed[:chacha20poly1305.NonceSizeX], sealed[chacha20poly1305.NonceSizeX:]
	plain, err := s.aead.Open(nil, nonce, box, ad)
	if err != nil {
		return nil, ErrDataKey
	}
	return plain, nil
}

func adPassword(selector string) []byte { return []byte("sipis password\x00" + selector) }

func adDeviceSecret(selector, deviceID string) []byte {
	return []byte("sipis device secret\x00" + selector + "\x00" + deviceID)
}

func adKeyCheck(node string) []byte { return []byte("sipis key check\x00" + node) }
