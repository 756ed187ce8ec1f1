package registration

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/nacl/box"
)

// GenerateKey returns a new X25519 key pair for a server.
func GenerateKey() (public, private *Key, err error) {
	return box.GenerateKey(rand.Reader)
}

// EncodeKey writes a key as one line of standard base64, the format of sipis key files.
func EncodeKey(k *Key) []byte {
	return []byte(base64.StdEncoding.EncodeToString(k[:]) + "\n")
}

// DecodeKey parses a key file's content.
func DecodeKey(data []byte) (*Key, error) {
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil {
		return nil, fmt.Errorf("key is not base64: %w", err)
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("key is %d bytes, want 32", len(raw))
	}
	var k Key
	copy(k[:], raw)
	return &k, nil
}

// ReadKeyFile reads a key written by WriteKeyFiles.
func ReadKeyFile(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := DecodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFiles generates a key pair and writes it: the private key readable by the owner
// only. It refuses to overwrite an existing file.
func WriteKeyFiles(privatePath, publicPath string) (public *Key, err error) {
	pub, priv, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := writeNew(privatePath, EncodeKey(priv), 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(publicPath, EncodeKey(pub), 0o644); err != nil {
		return nil, errors.Join(err, os.Remove(privatePath))
	}
	return pub, nil
}

// writeNew writes a file that must not exist yet, via a temporary file and a rename, so a
// crash never leaves a half-written key behind.
func writeNew(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s: %w", path, os.ErrExist)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path) // fails if path appeared meanwhile
}
