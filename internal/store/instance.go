package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Values of Instance.Mode: what the app asked for.
const (
	ModeBackground = "background" // sipis holds the registration
	ModeForeground = "foreground" // the app registers by itself
	ModeOff        = "off"        // the app asked to be forgotten; the instance is being deleted
)

// Values of Instance.State, the state machine's state.
const (
	StateIdle         = "Idle"
	StateRegistering  = "Registering"
	StateRegisterLoop = "RegisterLoop"
)

// Values of Instance.Status, the registration status.
const (
	StatusNotRegistered = "NotRegistered"
	StatusRegistering   = "Registering"
	StatusRegistered    = "Registered"
	StatusUnauthorized  = "Unauthorized"
	StatusError         = "Error"
)

// maxSelector bounds a selector's length; selectors are short hex strings chosen by the app.
const maxSelector = 256

// pageSize is how many rows ForEachInstance and Selectors read per query.
const pageSize = 500

// Account is the user's SIP account as the app sent it.
type Account struct {
	User, AuthUser, Password, Domain, Proxy string
	// Port is the proxy's port; 0 means DNS SRV or the transport's default (RFC 3263 §4.2).
	Port int
	// Transport is "udp", "tcp", "tls", or "" for the RFC 3263 choice.
	Transport string
	// Expires is the registration lifetime in seconds the app asked for (0: the proxy's default).
	Expires     int
	DisplayName string
}

// Instance is one selector's stored instance.
type Instance struct {
	Selector string
	// Node is the node that holds the instance; on write it is ignored (the DB's node is used).
	Node    string
	Account Account
	// Mode is the desired mode from the app: ModeBackground, ModeForeground or ModeOff.
	Mode string
	// Off is set when an administrator turned the instance off.
	Off bool
	// State is one of StateIdle, StateRegistering, StateRegisterLoop.
	State string
	// Status is one of StatusNotRegistered, StatusRegistering, StatusRegistered,
	// StatusUnauthorized, StatusError.
	Status    string
	LastError string
	// ContactUser is the random user part of our Contact; unique over the database.
	ContactUser string
	// ContactAddr is the host:port of our Contact when a NAT moved it; "" = the UA's own.
	ContactAddr string
	// CallID is the REGISTER Call-ID, stable across refreshes (RFC 3261 §10.2.4).
	CallID string
	// CSeq is the last CSeq used in a REGISTER of this Call-ID.
	CSeq uint32
	// ExpiresAt is when the granted binding expires (zero if none).
	ExpiresAt time.Time
	// Settings is the JSON of everything the app sent, secrets already removed by the caller.
	Settings                           []byte
	CreatedAt, UpdatedAt, LastActivity time.Time
	// Devices is how many devices the instance has; only ScanInstances reads it (writes
	// ignore it).
	Devices int
}

// Device is one device (phone) of an instance.
type Device struct {
	// PushToken is the token calls are pushed to (on APNs the PushKit/VoIP token).
	Selector, ID, Platform, PushToken, AppID string
	// AlertToken is an APNs device's remote-notification token, for everything but calls;
	// empty when the app sent none (then the device gets no alerts).
	AlertToken         string
	Sandbox            bool
	AppVersion, Locale string
	// Secret is the per-device secret, sealed at rest.
	Secret string
	// TokenInvalid is set when the push service said PushToken is no longer valid, and
	// AlertTokenInvalid the same of AlertToken: each token dies on its own.
	TokenInvalid, AlertTokenInvalid bool
	LastSeen                        time.Time
}

// StateUpdate is what the registration engine writes on every state change.
type StateUpdate struct {
	Selector, State, Status, LastError string
	ContactAddr                        string // host:port of our Contact; "" = the UA's own
	CSeq                               uint32
	ExpiresAt                          time.Time
	Off                                bool
	// At becomes UpdatedAt; zero means now.
	At time.Time
}

// PutRegistration stores one accepted registration atomically, in one transaction:
//   - it records nonce for inst.Selector; if that nonce was already used for this selector it
//     returns ErrReplay and nothing changes;
//   - it upserts the instance: account, mode, settings and LastActivity are replaced; ContactUser,
//     CallID, CSeq, State, Status, LastError and ExpiresAt of an existing row are kept unless inst
//     has non-empty (non-zero) values; Off and CreatedAt of an existing row are always kept;
//   - it upserts dev (if not nil) by selector and device id. The device's TokenInvalid and
//     AlertTokenInvalid are replaced by dev's: a registration carrying the tokens is the app's word
//     that they are current.
//
// LastActivity (and UpdatedAt) is inst.LastActivity, else nonceTime, else now. A new instance
// with an empty ContactUser gets a random 128-bit hex one, State Idle and Status NotRegistered.
// On success inst (and dev) are updated to what is now stored, so the caller learns the
// ContactUser, CallID and CSeq to use. Invalid input returns an error wrapping ErrInvalid.
func (db *DB) PutRegistration(ctx context.Context, inst *Instance, dev *Device, nonce string, nonceTime time.Time) error {
	_, err := db.PutRegistrationCounted(ctx, inst, dev, nonce, nonceTime)
	return err
}

