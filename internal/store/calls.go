package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrSecret means a device secret presented by a caller does not match the stored one.
var ErrSecret = errors.New("store: device secret does not match")

// Values of Call.Outcome. An empty outcome means the call is still in progress.
const (
	OutcomeAccepted = "accepted"
	OutcomeMissed   = "missed"
	OutcomeRejected = "rejected"
)

// Values of Call.DialogState, the state of the dialog with the caller (RFC 3261 §12).
const (
	DialogPending    = "pending"    // INVITE received, no response with a To tag yet
	DialogEarly      = "early"      // a 1xx with our To tag was sent
	DialogStable     = "stable"     // a device answered (2xx)
	DialogTerminated = "terminated" // a final non-2xx was sent, or the call ended
)

// maxCallText bounds the free-text fields of a call record (caller, reason, devices).
const maxCallText = 1024

// Call is the record of one incoming call to an instance.
type Call struct {
	Selector string
	// PairingID identifies the call in pushes and pages; unique per node.
	PairingID string
	// CallID is the INVITE's Call-ID.
	CallID                string
	CallerName, CallerURI string
	// Devices are the ids of the devices the call was pushed to.
	Devices     []string
	DialogState string
	// Outcome is OutcomeAccepted, OutcomeMissed, OutcomeRejected, or "" while the call lasts.
	Outcome string
	// Reason says why the call was missed or rejected.
	Reason string
	// The times of the call's milestones; zero when it did not (yet) happen.
	ReceivedAt, PushedAt, ProgressAt, AnsweredAt, EndedAt time.Time
}

// Message is one waiting SIP MESSAGE of an instance.
type Message struct {
	// ID is assigned by AddMessage.
	ID       int64
	Selector string
	// From is the MESSAGE's From header value (display name and URI).
	From        string
	ContentType string
	// Body is the message body, sealed at rest.
	Body   []byte
	CallID string
	// ReceivedAt is when sipis received the MESSAGE; zero means now.
	ReceivedAt time.Time
}

// PutCall stores c, inserting it or replacing the record with the same pairing id. The instance
// must be stored (an error wrapping ErrNotFound otherwise); invalid input returns an error
// wrapping ErrInvalid and changes nothing.
func (db *DB) PutCall(ctx context.Context, c *Call) error {
	if c == nil {
		return fmt.Errorf("%w: call is nil", ErrInvalid)
	}
	if err := validSelector(c.Selector); err != nil {
		return fmt.Errorf("call: %w", err)
	}
	if c.PairingID == "" || len(c.PairingID) > 128 {
		return fmt.Errorf("%w: call of %s: pairing id must be 1 to 128 bytes", ErrInvalid, c.Selector)
	}
	switch c.DialogState {
	case DialogPending, DialogEarly, DialogStable, DialogTerminated:
	default:
		return fmt.Errorf("%w: call %s: unknown dialog state %q", ErrInvalid, c.PairingID, c.DialogState)
	}
	switch c.Outcome {
	case "", OutcomeAccepted, OutcomeMissed, OutcomeRejected:
	default:
		return fmt.Errorf("%w: call %s: unknown outcome %q", ErrInvalid, c.PairingID, c.Outcome)
	}
	for _, d := range c.Devices {
		if d == "" || strings.Contains(d, ",") {
			return fmt.Errorf("%w: call %s: device id %q is empty or holds a comma", ErrInvalid, c.PairingID, d)
		}
	}
	devices := strings.Join(c.Devices, ",")
	for name, v := range map[string]string{"call id": c.CallID, "caller name": c.CallerName,
		"caller uri": c.CallerURI, "reason": c.Reason, "devices": devices} {
		if len(v) > maxCallText {
			return fmt.Errorf("%w: call %s: %s is %d bytes, at most %d allowed", ErrInvalid, c.PairingID, name, len(v), maxCallText)
		}
	}
	received := c.ReceivedAt
	if received.IsZero() {
		received = time.Now()
	}
	_, err := db.write.ExecContext(ctx, `INSERT INTO calls (node, selector, pairing_id, call_id, caller_name,
		caller_uri, devices, dialog_state, outcome, reason, received_at, pushed_at, progress_at, answered_at, ended_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node, pairing_id) DO UPDATE SET call_id = excluded.call_id,
		caller_name = excluded.caller_name, caller_uri = excluded.caller_uri, devices = excluded.devices,
		dialog_state = excluded.dialog_state, outcome = excluded.outcome, reason = excluded.reason,
		received_at = excluded.received_at, pushed_at = excluded.pushed_at, progress_at = excluded.progress_at,
		answered_at = excluded.answered_at, ended_at = excluded.ended_at
		WHERE calls.selector = excluded.selector`,
		db.node, c.Selector, c.PairingID, c.CallID, c.CallerName, c.CallerURI, devices, c.DialogState,
		c.Outcome, c.Reason, nanos(received), nanos(c.PushedAt), nanos(c.ProgressAt), nanos(c.AnsweredAt),
		nanos(c.EndedAt))
	if err != nil {
		if db.dialect.isForeignKey(err) {
			return fmt.Errorf("%w: call %s: selector %s", ErrNotFound, c.PairingID, c.Selector)
		}
		return fmt.Errorf("store: put call %s: %w", c.PairingID, err)
	}
	return nil
}

