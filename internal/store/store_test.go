package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/testutil"
	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// TestMain fails the run if a test left database goroutines behind (an unclosed DB or rows).
// The crash test's child process is killed mid-write and checks nothing.
func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(m.Run())
	}
	code := pgtest.Main(func() int {
		return testutil.CheckLeaks(m, testutil.Matching("database/sql.", "go-sqlite3", "jackc/pgx"))
	})
	if err := stopBenchPG(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, DataKeySize) }

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

func sampleInstance(sel string) *Instance {
	return &Instance{
		Selector: sel,
		Account: Account{User: "alice", AuthUser: "alice-auth", Password: "Zebra-Pa55word-7781",
			Domain: "example.org", Proxy: "sip.example.org", Port: 5061, Transport: "tls", Expires: 600,
			DisplayName: "Alice Ä"},
		Mode:         ModeBackground,
		Settings:     []byte(`{"user":"alice","password":"Not Empty"}`),
		LastActivity: t0,
	}
}

func sampleDevice(sel string) *Device {
	return &Device{Selector: sel, ID: "dev-1", Platform: "apns", PushToken: "aabbccddeeff00112233",
		AppID: "org.example.phone.voip", Sandbox: true, AppVersion: "1.2.3", Locale: "de_CH",
		Secret: "Device-Secret-Quokka-4242"}
}

func mustPut(tb testing.TB, db *DB, inst *Instance, dev *Device, nonce string) {
	tb.Helper()
	if err := db.PutRegistration(context.Background(), inst, dev, nonce, t0); err != nil {
		tb.Fatalf("PutRegistration(%s, %s): %v", inst.Selector, nonce, err)
	}
}

