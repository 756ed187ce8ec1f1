package store

import (
	"context"
	"fmt"
	"time"
)

// PushTest is the outcome of one test push an operator sent (the stats page's Push Test Outcomes).
type PushTest struct {
	Selector, DeviceID, Platform, Outcome, Reason string
	// At is when the outcome was known; zero means now.
	At time.Time
}

// AddPushTest records one test push outcome.
func (db *DB) AddPushTest(ctx context.Context, pt PushTest) error {
	if err := validSelector(pt.Selector); err != nil {
		return fmt.Errorf("push test: %w", err)
	}
	if pt.Platform == "" || pt.Outcome == "" {
		return fmt.Errorf("%w: push test of %s: platform and outcome must not be empty", ErrInvalid, pt.Selector)
	}
	at := pt.At
	if at.IsZero() {
		at = time.Now()
	}
	_, err := db.write.ExecContext(ctx, `INSERT INTO push_tests (node, selector, device_id, platform, outcome, reason, at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, db.node, pt.Selector, pt.DeviceID, pt.Platform, pt.Outcome, pt.Reason, nanos(at))
	if err != nil {
		return fmt.Errorf("store: add push test: %w", err)
	}
	return nil
}

// PushTestCounts returns this node's push test counts as platform -> outcome -> count.
func (db *DB) PushTestCounts(ctx context.Context) (map[string]map[string]int, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT platform, outcome, count(*) FROM push_tests WHERE node = ?
		GROUP BY platform, outcome`, db.node)
	if err != nil {
		return nil, fmt.Errorf("store: push test counts: %w", err)
	}
	defer rows.Close()
	counts := make(map[string]map[string]int)
	for rows.Next() {
		var platform, outcome string
		var n int
		if err := rows.Scan(&platform, &outcome, &n); err != nil {
			return nil, fmt.Errorf("store: push test counts: %w", err)
		}
		if counts[platform] == nil {
			counts[platform] = make(map[string]int)
		}
		counts[platform][outcome] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: push test counts: %w", err)
	}
	return counts, nil
}

// ProbeEvent is one change of an OPTIONS probe target's state.
type ProbeEvent struct {
	Target, OldState, NewState, LastError string
	// Code is the SIP status code of the last answer (0 if none, e.g. on timeout).
	Code int
	RTT  time.Duration
	// At is when the state changed; zero means now.
	At time.Time
}

// AddProbeEvent records one probe state change.
func (db *DB) AddProbeEvent(ctx context.Context, ev ProbeEvent) error {
	if ev.Target == "" {
		return fmt.Errorf("%w: probe event: target is empty", ErrInvalid)
	}
	if ev.NewState == "" {
		return fmt.Errorf("%w: probe event of %s: new state is empty", ErrInvalid, ev.Target)
	}
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	_, err := db.write.ExecContext(ctx, `INSERT INTO probe_events (node, target, old_state, new_state, code, rtt_ns, last_error, at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, db.node, ev.Target, ev.OldState, ev.NewState, ev.Code, int64(ev.RTT),
		ev.LastError, nanos(at))
	if err != nil {
		return fmt.Errorf("store: add probe event: %w", err)
	}
	return nil
}

// ProbeEvents returns at most limit (> 0) events of target recorded by this node, newest first.
func (db *DB) ProbeEvents(ctx context.Context, target string, limit int) ([]ProbeEvent, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: probe events: limit %d is not positive", ErrInvalid, limit)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT target, old_state, new_state, code, rtt_ns, last_error, at
		FROM probe_events WHERE node = ? AND target = ? ORDER BY at DESC, id DESC LIMIT ?`, db.node, target, limit)
	if err != nil {
		return nil, fmt.Errorf("store: probe events: %w", err)
	}
	defer rows.Close()
	var evs []ProbeEvent
	for rows.Next() {
		var ev ProbeEvent
		var rtt, at int64
		if err := rows.Scan(&ev.Target, &ev.OldState, &ev.NewState, &ev.Code, &rtt, &ev.LastError, &at); err != nil {
			return nil, fmt.Errorf("store: probe events: %w", err)
		}
		ev.RTT, ev.At = time.Duration(rtt), fromNanos(at)
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: probe events: %w", err)
	}
	return evs, nil
}

// PruneProbeEvents deletes this node's probe events recorded before before and returns how many
// went, so that the history does not grow without bound.
func (db *DB) PruneProbeEvents(ctx context.Context, before time.Time) (int64, error) {
	if before.IsZero() {
		return 0, fmt.Errorf("%w: prune probe events: time is zero", ErrInvalid)
	}
	res, err := db.write.ExecContext(ctx, "DELETE FROM probe_events WHERE node = ? AND at < ?", db.node, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("store: prune probe events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: prune probe events: %w", err)
	}
	return n, nil
}
