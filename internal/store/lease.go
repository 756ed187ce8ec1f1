package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// This file holds the cluster's part of the store: node membership, the node lease that holds
// a node's instances, moving instances between nodes (take-over of a dead node, hand-over when
// draining), fenced state writes and the inbox through which one node passes work to another.
//
// Ownership is the node column every per-instance row already carries: a DB reads only the rows
// of its node, so an instance belongs to the node named in its rows. Its lease is the owner's
// lease in the nodes table: renewing the node's row renews the hold on all of its instances in
// one statement, however many there are. Survivors claim the instances of a node whose lease
// has passed; each move increments the instance's epoch.
//
// Times in the nodes table are written by each node from its own clock and compared by the
// others with theirs: the nodes' clocks must agree (NTP) to well within the margin the runtime
// keeps between its lease and the time it stops sending (see internal/cluster).

// Values of Node.State.
const (
	NodeLive     = "live"     // renewing its lease, taking new instances
	NodeDraining = "draining" // handing its instances to the others, taking no new ones
	NodeDead     = "dead"     // left, or its lease passed and the survivors took its instances
)

// Kinds of InboxItem: what one node asks of the owner of an instance.
const (
	InboxRegistration = "registration" // a registration for the owner's instance was stored: apply it
	InboxTurnOff      = "turnoff"      // an administrator turned the instance off
	InboxPushTest     = "pushtest"     // an administrator asked for a test push; Arg is the device id
	InboxAdopt        = "adopt"        // the instance was handed to the owner: load it and register it
)

// Errors of the cluster methods.
var (
	// ErrNodeLive means another process holds a live lease under this node name: two nodes
	// with the same name must not run at once.
	ErrNodeLive = errors.New("store: a live node of this name is already running")
	// ErrLeaseLost means this process's lease is not in the database any more (the others
	// declared it dead, or another process joined under its name): it must stop sending and
	// join again.
	ErrLeaseLost = errors.New("store: this node's lease was lost")
)

// Node is one row of the nodes table.
type Node struct {
	Name string
	// Address is the host:port the node puts in its Contact.
	Address string
	// HTTPURL is the base URL of its HTTP server.
	HTTPURL string
	// State is NodeLive, NodeDraining or NodeDead.
	State string
	// Incarnation is random per process start.
	Incarnation                        string
	StartedAt, HeartbeatAt, LeaseUntil time.Time
	// Instances is how many instances it held at its last renewal (for a dead node: when it
	// died), Unclaimed how many of a dead node's the survivors have not claimed yet.
	Instances, Unclaimed int
}

// Expired reports whether n's lease has passed at now.
func (n *Node) Expired(now time.Time) bool { return !now.Before(n.LeaseUntil) }

// Claimed is one instance moved to this node.
type Claimed struct {
	Selector string
	// Epoch is the instance's epoch after the move.
	Epoch uint64
	// From is the node that held it.
	From string
	// FromAddress is From's Contact host:port, where its binding may still be.
	FromAddress string
}

// FencedUpdate is a state update computed while this node held the instance at Epoch.
type FencedUpdate struct {
	StateUpdate
	Epoch uint64
}

// InboxItem is one request for the owner of Selector.
type InboxItem struct {
	ID       int64
	Selector string
	Kind     string
	Arg      string
	At       time.Time
}

// moveBatch bounds the selectors moved by one statement (SQLite allows 32766 parameters).
const moveBatch = 500

// instanceTables are the tables whose rows belong to one instance and move with it; instances
// first.
var instanceTables = []string{"instances", "devices", "calls", "messages", "push_tests", "nonces"}

