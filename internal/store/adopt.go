package store

import (
	"context"
	"fmt"
	"strings"
)

// Instances returns the instances of this node among selectors, with how many devices each
// has, in statements of moveBatch selectors each: a node taking over thousands of instances
// from a dead one reads them in a few round trips instead of two per instance. A selector
// that is not this node's (moved on again, deleted) is left out of both maps.
func (db *DB) Instances(ctx context.Context, selectors []string) (map[string]*Instance, map[string]int, error) {
	for _, s := range selectors {
		if err := validSelector(s); err != nil {
			return nil, nil, err
		}
	}
	insts := make(map[string]*Instance, len(selectors))
	devs := make(map[string]int, len(selectors))
	for len(selectors) > 0 {
		batch := selectors[:min(len(selectors), moveBatch)]
		selectors = selectors[len(batch):]
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(batch)), ", ") + ")"
		args := make([]any, 0, len(batch)+1)
		args = append(args, db.node)
		for _, s := range batch {
			args = append(args, s)
		}
		if err := db.instancesIn(ctx, in, args, insts); err != nil {
			return nil, nil, err
		}
		if err := db.deviceCountsIn(ctx, in, args, devs); err != nil {
			return nil, nil, err
		}
	}
	return insts, devs, nil
}

func (db *DB) instancesIn(ctx context.Context, in string, args []any, out map[string]*Instance) error {
	rows, err := db.read.QueryContext(ctx, `SELECT `+instanceCols+` FROM instances WHERE node = ? AND selector IN `+in, args...)
	if err != nil {
		return fmt.Errorf("store: instances: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		inst, err := db.scanInstance(rows)
		if err != nil {
			return fmt.Errorf("store: instances: %w", err)
		}
		out[inst.Selector] = inst
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: instances: %w", err)
	}
	return nil
}

func (db *DB) deviceCountsIn(ctx context.Context, in string, args []any, out map[string]int) error {
	rows, err := db.read.QueryContext(ctx, `SELECT selector, count(*) FROM devices WHERE node = ? AND selector IN `+in+
		` GROUP BY selector`, args...)
	if err != nil {
		return fmt.Errorf("store: device counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sel string
		var n int
		if err := rows.Scan(&sel, &n); err != nil {
			return fmt.Errorf("store: device counts: %w", err)
		}
		out[sel] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: device counts: %w", err)
	}
	return nil
}
