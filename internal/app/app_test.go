package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// testSettings is a complete server on loopback with free ports and files in dir.
func testSettings(t testing.TB, dir string, extra string) *config.Settings {
	t.Helper()
	xml := fmt.Sprintf(`<Sipis>
  <Server Name="test-node" Address="127.0.0.1" Port="0"/>
  <Sip>
    <Listener Transport="udp" Address="127.0.0.1" Port="0"/>
    <Register Workers="16">
      <ResumeWindow Seconds="2"/>
      <TransactionTimeout Seconds="2"/>
      <Backoff><Min Seconds="1"/><Max Seconds="4"/></Backoff>
    </Register>
  </Sip>
  <HttpServer Address="127.0.0.1" Port="0"/>
  <Administrator UserName="admin" Password="secret-admin"/>
  <Database OpenString="sipis.db"/>
  <Lock FileName="sipis.lock"/>
  <Log Stdio="None" Level="Debug" InstanceFileName="logs/{selector}.log"/>
  <Probe Enabled="No"/>
  %s
</Sipis>`, extra)
	s, err := config.Parse([]byte(xml), dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startApp(t *testing.T, s *config.Settings) *App {
	t.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	a, err := New(s, WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

func post(t testing.TB, url string, body []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/sipis/register", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func newReg(sel, user string, reg *siptest.Registrar, mode registration.Mode) *registration.Registration {
	return &registration.Registration{
		Version: registration.Version, Selector: sel, Mode: mode,
		Account: registration.Account{User: user, Password: "pw-" + user, Domain: "sipis.test",
			Proxy: reg.Host(), Port: reg.Port(), Transport: "udp", Expires: 3600},
		Device:    registration.Device{ID: "phone-1", Platform: "none", Secret: "device-secret-" + user},
		Timestamp: time.Now().UTC(), Nonce: registration.NewNonce(),
	}
}

func waitPhase(t testing.TB, a *App, sel string, want instance.Phase) instance.Snapshot {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, ok := a.Manager().Snapshot(sel)
		if ok && s.Phase == want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: phase %v (last error %q), want %v", sel, s.Phase, s.LastError, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRegisteredSince waits until sel's last REGISTER, sent after since, registered it. The
// snapshot is taken under the instance's lock, which the worker holds from the REGISTER's answer
// until it has marked every resulting state for the store, so Flush after this writes them all.
func waitRegisteredSince(t testing.TB, a *App, sel string, since time.Time) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, ok := a.Manager().Snapshot(sel)
		if ok && s.Phase.Status == instance.Registered && s.LastRegisterAt.After(since) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: phase %v, last REGISTER at %v (last error %q); want registered after %v", sel, s.Phase, s.LastRegisterAt, s.LastError, since)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flush waits until the instance manager has written every changed state to the store.
func flush(t testing.TB, a *App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Manager().Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// fileSums hashes the database files that hold data (the -shm index is rebuilt at will).
func fileSums(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, name := range []string{"sipis.db", "sipis.db-wal"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %x\n", name, sha256.Sum256(data))
	}
	return b.String()
}

func TestRegistrationRoundTripAndRestart(t *testing.T) {
	dir := t.TempDir()
	reg := siptest.NewRegistrar(t, siptest.WithPassword("alice", "pw-alice"), siptest.WithRealm("sipis.test"))
	s := testSettings(t, dir, "")
	a := startApp(t, s)

	r := newReg("a1b2c3d4e5f60718", "alice", reg, registration.ModeBackground)
	sealed, err := registration.Seal(r, a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	snap := waitPhase(t, a, r.Selector, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})
	if got := reg.Contacts("alice"); len(got) != 1 || !strings.Contains(got[0].URI, snap.ContactUser) {
		t.Fatalf("registrar contacts %+v, want ours (%s)", got, snap.ContactUser)
	}
	stored, err := a.Store().Instance(context.Background(), r.Selector)
	if err != nil || stored.Account.Password != "pw-alice" || stored.Account.Proxy != reg.Host() {
		t.Fatalf("stored %+v %v", stored, err)
	}

	// Same registration again (same content, new nonce): idempotent. It registers again
	// with the (same) account: wait for that REGISTER's outcome, then for its state to be
	// written, so that the database stays as it is from here on.
	r2 := *r
	r2.Nonce, r2.Timestamp = registration.NewNonce(), time.Now().UTC()
	sealed2, _ := registration.Seal(&r2, a.PublicKey())
	posted := time.Now()
	if code, body := post(t, a.HTTPURL(), sealed2); code != 200 {
		t.Fatalf("second register: %d %s", code, body)
	}
	waitRegisteredSince(t, a, r.Selector, posted)
	if n := a.Manager().Len(); n != 1 {
		t.Fatalf("%d instances", n)
	}
	flush(t, a)
	before := fileSums(t, dir)

	// Every bad input: 4xx, a reason, and the database unchanged.
	otherPub, _, _ := registration.GenerateKey()
	foreign, _ := registration.Seal(newReg("a1b2c3d4e5f60718", "alice", reg, registration.ModeBackground), otherPub)
	stale := newReg("a1b2c3d4e5f60718", "alice", reg, registration.ModeBackground)
	stale.Timestamp = time.Now().Add(-10 * time.Minute)
	staleSealed, _ := registration.Seal(stale, a.PublicKey())
	seal := func(doc string) []byte {
		b, err := boxSeal([]byte(doc), a.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := newReg("a1b2c3d4e5f60718", "alice", reg, registration.ModeBackground)
	for _, tc := range []struct {
		name string
		body []byte
		code int
		why  string
	}{
		{"replayed", sealed, 409, "replayed"},
		{"stale", staleSealed, 400, "timestamp"},
		{"foreign key", foreign, 400, "key"},
		{"truncated", sealed[:40], 400, "truncated"},
		{"empty", nil, 400, ""},
		{"oversized", bytes.Repeat([]byte{1}, 200<<10), 413, ""},
		{"bad json", seal(`{"version":1,`), 400, "valid"},
		{"wrong version", seal(strings.Replace(mustJSON(t, good), `"version":1`, `"version":7`, 1)), 400, "version"},
		{"no selector", seal(strings.Replace(mustJSON(t, good), `"selector":"a1b2c3d4e5f60718"`, `"selector":""`, 1)), 400, "selector"},
		{"bad transport", seal(strings.Replace(mustJSON(t, good), `"transport":"udp"`, `"transport":"carrier-pigeon"`, 1)), 400, "transport"},
		{"unknown field", seal(strings.Replace(mustJSON(t, good), `"version":1`, `"version":1,"evil":true`, 1)), 400, "evil"},
	} {
		code, body := post(t, a.HTTPURL(), tc.body)
		if code != tc.code || !strings.Contains(body, tc.why) || strings.Count(strings.TrimSpace(body), "\n") > 0 {
			t.Errorf("%s: got %d %q, want %d with %q on one line", tc.name, code, body, tc.code, tc.why)
		}
		if strings.Contains(body, "pw-alice") {
			t.Errorf("%s: password in the answer", tc.name)
		}
	}
	flush(t, a) // a state a bad input changed in memory would be written now
	if after := fileSums(t, dir); after != before {
		t.Errorf("bad input changed the database:\n%s\n%s", before, after)
	}

	// Restart: the instance comes back registered, with the same Call-ID and a higher CSeq.
	calls := len(reg.RegisterTimes("alice"))
	a.Stop()
	for _, f := range []string{"sipis.db", "sipis.db-wal"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if bytes.Contains(data, []byte("pw-alice")) || bytes.Contains(data, []byte("device-secret-alice")) {
			t.Errorf("a secret is readable in %s", f)
		}
	}
	// A real server restarts on its configured port; keep the one the first run was given.
	port := a.ua.Addr("udp")[strings.LastIndex(a.ua.Addr("udp"), ":")+1:]
	s = testSettings(t, dir, "")
	s.Sip.Listeners[0].Port = atoi(t, port)
	a = startApp(t, s)
	defer a.Stop()
	s2, ok := a.Manager().Snapshot(r.Selector)
	if !ok || s2.Phase.Status != instance.Registered || s2.CallID != snap.CallID || s2.ContactUser != snap.ContactUser {
		t.Fatalf("after restart: %+v", s2)
	}
	if s2.CSeq < snap.CSeq {
		t.Errorf("CSeq went back from %d to %d", snap.CSeq, s2.CSeq)
	}
	if got := len(reg.RegisterTimes("alice")); got != calls {
		t.Errorf("restart re-registered a binding that was still valid for an hour (%d REGISTERs)", got-calls)
	}

	// Foreground: exactly our binding goes away.
	fg := newReg(r.Selector, "alice", reg, registration.ModeForeground)
	fgSealed, _ := registration.Seal(fg, a.PublicKey())
	if code, body := post(t, a.HTTPURL(), fgSealed); code != 200 {
		t.Fatalf("foreground: %d %s", code, body)
	}
	waitPhase(t, a, r.Selector, instance.Phase{State: instance.Idle, Status: instance.NotRegistered})
	deadline := time.Now().Add(5 * time.Second)
	for len(reg.Contacts("alice")) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := reg.Contacts("alice"); len(got) != 0 {
		t.Errorf("binding left after foreground: %+v", got)
	}

	// Off: the instance and its credentials are deleted from the real store.
	off := newReg(r.Selector, "alice", reg, registration.ModeOff)
	offSealed, _ := registration.Seal(off, a.PublicKey())
	if code, body := post(t, a.HTTPURL(), offSealed); code != 200 {
		t.Fatalf("off: %d %s", code, body)
	}
	deadline = time.Now().Add(5 * time.Second)
	for a.Manager().Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := a.Store().Instance(context.Background(), r.Selector); err == nil || a.Manager().Len() != 0 {
		t.Errorf("instance kept after off: %v, %d held", err, a.Manager().Len())
	}
}

func TestSecondServerOnSameDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	s := testSettings(t, dir, "")
	a := startApp(t, s)
	defer a.Stop()
	l := logrus.New()
	l.SetOutput(io.Discard)
	b, err := New(testSettings(t, dir, ""), WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "lock") {
		b.Stop()
		t.Fatalf("second server: %v", err)
	}
}
