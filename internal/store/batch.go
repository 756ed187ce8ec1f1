package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Group commit of registrations.
//
// Every registration an app hands over is acknowledged only once it is committed, and a commit
// is the expensive part of a write (the WAL append, the write lock, and on PostgreSQL a round
// trip and an fsync). So PutRegistration does not commit by itself: it queues its prepared
// write (checked and sealed outside any lock) and waits. One writer goroutine at a time takes
// everything queued (at most maxRegBatch; per lane, see below), writes it in one transaction, commits, and only then
// answers each caller. While that transaction runs, the next callers queue up, so the batch
// size follows the load: one registration alone is written at once (no added delay), a burst is
// written many per commit.
//
// A registration's only failure of its own inside the transaction is a replayed nonce, and it is
// found by the first statement, which then wrote nothing (INSERT … ON CONFLICT DO NOTHING); all
// else that makes a registration bad is checked before it is queued (prepareRegistration). So
// the registrations of a batch need no savepoint each: a replay is answered ErrReplay and the
// batch goes on, and any other failure of a statement fails the batch as a whole. The
// registrations of a batch run in order in one transaction and each reads what the previous ones
// wrote, so two of one selector in a batch behave exactly as if written one after the other (the
// second sees the first's nonce, row and device). If the batch cannot be written or committed,
// nothing of it was stored and no caller was answered: every registration is then written again
// alone, in its own transaction, and gets its own answer. A caller is answered success only
// after the transaction holding its write committed.
//
// On PostgreSQL every statement is a round trip to the server, so one writer is bound by
// latency, not CPU (cmd/sipis-load -api: 129 registrations/s on a loaded 2-core machine, five
// round trips per registration one after the other). There the queue is split into pgRegLanes
// lanes by a hash of the selector, each with its own writer and connection: registrations of one
// selector always meet in one lane, so they are still written one after the other as above, and
// those of different selectors touch different rows (instances, devices and nonces are keyed by
// selector), so concurrent lanes cannot see or undo each other's writes. SQLite has one write
// connection, hence one lane.
//
// The writer does not linger to fill a batch: a timed linger (1 ms, tried with cmd/sipis-load
// -api, also with a wait only while the queue held under half the recent batches' mean size)
// left the CPU per registration unchanged and, on a loaded machine, halved the rate: the commit
// in progress is the wait.

// maxRegBatch bounds the registrations written in one transaction.
const maxRegBatch = 256

// maxSizes bounds the batch sizes kept for tests, so that a server running for months does not
// keep one per batch.
const maxSizes = 1024

// regBatchTimeout bounds the writing of one batch (the callers' contexts do not: a write that
// began is finished and answered, so that no caller is told "failed" of a stored registration).
const regBatchTimeout = 30 * time.Second

// pgRegLanes is the number of registration writers on PostgreSQL (of pgMaxConns connections).
const pgRegLanes = 4

// regBatcher holds the queues of registrations waiting for their writers.
type regBatcher struct {
	mu    sync.Mutex
	lanes []regLane // made at the first registration: one, or pgRegLanes on PostgreSQL

	// For tests: batches written (their sizes, the first maxSizes), and a failure injected
	// before a batch commits.
	sizes      []int
	failCommit func() error
	failExec   func(selector string) error // a statement failing for one registration of a batch
}

// regLane is one queue and its writer.
type regLane struct {
	queue   []*regWrite
	writing bool // a writer goroutine is running; it exits when the queue is empty
}

// laneOf returns the lane of selector sel among n.
func laneOf(sel string, n int) int {
	if n == 1 {
		return 0
	}
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(sel); i++ {
		h = (h ^ uint32(sel[i])) * 16777619
	}
	return int(h % uint32(n))
}

