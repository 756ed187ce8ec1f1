package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
)

// ErrTargetNotEmpty means Copy found rows in the target store and was not told to replace them.
var ErrTargetNotEmpty = errors.New("store: the target store is not empty")

// CopyOptions configures Copy.
type CopyOptions struct {
	// From and To are the OpenStrings of the source and the target (see Options.OpenString);
	// either may be SQLite or PostgreSQL. A SQLite source must exist.
	From, To string
	// DataKey is the data key the source's secrets are sealed with. Copy checks that it opens
	// every sealed value before it copies anything; the values are copied as they are (still
	// sealed), so the target is opened with the same key.
	DataKey []byte
	// Force lets Copy empty a target that holds rows; without it such a target is refused.
	Force bool
	// BatchSize is the number of rows per INSERT (default 500).
	BatchSize int
	// Logger receives one line per table copied. Nil discards them.
	Logger logrus.FieldLogger
}

// TableCount is the number of rows of one table, in the source and, after the copy, the target.
type TableCount struct {
	Table          string
	Source, Target int64
}

// copyOrder is the order tables are copied in: every table after those its foreign keys name.
// Tables not listed (added by a later migration) are copied after these, in name order; they
// must not be named by the foreign keys of a listed table.
var copyOrder = []string{"key_check", "instances", "devices", "nonces", "push_tests", "probe_events",
	"calls", "messages", "pbx_devices", "pbx_calls", "pbx_metrics", "trend_samples", "trend_marks"}

// Copy copies every table of one store into another (sipis migrate-store): SQLite to PostgreSQL
// or back, or between two of a kind. Rows of every node are copied, with their ids; sealed
// secrets are copied still sealed, after the data key was checked to open each of them.
//
// Both stores are first brought to this version's schema (their migrations applied); the source
// must not hold a migration this version does not know. A target with rows is refused
// (ErrTargetNotEmpty) unless opts.Force, which empties it first. Each table is copied in one
// transaction of the target, opts.BatchSize rows per INSERT, so a failed copy leaves that table
// as it was; the counts are compared at the end and returned.
func Copy(ctx context.Context, opts CopyOptions) ([]TableCount, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	seal, err := newSealer(opts.DataKey)
	if err != nil {
		return nil, err
	}
	log := orDiscard(opts.Logger)
	src, err := openRaw(ctx, opts.From, log)
	if err != nil {
		return nil, fmt.Errorf("store: copy: source: %w", err)
	}
	defer src.Close()
	// The key is checked before the target is touched: a wrong key creates nothing.
	if err := checkSealed(ctx, src, seal); err != nil {
		return nil, err
	}
	if Describe(opts.To) == src.desc {
		return nil, fmt.Errorf("%w: source and target are the same store (%s)", ErrInvalid, src.desc)
	}
	dst, err := openRaw(ctx, opts.To, log)
	if err != nil {
		return nil, fmt.Errorf("store: copy: target: %w", err)
	}
	defer dst.Close()
	if err := sameMigrations(ctx, src, dst); err != nil {
		return nil, err
	}
	tables, err := copyTables(ctx, src, dst)
	if err != nil {
		return nil, err
	}
	var counts []TableCount
	if err := prepareTarget(ctx, dst, tables, opts.Force); err != nil {
		return nil, err
	}
	for _, t := range tables {
		n, err := copyTable(ctx, src, dst, t, opts.BatchSize)
		if err != nil {
			return nil, fmt.Errorf("store: copy table %s: %w", t, err)
		}
		log.WithFields(logrus.Fields{"table": t, "rows": n}).Info("store: table copied")
	}
	if dst.dialect.analyze != "" {
		if _, err := dst.write.ExecContext(ctx, dst.dialect.analyze); err != nil {
			return nil, fmt.Errorf("store: copy: %s: %w", dst.dialect.analyze, err)
		}
	}
	// Verify: every table has as many rows in the target as in the source.
	var bad []string
	for _, t := range tables {
		c := TableCount{Table: t}
		if c.Source, err = countRows(ctx, src, t); err != nil {
			return nil, err
		}
		if c.Target, err = countRows(ctx, dst, t); err != nil {
			return nil, err
		}
		if c.Source != c.Target {
			bad = append(bad, fmt.Sprintf("%s: %d rows in the source, %d in the target", t, c.Source, c.Target))
		}
		counts = append(counts, c)
	}
	if len(bad) > 0 {
		return counts, fmt.Errorf("store: copy: counts differ: %s", strings.Join(bad, "; "))
	}
	return counts, nil
}

