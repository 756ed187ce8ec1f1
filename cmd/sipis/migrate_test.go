package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// TestMain stops the PostgreSQL server the migrate-store tests start.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m.Run)) }

// TestMigrateStore runs "sipis migrate-store" from SQLite into PostgreSQL and from there into
// a new SQLite file: both copies open with the same data key and hold the registration, its
// password and device secret; a second run into the filled target is refused, and -force
// replaces it.
func TestMigrateStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := bytes.Repeat([]byte{9}, store.DataKeySize)
	keyFile := filepath.Join(dir, "data.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "sipis.db")
	db, err := store.Open(ctx, store.Options{OpenString: src, DataKey: key, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	inst := &store.Instance{Selector: "ab12", Mode: store.ModeBackground, Account: store.Account{User: "alice",
		Password: "Pa55-Kangaroo", Domain: "example.org", Transport: "udp", Expires: 600}}
	dev := &store.Device{Selector: "ab12", ID: "d1", Platform: "fcm", PushToken: "tok", Secret: "Dev-Secret-Emu"}
	if err := db.PutRegistration(ctx, inst, dev, "nonce1", time.Now()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	pg := pgtest.NewDatabase(t)
	back := filepath.Join(dir, "back.db")
	for _, step := range []struct{ from, to string }{{src, pg}, {pg, back}} {
		out, stderr, err := runCmd("migrate-store", "-from", step.from, "-to", step.to, "-data-key-file", keyFile)
		if err != nil {
			t.Fatalf("migrate-store %s -> %s: %v\n%s", step.from, step.to, err, stderr)
		}
		if !strings.Contains(out, "instances             1 rows") || !strings.Contains(out, "every table's count matches") {
			t.Errorf("migrate-store output:\n%s", out)
		}
		db, err := store.Open(ctx, store.Options{OpenString: step.to, DataKey: key, Node: "n1"})
		if err != nil {
			t.Fatalf("open the copy %s: %v", step.to, err)
		}
		got, err := db.Instance(ctx, "ab12")
		if err != nil || got.Account.Password != "Pa55-Kangaroo" {
			t.Errorf("%s: instance = %+v, %v", db.Backend(), got, err)
		}
		if err := db.CheckDeviceSecret(ctx, "ab12", "d1", "Dev-Secret-Emu"); err != nil {
			t.Errorf("%s: device secret: %v", db.Backend(), err)
		}
		db.Close()
	}

	_, _, err = runCmd("migrate-store", "-from", src, "-to", pg, "-data-key-file", keyFile)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("second run into the filled target: %v, want a refusal", err)
	}
	if _, _, err := runCmd("migrate-store", "-from", src, "-to", pg, "-data-key-file", keyFile, "-force"); err != nil {
		t.Errorf("-force: %v", err)
	}
}

// TestMigrateStoreBadInput: missing flags, a malformed OpenString (whose password is not
// echoed) and a wrong data key are refused with a clear error.
func TestMigrateStoreBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, err := runCmd("migrate-store", "-from", filepath.Join(dir, "a.db")); err == nil || !strings.Contains(stderr, "-from and -to") {
		t.Errorf("no -to: %v %q", err, stderr)
	}
	_, _, err := runCmd("migrate-store", "-from", filepath.Join(dir, "a.db"), "-to", "host=db dbname=x password='Secret-Koala")
	if err == nil || !strings.Contains(err.Error(), "-to: PostgreSQL OpenString cannot be parsed") || strings.Contains(err.Error(), "Koala") {
		t.Errorf("malformed -to: %v", err)
	}
	keyFile := filepath.Join(dir, "data.key")
	os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))), 0o600)
	src := filepath.Join(dir, "sipis.db")
	db, err := store.Open(context.Background(), store.Options{OpenString: src, DataKey: bytes.Repeat([]byte{2}, 32), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, _, err = runCmd("migrate-store", "-from", src, "-to", filepath.Join(dir, "b.db"), "-data-key-file", keyFile)
	if err == nil || !strings.Contains(err.Error(), "cannot decrypt") {
		t.Errorf("wrong data key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.db")); !os.IsNotExist(err) {
		t.Errorf("a refused copy created the target (stat: %v)", err)
	}
}
