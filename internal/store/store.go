// Package store keeps sipis's instances, devices and history in SQLite (github.com/mattn/go-sqlite3,
// the embedded default) or PostgreSQL (github.com/jackc/pgx/v5, for several nodes sharing one
// database), chosen by the OpenString given to Open.
//
// A DB is opened with Open and closed with Close. The rest of the code sees only *DB: the SQL is
// written once, with ? placeholders and syntax both backends accept (ON CONFLICT … DO UPDATE,
// RETURNING), and a small dialect (pool.go) rebinds it for PostgreSQL. Everything specific to one
// backend lives in its file, sqlite.go or postgres.go. The schema lives in migrations/*.sql
// (SQLite) and migrations/postgres/*.sql (the same tables and meaning in PostgreSQL types),
// embedded in the binary and applied in order, one transaction each, recorded in
// schema_migrations. Every row that belongs to a node carries the node's name, so that several
// nodes can share one database; a DB reads and writes the rows of its own node (Options.Node),
// except through As and the lease methods of lease.go, with which a cluster moves an instance's
// rows to another node (the node column is the owner; instances.epoch grows on every move).
//
// SIP passwords and per-device secrets are sealed at rest with XChaCha20-Poly1305 under a 32-byte
// data key given to Open; the plain secret never reaches the database file, and a wrong data key
// gives ErrDataKey instead of garbage.
//
// Times are stored as UTC unix nanoseconds (0 means "no time") and read back in UTC.
//
// It owns the schema, the SQL (one method per query) and the sealing of secrets. It must not
// import internal/instance, internal/call, internal/web or internal/sipua, nor decide policy
// (when to register, who may claim a selector, what a call's outcome is): callers decide and the
// store keeps what they decided. Bad input is ErrInvalid and changes nothing.
// docs/design.md lists the tables.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sirupsen/logrus"
)

// Errors returned by the store. Test them with errors.Is: they are usually wrapped with detail.
var (
	// ErrNotFound means the selector, device or contact asked for is not stored for this node.
	ErrNotFound = errors.New("store: not found")
	// ErrReplay means a registration's nonce was already used for its selector.
	ErrReplay = errors.New("store: nonce already used")
	// ErrDataKey means a sealed value cannot be opened with the data key given to Open: the key is
	// wrong, or the stored value was altered.
	ErrDataKey = errors.New("store: cannot decrypt with this data key")
	// ErrInvalid means an argument is malformed; the wrapping error names the field. Nothing was
	// changed.
	ErrInvalid = errors.New("store: invalid input")
)

// DataKeySize is the length in bytes of Options.DataKey.
const DataKeySize = 32

// Backend names one of the store's two backends.
type Backend string

// The backends.
const (
	// SQLite is the embedded default: one file, one node.
	SQLite Backend = "sqlite"
	// PostgreSQL is a server several nodes can share.
	PostgreSQL Backend = "postgres"
)

// Both backends' migrations are embedded; each backend applies its own folder.
//
//go:embed migrations/*.sql migrations/postgres/*.sql
var migrationFS embed.FS

// Options configures Open.
type Options struct {
	// OpenString is Settings.xml's <Database OpenString>; it selects the backend (BackendOf):
	// a libpq key/value string (host=dbsipis port=5432 dbname=sipis user=sipis password='…') or
	// a postgres:// / postgresql:// URL means PostgreSQL, anything else is a SQLite file path or
	// file: URI. It may hold a password: errors and logs never show it.
	OpenString string
	// Path is the SQLite database file, used when OpenString is empty. It and its folder are
	// created if missing (mode 0600/0700: the file holds sealed credentials).
	Path string
	// DataKey is the 32-byte key that seals passwords and device secrets at rest.
	DataKey []byte
	// Node is this server's name (Settings.xml <Server Name>); every row written carries it and
	// only rows of this node are read.
	Node string
	// Logger receives the store's few log lines (migrations applied). Nil discards them.
	Logger logrus.FieldLogger
}

// DB is an open sipis database. It is safe for concurrent use.
//
// It holds two connection pools, write and read; each backend decides what they are (see
// openSQLite and openPostgres). The SQL is shared: the pools rebind it for the backend.
type DB struct {
	write   *pool
	read    *pool
	dialect *dialect
	node    string
	seal    *sealer
	log     logrus.FieldLogger
	// desc names the database in errors: the SQLite path, or PostgreSQL's server, database
	// and user (never its password).
	desc string
	regs regBatcher // registrations waiting for a group commit (batch.go)
	// pg is the parsed PostgreSQL OpenString, for the inbox's LISTEN connection (ListenInbox);
	// nil on SQLite.
	pg *pgx.ConnConfig
}

