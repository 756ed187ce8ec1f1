package registration

import (
	"encoding/json"
	"testing"
)

// FuzzDecode feeds arbitrary plaintext to the decoder: it must never panic, and whatever it
// accepts must validate and survive a second encode/decode unchanged.
func FuzzDecode(f *testing.F) {
	b, _ := json.Marshal(sample())
	f.Add(b)
	f.Add([]byte(`{"version":1,"selector":"abcdef12","mode":"foreground","device":{"id":"d","platform":"none"},"timestamp":"2026-01-01T00:00:00Z","nonce":"0123456789abcdef"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("accepted document fails after re-encoding: %v", err)
		}
	})
}

// FuzzOpen feeds arbitrary bytes to Open with a fixed key: it must never panic.
func FuzzOpen(f *testing.F) {
	pub, priv, _ := GenerateKey()
	sealed, _ := Seal(sample(), pub)
	f.Add(sealed)
	f.Add([]byte{})
	f.Add(make([]byte, 48))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = Open(data, pub, priv)
	})
}
