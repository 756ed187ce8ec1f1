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
// everything queued (at most maxRegBatch), writes it in one transaction, commits, and only then
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

// regBatcher is the queue of registrations waiting for the writer.
type regBatcher struct {
	mu      sync.Mutex
	queue   []*regWrite
	writing bool // a writer goroutine is running; it exits when the queue is empty

	// For tests: batches written (their sizes, the first maxSizes), and a failure injected
	// before a batch commits.
	sizes      []int
	failCommit func() error
	failExec   func(selector string) error // a statement failing for one registration of a batch
}

// commitRegistration queues w for the writer, starting one if none runs, and waits for w's
// answer. A caller whose ctx ends before its write began gets ctx's error and nothing is stored.
func (db *DB) commitRegistration(ctx context.Context, w *regWrite) error {
	w.ctx, w.done = ctx, make(chan error, 1)
	b := &db.regs
	b.mu.Lock()
	b.queue = append(b.queue, w)
	if !b.writing {
		b.writing = true
		go db.writeRegistrations()
	}
	b.mu.Unlock()
	return <-w.done
}

// writeRegistrations writes the queue batch by batch until it is empty.
func (db *DB) writeRegistrations() {
	b := &db.regs
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxRegBatch)
		if n == 0 {
			b.writing = false
			b.queue = nil // let a burst's backing array go
			b.mu.Unlock()
			return
		}
		batch := make([]*regWrite, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
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
