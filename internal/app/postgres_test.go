package app

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil/pgtest"
	"github.com/sipis/sipis/pkg/registration"
)

// TestPostgresStoreRoundTripAndRestart runs a whole server on a real PostgreSQL database named
// by a key/value OpenString with a password: a registration is stored there and registered, and
// after a restart the instance resumes from PostgreSQL with the same Call-ID and Contact without
// a new REGISTER. The OpenString's password never reaches the log (at Debug level).
func TestPostgresStoreRoundTripAndRestart(t *testing.T) {
	srv := pgtest.New(t)
	open := srv.NewDatabase(t) + " password='Secret-Wallaby'" // trust auth: the server never asks for it
	dir := t.TempDir()
	reg := siptest.NewRegistrar(t, siptest.WithPassword("alice", "pw-alice"), siptest.WithRealm("sipis.test"))
	var logs bytes.Buffer
	start := func() *App {
		s := testSettings(t, dir, "")
		s.Database.OpenString = open
		l := logrus.New()
		l.SetOutput(&logs)
		l.SetLevel(logrus.DebugLevel)
		a, err := New(s, WithLogger(l))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := start()
	if b := a.Store().Backend(); b != store.PostgreSQL {
		t.Fatalf("store backend = %s", b)
	}
	r := newReg("feed0123", "alice", reg, registration.ModeBackground)
	sealed, err := registration.Seal(r, a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	snap := waitPhase(t, a, r.Selector, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})
	stored, err := a.Store().Instance(context.Background(), r.Selector)
	if err != nil || stored.Account.Password != "pw-alice" {
		t.Fatalf("stored %+v %v", stored, err)
	}
	calls := len(reg.RegisterTimes("alice"))
	a.Stop()

	a = start()
	defer a.Stop()
	s2, ok := a.Manager().Snapshot(r.Selector)
	if !ok || s2.Phase.Status != instance.Registered || s2.CallID != snap.CallID || s2.ContactUser != snap.ContactUser {
		t.Fatalf("after restart: %+v", s2)
	}
	if got := len(reg.RegisterTimes("alice")); got != calls {
		t.Errorf("restart re-registered a binding that was still valid (%d REGISTERs)", got-calls)
	}
	if logs.Len() == 0 || strings.Contains(logs.String(), "Secret-Wallaby") {
		t.Errorf("log (%d bytes) is empty or shows the OpenString's password", logs.Len())
	}
}

// TestPostgresOpenErrorHidesPassword: a server that cannot reach its PostgreSQL database fails
// to start with an error that names the database but not its password.
func TestPostgresOpenErrorHidesPassword(t *testing.T) {
	s := testSettings(t, t.TempDir(), "")
	s.Database.OpenString = "host=127.0.0.1 port=1 dbname=sipis user=sipis password='Secret-Wallaby' connect_timeout=5"
	l := logrus.New()
	var logs bytes.Buffer
	l.SetOutput(&logs)
	a, err := New(s, WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Start(context.Background())
	if err == nil {
		a.Stop()
		t.Fatal("started without a database")
	}
	if strings.Contains(err.Error(), "Secret-Wallaby") || !strings.Contains(err.Error(), "dbname=sipis user=sipis") {
		t.Errorf("error = %v", err)
	}
	if strings.Contains(logs.String(), "Secret-Wallaby") {
		t.Error("the log shows the password")
	}
}