// Open opens (creating if needed) the database opts selects, applies pending migrations and
// checks that opts.DataKey is the key this node's data was sealed with (ErrDataKey otherwise).
func Open(ctx context.Context, opts Options) (*DB, error) {
	target := opts.OpenString
	if target == "" {
		target = opts.Path
	}
	if strings.TrimSpace(target) == "" {
		return nil, fmt.Errorf("%w: database path is empty", ErrInvalid)
	}
	if opts.Node == "" {
		return nil, fmt.Errorf("%w: node name is empty", ErrInvalid)
	}
	if len(opts.DataKey) != DataKeySize {
		return nil, fmt.Errorf("%w: data key is %d bytes, want %d", ErrInvalid, len(opts.DataKey), DataKeySize)
	}
	seal, err := newSealer(opts.DataKey)
	if err != nil {
		return nil, err
	}
	db, err := openRaw(ctx, target, orDiscard(opts.Logger))
	if err != nil {
		return nil, err
	}
	db.node, db.seal = opts.Node, seal
	if err := db.checkKey(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the connection pools. On SQLite the last connection to close checkpoints the
// WAL.
func (db *DB) Close() error {
	var errs []error
	if db.read != nil && db.read != db.write {
		errs = append(errs, db.read.Close())
	}
	if db.write != nil {
		errs = append(errs, db.write.Close())
	}
	// The pools stay set: a late caller (a handler still running while its test ends) gets
	// database/sql's "database is closed" error instead of racing with Close or a nil pointer,
	// and a second Close is harmless.
	return errors.Join(errs...)
}

// Node returns the node name this DB reads and writes.
func (db *DB) Node() string { return db.node }

// Backend returns the backend this DB is stored in.
func (db *DB) Backend() Backend { return db.dialect.name }

// String names the database for logs and errors: the SQLite file, or the PostgreSQL server,
// database and user. It never holds a password.
func (db *DB) String() string { return db.desc }

// migrate applies, in name order, every embedded migration not yet recorded in schema_migrations.
// Each runs in its own transaction together with its record, so a failed migration leaves no trace
// and a concurrent opener (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock) waits and then
// sees it applied.
func (db *DB) migrate(ctx context.Context) error {
	err := db.write.inTx(ctx, func(tx *tx) error {
		if err := db.lockMigrations(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create schema_migrations in %s: %w", db.desc, err)
	}
	names, err := fs.Glob(migrationFS, db.dialect.migrations+"/*.sql")
	if err != nil {
		return fmt.Errorf("store: list migrations: %w", err)
	}
	sort.Strings(names)
	known := make(map[string]bool, len(names))
	for _, name := range names {
		if err := db.migrateFile(ctx, name); err != nil {
			return err
		}
		known[path.Base(name)] = true
	}
	// A migration this binary does not know was applied by a newer sipis: say so, since this
	// older code may not understand every column it finds.
	rows, err := db.write.QueryContext(ctx, "SELECT name FROM schema_migrations ORDER BY name")
	if err != nil {
		return fmt.Errorf("store: list applied migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("store: list applied migrations: %w", err)
		}
		if !known[name] {
			db.log.WithField("migration", name).Warn("store: database has a migration this version does not know; it was written by a newer sipis")
		}
	}
	return rows.Err()
}

func (db *DB) migrateFile(ctx context.Context, file string) error {
	name := path.Base(file)
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	defer tx.Rollback()
	if err := db.lockMigrations(ctx, tx); err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations WHERE name = ?", name).Scan(&n); err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	if n > 0 {
		return nil
	}
	body, err := migrationFS.ReadFile(file)
	if err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
		name, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: migration %s: %w", name, err)
	}
	db.log.WithField("migration", name).Info("store: migration applied")
	return nil
}

// lockMigrations takes the backend's migration lock in tx, if it has one.
func (db *DB) lockMigrations(ctx context.Context, tx *tx) error {
	if db.dialect.lockMigrations == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, db.dialect.lockMigrations)
	return err
}

// keyCheckPlain is the known value sealed in key_check.
const keyCheckPlain = "sipis data key check"

// checkKey seals a known value on the first open of this node and opens it on every later one.
func (db *DB) checkKey(ctx context.Context) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: check data key: %w", err)
	}
	defer tx.Rollback()
	var sealed []byte
	err = tx.QueryRowContext(ctx, "SELECT sealed FROM key_check WHERE node = ?", db.node).Scan(&sealed)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		sealed, err = db.seal.seal([]byte(keyCheckPlain), adKeyCheck(db.node))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO key_check (node, sealed) VALUES (?, ?)", db.node, sealed); err != nil {
			return fmt.Errorf("store: check data key: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("store: check data key: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("store: check data key: %w", err)
	}
	plain, err := db.seal.open(sealed, adKeyCheck(db.node))
	if err != nil || string(plain) != keyCheckPlain {
		return fmt.Errorf("%w: the data of node %q in %s was sealed with another key", ErrDataKey, db.node, db.desc)
	}
	return nil
}

// nanos converts t to stored form: UTC unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