// Calls returns up to limit (1 to 1000) call records of selector, newest first.
func (db *DB) Calls(ctx context.Context, selector string, limit int) ([]Call, error) {
	if err := validSelector(selector); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("%w: calls of %s: limit %d is outside 1 to 1000", ErrInvalid, selector, limit)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT pairing_id, call_id, caller_name, caller_uri, devices,
		dialog_state, outcome, reason, received_at, pushed_at, progress_at, answered_at, ended_at
		FROM calls WHERE node = ? AND selector = ? ORDER BY received_at DESC, id DESC LIMIT ?`,
		db.node, selector, limit)
	if err != nil {
		return nil, fmt.Errorf("store: calls of %s: %w", selector, err)
	}
	defer rows.Close()
	var out []Call
	for rows.Next() {
		c := Call{Selector: selector}
		var devices string
		var rec, pushed, progress, answered, ended int64
		if err := rows.Scan(&c.PairingID, &c.CallID, &c.CallerName, &c.CallerURI, &devices, &c.DialogState,
			&c.Outcome, &c.Reason, &rec, &pushed, &progress, &answered, &ended); err != nil {
			return nil, fmt.Errorf("store: calls of %s: %w", selector, err)
		}
		if devices != "" {
			c.Devices = strings.Split(devices, ",")
		}
		c.ReceivedAt, c.PushedAt, c.ProgressAt = fromNanos(rec), fromNanos(pushed), fromNanos(progress)
		c.AnsweredAt, c.EndedAt = fromNanos(answered), fromNanos(ended)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: calls of %s: %w", selector, err)
	}
	return out, nil
}

// PruneCalls deletes this node's call records received before before and returns how many went.
func (db *DB) PruneCalls(ctx context.Context, before time.Time) (int64, error) {
	if before.IsZero() {
		return 0, fmt.Errorf("%w: prune calls: time is zero", ErrInvalid)
	}
	res, err := db.write.ExecContext(ctx, "DELETE FROM calls WHERE node = ? AND received_at < ?", db.node, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("store: prune calls: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: prune calls: %w", err)
	}
	return n, nil
}

// maxMessageBody bounds a stored message body; callers enforce their own, smaller limit.
const maxMessageBody = 16 << 20

// AddMessage stores m as a waiting message of m.Selector and sets m.ID. It is committed when
// AddMessage returns, so the MESSAGE can then be answered 200 without risk of losing it. The
// instance must be stored (an error wrapping ErrNotFound otherwise).
func (db *DB) AddMessage(ctx context.Context, m *Message) error {
	if m == nil {
		return fmt.Errorf("%w: message is nil", ErrInvalid)
	}
	if err := validSelector(m.Selector); err != nil {
		return fmt.Errorf("message: %w", err)
	}
	if len(m.Body) > maxMessageBody {
		return fmt.Errorf("%w: message to %s: body is %d bytes, at most %d allowed", ErrInvalid, m.Selector, len(m.Body), maxMessageBody)
	}
	if len(m.From) > maxCallText || len(m.ContentType) > maxCallText || len(m.CallID) > maxCallText {
		return fmt.Errorf("%w: message to %s: from, content type or call id longer than %d bytes", ErrInvalid, m.Selector, maxCallText)
	}
	at := m.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	body, err := db.seal.seal(m.Body, adMessage(m.Selector))
	if err != nil {
		return err
	}
	// RETURNING instead of LastInsertId: PostgreSQL's driver has no last insert id.
	var id int64
	err = db.write.QueryRowContext(ctx, `INSERT INTO messages (node, selector, sender, content_type, body, size,
		call_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		db.node, m.Selector, m.From, m.ContentType, body, len(m.Body), m.CallID, nanos(at)).Scan(&id)
	if err != nil {
		if db.dialect.isForeignKey(err) {
			return fmt.Errorf("%w: message to selector %s", ErrNotFound, m.Selector)
		}
		return fmt.Errorf("store: add message to %s: %w", m.Selector, err)
	}
	m.ID, m.ReceivedAt = id, at.UTC()
	return nil
}

