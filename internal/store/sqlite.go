package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Everything SQLite-specific lives in this file: the connection string and its pragmas, WAL, the
// single writer connection, the file's permissions and how its errors are recognised.

// readConns is the size of the SQLite reader pool. Readers never block the writer in WAL mode;
// four is enough for the web pages and the engine's start-up scan on a small machine.
const readConns = 4

var sqliteDialect = &dialect{
	name:       SQLite,
	migrations: "migrations",
	isForeignKey: func(err error) bool {
		var se sqlite3.Error
		if errors.As(err, &se) {
			return se.ExtendedCode == sqlite3.ErrConstraintForeignKey
		}
		return err != nil && strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
	},
}

// openSQLite opens the two pools of db on the SQLite file path (see DB) and applies the
// migrations through the writer before the readers open.
//
// All writes go through a single connection (write), so writers in this process queue in Go
// instead of spinning on SQLITE_BUSY, and a write transaction never has to upgrade a read lock
// (the classic WAL deadlock). That connection still begins every transaction with BEGIN
// IMMEDIATE (_txlock=immediate) so that another process on the same file waits busy_timeout for
// the write lock rather than failing mid-transaction. Reads use a small pool of query-only
// connections (read), which in WAL mode run concurrently with the writer and see every
// committed transaction.
func openSQLite(ctx context.Context, db *DB, path string) error {
	if err := createFile(path); err != nil {
		return err
	}
	w, err := sql.Open("sqlite3", dsn(path, false))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	db.write = newPool(w, sqliteDialect)
	if err := checkWAL(ctx, w, path); err != nil {
		return err
	}
	if err := db.migrate(ctx); err != nil {
		return err
	}
	r, err := sql.Open("sqlite3", dsn(path, true))
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	db.read = newPool(r, sqliteDialect)
	if err := r.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open %s for reading: %w", path, err)
	}
	return nil
}

// dsn builds the go-sqlite3 connection string. All pragmas are set here, in one place:
//   - journal_mode=WAL: readers never block the writer and a commit is one append;
//   - synchronous=NORMAL: in WAL mode a committed transaction survives a crash of the process;
//     only an OS crash or power cut may lose the last transactions, never corrupt the file;
//   - foreign_keys=ON: devices go with their instance (ON DELETE CASCADE);
//   - busy_timeout=5000: wait up to 5 s for a lock held by another process;
//   - secure_delete=ON (writer): deleted rows are overwritten with zeros, so a deleted instance's
//     sealed credentials do not linger in free pages;
//   - _txlock=immediate (writer): see openSQLite;
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
func checkWAL(ctx context.Context, w *sql.DB, path string) error {
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store: open %s: journal mode is %q, want wal", path, mode)
	}
	return nil
}
