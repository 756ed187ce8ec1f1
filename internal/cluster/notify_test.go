package cluster

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil/pgtest"
)

// idleManager is a Manager holding nothing: the inbox tests need a running cluster, not
// instances.
type idleManager struct{}

func (idleManager) Adopt(context.Context, []instance.Adoption, time.Duration) (int, error) {
	return 0, nil
}
func (idleManager) Release([]string) int { return 0 }
func (idleManager) Held() []string       { return nil }
func (idleManager) Len() int             { return 0 }

// inboxRecorder is a Handler that passes every item it is given to a channel.
type inboxRecorder struct {
	mu   sync.Mutex
	seen map[string]bool
	got  chan string
}

func (r *inboxRecorder) handle(_ context.Context, it store.InboxItem) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.seen[it.Selector] {
		r.seen[it.Selector] = true
		r.got <- it.Selector
	}
	return nil
}

// await waits for the item of selector sel, at most within.
func (r *inboxRecorder) await(t *testing.T, sel string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(within)
	for {
		select {
		case got := <-r.got:
			if got == sel {
				return time.Since(start)
			}
		case <-timeout:
			t.Fatalf("inbox item %s not handled within %s", sel, within)
		}
	}
}

// TestInboxNotify: on PostgreSQL an inbox item reaches the other node's loop at once, through
// LISTEN/NOTIFY, although its periodic read comes only every minute; a listen connection the
// server drops is made again, and the item posted while it was down is not lost.
func TestInboxNotify(t *testing.T) {
	target := pgtest.NewDatabase(t)
	ctx := context.Background()
	open := func(name string) *store.DB {
		db, err := store.Open(ctx, store.Options{OpenString: target, DataKey: bytes.Repeat([]byte{7}, store.DataKeySize), Node: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	dbA, dbB := open("a"), open("b")
	rec := &inboxRecorder{seen: map[string]bool{}, got: make(chan string, 16)}
	const poll = time.Minute // an item seen well before this came by notification
	a, err := New(Options{Store: dbA, Lease: tLease, Renew: tRenew, Margin: tMargin, Scan: tScan,
		InboxPoll: poll, Handle: rec.handle, Logger: testLog(t, "a")})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Join(ctx); err != nil {
		t.Fatal(err)
	}
	a.Run(idleManager{})
	t.Cleanup(a.Stop)

	post := func(sel string) {
		t.Helper()
		if err := dbB.Post(ctx, "a", store.InboxItem{Selector: sel, Kind: store.InboxTurnOff}); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// listenPID is the backend of a's LISTEN connection, 0 while there is none.
	listenPID := func() int {
		var pid int
		err := conn.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sipis inbox a' LIMIT 1").Scan(&pid)
		if err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		return pid
	}
	waitFor(t, 20*time.Second, "a listens", func() bool { return listenPID() != 0 })

	post("0a01")
	took := rec.await(t, "0a01", poll/2)
	t.Logf("item handled %s after it was posted (poll period %s)", took.Round(time.Millisecond), poll)

	// Drop the listen connection and post at once, most likely before a listens again.
	pid := listenPID()
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v %v", ok, err)
	}
	post("0a02")
	rec.await(t, "0a02", poll/2)
	waitFor(t, 20*time.Second, "a listens again", func() bool {
		p := listenPID()
		return p != 0 && p != pid
	})
	post("0a03")
	rec.await(t, "0a03", poll/2)

	// Many items in one go are all handled, each once.
	for i := 0; i < 5; i++ {
		post(fmt.Sprintf("0b%02d", i))
	}
	for i := 0; i < 5; i++ {
		rec.await(t, fmt.Sprintf("0b%02d", i), poll/2)
	}
	waitFor(t, poll/2, "a clears its inbox", func() bool {
		items, err := dbA.Inbox(ctx, 10)
		return err == nil && len(items) == 0
	})
}
