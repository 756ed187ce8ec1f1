package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// The inbox's wake-up. A node that writes an item into another node's inbox (Post, HandOver)
// also runs pg_notify in the same transaction, so the notification is delivered when, and only
// if, the item is committed (PostgreSQL delivers NOTIFY at commit). The receiver listens on a
// connection of its own, outside the pool: a pooled connection is shared and recycled, and a
// LISTEN lives only as long as its session.
//
// There is one channel for the whole cluster and the payload is the receiving node's name,
// rather than a channel per node: a channel is an SQL identifier (quoting, 63 bytes at most),
// while a payload is any text, so a node name needs no escaping; a cluster has a handful of
// nodes, so that every node hears every node's notifications costs nothing worth a channel per
// node; and PostgreSQL folds identical notifications (same channel and payload) of one
// transaction into one, so a hand-over of a batch of 200 instances wakes its receiver once.

// inboxChannel is the NOTIFY channel of the inbox; the payload names the receiving node.
const inboxChannel = "sipis_inbox"

// Timing of the LISTEN connection. A lost connection is tried again after listenBackoffMin,
// doubling to listenBackoffMax (with jitter, so that the nodes do not reconnect in step after a
// restart of the server). listenPing is how long the connection may stay silent before it is
// checked with an empty query, so that a connection that died without a word (a cut network
// path, no RST) is noticed within listenPing + listenTimeout rather than at TCP keep-alive's
// pace.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 10 * time.Second
	listenPing       = 30 * time.Second
	listenTimeout    = 10 * time.Second
)

// ListenInbox returns a channel that receives a value whenever an item may have arrived in this
// node's inbox: a notification for this node came, or the listening connection was (re)made
// (items posted while it was not listening are in the inbox already, unannounced). Several
// notifications coalesce into one pending value; the receiver reads the whole inbox.
//
// The connection is the store's own, opened from the same OpenString; it is made again after
// any loss, with backoff, until ctx ends. On SQLite it returns nil (a nil channel never
// receives): the nodes of a test cluster on one SQLite file rely on their periodic inbox read.
// A wake-up is a hint, never the only delivery: the caller must still read its inbox
// periodically.
func (db *DB) ListenInbox(ctx context.Context) <-chan struct{} {
	if db.pg == nil {
		return nil
	}
	ch := make(chan struct{}, 1)
	go db.listen(ctx, ch)
	return ch
}

func (db *DB) listen(ctx context.Context, ch chan<- struct{}) {
	wake := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	backoff := listenBackoffMin
	for {
		listening := false
		err := db.listenOnce(ctx, wake, func() { listening, backoff = true, listenBackoffMin })
		if ctx.Err() != nil {
			return
		}
		l := db.log.WithField("err", err).WithField("node", db.node)
		if listening {
			l.Warn("store: the inbox's LISTEN connection was lost; connecting again")
		} else {
			l.WithField("retry", backoff).Warn("store: the inbox's LISTEN connection could not be made; the inbox is read periodically meanwhile")
		}
		d := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, listenBackoffMax)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// listenOnce connects, listens, wakes the receiver once (for what came while nobody listened),
// then wakes it for every notification to this node until the connection fails or ctx ends.
func (db *DB) listenOnce(ctx context.Context, wake, listening func()) error {
	cfg := db.pg.Copy()
	cfg.RuntimeParams["application_name"] = "sipis inbox " + db.node
	cctx, cancel := context.WithTimeout(ctx, listenTimeout)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	cctx, cancel = context.WithTimeout(ctx, listenTimeout)
	_, err = conn.Exec(cctx, "LISTEN "+inboxChannel)
	cancel()
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	listening()
	wake()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenPing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			if n.Payload == db.node {
				wake()
			}
			continue
		case conn.IsClosed() || wctx.Err() == nil:
			return fmt.Errorf("wait: %w", err)
		}
		// Silent for listenPing: prove the connection still works.
		pctx, cancel := context.WithTimeout(ctx, listenTimeout)
		err = conn.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}

// notifyInbox announces, inside t (so at its commit), that node's inbox has new items.
func (db *DB) notifyInbox(ctx context.Context, t *tx, node string) error {
	if db.dialect.notifyInbox == "" {
		return nil
	}
	if _, err := t.ExecContext(ctx, db.dialect.notifyInbox, node); err != nil {
		return fmt.Errorf("notify %s: %w", node, err)
	}
	return nil
}