// PutRegistrationCounted is PutRegistration that also returns how many devices the instance has
// once the registration is stored. Concurrent calls are committed together (batch.go); each
// returns only once its own registration is committed, or with the error that kept it out.
func (db *DB) PutRegistrationCounted(ctx context.Context, inst *Instance, dev *Device, nonce string, nonceTime time.Time) (devices int, err error) {
	w, err := db.prepareRegistration(inst, dev, nonce, nonceTime)
	if err != nil {
		return 0, err
	}
	// Written with the registrations of other callers in one transaction (batch.go).
	if err := db.commitRegistration(ctx, w); err != nil {
		return 0, err
	}
	return w.devices, nil
}

// regWrite is one registration ready to be written: checked, its secrets sealed. exec writes it
// within a transaction and keeps what it stored in cur; apply hands that to the caller's inst and
// dev once the transaction committed (never before: a failed commit must change nothing).
type regWrite struct {
	db              *DB
	inst            *Instance
	dev             *Device
	nonce           string
	nonceTime, at   time.Time
	password, devSc []byte // sealed

	// Set by commitRegistration: the caller's context and where it waits for the answer.
	ctx  context.Context
	done chan error

	// Set by exec.
	cur     Instance
	devSeen time.Time
	devices int // the instance's devices
}