// JoinCluster records this process as node db.Node() with a lease until leaseUntil. It
// returns an error wrapping ErrNodeLive, and changes nothing, if another incarnation holds a
// lease under that name that has not passed at now (the node of that name is running, or died
// less than a lease ago: it may only be restarted once its lease has passed). Joining again
// with the same incarnation (after ErrLeaseLost) is allowed.
func (db *DB) JoinCluster(ctx context.Context, n Node, now, leaseUntil time.Time) error {
	if n.Incarnation == "" {
		return fmt.Errorf("%w: join cluster: incarnation is empty", ErrInvalid)
	}
	if !leaseUntil.After(now) {
		return fmt.Errorf("%w: join cluster: lease ends before it starts", ErrInvalid)
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: join cluster: %w", err)
	}
	defer tx.Rollback()
	var state, inc string
	var until int64
	err = tx.QueryRowContext(ctx, "SELECT state, incarnation, lease_until FROM nodes WHERE name = ?", db.node).
		Scan(&state, &inc, &until)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("store: join cluster: %w", err)
	case state != NodeDead && inc != n.Incarnation && until > nanos(now):
		return fmt.Errorf("%w: node %q holds a lease until %s", ErrNodeLive, db.node,
			fromNanos(until).Format(time.RFC3339))
	}
	count, err := countOwned(ctx, tx, db.node)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO nodes (name, address, http_url, state, incarnation, started_at,
		heartbeat_at, lease_until, instances) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET address = excluded.address, http_url = excluded.http_url,
		state = excluded.state, incarnation = excluded.incarnation, started_at = excluded.started_at,
		heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until,
		instances = excluded.instances`,
		db.node, n.Address, n.HTTPURL, NodeLive, n.Incarnation, nanos(now), nanos(now), nanos(leaseUntil), count)
	if err != nil {
		return fmt.Errorf("store: join cluster: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: join cluster: %w", err)
	}
	return nil
}

func countOwned(ctx context.Context, tx *tx, node string) (int, error) {
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM instances WHERE node = ?", node).Scan(&n); err != nil {
		return 0, fmt.Errorf("store: count instances of %s: %w", node, err)
	}
	return n, nil
}

// RenewLease extends this node's lease (and with it the hold on every instance of the node)
// to leaseUntil, in one statement, and records instances as its load. It returns an error
// wrapping ErrLeaseLost if the lease is not this incarnation's any more or the node was
// declared dead: the caller must consider its instances lost until it has joined again and
// read which it still owns (Owned).
func (db *DB) RenewLease(ctx context.Context, incarnation string, now, leaseUntil time.Time, instances int) error {
	res, err := db.write.ExecContext(ctx, `UPDATE nodes SET heartbeat_at = ?, lease_until = ?, instances = ?
		WHERE name = ? AND incarnation = ? AND state <> ?`,
		nanos(now), nanos(leaseUntil), instances, db.node, incarnation, NodeDead)
	if err != nil {
		return fmt.Errorf("store: renew lease: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: renew lease: %w", err)
	} else if n == 0 {
		return fmt.Errorf("%w (node %s)", ErrLeaseLost, db.node)
	}
	return nil
}

// SetNodeState sets this node's state (NodeDraining while it hands its instances over,
// NodeDead when it leaves; leaving also ends its lease at once).
func (db *DB) SetNodeState(ctx context.Context, incarnation, state string) error {
	if state != NodeLive && state != NodeDraining && state != NodeDead {
		return fmt.Errorf("%w: node state %q", ErrInvalid, state)
	}
	q := "UPDATE nodes SET state = ? WHERE name = ? AND incarnation = ?"
	if state == NodeDead {
		q = "UPDATE nodes SET state = ?, lease_until = 0 WHERE name = ? AND incarnation = ?"
	}
	res, err := db.write.ExecContext(ctx, q, state, db.node, incarnation)
	if err != nil {
		return fmt.Errorf("store: set node state: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w (node %s)", ErrLeaseLost, db.node)
	}
	return nil
}

// Nodes returns every node ever joined, by name.
func (db *DB) Nodes(ctx context.Context) ([]Node, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT name, address, http_url, state, incarnation, started_at,
		heartbeat_at, lease_until, instances, unclaimed FROM nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: nodes: %w", err)
	}
	defer rows.Close()
	var nodes []Node
	for rows.Next() {
		var n Node
		var started, beat, until int64
		if err := rows.Scan(&n.Name, &n.Address, &n.HTTPURL, &n.State, &n.Incarnation, &started, &beat, &until,
			&n.Instances, &n.Unclaimed); err != nil {
			return nil, fmt.Errorf("store: nodes: %w", err)
		}
		n.StartedAt, n.HeartbeatAt, n.LeaseUntil = fromNanos(started), fromNanos(beat), fromNanos(until)
		nodes = append(nodes, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: nodes: %w", err)
	}
	return nodes, nil
}

// Owned returns the epoch of every instance this node owns.
func (db *DB) Owned(ctx context.Context) (map[string]uint64, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT selector, epoch FROM instances WHERE node = ?", db.node)
	if err != nil {
		return nil, fmt.Errorf("store: owned instances: %w", err)
	}
	defer rows.Close()
	owned := make(map[string]uint64)
	for rows.Next() {
		var sel string
		var epoch int64
		if err := rows.Scan(&sel, &epoch); err != nil {
			return nil, fmt.Errorf("store: owned instances: %w", err)
		}
		owned[sel] = uint64(epoch)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: owned instances: %w", err)
	}
	return owned, nil
}

// OwnerOf returns the node that owns selector, or an error wrapping ErrNotFound.
func (db *DB) OwnerOf(ctx context.Context, selector string) (node string, epoch uint64, err error) {
	if err := validSelector(selector); err != nil {
		return "", 0, err
	}
	var e int64
	err = db.read.QueryRowContext(ctx, "SELECT node, epoch FROM instances WHERE selector = ? ORDER BY epoch DESC LIMIT 1",
		selector).Scan(&node, &e)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, fmt.Errorf("%w: selector %s", ErrNotFound, selector)
	}
	if err != nil {
		return "", 0, fmt.Errorf("store: owner of %s: %w", selector, err)
	}
	return node, uint64(e), nil
}

// ClaimFrom moves this node's share of the instances of the dead node from to this node, in
// selector order, and returns them with their new epochs. The share is the number from held
// when it died divided among survivors (the live nodes, this one included), rounded up, so
// that the survivors spread the instances among themselves; the last claimant takes what is
// left. It claims only while from's lease has passed at now and this node's own lease
// (incarnation) is live at now, and returns nothing otherwise: a node that renewed in time
// keeps its instances, and a node that is itself unsure of its lease takes nothing. Each batch
// of instances moves in one statement per table, and the whole claim in one transaction, so an
// instance is never half moved. A node whose lease has passed is marked dead by its first
// claimant, which records how many instances it held then.
func (db *DB) ClaimFrom(ctx context.Context, from, incarnation string, survivors int, now time.Time) ([]Claimed, error) {
	if from == "" || from == db.node {
		return nil, fmt.Errorf("%w: claim from %q", ErrInvalid, from)
	}
	survivors = max(survivors, 1)
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	defer tx.Rollback()
	if err := db.checkOwnLease(ctx, tx, incarnation, now); err != nil {
		return nil, err
	}
	// Declare from dead first, by an UPDATE conditioned on its lease having passed: the row
	// stays locked until this transaction ends, so a renewal racing with the claim either
	// committed before (and the condition fails: nothing is claimed) or waits and then finds
	// the node dead (ErrLeaseLost), on PostgreSQL as on SQLite. The first claimant records the
	// count at death (SET reads the row as it was).
	res, err := tx.ExecContext(ctx, `UPDATE nodes SET instances = CASE WHEN state = ? THEN instances
		ELSE (SELECT count(*) FROM instances WHERE node = ?) END, state = ?
		WHERE name = ? AND (state = ? OR lease_until <= ?)`,
		NodeDead, from, NodeDead, from, NodeDead, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	var fromAddr string
	var atDeath int
	if n, err := res.RowsAffected(); err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	} else if n == 0 {
		var live int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM nodes WHERE name = ?", from).Scan(&live); err != nil {
			return nil, fmt.Errorf("store: claim from %s: %w", from, err)
		}
		if live > 0 {
			return nil, nil // it renewed in time
		}
		// A name that never joined (the rows of a renamed single node): nobody renews it.
		if atDeath, err = countOwned(ctx, tx, from); err != nil {
			return nil, err
		}
	} else if err := tx.QueryRowContext(ctx, "SELECT address, instances FROM nodes WHERE name = ?", from).
		Scan(&fromAddr, &atDeath); err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	share := max((atDeath+survivors-1)/survivors, 1)
	rows, err := tx.QueryContext(ctx, "SELECT selector FROM instances WHERE node = ? ORDER BY selector LIMIT ?", from, share)
	if err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	var sels []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: claim from %s: %w", from, err)
		}
		sels = append(sels, s)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	claimed, err := db.move(ctx, tx, sels, from, db.node)
	if err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE nodes SET unclaimed = (SELECT count(*) FROM instances WHERE node = ?) WHERE name = ?",
		from, from); err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: claim from %s: %w", from, err)
	}
	for i := range claimed {
		claimed[i].FromAddress = fromAddr
	}
	return claimed, nil
}

// HandOver moves the given instances of this node to node to (a live node), with epoch+1, and
// leaves an InboxAdopt item for each in to's inbox so that it loads and registers them. It is
// the drain's step: the caller must have stopped sending for them first. It returns the moved
// instances (one not owned by this node any more is skipped).
func (db *DB) HandOver(ctx context.Context, selectors []string, to string, now time.Time) ([]Claimed, error) {
	if to == "" || to == db.node {
		return nil, fmt.Errorf("%w: hand over to %q", ErrInvalid, to)
	}
	for _, s := range selectors {
		if err := validSelector(s); err != nil {
			return nil, err
		}
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: hand over to %s: %w", to, err)
	}
	defer tx.Rollback()
	var state string
	var until int64
	err = tx.QueryRowContext(ctx, "SELECT state, lease_until FROM nodes WHERE name = ?", to).Scan(&state, &until)
	if errors.Is(err, sql.ErrNoRows) || err == nil && (state != NodeLive || until <= nanos(now)) {
		return nil, fmt.Errorf("%w: node %s is not live", ErrInvalid, to)
	}
	if err != nil {
		return nil, fmt.Errorf("store: hand over to %s: %w", to, err)
	}
	moved, err := db.move(ctx, tx, selectors, db.node, to)
	if err != nil {
		return nil, fmt.Errorf("store: hand over to %s: %w", to, err)
	}
	for _, c := range moved {
		if _, err := tx.ExecContext(ctx, "INSERT INTO cluster_inbox (node, selector, kind, arg, at) VALUES (?, ?, ?, ?, ?)",
			to, c.Selector, InboxAdopt, db.node, nanos(now)); err != nil {
			return nil, fmt.Errorf("store: hand over to %s: %w", to, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: hand over to %s: %w", to, err)
	}
	return moved, nil
}

// checkOwnLease returns ErrLeaseLost unless this incarnation holds a live lease at now.
func (db *DB) checkOwnLease(ctx context.Context, tx *tx, incarnation string, now time.Time) error {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM nodes WHERE name = ? AND incarnation = ? AND state = ?
		AND lease_until > ?`, db.node, incarnation, NodeLive, nanos(now)).Scan(&n)
	if err != nil {
		return fmt.Errorf("store: check lease: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("%w (node %s)", ErrLeaseLost, db.node)
	}
	return nil
}

