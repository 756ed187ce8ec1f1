package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// HookDevice is a device of the PBX-hook mode (internal/hook): a push destination of a SIP
// account that registers itself at the operator's PBX.
type HookDevice struct {
	// ID is assigned by the store.
	ID int64
	// SipUserID is the account, as the PBX names it in incoming-call/.
	SipUserID string
	// Platform is a push platform of internal/push ("apns", "fcm").
	Platform string
	// App is the app id (the APNs topic or the Android package name).
	App string
	// Token is the device's push token.
	Token   string
	Sandbox bool
	// Name, OSVersion, ClientVersion and RemoteLoggingID are what the app says about itself.
	Name, OSVersion, ClientVersion, RemoteLoggingID string
	// TokenInvalid is set when the push service said the token is dead.
	TokenInvalid bool
	// Created and LastSeen are set by the store.
	Created, LastSeen time.Time
}

// HookCall is the record of one incoming-call/ request of the PBX-hook mode.
type HookCall struct {
	// KeyHash is the hex SHA-256 of the call's one-time unique_key (never the key itself).
	KeyHash                       string
	SipUserID                     string
	CallID, CallerID, PhoneNumber string
	// Devices is how many devices were pushed; Pushes how many pushes were sent in all.
	Devices, Pushes int
	// Outcome is OutcomeAccepted (ACK), OutcomeMissed (the wait ran out) or OutcomeRejected.
	Outcome string
	// Reason says why the call was missed or rejected; HangupReason is the app's hangup-reason/.
	Reason, HangupReason string
	// ReceivedAt is when the PBX asked, RespondedAt when a device answered, EndedAt when the
	// PBX got its answer.
	ReceivedAt, RespondedAt, EndedAt time.Time
}

// HookMetric is one call-setup report of an app (log-metrics/).
type HookMetric struct {
	SipUserID, OS, AppVersion, Network, Direction string
	// SetupResult is "true", "false" or "declined" (vialer's call_setup_successful).
	SetupResult  string
	FailedReason string
	// FirstResponse is the time from the push to the app's first response; 0 when not given.
	FirstResponse time.Duration
	ReceivedAt    time.Time
}

// HookMetricSummary condenses the stored call-setup reports.
type HookMetricSummary struct {
	Count int
	// BySetupResult, ByFailedReason and ByNetwork count reports.
	BySetupResult, ByFailedReason, ByNetwork map[string]int
	// FirstResponseMedian is the median of the reports that gave a time to first response.
	FirstResponseMedian time.Duration
}

// maxHookText bounds every free-text field of the PBX-hook tables.
const maxHookText = 255

func checkHookText(what string, fields map[string]string) error {
	for name, v := range fields {
		if len(v) > maxHookText {
			return fmt.Errorf("%w: %s: %s is %d bytes, at most %d allowed", ErrInvalid, what, name, len(v), maxHookText)
		}
	}
	return nil
}

