package registration

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
)

func sample() *Registration {
	return &Registration{
		Version:  Version,
		Selector: "00ab12cd34ef",
		Mode:     ModeBackground,
		Account: Account{
			User: "alice", Password: "s3cret", Domain: "example.com",
			Proxy: "proxy.example.com", Port: 5060, Transport: "UDP", Expires: 600,
		},
		Device:    Device{ID: "dev-1", Platform: "apns", PushToken: "abcdef0123456789", AppID: "com.example.phone"},
		Timestamp: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC),
		Nonce:     "0123456789abcdef0123",
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	in := sample()
	sealed, err := Seal(in, pub)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), "s3cret") {
		t.Fatal("password visible in sealed bytes")
	}
	out, err := Open(sealed, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	if out.Account.Transport != "udp" {
		t.Errorf("transport not normalized: %q", out.Account.Transport)
	}
	a, _ := json.Marshal(in)
	b, _ := json.Marshal(out)
	if string(a) != string(b) {
		t.Errorf("round trip differs:\n%s\n%s", a, b)
	}
}

func TestOpenFailures(t *testing.T) {
	pub, priv, _ := GenerateKey()
	otherPub, _, _ := GenerateKey()
	good, err := Seal(sample(), pub)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := Seal(sample(), otherPub)
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"truncated", good[:40], ErrTruncated},
		{"short by one", good[:len(good)-1], ErrNotOurs},
		{"other key", foreign, ErrNotOurs},
		{"bit flipped", flipped, ErrNotOurs},
	} {
		if _, err := Open(tc.data, pub, priv); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		field string
		mut   func(r *Registration)
	}{
		{"version", func(r *Registration) { r.Version = 2 }},
		{"selector", func(r *Registration) { r.Selector = "" }},
		{"selector", func(r *Registration) { r.Selector = "xyz12345" }},
		{"selector", func(r *Registration) { r.Selector = "abc" }},
		{"selector", func(r *Registration) { r.Selector = strings.Repeat("a", 65) }},
		{"mode", func(r *Registration) { r.Mode = "sleep" }},
		{"mode", func(r *Registration) { r.Mode = "" }},
		{"timestamp", func(r *Registration) { r.Timestamp = time.Time{} }},
		{"nonce", func(r *Registration) { r.Nonce = "short" }},
		{"device.id", func(r *Registration) { r.Device.ID = "" }},
		{"device.platform", func(r *Registration) { r.Device.Platform = "pager" }},
		{"device.pushToken", func(r *Registration) { r.Device.PushToken = "" }},
		{"device.appId", func(r *Registration) { r.Device.AppID = "" }},
		{"device.alertToken", func(r *Registration) { r.Device.AlertToken = r.Device.PushToken }},
		{"device.alertToken", func(r *Registration) { r.Device.AlertToken = strings.Repeat("a", MaxTokenLen+1) }},
		{"device.alertToken", func(r *Registration) { r.Device.Platform, r.Device.AlertToken = "fcm", "abcd" }},
		{"account.user", func(r *Registration) { r.Account.User = "" }},
		{"account.user", func(r *Registration) { r.Account.User = "a@b" }},
		{"account.domain", func(r *Registration) { r.Account.Domain = "" }},
		{"account.domain", func(r *Registration) { r.Account.Domain = "bad host!" }},
		{"account.proxy", func(r *Registration) { r.Account.Proxy = "a..b" }},
		{"account.port", func(r *Registration) { r.Account.Port = 70000 }},
		{"account.transport", func(r *Registration) { r.Account.Transport = "sctp" }},
		{"account.expires", func(r *Registration) { r.Account.Expires = -1 }},
		{"account.expires", func(r *Registration) { r.Account.Expires = MaxExpires + 1 }},
		{"account.displayName", func(r *Registration) { r.Account.DisplayName = "a\r\nVia: x" }},
	} {
		r := sample()
		tc.mut(r)
		err := r.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != tc.field {
			t.Errorf("%s: got %v", tc.field, err)
		}
	}
	// An iPhone may send either of its two tokens, or both.
	for _, mut := range []func(d *Device){
		func(d *Device) { d.AlertToken = "fedcba9876543210" },
		func(d *Device) { d.PushToken, d.AlertToken = "", "fedcba9876543210" },
	} {
		r := sample()
		mut(&r.Device)
		if err := r.Validate(); err != nil {
			t.Errorf("apns device %+v: %v", r.Device, err)
		}
	}
	// Foreground needs no account.
	r := sample()
	r.Mode = ModeForeground
	r.Account = Account{}
	if err := r.Validate(); err != nil {
		t.Errorf("foreground without account: %v", err)
	}
}

