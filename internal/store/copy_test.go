package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// fillAll writes rows into every table of db's store, for two nodes (node1 is db's own).
func fillAll(t *testing.T, db *DB, target string) {
	t.Helper()
	ctx := context.Background()
	other, err := Open(ctx, Options{OpenString: target, DataKey: testKey(1), Node: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, d := range []*DB{db, other} {
		for i := 0; i < 30; i++ {
			sel := fmt.Sprintf("c0%04x", i)
			dev := sampleDevice(sel)
			dev.AlertToken = "alert-" + sel
			mustPut(t, d, sampleInstance(sel), dev, "n"+sel)
		}
		if err := d.SaveStates(ctx, []StateUpdate{{Selector: "c00001", State: StateRegisterLoop, Status: StatusRegistered,
			CSeq: 7, ExpiresAt: t0.Add(time.Hour), ContactAddr: "203.0.113.7:5060", Off: true}}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := d.AddMessage(ctx, &Message{Selector: "c00002", From: "sip:bob@x", ContentType: "text/plain",
				Body: []byte(fmt.Sprintf("Hello-Wombat-%d", i)), ReceivedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.PutCall(ctx, &Call{Selector: "c00003", PairingID: "p1", CallID: "cid", Devices: []string{"dev-1"},
			DialogState: DialogTerminated, Outcome: OutcomeMissed, Reason: "cancelled", ReceivedAt: t0, EndedAt: t0.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if err := d.AddPushTest(ctx, PushTest{Selector: "c00004", DeviceID: "dev-1", Platform: "apns", Outcome: "sent"}); err != nil {
			t.Fatal(err)
		}
		if err := d.AddProbeEvent(ctx, ProbeEvent{Target: "sip:a.example", OldState: "up", NewState: "down", Code: 503, RTT: time.Millisecond, At: t0}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.PutHookDevice(ctx, &HookDevice{SipUserID: "150010001", Platform: "fcm", App: "com.example", Token: "tok-1", Sandbox: true}); err != nil {
			t.Fatal(err)
		}
		if err := d.PutHookCall(ctx, &HookCall{KeyHash: strings.Repeat("ab", 32), SipUserID: "150010001", CallID: "c1",
			Outcome: OutcomeAccepted, Devices: 1, Pushes: 1, ReceivedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if err := d.AddHookMetric(ctx, &HookMetric{SipUserID: "150010001", SetupResult: "true", Network: "WiFi", FirstResponse: 120 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		now := time.Now().Truncate(time.Minute)
		if err := d.PutTrend(ctx, []TrendSample{{At: now, Name: "instances.registered", Gauge: true, Value: 2.5}},
			[]TrendMark{{At: now, Text: "sip:a.example down"}}, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
}

// dumpData is dump without schema_migrations, whose applied_at is the time of each store's
// own migration.
func dumpData(t *testing.T, db *DB) string {
	t.Helper()
	s := dump(t, db)
	i := strings.Index(s, "== schema_migrations")
	j := strings.Index(s[i+1:], "== ")
	if j < 0 {
		return s[:i]
	}
	return s[:i] + s[i+1+j:]
}

// TestCopyBothWays copies a SQLite store holding rows in every table, of two nodes, into
// PostgreSQL and that copy back into a new SQLite file: every row arrives unchanged (same ids,
// same sealed bytes), the copies open with the same data key and read the same secrets, and
// new rows get fresh ids after the copied ones.
func TestCopyBothWays(t *testing.T) {
	ctx := context.Background()
	sqlitePath := filepath.Join(t.TempDir(), "src.db")
	src := testBackends[0].openAt(t, sqlitePath, testKey(1))
	fillAll(t, src, sqlitePath)
	want := dumpData(t, src)
	for _, w := range []string{"c0001d", "node2", "tok-1", "sip:a.example down", "203.0.113.7:5060"} {
		if !strings.Contains(want, w) {
			t.Fatalf("the source dump lacks %q: it proves nothing", w)
		}
	}
	wantInst, err := src.Instance(ctx, "c00001")
	if err != nil {
		t.Fatal(err)
	}
	src.Close()

	pg := pgtest.NewDatabase(t)
	counts, err := Copy(ctx, CopyOptions{From: sqlitePath, To: pg, DataKey: testKey(1), BatchSize: 7})
	if err != nil {
		t.Fatalf("Copy SQLite -> PostgreSQL: %v", err)
	}
	total := map[string]int64{}
	for _, c := range counts {
		if c.Source != c.Target {
			t.Errorf("%s: %d -> %d rows", c.Table, c.Source, c.Target)
		}
		total[c.Table] = c.Target
	}
	for _, table := range copyOrder {
		if total[table] == 0 {
			t.Errorf("table %s copied no rows (counts %v): the test does not cover it", table, counts)
		}
	}
	back := filepath.Join(t.TempDir(), "back.db")
	if _, err := Copy(ctx, CopyOptions{From: pg, To: back, DataKey: testKey(1)}); err != nil {
		t.Fatalf("Copy PostgreSQL -> SQLite: %v", err)
	}

	for _, target := range []string{pg, back} {
		db := testBackend{}.openAt(t, target, testKey(1))
		if got := dumpData(t, db); got != want {
			t.Errorf("%s: rows differ from the source:\n got %s\nwant %s", db.Backend(), got, want)
		}
		in, err := db.Instance(ctx, "c00001")
		if err != nil {
			t.Fatal(err)
		}
		if in.Account.Password != wantInst.Account.Password || in.ContactAddr != "203.0.113.7:5060" || !in.Off {
			t.Errorf("%s: instance after copy = %+v", db.Backend(), in)
		}
		if err := db.CheckDeviceSecret(ctx, "c00001", "dev-1", "Device-Secret-Quokka-4242"); err != nil {
			t.Errorf("%s: device secret after copy: %v", db.Backend(), err)
		}
		msgs, err := db.Messages(ctx, "c00002", 10)
		if err != nil || len(msgs) != 3 || string(msgs[0].Body) != "Hello-Wombat-0" {
			t.Fatalf("%s: messages after copy = %+v, %v", db.Backend(), msgs, err)
		}
		m := &Message{Selector: "c00002", ContentType: "text/plain", Body: []byte("new")}
		if err := db.AddMessage(ctx, m); err != nil || m.ID <= msgs[2].ID+3 {
			// node2's three messages come after node1's: a new id is above all six.
			t.Errorf("%s: new message after copy: id %d, %v; want above the copied ids", db.Backend(), m.ID, err)
		}
	}
}

// TestCopyRefuses: a non-empty target is refused unless Force (which replaces its rows), a
// wrong data key is found before anything is copied, and a missing source is an error.
func TestCopyRefuses(t *testing.T) {
	ctx := context.Background()
	sqlitePath := filepath.Join(t.TempDir(), "src.db")
	src := testBackends[0].openAt(t, sqlitePath, testKey(1))
	mustPut(t, src, sampleInstance("aa"), sampleDevice("aa"), "n1")
	src.Close()
	pg := pgtest.NewDatabase(t)

	_, err := Copy(ctx, CopyOptions{From: sqlitePath, To: pg, DataKey: testKey(2)})
	if !errors.Is(err, ErrDataKey) {
		t.Fatalf("wrong key: err = %v, want ErrDataKey", err)
	}
	dst := testBackend{}.openAt(t, pg, testKey(2)) // the wrong key opens: nothing was copied
	if n, _ := dst.CountInstances(ctx); n != 0 {
		t.Errorf("a refused copy wrote %d instances", n)
	}
	mustPut(t, dst, sampleInstance("bb"), nil, "n1")
	dst.Close()

	if _, err := Copy(ctx, CopyOptions{From: sqlitePath, To: pg, DataKey: testKey(1)}); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("non-empty target: err = %v, want ErrTargetNotEmpty", err)
	}
	if _, err := Copy(ctx, CopyOptions{From: sqlitePath, To: pg, DataKey: testKey(1), Force: true}); err != nil {
		t.Fatalf("Force: %v", err)
	}
	dst = testBackend{}.openAt(t, pg, testKey(1))
	if _, err := dst.Instance(ctx, "bb"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Force kept the target's old rows: %v", err)
	}
	if in, err := dst.Instance(ctx, "aa"); err != nil || in.Account.Password != "Zebra-Pa55word-7781" {
		t.Errorf("after Force: %+v, %v", in, err)
	}

	if _, err := Copy(ctx, CopyOptions{From: filepath.Join(t.TempDir(), "none.db"), To: pg, DataKey: testKey(1), Force: true}); err == nil {
		t.Error("a missing source was copied")
	}
}