// Messages returns up to limit (1 to 1000) waiting messages of selector, oldest first.
func (db *DB) Messages(ctx context.Context, selector string, limit int) ([]Message, error) {
	if err := validSelector(selector); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, fmt.Errorf("%w: messages of %s: limit %d is outside 1 to 1000", ErrInvalid, selector, limit)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT id, sender, content_type, body, call_id, received_at
		FROM messages WHERE node = ? AND selector = ? ORDER BY id LIMIT ?`, db.node, selector, limit)
	if err != nil {
		return nil, fmt.Errorf("store: messages of %s: %w", selector, err)
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		m := Message{Selector: selector}
		var sealed []byte
		var at int64
		if err := rows.Scan(&m.ID, &m.From, &m.ContentType, &sealed, &m.CallID, &at); err != nil {
			return nil, fmt.Errorf("store: messages of %s: %w", selector, err)
		}
		if m.Body, err = db.seal.open(sealed, adMessage(selector)); err != nil {
			return nil, fmt.Errorf("%w: message %d of selector %s", err, m.ID, selector)
		}
		m.ReceivedAt = fromNanos(at)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: messages of %s: %w", selector, err)
	}
	return out, nil
}

// MessageCounts returns, for every selector of this node with waiting messages, how many it has.
func (db *DB) MessageCounts(ctx context.Context) (map[string]int, error) {
	return db.countBySelector(ctx, "messages")
}

// AckMessages deletes the waiting messages of selector whose ids are given (the device has them)
// and returns how many went. Ids of other selectors or already deleted ones are ignored.
func (db *DB) AckMessages(ctx context.Context, selector string, ids []int64) (int64, error) {
	if err := validSelector(selector); err != nil {
		return 0, err
	}
	if len(ids) > 1000 {
		return 0, fmt.Errorf("%w: ack of %s: %d ids, at most 1000 at once", ErrInvalid, selector, len(ids))
	}
	if len(ids) == 0 {
		return 0, nil
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("store: ack messages of %s: %w", selector, err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, "DELETE FROM messages WHERE node = ? AND selector = ? AND id = ?")
	if err != nil {
		return 0, fmt.Errorf("store: ack messages of %s: %w", selector, err)
	}
	defer stmt.Close()
	var total int64
	for _, id := range ids {
		res, err := stmt.ExecContext(ctx, db.node, selector, id)
		if err != nil {
			return 0, fmt.Errorf("store: ack message %d of %s: %w", id, selector, err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("store: ack messages of %s: %w", selector, err)
	}
	return total, nil
}

// CheckDeviceSecret reports whether secret is the stored secret of the device deviceID of
// selector: nil if it is, an error wrapping ErrSecret if not, ErrNotFound if there is no such
// device. The comparison takes the same time wherever the secrets differ.
func (db *DB) CheckDeviceSecret(ctx context.Context, selector, deviceID, secret string) error {
	return db.CheckDeviceProof(ctx, selector, deviceID, func(stored []byte) bool {
		return subtle.ConstantTimeCompare(stored, []byte(secret)) == 1
	})
}

// CheckDeviceProof opens the stored secret of the device deviceID of selector and hands it
// to verify, which checks what the device sent against it (e.g. an HMAC keyed with it) and
// must compare in constant time. It returns nil when verify reports true, an error wrapping
// ErrSecret when it reports false or the device has no secret, ErrNotFound when there is no
// such device. The secret never leaves this call.
func (db *DB) CheckDeviceProof(ctx context.Context, selector, deviceID string, verify func(secret []byte) bool) error {
	if err := validSelector(selector); err != nil {
		return err
	}
	if deviceID == "" || len(deviceID) > 256 {
		return fmt.Errorf("%w: device id must be 1 to 256 bytes", ErrInvalid)
	}
	var sealed []byte
	err := db.read.QueryRowContext(ctx, "SELECT secret FROM devices WHERE node = ? AND selector = ? AND device_id = ?",
		db.node, selector, deviceID).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: device %q of selector %s", ErrNotFound, deviceID, selector)
	}
	if err != nil {
		return fmt.Errorf("store: check device secret: %w", err)
	}
	plain, err := db.seal.open(sealed, adDeviceSecret(selector, deviceID))
	if err != nil {
		return fmt.Errorf("%w: secret of device %s of selector %s", err, deviceID, selector)
	}
	// An empty stored secret never matches: a device without a secret cannot fetch messages
	// or take calls.
	if len(plain) == 0 || !verify(plain) {
		return fmt.Errorf("%w: device %q of selector %s", ErrSecret, deviceID, selector)
	}
	return nil
}

func adMessage(selector string) []byte { return []byte("sipis message\x00" + selector) }

// OutcomeCount is how many of this node's call records have one outcome and reason.
type OutcomeCount struct {
	Outcome, Reason string
	Count           int
}

// CallOutcomes counts this node's ended call records by outcome and reason (records still in
// progress, with no outcome, are left out). The counts cover every stored record, so they
// survive restarts and go down only when records go (with their instance, or PruneCalls).
func (db *DB) CallOutcomes(ctx context.Context) ([]OutcomeCount, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT outcome, reason, COUNT(*) FROM calls
		WHERE node = ? AND outcome != '' GROUP BY outcome, reason ORDER BY outcome, reason`, db.node)
	if err != nil {
		return nil, fmt.Errorf("store: call outcomes: %w", err)
	}
	defer rows.Close()
	var out []OutcomeCount
	for rows.Next() {
		var c OutcomeCount
		if err := rows.Scan(&c.Outcome, &c.Reason, &c.Count); err != nil {
			return nil, fmt.Errorf("store: call outcomes: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: call outcomes: %w", err)
	}
	return out, nil
}