// prepareRegistration checks a registration and seals its secrets, outside any transaction
// (sealing needs no lock).
func (db *DB) prepareRegistration(inst *Instance, dev *Device, nonce string, nonceTime time.Time) (*regWrite, error) {
	if inst == nil {
		return nil, fmt.Errorf("%w: instance is nil", ErrInvalid)
	}
	if err := validateInstance(inst); err != nil {
		return nil, err
	}
	if nonce == "" || len(nonce) > 256 {
		return nil, fmt.Errorf("%w: nonce must be 1 to 256 bytes, got %d", ErrInvalid, len(nonce))
	}
	sel := inst.Selector
	if dev != nil {
		if dev.Selector == "" {
			dev.Selector = sel
		}
		if err := validateDevice(dev, sel); err != nil {
			return nil, err
		}
	}
	w := &regWrite{db: db, inst: inst, dev: dev, nonce: nonce, nonceTime: nonceTime, at: inst.LastActivity}
	if w.at.IsZero() {
		w.at = nonceTime
	}
	if w.at.IsZero() {
		w.at = time.Now()
	}
	w.at = w.at.UTC()
	var err error
	if w.password, err = db.seal.seal([]byte(inst.Account.Password), adPassword(sel)); err != nil {
		return nil, err
	}
	if dev != nil {
		if w.devSc, err = db.seal.seal([]byte(dev.Secret), adDeviceSecret(sel, dev.ID)); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// execer is what exec needs of a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// exec writes w in tx: the nonce (or ErrReplay, writing nothing), the instance row merged with
// the stored one, the device. It may run more than once for one w (a batch that failed to commit
// is written again one by one), so it computes everything it keeps from the database each time.
func (w *regWrite) exec(ctx context.Context, tx execer) error {
	db, sel := w.db, w.inst.Selector
	res, err := tx.ExecContext(ctx, `INSERT INTO nonces (node, selector, nonce, seen_at) VALUES (?, ?, ?, ?)
		ON CONFLICT DO NOTHING`, db.node, sel, w.nonce, nanos(w.nonceTime))
	if err != nil {
		return fmt.Errorf("store: put registration %s: record nonce: %w", sel, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: put registration %s: %w", sel, err)
	} else if n == 0 {
		return fmt.Errorf("%w (selector %s)", ErrReplay, sel)
	}
	if err := w.loadCurrent(ctx, tx); err != nil {
		return err
	}
	cur, a := &w.cur, &w.inst.Account
	_, err = tx.ExecContext(ctx, `INSERT INTO instances (node, selector, user_name, auth_user, password, domain,
		proxy, port, transport, expires, display_name, mode, off, state, status, last_error, contact_user,
		call_id, cseq, expires_at, settings, created_at, updated_at, last_activity)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (node, selector) DO UPDATE SET user_name = excluded.user_name,
		auth_user = excluded.auth_user, password = excluded.password, domain = excluded.domain,
		proxy = excluded.proxy, port = excluded.port, transport = excluded.transport,
		expires = excluded.expires, display_name = excluded.display_name, mode = excluded.mode,
		off = excluded.off, state = excluded.state, status = excluded.status,
		last_error = excluded.last_error, contact_user = excluded.contact_user,
		call_id = excluded.call_id, cseq = excluded.cseq, expires_at = excluded.expires_at,
		settings = excluded.settings, created_at = excluded.created_at,
		updated_at = excluded.updated_at, last_activity = excluded.last_activity`,
		db.node, sel, a.User, a.AuthUser, w.password, a.Domain, a.Proxy, a.Port, a.Transport, a.Expires,
		a.DisplayName, w.inst.Mode, cur.Off, cur.State, cur.Status, cur.LastError, cur.ContactUser,
		cur.CallID, int64(cur.CSeq), nanos(cur.ExpiresAt), w.inst.Settings, nanos(cur.CreatedAt),
		nanos(w.at), nanos(w.at))
	if err != nil {
		return fmt.Errorf("store: put registration %s: %w", sel, err)
	}
	return w.execDevice(ctx, tx)
}

// loadCurrent reads the stored row of w's selector (if any) into w.cur and applies what w.inst
// sets over it.
func (w *regWrite) loadCurrent(ctx context.Context, tx execer) error {
	db, inst, sel := w.db, w.inst, w.inst.Selector
	cur := Instance{State: StateIdle, Status: StatusNotRegistered, CreatedAt: inst.CreatedAt}
	var cseq, expiresAt, createdAt int64
	err := tx.QueryRowContext(ctx, `SELECT contact_user, call_id, cseq, state, status, last_error, expires_at, off, created_at
		FROM instances WHERE node = ? AND selector = ?`, db.node, sel).
		Scan(&cur.ContactUser, &cur.CallID, &cseq, &cur.State, &cur.Status, &cur.LastError, &expiresAt, &cur.Off, &createdAt)
	exists := err == nil
	switch {
	case exists:
		cur.CSeq, cur.ExpiresAt, cur.CreatedAt = uint32(cseq), fromNanos(expiresAt), fromNanos(createdAt)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("store: put registration %s: %w", sel, err)
	}
	if err := mergeStored(&cur, inst, exists, w.at); err != nil {
		return err
	}
	w.cur = cur
	return nil
}

// mergeStored applies over cur, the stored row (exists) or a new one, what inst sets.
func mergeStored(cur, inst *Instance, exists bool, at time.Time) error {
	// The Contact user part and the Call-ID of a stored instance never change: its binding
	// at the registrar is keyed by them (RFC 3261 §10.2.4). The caller's values are used only
	// for a new row, and generated when it gives none.
	var err error
	if !exists || cur.ContactUser == "" {
		cur.ContactUser = inst.ContactUser
	}
	if cur.ContactUser == "" {
		if cur.ContactUser, err = randomHex(16); err != nil {
			return err
		}
	}
	if !exists || cur.CallID == "" {
		cur.CallID = inst.CallID
	}
	if cur.CallID == "" {
		if cur.CallID, err = randomHex(16); err != nil {
			return err
		}
	}
	if inst.CSeq != 0 {
		cur.CSeq = inst.CSeq
	}
	if inst.State != "" {
		cur.State = inst.State
	}
	if inst.Status != "" {
		cur.Status = inst.Status
	}
	if inst.LastError != "" {
		cur.LastError = inst.LastError
	}
	if !inst.ExpiresAt.IsZero() {
		cur.ExpiresAt = inst.ExpiresAt.UTC()
	}
	if !exists {
		cur.Off = inst.Off
	}
	if cur.CreatedAt.IsZero() {
		cur.CreatedAt = at
	}
	cur.CreatedAt = cur.CreatedAt.UTC()
	return nil
}

// execDevice upserts w's device (if any) and counts the devices the instance now has.
func (w *regWrite) execDevice(ctx context.Context, tx execer) error {
	db, sel, dev := w.db, w.inst.Selector, w.dev
	w.devSeen = w.at
	if dev != nil {
		if !dev.LastSeen.IsZero() {
			w.devSeen = dev.LastSeen.UTC()
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO devices (node, selector, device_id, platform, push_token,
			app_id, sandbox, app_version, locale, secret, token_invalid, last_seen, alert_token,
			alert_token_invalid)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (node, selector, device_id) DO UPDATE SET platform = excluded.platform,
			push_token = excluded.push_token, app_id = excluded.app_id, sandbox = excluded.sandbox,
			app_version = excluded.app_version, locale = excluded.locale, secret = excluded.secret,
			token_invalid = excluded.token_invalid, last_seen = excluded.last_seen,
			alert_token = excluded.alert_token, alert_token_invalid = excluded.alert_token_invalid`,
			db.node, sel, dev.ID, dev.Platform, dev.PushToken, dev.AppID, dev.Sandbox, dev.AppVersion,
			dev.Locale, w.devSc, dev.TokenInvalid, nanos(w.devSeen), dev.AlertToken, dev.AlertTokenInvalid)
		if err != nil {
			return fmt.Errorf("store: put registration %s: device %s: %w", sel, dev.ID, err)
		}
	}
	err := tx.QueryRowContext(ctx, "SELECT count(*) FROM devices WHERE node = ? AND selector = ?", db.node, sel).
		Scan(&w.devices)
	if err != nil {
		return fmt.Errorf("store: put registration %s: count devices: %w", sel, err)
	}
	return nil
}

// apply hands what exec stored to the caller's inst and dev; call it only after the commit.
func (w *regWrite) apply() {
	inst, cur := w.inst, &w.cur
	inst.Node = w.db.node
	inst.Off, inst.State, inst.Status, inst.LastError = cur.Off, cur.State, cur.Status, cur.LastError
	inst.ContactUser, inst.CallID, inst.CSeq, inst.ExpiresAt = cur.ContactUser, cur.CallID, cur.CSeq, cur.ExpiresAt
	inst.CreatedAt, inst.UpdatedAt, inst.LastActivity = cur.CreatedAt, w.at, w.at
	if w.dev != nil {
		w.dev.LastSeen = w.devSeen
	}
}

// SaveStates writes many state updates in ONE transaction (the engine batches them). All updates
// are checked first: if one is invalid, an error wrapping ErrInvalid names it and nothing changes.
// An update for a selector that is not stored (deleted meanwhile) is skipped; the others commit.
func (db *DB) SaveStates(ctx context.Context, ups []StateUpdate) error {
	if len(ups) == 0 {
		return nil
	}
	for i := range ups {
		u := &ups[i]
		if err := validSelector(u.Selector); err != nil {
			return fmt.Errorf("state update %d: %w", i, err)
		}
		if !validState(u.State) {
			return fmt.Errorf("%w: state update %d (selector %s): unknown state %q", ErrInvalid, i, u.Selector, u.State)
		}
		if !validStatus(u.Status) {
			return fmt.Errorf("%w: state update %d (selector %s): unknown status %q", ErrInvalid, i, u.Selector, u.Status)
		}
	}
	now := time.Now()
	// inTx: on PostgreSQL two batches may lock the same rows in another order (a deadlock the
	// server breaks by rolling one back); the batch is then simply written again.
	missing := 0
	err := db.write.inTx(ctx, func(tx *tx) error {
		var err error
		if db.dialect.batchUpdates {
			missing, err = db.saveStatesBatched(ctx, tx, ups, now)
		} else {
			missing, err = db.saveStatesEach(ctx, tx, ups, now)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: save states: %w", err)
	}
	if missing > 0 {
		db.log.WithField("missing", missing).Debug("store: state updates for instances no longer stored were skipped")
	}
	return nil
}

// saveStatesEach writes ups one prepared UPDATE each, in order, and returns how many named no
// stored instance. In-process SQLite runs a prepared statement faster than a large join.
func (db *DB) saveStatesEach(ctx context.Context, tx *tx, ups []StateUpdate, now time.Time) (int, error) {
	stmt, err := tx.PrepareContext(ctx, `UPDATE instances SET state = ?, status = ?, last_error = ?, cseq = ?,
		expires_at = ?, off = ?, contact_addr = ?, updated_at = ? WHERE node = ? AND selector = ?`)
	if err != nil {
		return 0, err
	}
	defer stmt.Close()
	missing := 0
	for i := range ups {
		u := &ups[i]
		at := u.At
		if at.IsZero() {
			at = now
		}
		res, err := stmt.ExecContext(ctx, u.State, u.Status, u.LastError, int64(u.CSeq), nanos(u.ExpiresAt),
			u.Off, u.ContactAddr, nanos(at), db.node, u.Selector)
		if err != nil {
			return 0, fmt.Errorf("state of %s: %w", u.Selector, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			missing++
		}
	}
	return missing, nil
}

// saveStatesBatched writes ups with one statement per chunk of up to stateChunk rows (a round
// trip to a PostgreSQL server costs more than the update itself) and returns how many selectors
// named no stored instance. The last update of a selector wins, as if they were applied in
// order: the rows of one UPDATE … FROM (VALUES …) must name each selector once. Chunks are
// powers of two, so that only a few query texts are ever prepared and cached.
func (db *DB) saveStatesBatched(ctx context.Context, tx *tx, ups []StateUpdate, now time.Time) (int, error) {
	last := make(map[string]int, len(ups))
	for i := range ups {
		last[ups[i].Selector] = i
	}
	rows := make([]any, 0, len(last)*stateCols)
	for i := range ups {
		u := &ups[i]
		if last[u.Selector] != i {
			continue
		}
		at := u.At
		if at.IsZero() {
			at = now
		}
		rows = append(rows, u.Selector, u.State, u.Status, u.LastError, int64(u.CSeq), nanos(u.ExpiresAt),
			u.Off, u.ContactAddr, nanos(at))
	}
	missing := len(last)
	for rest := rows; len(rest) > 0; {
		n := stateChunk
		for n*stateCols > len(rest) {
			n /= 2
		}
		args := append(rest[:n*stateCols:n*stateCols], db.node)
		res, err := tx.ExecContext(ctx, saveStatesQuery(n), args...)
		if err != nil {
			return 0, err
		}
		if k, err := res.RowsAffected(); err == nil {
			missing -= int(k)
		}
		rest = rest[n*stateCols:]
	}
	return missing, nil
}

// stateCols is the number of values of one row of saveStatesQuery; stateChunk the most rows
// one statement carries (9 × 512 parameters, well under SQLite's 32766 and PostgreSQL's 65535).
const (
	stateCols  = 9
	stateChunk = 512
)

// saveStatesQueries caches saveStatesQuery's texts by row count.
var saveStatesQueries sync.Map

// saveStatesQuery returns the UPDATE of n instances' states, for saveStatesBatched: the values
// are a VALUES list joined on the selector (UPDATE … FROM, which both SQLite 3.33+ and
// PostgreSQL accept; both name the list's columns column1, column2 …). Every value is CAST so that
// PostgreSQL knows the parameters' types; the last parameter is the node.
func saveStatesQuery(n int) string {
	if q, ok := saveStatesQueries.Load(n); ok {
		return q.(string)
	}
	const row = "(?, ?, ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), ?, CAST(? AS BIGINT))"
	q := `UPDATE instances SET state = v.column2, status = v.column3, last_error = v.column4,
		cseq = v.column5, expires_at = v.column6, off = v.column7, contact_addr = v.column8,
		updated_at = v.column9
		FROM (VALUES ` + strings.TrimSuffix(strings.Repeat(row+", ", n), ", ") + `) AS v
		WHERE instances.node = ? AND instances.selector = v.column1`
	saveStatesQueries.Store(n, q)
	return q
}

// instanceCols are the columns scanInstance reads, in order.
const instanceCols = `selector, node, user_name, auth_user, password, domain, proxy, port, transport, expires,
	display_name, mode, off, state, status, last_error, contact_user, call_id, cseq, expires_at, settings,
	created_at, updated_at, last_activity, contact_addr`

type scanner interface{ Scan(...any) error }

// scanInstance reads one row of instanceCols and opens its password.
func (db *DB) scanInstance(row scanner) (*Instance, error) {
	var (
		in                                           Instance
		password                                     []byte
		cseq, expiresAt, createdAt, updatedAt, lastA int64
	)
	a := &in.Account
	err := row.Scan(&in.Selector, &in.Node, &a.User, &a.AuthUser, &password, &a.Domain, &a.Proxy, &a.Port,
		&a.Transport, &a.Expires, &a.DisplayName, &in.Mode, &in.Off, &in.State, &in.Status, &in.LastError,
		&in.ContactUser, &in.CallID, &cseq, &expiresAt, &in.Settings, &createdAt, &updatedAt, &lastA, &in.ContactAddr)
	if err != nil {
		return nil, err
	}
	plain, err := db.seal.open(password, adPassword(in.Selector))
	if err != nil {
		return nil, fmt.Errorf("%w: password of selector %s", err, in.Selector)
	}
	a.Password = string(plain)
	in.CSeq = uint32(cseq)
	in.ExpiresAt, in.CreatedAt = fromNanos(expiresAt), fromNanos(createdAt)
	in.UpdatedAt, in.LastActivity = fromNanos(updatedAt), fromNanos(lastA)
	return &in, nil
}

// Instance returns the instance of selector, or an error wrapping ErrNotFound.
func (db *DB) Instance(ctx context.Context, selector string) (*Instance, error) {
	if err := validSelector(selector); err != nil {
		return nil, err
	}
	row := db.read.QueryRowContext(ctx, `SELECT `+instanceCols+` FROM instances WHERE node = ? AND selector = ?`,
		db.node, selector)
	in, err := db.scanInstance(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: selector %s", ErrNotFound, selector)
	}
	if err != nil {
		return nil, fmt.Errorf("store: instance %s: %w", selector, err)
	}
	return in, nil
}

// InstanceByContact returns the instance whose Contact user part is contactUser (how an incoming
// INVITE or MESSAGE finds its instance), or an error wrapping ErrNotFound.
func (db *DB) InstanceByContact(ctx context.Context, contactUser string) (*Instance, error) {
	if contactUser == "" {
		return nil, fmt.Errorf("%w: contact user is empty", ErrInvalid)
	}
	row := db.read.QueryRowContext(ctx, `SELECT `+instanceCols+` FROM instances WHERE contact_user = ? AND node = ?`,
		contactUser, db.node)
	in, err := db.scanInstance(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: contact user %q", ErrNotFound, contactUser)
	}
	if err != nil {
		return nil, fmt.Errorf("store: instance by contact: %w", err)
	}
	return in, nil
}

// ForEachInstance calls fn for every instance of this node, ordered by selector, and stops at the
// first error fn returns (which it returns). It reads pages of a few hundred rows by keyset
// (selector > last), so memory stays bounded with any number of instances and no read transaction
// is held while fn runs: fn may call any method of db, including writes. An instance written during
// the walk may or may not be seen.
func (db *DB) ForEachInstance(ctx context.Context, fn func(*Instance) error) error {
	last := ""
	page := make([]*Instance, 0, pageSize)
	for {
		page = page[:0]
		rows, err := db.read.QueryContext(ctx, `SELECT `+instanceCols+` FROM instances
			WHERE node = ? AND selector > ? ORDER BY selector LIMIT ?`, db.node, last, pageSize)
		if err != nil {
			return fmt.Errorf("store: for each instance: %w", err)
		}
		for rows.Next() {
			in, err := db.scanInstance(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("store: for each instance: %w", err)
			}
			page = append(page, in)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("store: for each instance: %w", err)
		}
		for _, in := range page {
			if err := fn(in); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		last = page[len(page)-1].Selector
	}
}

// Selectors calls fn with every selector of this node and its last activity, ordered by selector,
// paging like ForEachInstance. It opens no secrets.
func (db *DB) Selectors(ctx context.Context, fn func(selector string, lastActivity time.Time) error) error {
	type entry struct {
		sel string
		at  int64
	}
	last := ""
	page := make([]entry, 0, pageSize)
	for {
		page = page[:0]
		rows, err := db.read.QueryContext(ctx, `SELECT selector, last_activity FROM instances
			WHERE node = ? AND selector > ? ORDER BY selector LIMIT ?`, db.node, last, pageSize)
		if err != nil {
			return fmt.Errorf("store: selectors: %w", err)
		}
		for rows.Next() {
			var e entry
			if err := rows.Scan(&e.sel, &e.at); err != nil {
				rows.Close()
				return fmt.Errorf("store: selectors: %w", err)
			}
			page = append(page, e)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("store: selectors: %w", err)
		}
		for _, e := range page {
			if err := fn(e.sel, fromNanos(e.at)); err != nil {
				return err
			}
		}
		if len(page) < pageSize {
			return nil
		}
		last = page[len(page)-1].sel
	}
}

// CountInstances returns the number of instances of this node.
func (db *DB) CountInstances(ctx context.Context) (int, error) {
	var n int
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM instances WHERE node = ?", db.node).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count instances: %w", err)
	}
	return n, nil
}

// Devices returns the devices of selector ordered by id; none (and no error) if the selector is
// not stored.
func (db *DB) Devices(ctx context.Context, selector string) ([]Device, error) {
	if err := validSelector(selector); err != nil {
		return nil, err
	}
	rows, err := db.read.QueryContext(ctx, `SELECT device_id, platform, push_token, app_id, sandbox, app_version,
		locale, secret, token_invalid, last_seen, alert_token, alert_token_invalid
		FROM devices WHERE node = ? AND selector = ? ORDER BY device_id`,
		db.node, selector)
	if err != nil {
		return nil, fmt.Errorf("store: devices of %s: %w", selector, err)
	}
	defer rows.Close()
	var devs []Device
	for rows.Next() {
		d := Device{Selector: selector}
		var secret []byte
		var seen int64
		if err := rows.Scan(&d.ID, &d.Platform, &d.PushToken, &d.AppID, &d.Sandbox, &d.AppVersion, &d.Locale,
			&secret, &d.TokenInvalid, &seen, &d.AlertToken, &d.AlertTokenInvalid); err != nil {
			return nil, fmt.Errorf("store: devices of %s: %w", selector, err)
		}
		plain, err := db.seal.open(secret, adDeviceSecret(selector, d.ID))
		if err != nil {
			return nil, fmt.Errorf("%w: secret of device %s of selector %s", err, d.ID, selector)
		}
		d.Secret, d.LastSeen = string(plain), fromNanos(seen)
		devs = append(devs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: devices of %s: %w", selector, err)
	}
	return devs, nil
}

// DeviceCounts returns, for every selector of this node that has devices, how many it has.
func (db *DB) DeviceCounts(ctx context.Context) (map[string]int, error) {
	return db.countBySelector(ctx, "devices")
}

// countBySelector counts the rows of table (a constant of this package, never input) per
// selector of this node.
func (db *DB) countBySelector(ctx context.Context, table string) (map[string]int, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT selector, count(*) FROM "+table+" WHERE node = ? GROUP BY selector", db.node)
	if err != nil {
		return nil, fmt.Errorf("store: %s counts: %w", table, err)
	}
	defer rows.Close()
	counts := make(map[string]int)
	for rows.Next() {
		var sel string
		var n int
		if err := rows.Scan(&sel, &n); err != nil {
			return nil, fmt.Errorf("store: %s counts: %w", table, err)
		}
		counts[sel] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s counts: %w", table, err)
	}
	return counts, nil
}

// MarkTokenInvalid records that the push service refused token, one of the device's tokens, as
// no longer valid: only that token is marked (the VoIP token of an iPhone stays usable when its
// alert token dies, and the reverse), and only while the device still has it, so a push that
// failed while the app re-registered with a new token does not kill the new one. It returns an
// error wrapping ErrNotFound if the device does not have that token (or does not exist).
func (db *DB) MarkTokenInvalid(ctx context.Context, selector, deviceID, token string) error {
	if err := validSelector(selector); err != nil {
		return err
	}
	if token == "" {
		return fmt.Errorf("%w: no token to mark invalid", ErrInvalid)
	}
	res, err := db.write.ExecContext(ctx, `UPDATE devices SET
		token_invalid = CASE WHEN push_token = ?1 THEN 1 ELSE token_invalid END,
		alert_token_invalid = CASE WHEN alert_token = ?1 THEN 1 ELSE alert_token_invalid END
		WHERE node = ?2 AND selector = ?3 AND device_id = ?4 AND (push_token = ?1 OR alert_token = ?1)`,
		token, db.node, selector, deviceID)
	if err != nil {
		return fmt.Errorf("store: mark token invalid: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: mark token invalid: %w", err)
	} else if n == 0 {
		return fmt.Errorf("%w: device %q of selector %s", ErrNotFound, deviceID, selector)
	}
	return nil
}

// DeleteDevice deletes one device of selector (and its sealed secret), for example one not seen
// for longer than the configured maximum age. It returns an error wrapping ErrNotFound if there is
// no such device. The instance stays, even with no device left.
func (db *DB) DeleteDevice(ctx context.Context, selector, deviceID string) error {
	if err := validSelector(selector); err != nil {
		return err
	}
	res, err := db.write.ExecContext(ctx, "DELETE FROM devices WHERE node = ? AND selector = ? AND device_id = ?",
		db.node, selector, deviceID)
	if err != nil {
		return fmt.Errorf("store: delete device: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: delete device: %w", err)
	} else if n == 0 {
		return fmt.Errorf("%w: device %q of selector %s", ErrNotFound, deviceID, selector)
	}
	return nil
}

// Touch records activity of selector (and of its device deviceID, unless empty) at at (zero: now):
// a device was heard from, so the instance is not silent. It returns an error wrapping ErrNotFound
// if the instance (or the device) is not stored.
func (db *DB) Touch(ctx context.Context, selector, deviceID string, at time.Time) error {
	if err := validSelector(selector); err != nil {
		return err
	}
	if at.IsZero() {
		at = time.Now()
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: touch %s: %w", selector, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE instances SET last_activity = CASE WHEN last_activity > ? THEN last_activity ELSE ? END
		WHERE node = ? AND selector = ?`, nanos(at), nanos(at), db.node, selector)
	if err != nil {
		return fmt.Errorf("store: touch %s: %w", selector, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: selector %s", ErrNotFound, selector)
	}
	if deviceID != "" {
		res, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen = CASE WHEN last_seen > ? THEN last_seen ELSE ? END
			WHERE node = ? AND selector = ? AND device_id = ?`, nanos(at), nanos(at), db.node, selector, deviceID)
		if err != nil {
			return fmt.Errorf("store: touch %s: %w", selector, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: device %q of selector %s", ErrNotFound, deviceID, selector)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: touch %s: %w", selector, err)
	}
	return nil
}

// DeleteInstance deletes the instance of selector with its devices and push test records, so its
// credentials are gone (secure_delete overwrites the freed space). Used nonces are kept until
// PruneNonces, so that a replayed registration cannot bring the instance back. It returns an error
// wrapping ErrNotFound if the selector is not stored.
func (db *DB) DeleteInstance(ctx context.Context, selector string) error {
	if err := validSelector(selector); err != nil {
		return err
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", selector, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, "DELETE FROM instances WHERE node = ? AND selector = ?", db.node, selector)
	if err != nil {
		return fmt.Errorf("store: delete %s: %w", selector, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: selector %s", ErrNotFound, selector)
	}
	// devices go by ON DELETE CASCADE.
	if _, err := tx.ExecContext(ctx, "DELETE FROM push_tests WHERE node = ? AND selector = ?", db.node, selector); err != nil {
		return fmt.Errorf("store: delete %s: %w", selector, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: delete %s: %w", selector, err)
	}
	return nil
}

// SilentInstances returns, ordered, the selectors of this node whose LastActivity is before before.
func (db *DB) SilentInstances(ctx context.Context, before time.Time) ([]string, error) {
	if before.IsZero() {
		return nil, fmt.Errorf("%w: silent instances: time is zero", ErrInvalid)
	}
	rows, err := db.read.QueryContext(ctx, "SELECT selector FROM instances WHERE node = ? AND last_activity < ? ORDER BY selector",
		db.node, nanos(before))
	if err != nil {
		return nil, fmt.Errorf("store: silent instances: %w", err)
	}
	defer rows.Close()
	var sels []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("store: silent instances: %w", err)
		}
		sels = append(sels, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: silent instances: %w", err)
	}
	return sels, nil
}

// PruneNonces deletes the nonces of this node recorded before before (older than the registration
// API's freshness window, so a replay is refused as stale anyway) and returns how many went.
func (db *DB) PruneNonces(ctx context.Context, before time.Time) (int64, error) {
	if before.IsZero() {
		return 0, fmt.Errorf("%w: prune nonces: time is zero", ErrInvalid)
	}
	res, err := db.write.ExecContext(ctx, "DELETE FROM nonces WHERE node = ? AND seen_at < ?", db.node, nanos(before))
	if err != nil {
		return 0, fmt.Errorf("store: prune nonces: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: prune nonces: %w", err)
	}
	return n, nil
}

// validateInstance checks what PutRegistration stores.
func validateInstance(in *Instance) error {
	if err := validSelector(in.Selector); err != nil {
		return err
	}
	a := &in.Account
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: selector %s: %s", ErrInvalid, in.Selector, fmt.Sprintf(format, args...))
	}
	switch {
	case in.Mode != ModeBackground && in.Mode != ModeForeground && in.Mode != ModeOff:
		return bad("mode %q is not %q, %q or %q", in.Mode, ModeBackground, ModeForeground, ModeOff)
	case in.State != "" && !validState(in.State):
		return bad("unknown state %q", in.State)
	case in.Status != "" && !validStatus(in.Status):
		return bad("unknown status %q", in.Status)
	case a.User == "":
		return bad("account user is empty")
	case a.Domain == "":
		return bad("account domain is empty")
	case a.Port < 0 || a.Port > 65535:
		return bad("account port %d is out of range 0-65535", a.Port)
	case a.Transport != "" && a.Transport != "udp" && a.Transport != "tcp" && a.Transport != "tls":
		return bad("account transport %q is not udp, tcp or tls", a.Transport)
	case a.Expires < 0:
		return bad("account expires %d is negative", a.Expires)
	case len(in.Settings) > 0 && !json.Valid(in.Settings):
		return bad("settings are not valid JSON")
	}
	if !validContactUser(in.ContactUser) {
		return bad("contact user %q has characters outside RFC 3261 unreserved or is too long", in.ContactUser)
	}
	return nil
}

func validateDevice(d *Device, selector string) error {
	switch {
	case d.Selector != selector:
		return fmt.Errorf("%w: device selector %q is not the instance's %s", ErrInvalid, d.Selector, selector)
	case d.ID == "" || len(d.ID) > 256:
		return fmt.Errorf("%w: selector %s: device id must be 1 to 256 bytes", ErrInvalid, selector)
	case d.Platform == "":
		return fmt.Errorf("%w: selector %s: device %s: platform is empty", ErrInvalid, selector, d.ID)
	}
	return nil
}

// validSelector accepts 1 to 256 lowercase hex digits.
func validSelector(s string) error {
	if s == "" {
		return fmt.Errorf("%w: selector is empty", ErrInvalid)
	}
	if len(s) > maxSelector {
		return fmt.Errorf("%w: selector is %d characters long, at most %d allowed", ErrInvalid, len(s), maxSelector)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w: selector %q is not lowercase hex", ErrInvalid, s)
		}
	}
	return nil
}

func validState(s string) bool {
	return s == StateIdle || s == StateRegistering || s == StateRegisterLoop
}

func validStatus(s string) bool {
	switch s {
	case StatusNotRegistered, StatusRegistering, StatusRegistered, StatusUnauthorized, StatusError:
		return true
	}
	return false
}

// validContactUser accepts "" or up to 128 RFC 3261 §25.1 unreserved characters, which need no
// escaping in a SIP URI user part.
func validContactUser(s string) bool {
	if len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == '!', c == '~', c == '*', c == '\'', c == '(', c == ')':
		default:
			return false
		}
	}
	return true
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("store: random contact user: %w", err)
	}
	return hex.EncodeToString(b), nil
}
