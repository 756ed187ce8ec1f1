package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dialect is what differs between the two backends once a connection is open. Everything else
// (the SQL of every query, sealing, the schema's meaning) is shared.
type dialect struct {
	// name is "sqlite" or "postgres": the backend's name in errors and logs.
	name Backend
	// migrations is the embedded folder of this backend's migrations.
	migrations string
	// dollar means the driver wants $1, $2 … instead of ? (PostgreSQL).
	dollar bool
	// isForeignKey reports whether err is a foreign key violation.
	isForeignKey func(error) bool
	// isRetryable reports whether err aborted a transaction that may simply be run again
	// (PostgreSQL: serialization failure, deadlock detected). SQLite never needs it: its one
	// writer connection serialises every write transaction.
	isRetryable func(error) bool
	// lockMigrations, when set, runs first in each migration's transaction so that nodes
	// starting together apply the migrations one after the other (SQLite: BEGIN IMMEDIATE).
	lockMigrations string
	// afterCopy, when set, runs in the transaction that copied table (Copy) with its columns:
	// PostgreSQL moves an identity column's sequence past the copied ids.
	afterCopy func(ctx context.Context, t *tx, table string, cols []string) error
	// analyze, when set, gathers the planner's statistics after Copy filled a store
	// (PostgreSQL: until autovacuum's first ANALYZE the planner thinks the freshly filled
	// tables are nearly empty, and SaveStates's join on the selector would scan them).
	analyze string
	// batchUpdates makes SaveStates send a batch as a few large statements rather than one
	// prepared statement per update: right for a server a round trip away (PostgreSQL),
	// slower for in-process SQLite.
	batchUpdates bool
	// listTables lists the store's tables (one column, the name), for Copy.
	listTables string
	// notifyInbox, when set, runs in every transaction that writes an inbox item, with the
	// receiving node's name: PostgreSQL's NOTIFY, delivered at commit (ListenInbox).
	notifyInbox string
}

// pool is a database/sql pool seen through the dialect: every query is written once, in the
// SQLite/standard form with ? placeholders, and rebound to $n for PostgreSQL here, so call sites
// stay backend-neutral. Rebound strings are cached: the same few dozen queries run millions of
// times.
type pool struct {
	db *sql.DB
	d  *dialect
	// rebound caches query text -> PostgreSQL text (only when d.dollar), up to maxRebound
	// entries: the store's queries are a fixed set, but a bug building query text from data
	// must not grow it without end.
	rebound  sync.Map
	nRebound atomic.Int64
}

// maxRebound bounds the rebound cache.
const maxRebound = 4096

func newPool(db *sql.DB, d *dialect) *pool { return &pool{db: db, d: d} }

// q returns query in the backend's placeholder form.
func (p *pool) q(query string) string {
	if !p.d.dollar {
		return query
	}
	if v, ok := p.rebound.Load(query); ok {
		return v.(string)
	}
	out := rebindDollar(query)
	if p.nRebound.Load() < maxRebound {
		if _, loaded := p.rebound.LoadOrStore(query, out); !loaded {
			p.nRebound.Add(1)
		}
	}
	return out
}

// ExecContext runs a statement outside a transaction. On PostgreSQL a statement that failed
// with a serialization failure or deadlock had no effect and is run again (see retry).
func (p *pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q := p.q(query)
	var res sql.Result
	err := p.retry(ctx, func() error {
		var err error
		res, err = p.db.ExecContext(ctx, q, args...)
		return err
	})
	return res, err
}

// QueryContext runs a query outside a transaction.
func (p *pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.db.QueryContext(ctx, p.q(query), args...)
}

// QueryRowContext runs a query that returns at most one row.
func (p *pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.db.QueryRowContext(ctx, p.q(query), args...)
}

// PrepareContext prepares a statement on the pool.
func (p *pool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return p.db.PrepareContext(ctx, p.q(query))
}

