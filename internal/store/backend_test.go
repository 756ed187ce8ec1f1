package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// testBackend is one of the backends the store's test suite runs against: every TestX that
// calls forEachBackend runs once as TestX/sqlite and once as TestX/postgres.
type testBackend struct {
	name Backend
	// newTarget returns the OpenString of a fresh, empty database for tb, removed at its end.
	newTarget func(tb testing.TB) string
}

var testBackends = []testBackend{
	{SQLite, func(tb testing.TB) string { return filepath.Join(tb.TempDir(), "sipis.db") }},
	{PostgreSQL, func(tb testing.TB) string { return pgtest.NewDatabase(tb) }},
}

// forEachBackend runs f as a subtest for each backend (a PostgreSQL one is skipped when
// PostgreSQL is not installed, unless SIPIS_REQUIRE_POSTGRES=1).
func forEachBackend(t *testing.T, f func(t *testing.T, b testBackend)) {
	for _, b := range testBackends {
		t.Run(string(b.name), func(t *testing.T) { f(t, b) })
	}
}

// openAt opens target (an OpenString) as node1 with key, closed at the end of tb.
func (b testBackend) openAt(tb testing.TB, target string, key []byte) *DB {
	tb.Helper()
	db, err := Open(context.Background(), Options{OpenString: target, DataKey: key, Node: "node1"})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// openTest opens a fresh database of b and returns it with its OpenString.
func (b testBackend) openTest(tb testing.TB) (*DB, string) {
	tb.Helper()
	target := b.newTarget(tb)
	return b.openAt(tb, target, testKey(1)), target
}

// The tests' short forms of the pool's methods (rebound like the others).

func (p *pool) Exec(query string, args ...any) (sql.Result, error) {
	return p.ExecContext(context.Background(), query, args...)
}

func (p *pool) Query(query string, args ...any) (*sql.Rows, error) {
	return p.QueryContext(context.Background(), query, args...)
}

func (p *pool) QueryRow(query string, args ...any) *sql.Row {
	return p.QueryRowContext(context.Background(), query, args...)
}