// move rewrites the node column of sels' rows from from to to, in batches of one statement per
// table, and increments the instances' epochs. The foreign keys of the child tables are checked
// at commit (when parent and children agree again).
func (db *DB) move(ctx context.Context, tx *tx, sels []string, from, to string) ([]Claimed, error) {
	if len(sels) == 0 {
		return nil, nil
	}
	deferFKs := "PRAGMA defer_foreign_keys = ON" // SQLite: until this transaction ends
	if db.dialect.name == PostgreSQL {
		deferFKs = "SET CONSTRAINTS ALL DEFERRED" // the keys are DEFERRABLE (migration 0008)
	}
	if _, err := tx.ExecContext(ctx, deferFKs); err != nil {
		return nil, err
	}
	var out []Claimed
	for len(sels) > 0 {
		batch := sels[:min(len(sels), moveBatch)]
		sels = sels[len(batch):]
		in := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(batch)), ", ") + ")"
		args := make([]any, 0, len(batch)+2)
		args = append(args, to, from)
		for _, s := range batch {
			args = append(args, s)
		}
		rows, err := tx.QueryContext(ctx, "UPDATE instances SET node = ?, epoch = epoch + 1 WHERE node = ? AND selector IN "+
			in+" RETURNING selector, epoch", args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			c := Claimed{From: from}
			var e int64
			if err := rows.Scan(&c.Selector, &e); err != nil {
				rows.Close()
				return nil, err
			}
			c.Epoch = uint64(e)
			out = append(out, c)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
		for _, table := range instanceTables[1:] {
			if _, err := tx.ExecContext(ctx, "UPDATE "+table+" SET node = ? WHERE node = ? AND selector IN "+in,
				args...); err != nil {
				return nil, fmt.Errorf("move %s: %w", table, err)
			}
		}
	}
	return out, nil
}