// BeginTx starts a transaction whose statements are rebound like the pool's. Nil opts is the
// backend's default: on SQLite BEGIN IMMEDIATE on the one writer connection, on PostgreSQL
// READ COMMITTED (see openPostgres for why that is enough).
func (p *pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (*tx, error) {
	t, err := p.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{tx: t, p: p}, nil
}

// inTx runs fn in a transaction and commits it. On PostgreSQL, when the transaction fails with
// a serialization failure or a deadlock (the server rolled it back: nothing of it is stored), fn
// runs again in a new transaction, a few times, with a short growing pause. fn must therefore
// not have effects outside the transaction.
func (p *pool) inTx(ctx context.Context, fn func(*tx) error) error {
	return p.retry(ctx, func() error {
		t, err := p.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer t.Rollback()
		if err := fn(t); err != nil {
			return err
		}
		return t.Commit()
	})
}

// maxRetries bounds the runs of a transaction that keeps failing with a retryable error.
const maxRetries = 5

// retry runs fn until it succeeds, fails with an error that is not retryable, or has run
// maxRetries times.
func (p *pool) retry(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < maxRetries; i++ {
		if err = fn(); err == nil || p.d.isRetryable == nil || !p.d.isRetryable(err) {
			return err
		}
		// Back off a little so the transaction that won can finish: 2, 4, 8 … ms.
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(time.Duration(2<<i) * time.Millisecond):
		}
	}
	return fmt.Errorf("%w (gave up after %d tries)", err, maxRetries)
}

// Close closes the pool.
func (p *pool) Close() error { return p.db.Close() }

// tx is a transaction whose statements are rebound like its pool's. It does not embed *sql.Tx,
// so that no statement reaches the driver without being rebound.
type tx struct {
	tx *sql.Tx
	p  *pool
}

// Commit commits the transaction.
func (t *tx) Commit() error { return t.tx.Commit() }

// Rollback aborts the transaction; after Commit it does nothing (sql.ErrTxDone).
func (t *tx) Rollback() error { return t.tx.Rollback() }

// ExecContext runs a statement in the transaction.
func (t *tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.p.q(query), args...)
}

// QueryContext runs a query in the transaction.
func (t *tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.p.q(query), args...)
}

// QueryRowContext runs a query that returns at most one row in the transaction.
func (t *tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.p.q(query), args...)
}

// PrepareContext prepares a statement for use in the transaction.
func (t *tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.tx.PrepareContext(ctx, t.p.q(query))
}

// rebindDollar turns each ? placeholder of query into $1, $2 … in order, and each ?NNN into
// $NNN (do not mix the two forms in one query, SQLite does not either). A ? inside a quoted
// string ('…'), a quoted identifier ("…"), a -- comment or a /* */ comment is left alone.
func rebindDollar(query string) string {
	if !strings.ContainsRune(query, '?') {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(query) {
				if query[j] == c {
					if j+1 < len(query) && query[j+1] == c { // doubled quote inside
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(query) {
				j = len(query) - 1
			}
			b.WriteString(query[i : j+1])
			i = j
		case c == '-' && i+1 < len(query) && query[i+1] == '-':
			j := strings.IndexByte(query[i:], '\n')
			if j < 0 {
				j = len(query) - i - 1
			}
			b.WriteString(query[i : i+j+1])
			i += j
		case c == '/' && i+1 < len(query) && query[i+1] == '*':
			j := strings.Index(query[i+2:], "*/")
			end := len(query) - 1
			if j >= 0 {
				end = i + 2 + j + 1
			}
			b.WriteString(query[i : end+1])
			i = end
		case c == '?':
			// ?NNN (SQLite's numbered parameter) is PostgreSQL's $NNN; a bare ? is the next one.
			j := i + 1
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				j++
			}
			b.WriteByte('$')
			if j > i+1 {
				b.WriteString(query[i+1 : j])
				i = j - 1
			} else {
				n++
				b.WriteString(strconv.Itoa(n))
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