// check fills CopyOptions' defaults and refuses what cannot be copied, before anything is opened.
func (opts *CopyOptions) check() error {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if len(opts.DataKey) != DataKeySize {
		return fmt.Errorf("%w: data key is %d bytes, want %d", ErrInvalid, len(opts.DataKey), DataKeySize)
	}
	if strings.TrimSpace(opts.From) == "" || strings.TrimSpace(opts.To) == "" {
		return fmt.Errorf("%w: give both the source and the target", ErrInvalid)
	}
	if BackendOf(opts.From) == SQLite {
		if _, err := os.Stat(opts.From); err != nil && !strings.HasPrefix(opts.From, "file:") {
			return fmt.Errorf("store: copy: source %s: %w", opts.From, err)
		}
	}
	return nil
}

// prepareTarget refuses a target with rows in any of tables (ErrTargetNotEmpty), or with
// force empties them: children before parents, in one transaction, so the target is emptied
// entirely or not at all.
func prepareTarget(ctx context.Context, dst *DB, tables []string, force bool) error {
	for _, t := range tables {
		n, err := countRows(ctx, dst, t)
		if err != nil {
			return err
		}
		if n > 0 && !force {
			return fmt.Errorf("%w: %s has %d rows in table %s (-force empties it first)", ErrTargetNotEmpty, dst.desc, n, t)
		}
	}
	if !force {
		return nil
	}
	err := dst.write.inTx(ctx, func(tx *tx) error {
		for i := len(tables) - 1; i >= 0; i-- {
			if _, err := tx.ExecContext(ctx, "DELETE FROM "+tables[i]); err != nil {
				return fmt.Errorf("empty %s: %w", tables[i], err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: copy: %w", err)
	}
	return nil
}

// orDiscard returns log, or a logger that discards everything when log is nil.
func orDiscard(log logrus.FieldLogger) logrus.FieldLogger {
	if log != nil {
		return log
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// openRaw opens the store of openString (choosing its backend) and applies its migrations,
// without a node or a data key: Open adds those, and Copy uses it as it is, since it works on
// the rows of every node.
func openRaw(ctx context.Context, openString string, log logrus.FieldLogger) (*DB, error) {
	db := &DB{log: log}
	var err error
	if BackendOf(openString) == PostgreSQL {
		db.dialect = postgresDialect
		err = openPostgres(ctx, db, openString)
	} else {
		db.dialect, db.desc = sqliteDialect, openString
		err = openSQLite(ctx, db, openString)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// appliedMigrations returns the names recorded in schema_migrations.
func appliedMigrations(ctx context.Context, db *DB) (map[string]bool, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT name FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("store: %s: migrations: %w", db.desc, err)
	}
	defer rows.Close()
	m := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		m[name] = true
	}
	return m, rows.Err()
}

// sameMigrations refuses to copy between stores whose schemas differ (one was written by a newer
// sipis: this version may not know all its columns).
func sameMigrations(ctx context.Context, src, dst *DB) error {
	a, err := appliedMigrations(ctx, src)
	if err != nil {
		return err
	}
	b, err := appliedMigrations(ctx, dst)
	if err != nil {
		return err
	}
	for name := range a {
		if !b[name] {
			return fmt.Errorf("store: copy: the source has migration %s that the target has not (written by a newer sipis?)", name)
		}
	}
	for name := range b {
		if !a[name] {
			return fmt.Errorf("store: copy: the target has migration %s that the source has not (written by a newer sipis?)", name)
		}
	}
	return nil
}

// checkSealed opens every sealed value of the source with seal: the key check of every node,
// every password, device secret and message body. The first that does not open is an error
// wrapping ErrDataKey, and nothing is copied.
func checkSealed(ctx context.Context, db *DB, seal *sealer) error {
	checks := []struct {
		what, query string
		ad          func(keys []string) []byte
	}{
		{"key check of node", "SELECT node, sealed FROM key_check", func(k []string) []byte { return adKeyCheck(k[0]) }},
		{"password of selector", "SELECT selector, password FROM instances", func(k []string) []byte { return adPassword(k[0]) }},
		{"device secret of selector", "SELECT selector, secret, device_id FROM devices", func(k []string) []byte { return adDeviceSecret(k[0], k[1]) }},
		{"message body of selector", "SELECT selector, body FROM messages", func(k []string) []byte { return adMessage(k[0]) }},
	}
	for _, c := range checks {
		err := func() error {
			rows, err := db.read.QueryContext(ctx, c.query)
			if err != nil {
				return err
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			for rows.Next() {
				var key, extra string
				var sealed []byte
				dest := []any{&key, &sealed}
				if len(cols) == 3 {
					dest = append(dest, &extra)
				}
				if err := rows.Scan(dest...); err != nil {
					return err
				}
				if _, err := seal.open(sealed, c.ad([]string{key, extra})); err != nil {
					return fmt.Errorf("%w: %s %s in %s; nothing was copied", ErrDataKey, c.what, key, db.desc)
				}
			}
			return rows.Err()
		}()
		if err != nil {
			if errors.Is(err, ErrDataKey) {
				return err
			}
			return fmt.Errorf("store: copy: check sealed values: %w", err)
		}
	}
	return nil
}

// listTables returns the tables of db but schema_migrations.
func listTables(ctx context.Context, db *DB) (map[string]bool, error) {
	rows, err := db.read.QueryContext(ctx, db.dialect.listTables)
	if err != nil {
		return nil, fmt.Errorf("store: %s: list tables: %w", db.desc, err)
	}
	defer rows.Close()
	m := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		if name != "schema_migrations" {
			m[name] = true
		}
	}
	return m, rows.Err()
}

// copyTables returns, in copy order, the tables both stores have, and refuses stores whose
// tables differ.
func copyTables(ctx context.Context, src, dst *DB) ([]string, error) {
	a, err := listTables(ctx, src)
	if err != nil {
		return nil, err
	}
	b, err := listTables(ctx, dst)
	if err != nil {
		return nil, err
	}
	var out, rest []string
	for _, t := range copyOrder {
		if a[t] {
			out = append(out, t)
		}
	}
	for t := range a {
		if !b[t] {
			return nil, fmt.Errorf("store: copy: table %s is in the source but not in the target", t)
		}
		if !contains(copyOrder, t) {
			rest = append(rest, t)
		}
	}
	for t := range b {
		if !a[t] {
			return nil, fmt.Errorf("store: copy: table %s is in the target but not in the source", t)
		}
	}
	sort.Strings(rest)
	return append(out, rest...), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func countRows(ctx context.Context, db *DB, table string) (int64, error) {
	var n int64
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: %s: count %s: %w", db.desc, table, err)
	}
	return n, nil
}

// columns returns the column names of table in db.
func columns(ctx context.Context, db *DB, table string) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT * FROM "+table+" WHERE 1 = 0")
	if err != nil {
		return nil, fmt.Errorf("store: %s: columns of %s: %w", db.desc, table, err)
	}
	defer rows.Close()
	return rows.Columns()
}

// copyTable copies every row of table from src to dst in one transaction of dst, batch rows per
// INSERT, and returns how many it copied.
func copyTable(ctx context.Context, src, dst *DB, table string, batch int) (int64, error) {
	cols, err := columns(ctx, src, table)
	if err != nil {
		return 0, err
	}
	dcols, err := columns(ctx, dst, table)
	if err != nil {
		return 0, err
	}
	sort.Strings(dcols)
	if s := append([]string(nil), cols...); !equalSorted(s, dcols) {
		return 0, fmt.Errorf("columns differ: source %v, target %v", cols, dcols)
	}
	// Keep the statement's parameters under both backends' limits (SQLite 32766).
	if batch*len(cols) > 30000 {
		batch = 30000 / len(cols)
	}
	list := strings.Join(cols, ", ")
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	insert := func(t *tx, args []any) error {
		n := len(args) / len(cols)
		q := "INSERT INTO " + table + " (" + list + ") VALUES " + strings.TrimSuffix(strings.Repeat(one+", ", n), ", ")
		_, err := t.ExecContext(ctx, q, args...)
		return err
	}
	var copied int64
	err = dst.write.inTx(ctx, func(t *tx) error {
		copied = 0
		rows, err := src.read.QueryContext(ctx, "SELECT "+list+" FROM "+table)
		if err != nil {
			return err
		}
		defer rows.Close()
		args := make([]any, 0, batch*len(cols))
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			args = append(args, vals...)
			copied++
			if len(args) == batch*len(cols) {
				if err := insert(t, args); err != nil {
					return err
				}
				args = args[:0]
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(args) > 0 {
			if err := insert(t, args); err != nil {
				return err
			}
		}
		if dst.dialect.afterCopy != nil {
			return dst.dialect.afterCopy(ctx, t, table, cols)
		}
		return nil
	})
	return copied, err
}

func equalSorted(a, sortedB []string) bool {
	sort.Strings(a)
	if len(a) != len(sortedB) {
		return false
	}
	for i := range a {
		if a[i] != sortedB[i] {
			return false
		}
	}
	return true
}
