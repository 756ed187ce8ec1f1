package main

import (
	"context"
	"encoding/pem"
	"io"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
)

// startServer starts a whole sipis on loopback ports.
func startServer(t *testing.T) (*app.App, *config.Settings) {
	t.Helper()
	s, err := config.Parse([]byte(`<Sipis><Server Address="127.0.0.1" Port="0"/><Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/></Sip>
		<HttpServer Address="127.0.0.1" Port="0"/><Log Stdio="None"/><Probe Enabled="No"/></Sipis>`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startSettings(t, s), s
}

// startSettings starts a whole sipis on s, logging nowhere, stopped at the end of t.
func startSettings(t *testing.T, s *config.Settings) *app.App {
	t.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	a, err := app.New(s, app.WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	return a
}

func waitState(t *testing.T, a *app.App, sel string, want instance.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s, ok := a.Manager().Snapshot(sel); ok && s.Phase.State == want {
			return
		}
		if time.Now().After(deadline) {
			s, _ := a.Manager().Snapshot(sel)
			t.Fatalf("instance %s in %v, want %v", sel, s.Phase, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegisterWithDeviceSecret: "sipis register" sends the device secret from -secret-file;
// the device then takes the account back (foreground) and forgets it (off) with the selector
// and the secret alone, no account or password; a wrong secret is refused and changes
// nothing; "sipis status" shows the instance (issue 10 point 6).
func TestRegisterWithDeviceSecret(t *testing.T) {
	reg := siptest.NewRegistrar(t)
	a, s := startServer(t)
	dir := t.TempDir()
	pw, secret, wrong := filepath.Join(dir, "pw"), filepath.Join(dir, "secret"), filepath.Join(dir, "wrong")
	os.WriteFile(pw, []byte("pw-dave\n"), 0o600)
	os.WriteFile(secret, []byte("Dave-Device-Secret-99\n"), 0o600)
	os.WriteFile(wrong, []byte("not-it\n"), 0o600)
	regURL := a.HTTPURL() + "/sipis/register"
	out, _, err := runCmd("register", "-url", regURL, "-pubkey", s.Keys.PublicKeyFile, "-selector", "0d0d0d0d",
		"-user", "dave", "-password-file", pw, "-secret-file", secret, "-device", "laptop", "-domain", "sipis.test",
		"-proxy", reg.Host(), "-port", strconv.Itoa(reg.Port()))
	if err != nil || !strings.Contains(out, "200") {
		t.Fatalf("register: %q %v", out, err)
	}
	waitState(t, a, "0d0d0d0d", instance.RegisterLoop)
	if err := a.Store().CheckDeviceSecret(context.Background(), "0d0d0d0d", "laptop", "Dave-Device-Secret-99"); err != nil {
		t.Fatalf("the device secret was not stored: %v", err)
	}

	out, _, err = runCmd("status", "-url", a.HTTPURL(), "-selector", "0d0d0d0d")
	if err != nil || !strings.Contains(out, "Selector: 0d0d0d0d\n") || !strings.Contains(out, ": dave\n") {
		t.Fatalf("status: %q %v", out, err)
	}
	if strings.Contains(out, "pw-dave") || strings.Contains(out, "Dave-Device-Secret") {
		t.Fatalf("status shows a secret: %q", out)
	}
	if _, _, err := runCmd("status", "-url", a.HTTPURL(), "-selector", "0e0e0e0e"); err == nil || !strings.Contains(err.Error(), "no instance") {
		t.Fatalf("status of an unknown selector: %v", err)
	}
	if _, _, err := runCmd("status", "-url", a.HTTPURL(), "-selector", "not-hex"); err == nil {
		t.Fatal("status with a bad selector succeeded")
	}

	_, _, err = runCmd("register", "-url", regURL, "-pubkey", s.Keys.PublicKeyFile, "-selector", "0d0d0d0d",
		"-mode", "foreground", "-device", "laptop", "-secret-file", wrong)
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "not-it") {
		t.Fatalf("foreground with a wrong secret: %v", err)
	}
	waitState(t, a, "0d0d0d0d", instance.RegisterLoop)

	out, _, err = runCmd("register", "-url", regURL, "-pubkey", s.Keys.PublicKeyFile, "-selector", "0d0d0d0d",
		"-mode", "foreground", "-device", "laptop", "-secret-file", secret)
	if err != nil || !strings.Contains(out, "200") {
		t.Fatalf("foreground with the secret: %q %v", out, err)
	}
	waitState(t, a, "0d0d0d0d", instance.Idle)

	out, _, err = runCmd("register", "-url", regURL, "-pubkey", s.Keys.PublicKeyFile, "-selector", "0d0d0d0d",
		"-mode", "off", "-device", "laptop", "-secret-file", secret)
	if err != nil || !strings.Contains(out, "200") {
		t.Fatalf("off with the secret: %q %v", out, err)
	}
}

// TestRegisterThroughTLSProxyWithCA: behind an HTTPS proxy whose certificate a private CA
// signed, "sipis register" fails without -ca and succeeds with it; "sipis status" likewise.
func TestRegisterThroughTLSProxyWithCA(t *testing.T) {
	reg := siptest.NewRegistrar(t)
	a, s := startServer(t)
	backend, _ := url.Parse(a.HTTPURL())
	proxy := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(backend))
	defer proxy.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: proxy.Certificate().Raw}), 0o600)
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw-erin\n"), 0o600)
	args := []string{"register", "-url", proxy.URL + "/sipis/register", "-pubkey", s.Keys.PublicKeyFile, "-selector", "0f0f0f0f",
		"-user", "erin", "-password-file", pw, "-domain", "sipis.test", "-proxy", reg.Host(), "-port", strconv.Itoa(reg.Port())}
	if _, _, err := runCmd(args...); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("register without -ca: %v, want a certificate error", err)
	}
	if _, ok := a.Manager().Snapshot("0f0f0f0f"); ok {
		t.Fatal("the refused connection created the instance")
	}
	if out, _, err := runCmd(append(args, "-ca", ca)...); err != nil || !strings.Contains(out, "200") {
		t.Fatalf("register with -ca: %q %v", out, err)
	}
	if out, _, err := runCmd("status", "-url", proxy.URL, "-ca", ca, "-selector", "0f0f0f0f"); err != nil || !strings.Contains(out, "0f0f0f0f") {
		t.Fatalf("status with -ca: %q %v", out, err)
	}
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, _, err := runCmd(append(args, "-ca", bad)...); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("register with a bad -ca: %v", err)
	}
}
