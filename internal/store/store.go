// Package store keeps sipis's instances, devices and history in SQLite (github.com/mattn/go-sqlite3).
//
// A DB is opened with Open and closed with Close. The schema lives in migrations/*.sql, embedded in
// the binary and applied in order, one transaction each, recorded in schema_migrations. Every row
// that belongs to a node carries the node's name, so that several nodes can later share one
// database; a DB only ever reads and writes the rows of its own node (Options.Node).
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
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
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

// readConns is the size of the reader pool. Readers never block the writer in WAL mode; four is
// enough for the web pages and the engine's start-up scan on a small machine.
const readConns = 4

//go:embed migrations/*.sql
var migrationFS embed.FS

// Options configures Open.
type Options struct {
	// Path is the SQLite database file. It and its folder are created if missing (mode 0600/0700:
	// the file holds sealed credentials).
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
// It holds two connection pools on the same file. All writes go through a single connection
// (write), so writers in this process queue in Go instead of spinning on SQLITE_BUSY, and a write
// transaction never has to upgrade a read lock (the classic WAL deadlock). That connection still
// begins every transaction with BEGIN IMMEDIATE (_txlock=immediate) so that another process on the
// same file waits busy_timeout for the write lock rather than failing mid-transaction. Reads use a
// small pool of query-only connections (read), which in WAL mode run concurrently with the writer
// and see every committed transaction.
type DB struct {
	write *sql.DB
	read  *sql.DB
	node  string
	seal  *sealer
	log   logrus.FieldLogger
	path  string
	regs  regBatcher // registrations waiting for a group commit (batch.go)
}

// Open opens (creating if needed) the database at opts.Path, applies pending migrations and checks
// that opts.DataKey is the key this node's data was sealed with (ErrDataKey otherwise).
func Open(ctx context.Context, opts Options) (*DB, error) {
	if opts.Path == "" {
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
	log := opts.Logger
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	if err := createFile(opts.Path); err != nil {
		return nil, err
	}
	db := &DB{node: opts.Node, seal: seal, log: log, path: opts.Path}

	db.write, err = sql.Open("sqlite3", dsn(opts.Path, false))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	db.write.SetMaxOpenConns(1)
	db.write.SetMaxIdleConns(1)
	db.write.SetConnMaxLifetime(0)
	db.write.SetConnMaxIdleTime(0)
	if err := db.checkWAL(ctx); err != nil {
		db.write.Close()
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.write.Close()
		return nil, err
	}

	db.read, err = sql.Open("sqlite3", dsn(opts.Path, true))
	if err != nil {
		db.write.Close()
		return nil, fmt.Errorf("store: open %s: %w", opts.Path, err)
	}
	db.read.SetMaxOpenConns(readConns)
	db.read.SetMaxIdleConns(readConns)
	if err := db.read.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s for reading: %w", opts.Path, err)
	}
	if err := db.checkKey(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close closes both connection pools. The last connection to close checkpoints the WAL.
func (db *DB) Close() error {
	var errs []error
	if db.read != nil {
		errs = append(errs, db.read.Close())
	}
	if db.write != nil {
		errs = append(errs, db.write.Close())
	}
	return errors.Join(errs...)
}

// Node returns the node name this DB reads and writes.
func (db *DB) Node() string { return db.node }

// dsn builds the go-sqlite3 connection string. All pragmas are set here, in one place:
//   - journal_mode=WAL: readers never block the writer and a commit is one append;
//   - synchronous=NORMAL: in WAL mode a committed transaction survives a crash of the process;
//     only an OS crash or power cut may lose the last transactions, never corrupt the file;
//   - foreign_keys=ON: devices go with their instance (ON DELETE CASCADE);
//   - busy_timeout=5000: wait up to 5 s for a lock held by another process;
//   - secure_delete=ON (writer): deleted rows are overwritten with zeros, so a deleted instance's
//     sealed credentials do not linger in free pages;
//   - _txlock=immediate (writer): see DB;
//   - query_only (readers): a bug cannot write through the reader pool;
//   - _stmt_cache_size=32: each connection keeps its prepared statements; preparing the long
//     upserts cost a third of PutRegistration's time.
//
// The path is passed as a file: URI so that '?' or '#' in it are not taken as parameters.
func dsn(path string, readOnly bool) string {
	r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
	s := "file:" + r.Replace(filepath.ToSlash(path)) +
		"?_journal_mode=WAL&_synchronous=NORMAL&_foreign_keys=1&_busy_timeout=5000&_stmt_cache_size=32"
	if readOnly {
		return s + "&_query_only=1"
	}
	return s + "&_txlock=immediate&_secure_delete=on"
}

// createFile creates the database file and its folder with owner-only permissions, so that the
// -wal and -shm files SQLite creates next to it inherit them.
func createFile(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("store: create folder of database: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store: create database file: %w", err)
	}
	return f.Close()
}

// checkWAL verifies that the journal mode really is WAL (it cannot be on some file systems).
func (db *DB) checkWAL(ctx context.Context) error {
	var mode string
	if err := db.write.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", db.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open %s: journal mode is %q, want wal", db.path, mode)
	}
	return nil
}

// migrate applies, in name order, every embedded migration not yet recorded in schema_migrations.
// Each runs in its own transaction together with its record, so a failed migration leaves no trace
// and a concurrent opener (BEGIN IMMEDIATE) waits and then sees it applied.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("store: create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
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
		return fmt.Errorf("%w: the data of node %q in %s was sealed with another key", ErrDataKey, db.node, db.path)
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
