package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

func runCmd(args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(args, &o, &e)
	return o.String(), e.String(), err
}

func TestMisuse(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"serve", "-no-such-flag"},
		{"keygen", "stray"},
		{"register", "-mode"},
	} {
		_, stderr, err := runCmd(args...)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
		if stderr == "" {
			t.Errorf("%q: nothing said on stderr", args)
		}
	}
	if _, _, err := runCmd("serve", "-settings", filepath.Join(t.TempDir(), "missing.xml")); err == nil ||
		strings.Count(err.Error(), "\n") > 0 {
		t.Errorf("missing settings: %v", err)
	}
}

func TestVersionCheckKeygen(t *testing.T) {
	out, _, err := runCmd("version")
	if err != nil || !strings.HasPrefix(out, "sipis ") {
		t.Errorf("version: %q %v", out, err)
	}
	out, _, err = runCmd("check", "-settings", "../../Settings.example.xml")
	if err != nil || !strings.Contains(out, "OK") {
		t.Errorf("check of the example: %q %v", out, err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.xml")
	os.WriteFile(bad, []byte(`<Sipis><HttpServer Port="http"/></Sipis>`), 0o600)
	if _, _, err := runCmd("check", "-settings", bad); err == nil || !strings.Contains(err.Error(), "Port") {
		t.Errorf("check of a bad file: %v", err)
	}
	priv, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if out, _, err := runCmd("keygen", "-private", priv, "-public", pub); err != nil || !strings.Contains(out, "public key") {
		t.Fatalf("keygen: %q %v", out, err)
	}
	if _, _, err := runCmd("keygen", "-private", priv, "-public", pub); err == nil {
		t.Error("keygen overwrote a key")
	}
	// -print seals without posting; the server's private key opens it.
	out, _, err = runCmd("register", "-pubkey", pub, "-print", "-selector", "0a0b0c0d", "-user", "alice", "-domain", "example.com")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := registration.ReadKeyFile(pub)
	sk, _ := registration.ReadKeyFile(priv)
	r, err := registration.Open(sealed, pk, sk)
	if err != nil || r.Account.User != "alice" || r.Mode != registration.ModeBackground {
		t.Errorf("opened %+v %v", r, err)
	}
}

func TestRegisterPostsToServer(t *testing.T) {
	dir := t.TempDir()
	reg := siptest.NewRegistrar(t)
	a, s := startServer(t)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw-carol\n"), 0o600)
	out, _, err := runCmd("register", "-url", a.HTTPURL()+"/sipis/register", "-pubkey", s.Keys.PublicKeyFile,
		"-selector", "0c0c0c0c", "-user", "carol", "-password-file", pw, "-domain", "sipis.test",
		"-proxy", reg.Host(), "-port", strconv.Itoa(reg.Port()))
	if err != nil || !strings.Contains(out, "200") {
		t.Fatalf("register: %q %v", out, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(reg.Contacts("carol")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(reg.Contacts("carol")) != 1 {
		t.Fatal("the registration posted by the CLI did not reach the registrar")
	}
	// A bad registration: the server's one-line reason comes back as the error.
	_, _, err = runCmd("register", "-url", a.HTTPURL()+"/sipis/register", "-pubkey", s.Keys.PublicKeyFile,
		"-selector", "0c0c0c0c", "-mode", "foreground", "-user", "carol", "-domain", "sipis.test", "-transport", "udp",
		"-timeout", "5s", "-platform", "apns")
	if err == nil {
		t.Error("a registration with an unusable device was accepted")
	}
}
