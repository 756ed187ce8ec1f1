package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
)

// Everything PostgreSQL-specific lives in this file: how an OpenString is recognised and parsed,
// the pool's size and lifetimes, and how the server's errors are recognised.

// PostgreSQL pool sizing. A node's database work is one write-behind persister (one batch at a
// time), the registrations arriving over HTTP and the pages' reads; eight connections let those
// overlap, while several nodes sharing one server (max_connections is 100 by default) each take
// a small share of it. Connections are recycled after pgConnLifetime, so that a fail-over of the
// server or a changed DNS name is picked up, and closed after pgConnIdle unused.
const (
	pgMaxConns     = 8
	pgConnLifetime = 30 * time.Minute
	pgConnIdle     = 5 * time.Minute
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises migrations of nodes starting
// at the same time against one database (SQLite's BEGIN IMMEDIATE does that for it).
const migrationLockKey = 0x5ec0_5175

var postgresDialect = &dialect{
	name:       PostgreSQL,
	migrations: "migrations/postgres",
	dollar:     true,
	isForeignKey: func(err error) bool {
		return pgCode(err) == "23503" // foreign_key_violation
	},
	isRetryable: func(err error) bool {
		c := pgCode(err)
		return c == "40001" || c == "40P01" // serialization_failure, deadlock_detected
	},
	lockMigrations: fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", migrationLockKey),
	afterCopy:      pgAfterCopy,
	analyze:        "ANALYZE",
	notifyInbox:    "SELECT pg_notify('" + inboxChannel + "', ?)",
	batchUpdates:   true,
	listTables: `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()
		AND table_type = 'BASE TABLE'`,
}

// pgAfterCopy moves the sequence of table's identity column id (if it has one) past the ids
// Copy wrote explicitly, so that the next INSERT does not collide with a copied row.
func pgAfterCopy(ctx context.Context, t *tx, table string, cols []string) error {
	if !contains(cols, "id") {
		return nil
	}
	_, err := t.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence(?, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM `+table, table)
	return err
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// libpqKeywords are the connection parameters of a libpq key/value string that pgx knows
// (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS); a string
// whose first word is one of them, followed by '=', is taken as PostgreSQL.
var libpqKeywords = map[string]bool{
	"host": true, "hostaddr": true, "port": true, "dbname": true, "user": true, "password": true,
	"passfile": true, "connect_timeout": true, "sslmode": true, "sslkey": true, "sslcert": true,
	"sslrootcert": true, "sslpassword": true, "sslsni": true, "service": true, "servicefile": true,
	"target_session_attrs": true, "application_name": true, "options": true, "database": true,
	"sslnegotiation": true, "min_read_buffer_size": true,
}

// BackendOf returns the backend an OpenString selects: PostgreSQL for a postgres:// or
// postgresql:// URL or a libpq key/value string (host=… port=… dbname=… user=… password='…'),
// SQLite for anything else (a file path or a file: URI). It does not check the string further;
// Open and CheckOpenString do.
func BackendOf(openString string) Backend {
	s := strings.TrimSpace(openString)
	l := strings.ToLower(s)
	if strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://") {
		return PostgreSQL
	}
	key, _, ok := strings.Cut(s, "=")
	if ok && libpqKeywords[strings.ToLower(strings.TrimSpace(key))] {
		return PostgreSQL
	}
	return SQLite
}

// CheckOpenString reports whether a PostgreSQL OpenString can be parsed, without connecting.
// The error says what is wrong in words meant for a settings file's reader and never contains
// the string (it may hold a password). A SQLite OpenString is always accepted here; its file is
// checked when it is opened.
func CheckOpenString(openString string) error {
	if BackendOf(openString) != PostgreSQL {
		return nil
	}
	_, err := parsePostgresConfig(openString)
	return err
}

// Describe names the database an OpenString selects, for logs and errors: the SQLite path as
// given, or PostgreSQL's server, database and user. It never returns a password.
func Describe(openString string) string {
	if BackendOf(openString) != PostgreSQL {
		return openString
	}
	cfg, err := parsePostgresConfig(openString)
	if err != nil {
		return "postgres (malformed OpenString)"
	}
	return describePostgres(cfg)
}

// parsePostgres parses a PostgreSQL OpenString; its error wraps ErrInvalid.
func parsePostgres(openString string) (*pgx.ConnConfig, error) {
	cfg, err := parsePostgresConfig(openString)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return cfg, nil
}

// parsePostgresConfig parses a PostgreSQL OpenString. Its error names what is wrong but never
// echoes the string: pgx's own error quotes it with the password only redacted on a best-effort
// basis.
func parsePostgresConfig(openString string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(strings.TrimSpace(openString))
	if err != nil {
		why := "it is neither a valid key=value list nor a valid postgres:// URL"
		var pe *pgconn.ParseConfigError
		if errors.As(err, &pe) && pe.Unwrap() != nil && !mayEcho(pe.Unwrap().Error()) {
			why = pe.Unwrap().Error()
		}
		return nil, fmt.Errorf("PostgreSQL OpenString cannot be parsed: %s", why)
	}
	if cfg.Database == "" {
		return nil, errors.New("PostgreSQL OpenString names no database (dbname=… or the URL's path)")
	}
	return cfg, nil
}

// mayEcho reports whether a parser error message could quote part of the string (and so a
// password): those are replaced by a fixed message.
func mayEcho(msg string) bool { return strings.ContainsAny(msg, "\"'`=@") }

// describePostgres names a database for errors and logs: server, database and user, never the
// password.
func describePostgres(cfg *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres host=%s port=%d dbname=%s user=%s", cfg.Host, cfg.Port, cfg.Database, cfg.User)
}

// openPostgres opens db's pool on a PostgreSQL server, through pgx's database/sql driver so that
// the query code is shared with SQLite. Reads and writes share the one pool: the server, not
// the client, arbitrates concurrent writers (row locks).
//
// Transactions run at READ COMMITTED, PostgreSQL's default. Every write transaction of the store
// is either a batch of independent single-row writes (SaveStates, PutTrend) or touches the rows
// of one selector, which one node changes from one place at a time (its engine; across nodes the
// instance's lease). REPEATABLE READ or SERIALIZABLE would protect nothing more and make
// concurrent batches fail with serialization errors. What READ COMMITTED can still produce, a
// deadlock between two batches locking the same rows in another order, is detected by the
// server, which rolls one back; inTx and single statements run it again (dialect.isRetryable).
func openPostgres(ctx context.Context, db *DB, openString string) error {
	cfg, err := parsePostgres(openString)
	if err != nil {
		return err
	}
	db.desc = describePostgres(cfg)
	db.pg = cfg
	sdb := stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(func(_ context.Context, c *pgx.Conn) error {
		// The schema keeps SQLite's INTEGER 0/1 for flags; let a Go bool be written into them.
		m := c.TypeMap()
		m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{tryWrapBoolAsInt}, m.TryWrapEncodePlanFuncs...)
		return nil
	}))
	sdb.SetMaxOpenConns(pgMaxConns)
	sdb.SetMaxIdleConns(pgMaxConns)
	sdb.SetConnMaxLifetime(pgConnLifetime)
	sdb.SetConnMaxIdleTime(pgConnIdle)
	p := newPool(sdb, postgresDialect)
	db.write, db.read = p, p
	if err := sdb.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", db.desc, err)
	}
	return db.migrate(ctx)
}

// tryWrapBoolAsInt lets pgx encode a Go bool as 0 or 1 where the parameter is an integer: the
// flags (off, sandbox, token_invalid …) are BIGINT 0/1 in both schemas, so that SQL such as
// "token_invalid = 1" means the same on both backends.
func tryWrapBoolAsInt(value any) (pgtype.WrappedEncodePlanNextSetter, any, bool) {
	if b, ok := value.(bool); ok {
		var n int64
		if b {
			n = 1
		}
		return &boolAsIntPlan{}, n, true
	}
	return nil, nil, false
}

type boolAsIntPlan struct{ next pgtype.EncodePlan }

func (p *boolAsIntPlan) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *boolAsIntPlan) Encode(value any, buf []byte) ([]byte, error) {
	var n int64
	if value.(bool) {
		n = 1
	}
	return p.next.Encode(n, buf)
}