// CloseOpenCalls ends, at start, the call records of this node that the previous run left
// open (it was killed): a call still ringing gets outcome missed with reason, an answered one
// keeps its outcome and gets reason; both become terminated at at. It returns the records as
// they were before (their Call-IDs let a late CANCEL still be answered). at must not be zero
// and reason must be 1 to 1024 bytes.
func (db *DB) CloseOpenCalls(ctx context.Context, reason string, at time.Time) ([]Call, error) {
	if at.IsZero() || reason == "" || len(reason) > maxCallText {
		return nil, fmt.Errorf("%w: close open calls: zero time or bad reason", ErrInvalid)
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: close open calls: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT selector, pairing_id, call_id, outcome, dialog_state FROM calls
		WHERE node = ? AND (outcome = '' OR dialog_state != ?)`, db.node, DialogTerminated)
	if err != nil {
		return nil, fmt.Errorf("store: close open calls: %w", err)
	}
	var open []Call
	for rows.Next() {
		var c Call
		if err := rows.Scan(&c.Selector, &c.PairingID, &c.CallID, &c.Outcome, &c.DialogState); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: close open calls: %w", err)
		}
		open = append(open, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: close open calls: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE calls SET outcome = CASE outcome WHEN '' THEN ? ELSE outcome END,
		reason = ?, dialog_state = ?, ended_at = CASE ended_at WHEN 0 THEN ? ELSE ended_at END
		WHERE node = ? AND (outcome = '' OR dialog_state != ?)`,
		OutcomeMissed, reason, DialogTerminated, nanos(at), db.node, DialogTerminated); err != nil {
		return nil, fmt.Errorf("store: close open calls: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: close open calls: %w", err)
	}
	return open, nil
}