// PutHookDevice inserts d, or updates the stored device with the same account, app and token
// (and clears its dead-token mark). It reports whether the device is new. Invalid input returns
// an error wrapping ErrInvalid and changes nothing.
func (db *DB) PutHookDevice(ctx context.Context, d *HookDevice) (created bool, err error) {
	if d == nil || d.SipUserID == "" || d.App == "" || d.Token == "" || d.Platform == "" {
		return false, fmt.Errorf("%w: hook device needs an account, platform, app and token", ErrInvalid)
	}
	if err := checkHookText("hook device", map[string]string{"sip_user_id": d.SipUserID, "platform": d.Platform,
		"app": d.App, "name": d.Name, "os_version": d.OSVersion, "client_version": d.ClientVersion,
		"remote_logging_id": d.RemoteLoggingID}); err != nil {
		return false, err
	}
	if len(d.Token) > 4096 {
		return false, fmt.Errorf("%w: hook device: token is %d bytes, at most 4096 allowed", ErrInvalid, len(d.Token))
	}
	now := time.Now()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("store: put hook device: %w", err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.QueryRowContext(ctx, `SELECT id FROM pbx_devices WHERE node = ? AND sip_user_id = ? AND app = ? AND token = ?`,
		db.node, d.SipUserID, d.App, d.Token).Scan(&id)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err := tx.QueryRowContext(ctx, `INSERT INTO pbx_devices (node, sip_user_id, platform, app, token, sandbox,
			name, os_version, client_version, remote_logging_id, token_invalid, created_at, last_seen)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) RETURNING id`,
			db.node, d.SipUserID, d.Platform, d.App, d.Token, d.Sandbox, d.Name, d.OSVersion, d.ClientVersion,
			d.RemoteLoggingID, nanos(now), nanos(now)).Scan(&id)
		if err != nil {
			return false, fmt.Errorf("store: put hook device: %w", err)
		}
		created = true
	case err != nil:
		return false, fmt.Errorf("store: put hook device: %w", err)
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE pbx_devices SET platform = ?, sandbox = ?, name = ?, os_version = ?,
			client_version = ?, remote_logging_id = ?, token_invalid = 0, last_seen = ? WHERE id = ?`,
			d.Platform, d.Sandbox, d.Name, d.OSVersion, d.ClientVersion, d.RemoteLoggingID, nanos(now), id); err != nil {
			return false, fmt.Errorf("store: put hook device: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("store: put hook device: %w", err)
	}
	d.ID, d.LastSeen, d.TokenInvalid = id, now.UTC(), false
	if created {
		d.Created = now.UTC()
	}
	return created, nil
}

// DeleteHookDevice removes the device of account sipUserID with app and token; an error
// wrapping ErrNotFound when there is none.
func (db *DB) DeleteHookDevice(ctx context.Context, sipUserID, app, token string) error {
	res, err := db.write.ExecContext(ctx, `DELETE FROM pbx_devices WHERE node = ? AND sip_user_id = ? AND app = ? AND token = ?`,
		db.node, sipUserID, app, token)
	if err != nil {
		return fmt.Errorf("store: delete hook device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: hook device of %s", ErrNotFound, sipUserID)
	}
	return nil
}

// CheckInHookDevices sets the last-seen time of the devices of sipUserID to now: all of them,
// or only the one with token when token is given. It returns how many it touched; an error
// wrapping ErrNotFound when none.
func (db *DB) CheckInHookDevices(ctx context.Context, sipUserID, token string) (int64, error) {
	q := `UPDATE pbx_devices SET last_seen = ? WHERE node = ? AND sip_user_id = ?`
	args := []any{nanos(time.Now()), db.node, sipUserID}
	if token != "" {
		q += ` AND token = ?`
		args = append(args, token)
	}
	res, err := db.write.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, fmt.Errorf("store: check in hook device: %w", err)
	}
	n, _ := res.RowsAffected()
	if n == 0 {
		return 0, fmt.Errorf("%w: hook device of %s", ErrNotFound, sipUserID)
	}
	return n, nil
}

// MarkHookTokenInvalid marks the device's push token dead; incoming calls skip it until the
// app registers the device again.
func (db *DB) MarkHookTokenInvalid(ctx context.Context, id int64) error {
	if _, err := db.write.ExecContext(ctx, `UPDATE pbx_devices SET token_invalid = 1 WHERE node = ? AND id = ?`, db.node, id); err != nil {
		return fmt.Errorf("store: mark hook token invalid: %w", err)
	}
	return nil
}

// HookDevices returns the devices of sipUserID, oldest first.
func (db *DB) HookDevices(ctx context.Context, sipUserID string) ([]HookDevice, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT id, platform, app, token, sandbox, name, os_version,
		client_version, remote_logging_id, token_invalid, created_at, last_seen
		FROM pbx_devices WHERE node = ? AND sip_user_id = ? ORDER BY id`, db.node, sipUserID)
	if err != nil {
		return nil, fmt.Errorf("store: hook devices: %w", err)
	}
	defer rows.Close()
	var out []HookDevice
	for rows.Next() {
		d := HookDevice{SipUserID: sipUserID}
		var created, seen int64
		if err := rows.Scan(&d.ID, &d.Platform, &d.App, &d.Token, &d.Sandbox, &d.Name, &d.OSVersion,
			&d.ClientVersion, &d.RemoteLoggingID, &d.TokenInvalid, &created, &seen); err != nil {
			return nil, fmt.Errorf("store: hook devices: %w", err)
		}
		d.Created, d.LastSeen = fromNanos(created), fromNanos(seen)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: hook devices: %w", err)
	}
	return out, nil
}