func TestDecodeStrict(t *testing.T) {
	r := sample()
	b, _ := json.Marshal(r)
	for _, tc := range []string{
		`{"version":1,"bogus":true}`,
		string(b) + "{}",
		`not json`,
		`{"version":"1"}`,
	} {
		if _, err := Decode([]byte(tc)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: got %v, want ErrMalformed", tc, err)
		}
	}
	if _, err := Decode(b); err != nil {
		t.Errorf("good document: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	privPath, pubPath := filepath.Join(dir, "k", "server.key"), filepath.Join(dir, "k", "server.pub")
	pub, err := WriteKeyFiles(privPath, pubPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteKeyFiles(privPath, pubPath); !errors.Is(err, os.ErrExist) {
		t.Errorf("overwrite: got %v, want ErrExist", err)
	}
	st, err := os.Stat(privPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode: %v %v", st.Mode(), err)
	}
	priv, err := ReadKeyFile(privPath)
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := ReadKeyFile(pubPath)
	if err != nil || *pub2 != *pub {
		t.Fatalf("public key read back differs: %v", err)
	}
	sealed, _ := Seal(sample(), pub)
	if _, err := Open(sealed, pub, priv); err != nil {
		t.Errorf("open with key files: %v", err)
	}
	if _, err := DecodeKey([]byte("AAAA")); err == nil {
		t.Error("short key accepted")
	}
}

// TestCallProof: the proof depends on the secret, the device and the token, and is 64 hex
// digits.
func TestCallProof(t *testing.T) {
	p := CallProof("secret", "iphone", "0123456789abcdef0123456789abcdef")
	if len(p) != 64 || strings.Trim(p, "0123456789abcdef") != "" {
		t.Fatalf("proof %q is not 64 lowercase hex digits", p)
	}
	for _, other := range []string{
		CallProof("secret2", "iphone", "0123456789abcdef0123456789abcdef"),
		CallProof("secret", "ipad", "0123456789abcdef0123456789abcdef"),
		CallProof("secret", "iphone", "0123456789abcdef0123456789abcdee"),
	} {
		if other == p {
			t.Fatal("proof does not depend on all of secret, device and token")
		}
	}
	if CallProof("secret", "iphone", "0123456789abcdef0123456789abcdef") != p {
		t.Fatal("proof is not deterministic")
	}
}

// TestOpenerMatchesBox checks the Opener against x/crypto's box.OpenAnonymous, which defines
// the wire format: every box sealed by box.SealAnonymous opens to the same bytes, and every
// corrupted one is refused by both.
func TestOpenerMatchesBox(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		msg := []byte(strings.Repeat("x", i*7))
		sealed, err := box.SealAnonymous(nil, msg, pub, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := o.openAnonymous(sealed)
		want, wantOK := box.OpenAnonymous(nil, sealed, pub, priv)
		if !ok || !wantOK || !bytes.Equal(got, want) || !bytes.Equal(got, msg) {
			t.Fatalf("message %d: opener %q %v, box %q %v", i, got, ok, want, wantOK)
		}
		bad := bytes.Clone(sealed)
		bad[i%len(bad)] ^= 0x40
		if _, ok := o.openAnonymous(bad); ok {
			t.Fatalf("message %d: a corrupted box opened", i)
		}
		if _, ok := box.OpenAnonymous(nil, bad, pub, priv); ok {
			t.Fatalf("message %d: box opened a corrupted box", i)
		}
	}
	// Sealed to another key: refused.
	otherPub, _, _ := GenerateKey()
	sealed, err := Seal(sample(), otherPub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(sealed); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("sealed to another key: %v, want ErrNotOurs", err)
	}
}

// TestOpenerRefusesSmallOrderKey: an ephemeral key of small order gives the all-zero X25519
// secret, a key anyone knows; such a box is refused, not opened.
func TestOpenerRefusesSmallOrderKey(t *testing.T) {
	pub, priv, _ := GenerateKey()
	o, err := NewOpener(pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	// The zero point has small order. Seal "hello" under the key box.Precompute would derive.
	var eph, shared [32]byte
	salsa.HSalsa20(&shared, &zero16, &shared, &salsa.Sigma)
	h, _ := blake2b.New(24, nil)
	h.Write(eph[:])
	h.Write(pub[:])
	var nonce [24]byte
	h.Sum(nonce[:0])
	sealed := secretbox.Seal(append([]byte(nil), eph[:]...), []byte(`{"v":1}`), &nonce, &shared)
	if _, ok := box.OpenAnonymous(nil, sealed, pub, priv); !ok {
		t.Fatal("the forged box does not open with box.OpenAnonymous: the test builds it wrong")
	}
	if _, ok := o.openAnonymous(sealed); ok {
		t.Fatal("a box under a small-order ephemeral key opened")
	}
}

// BenchmarkOpen compares opening one registration with box.OpenAnonymous (two X25519 scalar
// multiplications, see Opener) and with an Opener (one).
func BenchmarkOpen(b *testing.B) {
	pub, priv, _ := GenerateKey()
	sealed, err := Seal(sample(), pub)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("box.OpenAnonymous", func(b *testing.B) {
		for b.Loop() {
			if _, ok := box.OpenAnonymous(nil, sealed, pub, priv); !ok {
				b.Fatal("not opened")
			}
		}
	})
	o, err := NewOpener(pub, priv)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Opener", func(b *testing.B) {
		for b.Loop() {
			if _, ok := o.openAnonymous(sealed); !ok {
				b.Fatal("not opened")
			}
		}
	})
}