// fill inserts n instances with selectors %08x(0..n-1) in one transaction, bypassing
// PutRegistration so that large tests and benchmarks set up quickly.
func fill(tb testing.TB, db *DB, n int) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO instances (node, selector, user_name, auth_user, password,
		domain, proxy, port, transport, expires, display_name, mode, off, state, status, last_error, contact_user,
		call_id, cseq, expires_at, settings, created_at, updated_at, last_activity)
		VALUES (?, ?, 'u', 'u', ?, 'example.org', '', 0, 'udp', 600, '', 'background', 0, 'Idle', 'NotRegistered',
		'', ?, ?, 1, 0, '{}', ?, ?, ?)`)
	if err != nil {
		tb.Fatal(err)
	}
	defer stmt.Close()
	for i := 0; i < n; i++ {
		sel := fmt.Sprintf("%08x", i)
		pw, err := db.seal.seal([]byte("pw"), adPassword(sel))
		if err != nil {
			tb.Fatal(err)
		}
		at := nanos(t0.Add(time.Duration(i) * time.Second))
		if _, err := stmt.ExecContext(ctx, db.node, sel, pw, "c"+sel, "call-"+sel, at, at, at); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// checkpoint writes everything committed to the database's files: on SQLite it moves the whole
// WAL into the database file and truncates the WAL; on PostgreSQL (CHECKPOINT) it writes the WAL
// and every changed page to disk.
func checkpoint(tb testing.TB, db *DB) {
	tb.Helper()
	if db.Backend() == PostgreSQL {
		if _, err := db.write.Exec("CHECKPOINT"); err != nil {
			tb.Fatal(err)
		}
		return
	}
	var busy, logFrames, done int
	if err := db.write.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		tb.Fatal(err)
	}
	if busy != 0 {
		tb.Fatalf("checkpoint was blocked (busy=%d)", busy)
	}
}

// fileSums returns the SHA-256 of the database and its -wal file.
func fileSums(tb testing.TB, path string) string {
	tb.Helper()
	var out []string
	for _, p := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			tb.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %x", filepath.Base(p), len(b), sha256.Sum256(b)))
	}
	return strings.Join(out, "; ")
}

// dump returns every row of every table, in a stable order, as text.
func dump(tb testing.TB, db *DB) string {
	tb.Helper()
	q := "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
	if db.Backend() == PostgreSQL {
		q = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
	}
	rows, err := db.read.Query(q)
	if err != nil {
		tb.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			tb.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	var sb strings.Builder
	for _, table := range tables {
		rows, err := db.read.Query("SELECT * FROM " + table + " ORDER BY 1")
		if err != nil {
			tb.Fatal(err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&sb, "== %s %v\n", table, cols)
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			for i, v := range vals {
				if b, ok := v.([]byte); ok { // readable, so that a plain secret would show
					vals[i] = string(b)
				}
			}
			lines = append(lines, fmt.Sprintf("%q\n", vals))
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
		rows.Close()
		sort.Strings(lines)
		sb.WriteString(strings.Join(lines, ""))
	}
	return sb.String()
}

func TestOpenAppliesMigrationsOnce(t *testing.T) { forEachBackend(t, testOpenAppliesMigrationsOnce) }

func testOpenAppliesMigrationsOnce(t *testing.T, b testBackend) {
	ctx := context.Background()
	path := b.newTarget(t)
	if b.name == SQLite {
		path = filepath.Join(filepath.Dir(path), "sub", "sipis.db") // a folder that does not exist yet
	}
	var logBuf bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&logBuf)
	db, err := Open(ctx, Options{OpenString: path, DataKey: testKey(1), Node: "node1", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if b.name == SQLite {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatalf("database file not created: %v", err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("database file mode %v, want no access for group and others", perm)
		}
	}
	migrations := func(db *DB) map[string]int64 {
		rows, err := db.read.Query("SELECT name, applied_at FROM schema_migrations")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]int64{}
		for rows.Next() {
			var name string
			var at int64
			if err := rows.Scan(&name, &at); err != nil {
				t.Fatal(err)
			}
			m[name] = at
		}
		return m
	}
	first := migrations(db)
	files, _ := fs.Glob(migrationFS, db.dialect.migrations+"/*.sql")
	if len(first) != len(files) || len(files) < 3 {
		t.Fatalf("applied migrations = %v, want every one of %v", first, files)
	}
	if _, ok := first["0001_init.sql"]; !ok {
		t.Fatalf("applied migrations = %v, want 0001_init.sql among them", first)
	}
	if !strings.Contains(logBuf.String(), "0001_init") {
		t.Errorf("migration was not logged: %q", logBuf.String())
	}
	mustPut(t, db, sampleInstance("abc1"), sampleDevice("abc1"), "n1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	logBuf.Reset()
	db = b.openAt(t, path, testKey(1))
	if again := migrations(db); !reflect.DeepEqual(first, again) {
		t.Errorf("reopen changed schema_migrations: %v -> %v", first, again)
	}
	in, err := db.Instance(ctx, "abc1")
	if err != nil {
		t.Fatalf("data lost over Close/Open: %v", err)
	}
	if in.Account.Password != "Zebra-Pa55word-7781" {
		t.Errorf("password after reopen = %q", in.Account.Password)
	}
	if b.name == SQLite {
		var mode string
		if err := db.read.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
			t.Errorf("journal_mode = %q, %v; want wal", mode, err)
		}
		var fk int
		if err := db.write.QueryRow("PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
			t.Errorf("foreign_keys = %d, %v; want 1", fk, err)
		}
	}

	// A migration from a newer version is reported, not fatal.
	if _, err := db.write.Exec("INSERT INTO schema_migrations (name, applied_at) VALUES ('9999_future.sql', 1)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(ctx, Options{OpenString: path, DataKey: testKey(1), Node: "node1", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if !strings.Contains(logBuf.String(), "9999_future.sql") || strings.Contains(logBuf.String(), "migration applied") {
		t.Errorf("log after reopen = %q, want only a warning about 9999_future.sql", logBuf.String())
	}
}

// TestConcurrentUse runs writers and readers at once: the single writer connection must queue
// them without SQLITE_BUSY, and readers must never see a half-written registration.
func TestConcurrentUse(t *testing.T) { forEachBackend(t, testConcurrentUse) }

func testConcurrentUse(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	const workers, each = 6, 25
	errs := make(chan error, workers*2)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				sel := fmt.Sprintf("%02x%04x", w, i)
				if err := db.PutRegistration(ctx, sampleInstance(sel), sampleDevice(sel), "n", t0); err != nil {
					errs <- err
					return
				}
				if err := db.SaveStates(ctx, []StateUpdate{{Selector: sel, State: StateRegistering, Status: StatusRegistering}}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := db.ForEachInstance(ctx, func(in *Instance) error {
					if in.Account.Password != "Zebra-Pa55word-7781" {
						return fmt.Errorf("instance %s has password %q", in.Selector, in.Account.Password)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n, _ := db.CountInstances(ctx); n != workers*each {
		t.Errorf("CountInstances = %d, want %d", n, workers*each)
	}
	if c, _ := db.DeviceCounts(ctx); len(c) != workers*each {
		t.Errorf("DeviceCounts has %d selectors, want %d", len(c), workers*each)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"empty path", Options{DataKey: testKey(1), Node: "n"}, "path"},
		{"short key", Options{OpenString: path, DataKey: make([]byte, 16), Node: "n"}, "data key is 16 bytes"},
		{"no key", Options{OpenString: path, Node: "n"}, "data key is 0 bytes"},
		{"empty node", Options{OpenString: path, DataKey: testKey(1)}, "node"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, err := Open(context.Background(), c.opts)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected Open created the file (stat err %v)", err)
	}
}

func TestPutRegistrationRoundTrip(t *testing.T) { forEachBackend(t, testPutRegistrationRoundTrip) }

func testPutRegistrationRoundTrip(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	inst, dev := sampleInstance("0a1b"), sampleDevice("0a1b")
	mustPut(t, db, inst, dev, "nonce-1")
	if len(inst.ContactUser) != 32 || len(inst.CallID) != 32 || inst.State != StateIdle || inst.Status != StatusNotRegistered {
		t.Errorf("new instance got contact %q state %q status %q", inst.ContactUser, inst.State, inst.Status)
	}
	got, err := db.Instance(ctx, "0a1b")
	if err != nil {
		t.Fatal(err)
	}
	want := *sampleInstance("0a1b")
	want.Node = "node1"
	want.State, want.Status, want.ContactUser, want.CallID = StateIdle, StatusNotRegistered, inst.ContactUser, inst.CallID
	want.CreatedAt, want.UpdatedAt = t0, t0
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Instance =\n%+v\nwant\n%+v", *got, want)
	}
	if !reflect.DeepEqual(*got, *inst) {
		t.Errorf("PutRegistration left inst =\n%+v\nbut stored\n%+v", *inst, *got)
	}
	devs, err := db.Devices(ctx, "0a1b")
	if err != nil {
		t.Fatal(err)
	}
	wantDev := *sampleDevice("0a1b")
	wantDev.LastSeen = t0
	if len(devs) != 1 || !reflect.DeepEqual(devs[0], wantDev) {
		t.Errorf("Devices = %+v, want [%+v]", devs, wantDev)
	}

	// The same registration again (new nonce) changes nothing visible.
	before := dump(t, db)
	mustPut(t, db, sampleInstance("0a1b"), sampleDevice("0a1b"), "nonce-2")
	got2, err := db.Instance(ctx, "0a1b")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got2, got) {
		t.Errorf("second identical registration changed the instance:\n%+v\n%+v", got2, got)
	}
	devs2, _ := db.Devices(ctx, "0a1b")
	if !reflect.DeepEqual(devs2, devs) {
		t.Errorf("second identical registration changed devices: %+v", devs2)
	}
	if n, _ := db.CountInstances(ctx); n != 1 {
		t.Errorf("CountInstances = %d, want 1", n)
	}
	if c, _ := db.DeviceCounts(ctx); !reflect.DeepEqual(c, map[string]int{"0a1b": 1}) {
		t.Errorf("DeviceCounts = %v", c)
	}
	// Apart from the nonce and the fresh encryption nonces, rows are the same.
	if strings.Count(dump(t, db), "\n") != strings.Count(before, "\n")+1 {
		t.Errorf("second registration added rows other than its nonce")
	}

	// A second device is added beside the first.
	dev2 := sampleDevice("0a1b")
	dev2.ID, dev2.Platform, dev2.Secret = "dev-2", "fcm", "other"
	mustPut(t, db, sampleInstance("0a1b"), dev2, "nonce-3")
	if c, _ := db.DeviceCounts(ctx); c["0a1b"] != 2 {
		t.Errorf("DeviceCounts after second device = %v", c)
	}

	if _, err := db.Instance(ctx, "ffff"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Instance(unknown) err = %v, want ErrNotFound", err)
	}
	byContact, err := db.InstanceByContact(ctx, inst.ContactUser)
	if err != nil || byContact.Selector != "0a1b" {
		t.Errorf("InstanceByContact = %v, %v", byContact, err)
	}
	if _, err := db.InstanceByContact(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("InstanceByContact(unknown) err = %v", err)
	}
}

func TestPutRegistrationKeepsEngineFields(t *testing.T) {
	forEachBackend(t, testPutRegistrationKeepsEngineFields)
}

func testPutRegistrationKeepsEngineFields(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	mustPut(t, db, sampleInstance("aa"), nil, "n1")
	exp := t0.Add(10 * time.Minute)
	if err := db.SaveStates(ctx, []StateUpdate{{Selector: "aa", State: StateRegisterLoop, Status: StatusRegistered,
		CSeq: 7, ExpiresAt: exp, Off: true, At: t0.Add(time.Second)}}); err != nil {
		t.Fatal(err)
	}
	first, _ := db.Instance(ctx, "aa")

	next := sampleInstance("aa")
	next.Account.Password = "new password"
	next.Mode = ModeForeground
	next.LastActivity = t0.Add(time.Hour)
	mustPut(t, db, next, nil, "n2")
	got, err := db.Instance(ctx, "aa")
	if err != nil {
		t.Fatal(err)
	}
	if got.ContactUser != first.ContactUser || got.CallID != first.CallID || got.CSeq != 7 ||
		got.State != StateRegisterLoop || got.Status != StatusRegistered || !got.ExpiresAt.Equal(exp) || !got.Off {
		t.Errorf("engine fields not kept: %+v", got)
	}
	if got.Account.Password != "new password" || got.Mode != ModeForeground || !got.LastActivity.Equal(next.LastActivity) ||
		!got.CreatedAt.Equal(t0) {
		t.Errorf("registration fields not updated: %+v", got)
	}

	// The Contact user and Call-ID of a stored instance never change (its binding is keyed by
	// them); other non-empty engine fields are applied.
	over := sampleInstance("aa")
	over.ContactUser, over.CallID, over.CSeq, over.State = "fixed-contact", "call@id", 99, StateRegistering
	mustPut(t, db, over, nil, "n3")
	got, _ = db.Instance(ctx, "aa")
	if got.ContactUser != first.ContactUser || got.CallID != first.CallID || got.CSeq != 99 || got.State != StateRegistering {
		t.Errorf("identity changed or engine fields not applied: %+v", got)
	}
	if over.ContactUser != first.ContactUser || over.CallID != first.CallID {
		t.Errorf("PutRegistration did not write back the stored identity: %q %q", over.ContactUser, over.CallID)
	}
}

func TestReplayChangesNothing(t *testing.T) { forEachBackend(t, testReplayChangesNothing) }

func testReplayChangesNothing(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, path := b.openTest(t)
	mustPut(t, db, sampleInstance("beef"), sampleDevice("beef"), "n1")
	checkpoint(t, db)
	// The files are compared on SQLite only: PostgreSQL's files change by themselves (hint
	// bits, its own statistics), so there the rows are compared.
	sums, rows := "", dump(t, db)
	if b.name == SQLite {
		sums = fileSums(t, path)
	}

	changed := sampleInstance("beef")
	changed.Account.Password = "attacker"
	changed.Account.Proxy = "evil.example"
	changedDev := sampleDevice("beef")
	changedDev.PushToken = "attacker-token"
	err := db.PutRegistration(ctx, changed, changedDev, "n1", t0.Add(time.Minute))
	if !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed nonce: err = %v, want ErrReplay", err)
	}
	checkpoint(t, db)
	if b.name == SQLite && fileSums(t, path) != sums {
		got := fileSums(t, path)
		t.Errorf("replay changed the database files:\nbefore %s\nafter  %s", sums, got)
	}
	if got := dump(t, db); got != rows {
		t.Errorf("replay changed rows:\nbefore %s\nafter  %s", rows, got)
	}
	if changed.ContactUser != "" {
		t.Errorf("a refused registration wrote back into inst: %+v", changed)
	}
	// The same nonce is fine for another selector.
	mustPut(t, db, sampleInstance("beef01"), nil, "n1")
}

// scanFiles returns which of needles occur in the bytes of the files that hold the database of
// b at target: on SQLite the database, -wal and -shm files; on PostgreSQL the files of that
// database under the test server's data folder and its WAL (pg_wal).
func scanFiles(t *testing.T, b testBackend, target string, needles map[string][]byte) []string {
	t.Helper()
	files := []string{target, target + "-wal", target + "-shm"}
	if b.name == PostgreSQL {
		var err error
		if files, err = pgtest.Shared(t).Files(context.Background(), target); err != nil {
			t.Fatal(err)
		}
	}
	var found []string
	for _, p := range files {
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, needle := range needles {
			if bytes.Contains(b, needle) {
				found = append(found, name+" in "+filepath.Base(p))
			}
		}
	}
	return found
}

func TestSecretsNotInFiles(t *testing.T) { forEachBackend(t, testSecretsNotInFiles) }

func testSecretsNotInFiles(t *testing.T, b testBackend) {
	db, path := b.openTest(t)
	inst, dev := sampleInstance("c0ffee"), sampleDevice("c0ffee")
	mustPut(t, db, inst, dev, "n1")
	dev.ID = "dev-2"
	mustPut(t, db, sampleInstance("c0ffee"), dev, "n2")
	needles := map[string][]byte{
		"password":      []byte(inst.Account.Password),
		"device secret": []byte(dev.Secret),
		"data key":      testKey(1),
	}
	// Before a checkpoint the data is in the WAL; after it in the main file.
	if found := scanFiles(t, b, path, needles); len(found) > 0 {
		t.Errorf("secrets readable in the files while open: %v", found)
	}
	if st, err := os.Stat(path + "-wal"); b.name == SQLite && (err != nil || st.Size() == 0) {
		t.Fatalf("expected a non-empty WAL to scan: %v", err)
	}
	checkpoint(t, db)
	if found := scanFiles(t, b, path, needles); len(found) > 0 {
		t.Errorf("secrets readable in the files after checkpoint: %v", found)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if found := scanFiles(t, b, path, needles); len(found) > 0 {
		t.Errorf("secrets readable in the files after Close: %v", found)
	}
	// Sanity: the scan does find what is stored in clear.
	if found := scanFiles(t, b, path, map[string][]byte{"domain": []byte("sip.example.org")}); len(found) == 0 {
		t.Error("scan did not find the proxy name, so it proves nothing")
	}
}

func TestWrongDataKey(t *testing.T) { forEachBackend(t, testWrongDataKey) }

func testWrongDataKey(t *testing.T, b testBackend) {
	ctx := context.Background()
	path := b.newTarget(t)
	db := b.openAt(t, path, testKey(1))
	mustPut(t, db, sampleInstance("dd"), sampleDevice("dd"), "n1")
	db.Close()

	_, err := Open(ctx, Options{OpenString: path, DataKey: testKey(2), Node: "node1"})
	if !errors.Is(err, ErrDataKey) {
		t.Fatalf("Open with wrong key: err = %v, want ErrDataKey", err)
	}

	// A value sealed under another key (or moved between rows) is refused on read too.
	db = b.openAt(t, path, testKey(1))
	other, _ := newSealer(testKey(2))
	forged, _ := other.seal([]byte("garbage"), adPassword("dd"))
	if _, err := db.write.Exec("UPDATE instances SET password = ? WHERE selector = 'dd'", forged); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Instance(ctx, "dd"); !errors.Is(err, ErrDataKey) {
		t.Errorf("Instance with foreign ciphertext: err = %v, want ErrDataKey", err)
	}
	if err := db.ForEachInstance(ctx, func(*Instance) error { return nil }); !errors.Is(err, ErrDataKey) {
		t.Errorf("ForEachInstance with foreign ciphertext: err = %v, want ErrDataKey", err)
	}
	// A device secret moved into the password column does not open either (additional data).
	if _, err := db.write.Exec("UPDATE instances SET password = (SELECT secret FROM devices WHERE selector = 'dd') WHERE selector = 'dd'"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Instance(ctx, "dd"); !errors.Is(err, ErrDataKey) {
		t.Errorf("Instance with swapped ciphertext: err = %v, want ErrDataKey", err)
	}
	if _, err := db.write.Exec("UPDATE devices SET secret = ? WHERE selector = 'dd'", []byte{0}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Devices(ctx, "dd"); !errors.Is(err, ErrDataKey) {
		t.Errorf("Devices with short ciphertext: err = %v, want ErrDataKey", err)
	}
}

func TestSaveStatesBatch(t *testing.T) { forEachBackend(t, testSaveStatesBatch) }

func testSaveStatesBatch(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	const n = 10000
	fill(t, db, n)
	ups := make([]StateUpdate, n)
	for i := range ups {
		ups[i] = StateUpdate{Selector: fmt.Sprintf("%08x", i), State: StateRegisterLoop, Status: StatusRegistered,
			CSeq: uint32(i + 2), ExpiresAt: t0.Add(time.Hour), LastError: "", At: t0.Add(time.Minute)}
	}
	ups[17].Status, ups[17].LastError = StatusError, "503 Service Unavailable"
	ups = append(ups, StateUpdate{Selector: "deadbeefdead", State: StateIdle, Status: StatusNotRegistered}) // not stored: skipped
	if err := db.SaveStates(ctx, ups); err != nil {
		t.Fatal(err)
	}
	seen := 0
	err := db.ForEachInstance(ctx, func(in *Instance) error {
		i := seen
		seen++
		want := ups[i]
		if in.Selector != want.Selector || in.State != want.State || in.Status != want.Status || in.CSeq != want.CSeq ||
			in.LastError != want.LastError || !in.ExpiresAt.Equal(want.ExpiresAt) || !in.UpdatedAt.Equal(want.At) {
			return fmt.Errorf("instance %d = %+v, want %+v", i, in, want)
		}
		return nil
	})
	if err != nil || seen != n {
		t.Fatalf("after SaveStates: %v (seen %d of %d)", err, seen, n)
	}

	// One bad update refuses the whole batch.
	before := dump(t, db)
	bad := []StateUpdate{
		{Selector: "00000001", State: StateIdle, Status: StatusNotRegistered},
		{Selector: "00000002", State: "Dancing", Status: StatusNotRegistered},
	}
	if err := db.SaveStates(ctx, bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Dancing") {
		t.Errorf("bad state: err = %v, want ErrInvalid naming it", err)
	}
	bad[1] = StateUpdate{Selector: "ZZ", State: StateIdle, Status: StatusNotRegistered}
	if err := db.SaveStates(ctx, bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "selector") {
		t.Errorf("bad selector: err = %v, want ErrInvalid naming it", err)
	}
	if dump(t, db) != before {
		t.Error("a refused batch changed rows")
	}
}

func TestForEachInstanceStreams(t *testing.T) { forEachBackend(t, testForEachInstanceStreams) }

func testForEachInstanceStreams(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	const n = 20000
	fill(t, db, n)
	last := fmt.Sprintf("%08x", n-1)
	prev, count := "", 0
	err := db.ForEachInstance(ctx, func(in *Instance) error {
		if in.Selector <= prev {
			return fmt.Errorf("order: %s after %s", in.Selector, prev)
		}
		if in.Account.Password != "pw" || in.Node != "node1" {
			return fmt.Errorf("instance %s read wrong: %+v", in.Selector, in)
		}
		prev = in.Selector
		count++
		if count == 1 {
			// The walk holds no lock and has not read ahead: a write from the callback succeeds
			// and the deleted last instance is never delivered.
			return db.DeleteInstance(ctx, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count != n-1 || prev != fmt.Sprintf("%08x", n-2) {
		t.Errorf("walked %d instances ending at %s, want %d ending before the deleted one", count, prev, n-1)
	}

	stop := errors.New("stop")
	count = 0
	err = db.ForEachInstance(ctx, func(*Instance) error {
		count++
		if count == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || count != 3 {
		t.Errorf("stopping: err %v after %d calls", err, count)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.ForEachInstance(cctx, func(*Instance) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}

	count = 0
	err = db.Selectors(ctx, func(sel string, at time.Time) error {
		if want := fmt.Sprintf("%08x", count); sel != want || !at.Equal(t0.Add(time.Duration(count)*time.Second)) {
			return fmt.Errorf("selector %d = %s %v, want %s", count, sel, at, want)
		}
		count++
		return nil
	})
	if err != nil || count != n-1 {
		t.Errorf("Selectors: %v after %d", err, count)
	}
	if c, _ := db.CountInstances(ctx); c != n-1 {
		t.Errorf("CountInstances = %d", c)
	}
}

func TestDeleteInstance(t *testing.T) { forEachBackend(t, testDeleteInstance) }

func testDeleteInstance(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, path := b.openTest(t)
	dev2 := sampleDevice("de1e7e")
	dev2.ID = "dev-2"
	mustPut(t, db, sampleInstance("de1e7e"), sampleDevice("de1e7e"), "n1")
	mustPut(t, db, sampleInstance("de1e7e"), dev2, "n2")
	mustPut(t, db, sampleInstance("e0"), sampleDevice("e0"), "n1")
	if err := db.AddPushTest(ctx, PushTest{Selector: "de1e7e", DeviceID: "dev-1", Platform: "apns", Outcome: "sent"}); err != nil {
		t.Fatal(err)
	}
	var sealed []byte
	if err := db.read.QueryRow("SELECT password FROM instances WHERE selector = 'de1e7e'").Scan(&sealed); err != nil {
		t.Fatal(err)
	}

	if err := db.DeleteInstance(ctx, "de1e7e"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Instance(ctx, "de1e7e"); !errors.Is(err, ErrNotFound) {
		t.Errorf("instance still there: %v", err)
	}
	if devs, err := db.Devices(ctx, "de1e7e"); err != nil || len(devs) != 0 {
		t.Errorf("devices still there: %v %v", devs, err)
	}
	var n int
	db.read.QueryRow("SELECT count(*) FROM devices WHERE selector = 'de1e7e'").Scan(&n)
	if n != 0 {
		t.Errorf("%d device rows left", n)
	}
	if c, _ := db.PushTestCounts(ctx); len(c) != 0 {
		t.Errorf("push tests left: %v", c)
	}
	if c, _ := db.DeviceCounts(ctx); !reflect.DeepEqual(c, map[string]int{"e0": 1}) {
		t.Errorf("other instance's devices touched: %v", c)
	}
	if err := db.DeleteInstance(ctx, "de1e7e"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: err = %v, want ErrNotFound", err)
	}
	// A replay of the deleted instance's registration stays refused.
	if err := db.PutRegistration(ctx, sampleInstance("de1e7e"), nil, "n1", t0); !errors.Is(err, ErrReplay) {
		t.Errorf("replay after delete: err = %v, want ErrReplay", err)
	}
	// The sealed password is gone from the file, not just unlinked (secure_delete). PostgreSQL
	// has no such thing: the dead row stays in the table's file until VACUUM reuses its space,
	// and in the WAL until the segment is recycled. It is sealed, so useless without the data
	// key (docs/store.md says so).
	if b.name == PostgreSQL {
		return
	}
	checkpoint(t, db)
	if found := scanFiles(t, b, path, map[string][]byte{"sealed password": sealed}); len(found) > 0 {
		t.Errorf("deleted credentials still in the file: %v", found)
	}
}

func TestSilentInstancesAndTouch(t *testing.T) { forEachBackend(t, testSilentInstancesAndTouch) }

func testSilentInstancesAndTouch(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	for i, sel := range []string{"a1", "a2", "a3"} {
		in := sampleInstance(sel)
		in.LastActivity = t0.Add(time.Duration(i) * time.Hour)
		mustPut(t, db, in, sampleDevice(sel), "n")
	}
	got, err := db.SilentInstances(ctx, t0.Add(90*time.Minute))
	if err != nil || !reflect.DeepEqual(got, []string{"a1", "a2"}) {
		t.Errorf("SilentInstances = %v, %v", got, err)
	}
	if err := db.Touch(ctx, "a1", "dev-1", t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _ = db.SilentInstances(ctx, t0.Add(90*time.Minute))
	if !reflect.DeepEqual(got, []string{"a2"}) {
		t.Errorf("after Touch: SilentInstances = %v", got)
	}
	devs, _ := db.Devices(ctx, "a1")
	if len(devs) != 1 || !devs[0].LastSeen.Equal(t0.Add(5*time.Hour)) {
		t.Errorf("Touch did not update the device: %+v", devs)
	}
	// An older touch never moves activity back.
	if err := db.Touch(ctx, "a1", "", t0); err != nil {
		t.Fatal(err)
	}
	if in, _ := db.Instance(ctx, "a1"); !in.LastActivity.Equal(t0.Add(5 * time.Hour)) {
		t.Errorf("older Touch moved LastActivity to %v", in.LastActivity)
	}
	if err := db.Touch(ctx, "a9", "", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch(unknown) = %v", err)
	}
	if err := db.Touch(ctx, "a1", "nodev", t0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Touch(unknown device) = %v", err)
	}
	if _, err := db.SilentInstances(ctx, time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SilentInstances(zero) = %v", err)
	}
}

func TestPruneNonces(t *testing.T) { forEachBackend(t, testPruneNonces) }

func testPruneNonces(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	in := sampleInstance("ab")
	for i := 0; i < 5; i++ {
		if err := db.PutRegistration(ctx, in, nil, fmt.Sprint("n", i), t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	n, err := db.PruneNonces(ctx, t0.Add(150*time.Second))
	if err != nil || n != 3 {
		t.Fatalf("PruneNonces = %d, %v; want 3", n, err)
	}
	// A pruned nonce is accepted again (the API refuses it as stale); a kept one is not.
	if err := db.PutRegistration(ctx, in, nil, "n0", t0); err != nil {
		t.Errorf("pruned nonce refused: %v", err)
	}
	if err := db.PutRegistration(ctx, in, nil, "n4", t0); !errors.Is(err, ErrReplay) {
		t.Errorf("kept nonce: err = %v, want ErrReplay", err)
	}
}

func TestMarkTokenInvalid(t *testing.T) { forEachBackend(t, testMarkTokenInvalid) }

func testMarkTokenInvalid(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	mustPut(t, db, sampleInstance("ab"), sampleDevice("ab"), "n1")
	tok := sampleDevice("ab").PushToken
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", tok); err != nil {
		t.Fatal(err)
	}
	devs, _ := db.Devices(ctx, "ab")
	if len(devs) != 1 || !devs[0].TokenInvalid {
		t.Errorf("token not marked: %+v", devs)
	}
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-9", tok); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown device: err = %v", err)
	}
	if err := db.DeleteDevice(ctx, "ab", "dev-9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteDevice(unknown) err = %v", err)
	}
	if err := db.DeleteDevice(ctx, "ab", "dev-1"); err != nil {
		t.Fatal(err)
	}
	if devs, _ := db.Devices(ctx, "ab"); len(devs) != 0 {
		t.Errorf("device not deleted: %+v", devs)
	}
	if _, err := db.Instance(ctx, "ab"); err != nil {
		t.Errorf("DeleteDevice removed the instance: %v", err)
	}
	// The app registering again with its token clears the mark.
	mustPut(t, db, sampleInstance("ab"), sampleDevice("ab"), "n2")
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", tok); err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, sampleInstance("ab"), sampleDevice("ab"), "n3")
	devs, _ = db.Devices(ctx, "ab")
	if len(devs) != 1 || devs[0].TokenInvalid {
		t.Error("re-registration did not clear TokenInvalid")
	}
}

// An iPhone's two tokens die one at a time, and a token the device no longer has marks nothing.
func TestMarkTokenInvalidOneOfTwo(t *testing.T) { forEachBackend(t, testMarkTokenInvalidOneOfTwo) }

func testMarkTokenInvalidOneOfTwo(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	dev := sampleDevice("ab")
	dev.AlertToken = "a1e47a1e47"
	mustPut(t, db, sampleInstance("ab"), dev, "n1")
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", "a1e47a1e47"); err != nil {
		t.Fatal(err)
	}
	devs, _ := db.Devices(ctx, "ab")
	if len(devs) != 1 || devs[0].TokenInvalid || !devs[0].AlertTokenInvalid || devs[0].AlertToken != "a1e47a1e47" {
		t.Fatalf("after the alert token died: %+v", devs)
	}
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", "0bso1e7e"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stale token: err = %v, want ErrNotFound", err)
	}
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty token: err = %v, want ErrInvalid", err)
	}
	if devs, _ := db.Devices(ctx, "ab"); devs[0].TokenInvalid {
		t.Errorf("the VoIP token died with the alert token: %+v", devs)
	}
	if err := db.MarkTokenInvalid(ctx, "ab", "dev-1", dev.PushToken); err != nil {
		t.Fatal(err)
	}
	if devs, _ := db.Devices(ctx, "ab"); !devs[0].TokenInvalid || !devs[0].AlertTokenInvalid {
		t.Errorf("after both died: %+v", devs)
	}
}

func TestPushTestCounts(t *testing.T) { forEachBackend(t, testPushTestCounts) }

func testPushTestCounts(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	for _, pt := range []PushTest{
		{Selector: "a1", Platform: "apns", Outcome: "sent"},
		{Selector: "a1", Platform: "apns", Outcome: "sent"},
		{Selector: "a2", Platform: "apns", Outcome: "failed", Reason: "BadDeviceToken"},
		{Selector: "a2", Platform: "fcm", Outcome: "sent", At: t0},
	} {
		if err := db.AddPushTest(ctx, pt); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]map[string]int{"apns": {"sent": 2, "failed": 1}, "fcm": {"sent": 1}}
	if got, err := db.PushTestCounts(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("PushTestCounts = %v, %v; want %v", got, err, want)
	}
	if err := db.AddPushTest(ctx, PushTest{Selector: "a1", Outcome: "sent"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no platform: err = %v", err)
	}
}

func TestProbeEvents(t *testing.T) { forEachBackend(t, testProbeEvents) }

func testProbeEvents(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	for i, ev := range []ProbeEvent{
		{Target: "sip:a.example", OldState: "", NewState: "up", Code: 200, RTT: 12 * time.Millisecond},
		{Target: "sip:a.example", OldState: "up", NewState: "down", LastError: "timeout"},
		{Target: "sip:b.example", OldState: "", NewState: "up", Code: 200},
		{Target: "sip:a.example", OldState: "down", NewState: "up", Code: 404, RTT: time.Second},
	} {
		ev.At = t0.Add(time.Duration(i) * time.Minute)
		if err := db.AddProbeEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.ProbeEvents(ctx, "sip:a.example", 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []ProbeEvent{
		{Target: "sip:a.example", OldState: "down", NewState: "up", Code: 404, RTT: time.Second, At: t0.Add(3 * time.Minute)},
		{Target: "sip:a.example", OldState: "up", NewState: "down", LastError: "timeout", At: t0.Add(time.Minute)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ProbeEvents =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := db.ProbeEvents(ctx, "sip:a.example", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("limit 0: err = %v", err)
	}
	if err := db.AddProbeEvent(ctx, ProbeEvent{NewState: "up"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no target: err = %v", err)
	}
	n, err := db.PruneProbeEvents(ctx, t0.Add(90*time.Second))
	if err != nil || n != 2 {
		t.Errorf("PruneProbeEvents = %d, %v; want 2", n, err)
	}
	if got, _ := db.ProbeEvents(ctx, "sip:a.example", 10); len(got) != 1 {
		t.Errorf("after prune: %+v", got)
	}
}

func TestPutRegistrationRejectsBadInput(t *testing.T) {
	forEachBackend(t, testPutRegistrationRejectsBadInput)
}

func testPutRegistrationRejectsBadInput(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	mustPut(t, db, sampleInstance("ab"), sampleDevice("ab"), "n0")
	before := dump(t, db)
	cases := []struct {
		name  string
		edit  func(*Instance, *Device)
		nonce string
		want  string
	}{
		{"upper-case selector", func(i *Instance, d *Device) { i.Selector, d.Selector = "AB", "AB" }, "x", "not lowercase hex"},
		{"empty selector", func(i *Instance, d *Device) { i.Selector = "" }, "x", "selector is empty"},
		{"long selector", func(i *Instance, d *Device) { i.Selector = strings.Repeat("a", 300); d.Selector = "" }, "x", "at most"},
		{"bad mode", func(i *Instance, d *Device) { i.Mode = "sleep" }, "x", "mode"},
		{"no user", func(i *Instance, d *Device) { i.Account.User = "" }, "x", "user is empty"},
		{"no domain", func(i *Instance, d *Device) { i.Account.Domain = "" }, "x", "domain is empty"},
		{"bad port", func(i *Instance, d *Device) { i.Account.Port = 70000 }, "x", "port 70000"},
		{"bad transport", func(i *Instance, d *Device) { i.Account.Transport = "sctp" }, "x", "transport"},
		{"negative expires", func(i *Instance, d *Device) { i.Account.Expires = -1 }, "x", "expires"},
		{"bad settings", func(i *Instance, d *Device) { i.Settings = []byte("{") }, "x", "JSON"},
		{"bad state", func(i *Instance, d *Device) { i.State = "Sleeping" }, "x", "state"},
		{"bad contact", func(i *Instance, d *Device) { i.ContactUser = "a@b" }, "x", "contact user"},
		{"device of other selector", func(i *Instance, d *Device) { d.Selector = "cd" }, "x", "device selector"},
		{"device without id", func(i *Instance, d *Device) { d.ID = "" }, "x", "device id"},
		{"device without platform", func(i *Instance, d *Device) { d.Platform = "" }, "x", "platform"},
		{"empty nonce", func(i *Instance, d *Device) {}, "", "nonce"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in, dev := sampleInstance("ab"), sampleDevice("ab")
			in.Account.Password = "Secret-In-Error?"
			c.edit(in, dev)
			err := db.PutRegistration(ctx, in, dev, c.nonce, t0)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "Secret-In-Error") {
				t.Errorf("error reveals the password: %v", err)
			}
		})
	}
	if err := db.PutRegistration(ctx, nil, nil, "x", t0); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil instance: err = %v", err)
	}
	if dump(t, db) != before {
		t.Error("refused registrations changed rows")
	}
}

// TestPathWithURICharacters checks that a path with URI syntax in it names a file, not parameters.
func TestPathWithURICharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a?b#c%20d.db")
	db := testBackends[0].openAt(t, path, testKey(1)) // SQLite only: a file path
	mustPut(t, db, sampleInstance("ab"), nil, "n")
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %q: %v", path, err)
	}
}

// TestNodesAreSeparate checks that two nodes sharing a file see only their own rows.
func TestNodesAreSeparate(t *testing.T) { forEachBackend(t, testNodesAreSeparate) }

func testNodesAreSeparate(t *testing.T, b testBackend) {
	ctx := context.Background()
	db1, path := b.openTest(t)
	db2, err := Open(ctx, Options{OpenString: path, DataKey: testKey(1), Node: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	mustPut(t, db1, sampleInstance("ab"), sampleDevice("ab"), "n")
	if _, err := db2.Instance(ctx, "ab"); !errors.Is(err, ErrNotFound) {
		t.Errorf("node2 sees node1's instance: %v", err)
	}
	if n, _ := db2.CountInstances(ctx); n != 0 {
		t.Errorf("node2 counts %d instances", n)
	}
	var node string
	if err := db1.read.QueryRow("SELECT node FROM devices").Scan(&node); err != nil || node != "node1" {
		t.Errorf("device row node = %q, %v", node, err)
	}
}

// TestTrendRoundTrip stores trend samples and marks, prunes the old ones and reads the rest.
func TestTrendRoundTrip(t *testing.T) { forEachBackend(t, testTrendRoundTrip) }

func testTrendRoundTrip(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	old := []TrendSample{{At: t0, Name: "calls.missed", Value: 3}}
	if err := db.PutTrend(ctx, old, []TrendMark{{At: t0, Text: "old"}}, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(2 * time.Hour)
	now := []TrendSample{{At: t1, Name: "instances.registered", Gauge: true, Value: 42}, {At: t1, Name: "calls.missed", Value: 1.5}}
	if err := db.PutTrend(ctx, now, []TrendMark{{At: t1, Text: "probe down"}}, t1.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	samples, marks, err := db.TrendSince(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) != 2 || samples[0].Name != "calls.missed" || samples[0].Value != 1.5 || samples[0].Gauge ||
		!samples[1].Gauge || samples[1].Value != 42 || !samples[1].At.Equal(t1) {
		t.Errorf("samples %+v", samples)
	}
	if len(marks) != 1 || marks[0].Text != "probe down" || !marks[0].At.Equal(t1) {
		t.Errorf("marks %+v", marks)
	}
}
