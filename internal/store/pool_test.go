package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestRebindDollar(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = $1 AND c = $2"},
		{"UPDATE t SET a = ?1, b = ?1 WHERE c = ?2", "UPDATE t SET a = $1, b = $1 WHERE c = $2"},
		{"SELECT '?', \"a?b\", ? FROM t", "SELECT '?', \"a?b\", $1 FROM t"},
		{"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"},
		{"SELECT ? -- what?\n, ?", "SELECT $1 -- what?\n, $2"},
		{"SELECT /* ? */ ?", "SELECT /* ? */ $1"},
		{"SELECT 'unterminated ?", "SELECT 'unterminated ?"},
	} {
		if got := rebindDollar(c.in); got != c.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBackendOf(t *testing.T) {
	for s, want := range map[string]Backend{
		"sipis.db":                         SQLite,
		"/var/lib/sipis/sipis.db":          SQLite,
		"file:sipis.db?_foo=bar":           SQLite,
		"data/host=x.db":                   SQLite,
		"host=dbsipis port=5432 dbname=s":  PostgreSQL,
		" dbname=sipis user=sipis":         PostgreSQL,
		"postgres://u@h/db":                PostgreSQL,
		"PostgreSQL://u@h/db":              PostgreSQL,
		"user = sipis dbname = sipis":      PostgreSQL,
		"hostname=x.db":                    SQLite,
		"password='a b' host=h dbname=db ": PostgreSQL,
	} {
		if got := BackendOf(s); got != want {
			t.Errorf("BackendOf(%q) = %s, want %s", s, got, want)
		}
	}
}

// TestOpenPostgresErrorsHideThePassword: a malformed PostgreSQL OpenString is ErrInvalid and a
// server that does not answer is an error; neither shows the password, and Describe names the
// server without it.
func TestOpenPostgresErrorsHideThePassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := Options{DataKey: testKey(1), Node: "n"}
	for _, s := range []string{
		"host=127.0.0.1 port=1 dbname=x user=u password='Secret-Numbat",
		"postgres://u:Secret-Numbat@127.0.0.1:notaport/x",
		"host=127.0.0.1 user=u password=Secret-Numbat",
	} {
		opts.OpenString = s
		_, err := Open(ctx, opts)
		if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "Numbat") {
			t.Errorf("Open(%q) = %v, want ErrInvalid without the password", s, err)
		}
	}
	// Port 1 on the loopback: nothing listens, the connection is refused at once.
	opts.OpenString = "host=127.0.0.1 port=1 dbname=x user=u password=Secret-Numbat connect_timeout=5"
	_, err := Open(ctx, opts)
	if err == nil || strings.Contains(err.Error(), "Numbat") || !strings.Contains(err.Error(), "dbname=x user=u") {
		t.Errorf("Open(no server) = %v, want an error naming the database without the password", err)
	}
	if d := Describe(opts.OpenString); strings.Contains(d, "Numbat") || d != "postgres host=127.0.0.1 port=1 dbname=x user=u" {
		t.Errorf("Describe = %q", d)
	}
}

// TestRetry: a serialization failure or deadlock runs the function again, any other error
// returns at once, and the tries are bounded.
func TestRetry(t *testing.T) {
	p := &pool{d: postgresDialect}
	for _, c := range []struct {
		err   error
		fails int
		calls int
		ok    bool
	}{
		{&pgconn.PgError{Code: "40P01"}, 2, 3, true},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40001"}), 1, 2, true},
		{&pgconn.PgError{Code: "23505"}, 1, 1, false},
		{errors.New("plain"), 1, 1, false},
		{&pgconn.PgError{Code: "40001"}, 100, maxRetries, false},
	} {
		calls := 0
		err := p.retry(context.Background(), func() error {
			calls++
			if calls <= c.fails {
				return c.err
			}
			return nil
		})
		if calls != c.calls || (err == nil) != c.ok {
			t.Errorf("%v failing %d times: %d calls, err %v; want %d calls, ok %v", c.err, c.fails, calls, err, c.calls, c.ok)
		}
	}
	if calls := 0; (&pool{d: sqliteDialect}).retry(context.Background(), func() error { calls++; return &pgconn.PgError{Code: "40001"} }) == nil || calls != 1 {
		t.Errorf("SQLite retried (%d calls)", calls)
	}
}

// TestSaveStatesRetriesDeadlock makes a real deadlock on PostgreSQL: another transaction holds
// row X, SaveStates locks Y and waits for X, then the other transaction asks for Y. The server
// breaks the cycle by aborting SaveStates's transaction (the one that waited first reaches
// deadlock_timeout first); SaveStates must write its batch again and succeed.
func TestSaveStatesRetriesDeadlock(t *testing.T) {
	b := testBackends[1]
	db, _ := b.openTest(t)
	fill(t, db, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const x, y = "00000000", "00000001"
	other, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback()
	if _, err := other.ExecContext(ctx, "UPDATE instances SET cseq = 100 WHERE selector = ?", x); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- db.SaveStates(ctx, []StateUpdate{
			{Selector: y, State: StateRegisterLoop, Status: StatusRegistered, CSeq: 7},
			{Selector: x, State: StateRegisterLoop, Status: StatusRegistered, CSeq: 7},
		})
	}()
	// Wait until SaveStates waits for the lock on X.
	for {
		var n int
		if err := db.read.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("SaveStates did not wait for the lock: %v", err)
		case <-ctx.Done():
			t.Fatal("SaveStates never waited for the lock")
		case <-time.After(10 * time.Millisecond): // polls the server's view; no event to wait on
		}
	}
	if _, err := other.ExecContext(ctx, "UPDATE instances SET cseq = 100 WHERE selector = ?", y); err != nil {
		t.Fatalf("the other transaction was the deadlock's victim (%v): the test proves nothing", err)
	}
	if err := other.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("SaveStates after a deadlock: %v", err)
	}
	for _, sel := range []string{x, y} {
		in, err := db.Instance(ctx, sel)
		if err != nil || in.CSeq != 7 || in.State != StateRegisterLoop {
			t.Errorf("%s after the retried batch: %+v, %v", sel, in, err)
		}
	}
}