// HookDeviceCounts returns the number of devices per account.
func (db *DB) HookDeviceCounts(ctx context.Context) (map[string]int, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT sip_user_id, count(*) FROM pbx_devices WHERE node = ? GROUP BY sip_user_id`, db.node)
	if err != nil {
		return nil, fmt.Errorf("store: hook device counts: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int)
	for rows.Next() {
		var u string
		var n int
		if err := rows.Scan(&u, &n); err != nil {
			return nil, fmt.Errorf("store: hook device counts: %w", err)
		}
		out[u] = n
	}
	return out, rows.Err()
}

// PutHookCall stores c, replacing the record with the same key hash.
func (db *DB) PutHookCall(ctx context.Context, c *HookCall) error {
	if c == nil || len(c.KeyHash) != 64 || c.SipUserID == "" {
		return fmt.Errorf("%w: hook call needs a key hash and an account", ErrInvalid)
	}
	switch c.Outcome {
	case OutcomeAccepted, OutcomeMissed, OutcomeRejected:
	default:
		return fmt.Errorf("%w: hook call: unknown outcome %q", ErrInvalid, c.Outcome)
	}
	if err := checkHookText("hook call", map[string]string{"sip_user_id": c.SipUserID, "call_id": c.CallID,
		"caller_id": c.CallerID, "phonenumber": c.PhoneNumber, "reason": c.Reason, "hangup_reason": c.HangupReason}); err != nil {
		return err
	}
	_, err := db.write.ExecContext(ctx, `INSERT INTO pbx_calls (node, key_hash, sip_user_id, call_id, caller_id,
		phonenumber, devices, pushes, outcome, reason, hangup_reason, received_at, responded_at, ended_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node, key_hash) DO UPDATE SET devices = excluded.devices, pushes = excluded.pushes,
		outcome = excluded.outcome, reason = excluded.reason, responded_at = excluded.responded_at,
		ended_at = excluded.ended_at`,
		db.node, c.KeyHash, c.SipUserID, c.CallID, c.CallerID, c.PhoneNumber, c.Devices, c.Pushes, c.Outcome,
		c.Reason, c.HangupReason, nanos(c.ReceivedAt), nanos(c.RespondedAt), nanos(c.EndedAt))
	if err != nil {
		return fmt.Errorf("store: put hook call: %w", err)
	}
	return nil
}

// SetHookHangupReason records the app's reason for not taking the call of sipUserID whose key
// hashes to keyHash; an error wrapping ErrNotFound when there is no such call.
func (db *DB) SetHookHangupReason(ctx context.Context, sipUserID, keyHash, reason string) error {
	if err := checkHookText("hangup reason", map[string]string{"reason": reason}); err != nil {
		return err
	}
	res, err := db.write.ExecContext(ctx, `UPDATE pbx_calls SET hangup_reason = ? WHERE node = ? AND key_hash = ? AND sip_user_id = ?`,
		reason, db.node, keyHash, sipUserID)
	if err != nil {
		return fmt.Errorf("store: hangup reason: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: hook call of %s", ErrNotFound, sipUserID)
	}
	return nil
}

// HookCalls returns up to limit (1 to 1000) hook call records, newest first; of one account
// when sipUserID is given.
func (db *DB) HookCalls(ctx context.Context, sipUserID string, limit int) ([]HookCall, error) {
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("%w: hook calls: limit %d is outside 1 to 1000", ErrInvalid, limit)
	}
	q := `SELECT key_hash, sip_user_id, call_id, caller_id, phonenumber, devices, pushes, outcome, reason,
		hangup_reason, received_at, responded_at, ended_at FROM pbx_calls WHERE node = ?`
	args := []any{db.node}
	if sipUserID != "" {
		q += ` AND sip_user_id = ?`
		args = append(args, sipUserID)
	}
	q += ` ORDER BY received_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: hook calls: %w", err)
	}
	defer rows.Close()
	var out []HookCall
	for rows.Next() {
		var c HookCall
		var rec, resp, ended int64
		if err := rows.Scan(&c.KeyHash, &c.SipUserID, &c.CallID, &c.CallerID, &c.PhoneNumber, &c.Devices, &c.Pushes,
			&c.Outcome, &c.Reason, &c.HangupReason, &rec, &resp, &ended); err != nil {
			return nil, fmt.Errorf("store: hook calls: %w", err)
		}
		c.ReceivedAt, c.RespondedAt, c.EndedAt = fromNanos(rec), fromNanos(resp), fromNanos(ended)
		out = append(out, c)
	}
	return out, rows.Err()
}