// commitRegistration queues w for the writer, starting one if none runs, and waits for w's
// answer. A caller whose ctx ends before its write began gets ctx's error and nothing is stored.
func (db *DB) commitRegistration(ctx context.Context, w *regWrite) error {
	w.ctx, w.done = ctx, make(chan error, 1)
	b := &db.regs
	b.mu.Lock()
	if b.lanes == nil {
		n := 1
		if db.dialect.name == PostgreSQL {
			n = pgRegLanes
		}
		b.lanes = make([]regLane, n)
	}
	l := &b.lanes[laneOf(w.inst.Selector, len(b.lanes))]
	l.queue = append(l.queue, w)
	if !l.writing {
		l.writing = true
		go db.writeRegistrations(l)
	}
	b.mu.Unlock()
	return <-w.done
}

// writeRegistrations writes lane l's queue batch by batch until it is empty.
func (db *DB) writeRegistrations(l *regLane) {
	b := &db.regs
	for {
		b.mu.Lock()
		n := min(len(l.queue), maxRegBatch)
		if n == 0 {
			l.writing = false
			l.queue = nil // let a burst's backing array go
			b.mu.Unlock()
			return
		}
		batch := make([]*regWrite, n)
		copy(batch, l.queue)
		l.queue = append(l.queue[:0], l.queue[n:]...)
		b.mu.Unlock()
		db.writeBatch(batch)
	}
}

// writeBatch writes one batch and answers every registration in it.
func (db *DB) writeBatch(batch []*regWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), regBatchTimeout)
	defer cancel()
	live := batch[:0:0]
	for _, w := range batch {
		if err := w.ctx.Err(); err != nil {
			w.done <- err // its caller gave up before the write began: nothing stored
			continue
		}
		live = append(live, w)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		db.writeAlone(ctx, live[0])
		return
	}
	results, err := db.tryBatch(ctx, live)
	if err != nil {
		// Nothing of the batch was committed: write each alone, so that one cannot fail
		// another, and answer each by its own outcome.
		db.log.WithField("err", err).WithField("registrations", len(live)).
			Warn("store: a batch of registrations failed; writing them one by one")
		for _, w := range live {
			db.writeAlone(ctx, w)
		}
		return
	}
	for i, w := range live {
		if results[i] == nil {
			w.apply()
		}
		w.done <- results[i]
	}
}

// tryBatch writes every registration of batch in one transaction and commits. It returns each
// registration's own outcome (nil or ErrReplay), or an error (and no outcome) when the
// transaction as a whole failed: then nothing was stored.
func (db *DB) tryBatch(ctx context.Context, batch []*regWrite) ([]error, error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("store: put registrations: %w", err)
	}
	defer tx.Rollback()
	db.regs.mu.Lock()
	failExec := db.regs.failExec
	db.regs.mu.Unlock()
	results := make([]error, len(batch))
	for i, w := range batch {
		err := w.exec(ctx, tx)
		if err == nil && failExec != nil {
			err = failExec(w.inst.Selector)
		}
		if err != nil && !errors.Is(err, ErrReplay) {
			// The transaction may hold part of w: it is not committed. (On PostgreSQL a
			// failed statement aborts the transaction anyway.)
			return nil, err
		}
		results[i] = err
	}
	db.regs.mu.Lock()
	if len(db.regs.sizes) < maxSizes {
		db.regs.sizes = append(db.regs.sizes, len(batch))
	}
	fail := db.regs.failCommit
	db.regs.mu.Unlock()
	if fail != nil {
		if err := fail(); err != nil {
			return nil, fmt.Errorf("store: put registrations: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("store: put registrations: %w", err)
	}
	return results, nil
}

// writeAlone writes one registration in its own transaction and answers it.
func (db *DB) writeAlone(ctx context.Context, w *regWrite) {
	err := db.writeOne(ctx, w)
	if err == nil {
		w.apply()
	}
	w.done <- err
}

// writeOne writes one registration in its own transaction.
func (db *DB) writeOne(ctx context.Context, w *regWrite) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: put registration: %w", err)
	}
	defer tx.Rollback()
	if err := w.exec(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: put registration %s: %w", w.inst.Selector, err)
	}
	return nil
}
