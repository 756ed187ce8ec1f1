package store

import (
	"context"
	"fmt"
	"time"
)

// TrendSample is one value of one trend series at one minute.
type TrendSample struct {
	At    time.Time
	Name  string
	Gauge bool // a level (instances per state); false: a count per minute
	Value float64
}

// TrendMark is a change of state marked on the trend charts.
type TrendMark struct {
	At   time.Time
	Text string
}

// PutTrend stores samples and marks of this node and deletes those older than before, in one
// transaction.
func (db *DB) PutTrend(ctx context.Context, samples []TrendSample, marks []TrendMark, before time.Time) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: put trend: %w", err)
	}
	defer tx.Rollback()
	for _, s := range samples {
		if _, err := tx.ExecContext(ctx, `INSERT INTO trend_samples (node, at, name, gauge, value)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (node, at, name) DO UPDATE SET gauge = excluded.gauge,
			value = excluded.value`, db.node, nanos(s.At), s.Name, s.Gauge, s.Value); err != nil {
			return fmt.Errorf("store: put trend: %w", err)
		}
	}
	for _, m := range marks {
		if _, err := tx.ExecContext(ctx, `INSERT INTO trend_marks (node, at, text) VALUES (?, ?, ?)`,
			db.node, nanos(m.At), m.Text); err != nil {
			return fmt.Errorf("store: put trend mark: %w", err)
		}
	}
	for _, q := range []string{`DELETE FROM trend_samples WHERE node = ? AND at < ?`, `DELETE FROM trend_marks WHERE node = ? AND at < ?`} {
		if _, err := tx.ExecContext(ctx, q, db.node, nanos(before)); err != nil {
			return fmt.Errorf("store: prune trend: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: put trend: %w", err)
	}
	return nil
}

// TrendSince returns this node's samples and marks from since on, oldest first.
func (db *DB) TrendSince(ctx context.Context, since time.Time) ([]TrendSample, []TrendMark, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT at, name, gauge, value FROM trend_samples
		WHERE node = ? AND at >= ? ORDER BY at, name`, db.node, nanos(since))
	if err != nil {
		return nil, nil, fmt.Errorf("store: trend: %w", err)
	}
	defer rows.Close()
	var samples []TrendSample
	for rows.Next() {
		var s TrendSample
		var at int64
		if err := rows.Scan(&at, &s.Name, &s.Gauge, &s.Value); err != nil {
			return nil, nil, fmt.Errorf("store: trend: %w", err)
		}
		s.At = fromNanos(at)
		samples = append(samples, s)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("store: trend: %w", err)
	}
	mrows, err := db.read.QueryContext(ctx, `SELECT at, text FROM trend_marks WHERE node = ? AND at >= ? ORDER BY at`,
		db.node, nanos(since))
	if err != nil {
		return nil, nil, fmt.Errorf("store: trend marks: %w", err)
	}
	defer mrows.Close()
	var marks []TrendMark
	for mrows.Next() {
		var m TrendMark
		var at int64
		if err := mrows.Scan(&at, &m.Text); err != nil {
			return nil, nil, fmt.Errorf("store: trend marks: %w", err)
		}
		m.At = fromNanos(at)
		marks = append(marks, m)
	}
	return samples, marks, mrows.Err()
}