// AddHookMetric stores one call-setup report.
func (db *DB) AddHookMetric(ctx context.Context, m *HookMetric) error {
	if m == nil || m.SipUserID == "" {
		return fmt.Errorf("%w: hook metric needs an account", ErrInvalid)
	}
	switch m.SetupResult {
	case "true", "false", "declined", "":
	default:
		return fmt.Errorf("%w: hook metric: call_setup_successful %q is not true, false or declined", ErrInvalid, m.SetupResult)
	}
	if m.FirstResponse < 0 || m.FirstResponse > time.Hour {
		return fmt.Errorf("%w: hook metric: time to first response %s is outside 0 to 1h", ErrInvalid, m.FirstResponse)
	}
	if err := checkHookText("hook metric", map[string]string{"sip_user_id": m.SipUserID, "os": m.OS,
		"app_version": m.AppVersion, "network": m.Network, "direction": m.Direction, "failed_reason": m.FailedReason}); err != nil {
		return err
	}
	at := m.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	_, err := db.write.ExecContext(ctx, `INSERT INTO pbx_metrics (node, sip_user_id, os, app_version, network,
		direction, setup_result, failed_reason, first_response_ms, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		db.node, m.SipUserID, m.OS, m.AppVersion, m.Network, m.Direction, m.SetupResult, m.FailedReason,
		m.FirstResponse.Milliseconds(), nanos(at))
	if err != nil {
		return fmt.Errorf("store: add hook metric: %w", err)
	}
	return nil
}

// HookMetricSummary counts the stored call-setup reports by result, failure reason and
// network, and gives the median time to first response.
func (db *DB) HookMetricSummary(ctx context.Context) (HookMetricSummary, error) {
	s := HookMetricSummary{BySetupResult: map[string]int{}, ByFailedReason: map[string]int{}, ByNetwork: map[string]int{}}
	for _, g := range []struct {
		col string
		dst map[string]int
	}{{"setup_result", s.BySetupResult}, {"failed_reason", s.ByFailedReason}, {"network", s.ByNetwork}} {
		rows, err := db.read.QueryContext(ctx, `SELECT `+g.col+`, count(*) FROM pbx_metrics WHERE node = ? AND `+g.col+` != '' GROUP BY `+g.col, db.node)
		if err != nil {
			return s, fmt.Errorf("store: hook metric summary: %w", err)
		}
		for rows.Next() {
			var k string
			var n int
			if err := rows.Scan(&k, &n); err != nil {
				rows.Close()
				return s, fmt.Errorf("store: hook metric summary: %w", err)
			}
			g.dst[k] = n
		}
		rows.Close()
	}
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM pbx_metrics WHERE node = ?`, db.node).Scan(&s.Count); err != nil {
		return s, fmt.Errorf("store: hook metric summary: %w", err)
	}
	var timed int
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM pbx_metrics WHERE node = ? AND first_response_ms > 0`, db.node).Scan(&timed); err != nil {
		return s, fmt.Errorf("store: hook metric summary: %w", err)
	}
	if timed > 0 {
		var ms int64
		if err := db.read.QueryRowContext(ctx, `SELECT first_response_ms FROM pbx_metrics WHERE node = ? AND first_response_ms > 0
			ORDER BY first_response_ms LIMIT 1 OFFSET ?`, db.node, (timed-1)/2).Scan(&ms); err != nil {
			return s, fmt.Errorf("store: hook metric summary: %w", err)
		}
		s.FirstResponseMedian = time.Duration(ms) * time.Millisecond
	}
	return s, nil
}

// PruneHook deletes this node's hook call records and metrics received before before, and
// returns how many rows went.
func (db *DB) PruneHook(ctx context.Context, before time.Time) (int64, error) {
	if before.IsZero() {
		return 0, fmt.Errorf("%w: prune hook records: time is zero", ErrInvalid)
	}
	var total int64
	for _, table := range []string{"pbx_calls", "pbx_metrics"} {
		res, err := db.write.ExecContext(ctx, `DELETE FROM `+table+` WHERE node = ? AND received_at < ?`, db.node, nanos(before))
		if err != nil {
			return total, fmt.Errorf("store: prune %s: %w", table, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