// SaveStatesFenced writes state updates like SaveStates, in one transaction, but each only if
// the instance is still this node's at the update's epoch. It returns the selectors whose
// update was not written because the instance has another owner or epoch now (or is gone):
// their holder must drop them without sending anything. Invalid input changes nothing.
func (db *DB) SaveStatesFenced(ctx context.Context, ups []FencedUpdate) (stale []string, err error) {
	if len(ups) == 0 {
		return nil, nil
	}
	for i := range ups {
		u := &ups[i]
		if err := validSelector(u.Selector); err != nil {
			return nil, fmt.Errorf("state update %d: %w", i, err)
		}
		if !validState(u.State) || !validStatus(u.Status) {
			return nil, fmt.Errorf("%w: state update %d (selector %s): unknown state %q/%q", ErrInvalid, i,
				u.Selector, u.State, u.Status)
		}
		if u.Epoch == 0 {
			return nil, fmt.Errorf("%w: state update %d (selector %s): no epoch", ErrInvalid, i, u.Selector)
		}
	}
	now := time.Now()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: save states: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE instances SET state = ?, status = ?, last_error = ?, cseq = ?,
		expires_at = ?, off = ?, contact_addr = ?, updated_at = ? WHERE node = ? AND selector = ? AND epoch = ?`)
	if err != nil {
		return nil, fmt.Errorf("store: save states: %w", err)
	}
	defer stmt.Close()
	for i := range ups {
		u := &ups[i]
		at := u.At
		if at.IsZero() {
			at = now
		}
		res, err := stmt.ExecContext(ctx, u.State, u.Status, u.LastError, int64(u.CSeq), nanos(u.ExpiresAt),
			u.Off, u.ContactAddr, nanos(at), db.node, u.Selector, int64(u.Epoch))
		if err != nil {
			return nil, fmt.Errorf("store: save state of %s: %w", u.Selector, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			stale = append(stale, u.Selector)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: save states: %w", err)
	}
	return stale, nil
}

// Post leaves an item in the inbox of node (the owner of the item's selector).
func (db *DB) Post(ctx context.Context, node string, it InboxItem) error {
	if node == "" {
		return fmt.Errorf("%w: post: no node", ErrInvalid)
	}
	if err := validSelector(it.Selector); err != nil {
		return err
	}
	switch it.Kind {
	case InboxRegistration, InboxTurnOff, InboxPushTest, InboxAdopt:
	default:
		return fmt.Errorf("%w: post: kind %q", ErrInvalid, it.Kind)
	}
	at := it.At
	if at.IsZero() {
		at = time.Now()
	}
	if _, err := db.write.ExecContext(ctx, "INSERT INTO cluster_inbox (node, selector, kind, arg, at) VALUES (?, ?, ?, ?, ?)",
		node, it.Selector, it.Kind, it.Arg, nanos(at)); err != nil {
		return fmt.Errorf("store: post to %s: %w", node, err)
	}
	return nil
}

// Inbox returns up to max items of this node's inbox, oldest first.
func (db *DB) Inbox(ctx context.Context, max int) ([]InboxItem, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT id, selector, kind, arg, at FROM cluster_inbox WHERE node = ? ORDER BY id LIMIT ?",
		db.node, max)
	if err != nil {
		return nil, fmt.Errorf("store: inbox: %w", err)
	}
	defer rows.Close()
	var items []InboxItem
	for rows.Next() {
		var it InboxItem
		var at int64
		if err := rows.Scan(&it.ID, &it.Selector, &it.Kind, &it.Arg, &at); err != nil {
			return nil, fmt.Errorf("store: inbox: %w", err)
		}
		it.At = fromNanos(at)
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: inbox: %w", err)
	}
	return items, nil
}

// DoneInbox deletes this node's inbox items up to and including id, once they were handled.
func (db *DB) DoneInbox(ctx context.Context, id int64) error {
	if _, err := db.write.ExecContext(ctx, "DELETE FROM cluster_inbox WHERE node = ? AND id <= ?", db.node, id); err != nil {
		return fmt.Errorf("store: inbox done: %w", err)
	}
	return nil
}

// As returns a DB that reads and writes the rows of node instead of this DB's node, sharing
// this DB's connections (do not Close it). A node uses it to store a registration for an
// instance another node owns, before posting to that node's inbox.
//
// The view has a group-commit queue of its own (batch.go): a batch is written for one node, so
// the views never share one.
func (db *DB) As(node string) *DB {
	return &DB{write: db.write, read: db.read, dialect: db.dialect, node: node, seal: db.seal,
		log: db.log, desc: db.desc}
}

// SetNodeHTTPURL records the base URL of this node's HTTP server (known once it listens), where
// the other nodes forward registrations for this node's instances.
func (db *DB) SetNodeHTTPURL(ctx context.Context, incarnation, url string) error {
	res, err := db.write.ExecContext(ctx, "UPDATE nodes SET http_url = ? WHERE name = ? AND incarnation = ?",
		url, db.node, incarnation)
	if err != nil {
		return fmt.Errorf("store: set node URL: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w (node %s)", ErrLeaseLost, db.node)
	}
	return nil
}
