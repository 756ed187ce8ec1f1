package store

import (
	"context"
	"testing"
	"time"
)

// TestListenInbox: on PostgreSQL the listener wakes once when it starts listening, then at the
// commit of every inbox write for its node (Post, HandOver); on SQLite it is nil.
func TestListenInbox(t *testing.T) { forEachBackend(t, testListenInbox) }

func testListenInbox(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := db.ListenInbox(ctx)
	if b.name == SQLite {
		if ch != nil {
			t.Fatal("ListenInbox on SQLite returned a channel")
		}
		return
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("no wake-up: %s", what)
		}
	}
	wait("listening")
	if err := db.As("other").Post(ctx, db.Node(), InboxItem{Selector: "ab01", Kind: InboxTurnOff}); err != nil {
		t.Fatal(err)
	}
	wait("an item posted to this node")
	// A hand-over to this node from another wakes it too.
	now := time.Now()
	other := db.As("other")
	mustPut(t, other, sampleInstance("ab02"), sampleDevice("ab02"), "n-ab02")
	if err := db.JoinCluster(ctx, Node{Incarnation: "me"}, now, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if moved, err := other.HandOver(ctx, []string{"ab02"}, db.Node(), now); err != nil || len(moved) != 1 {
		t.Fatalf("HandOver: %v %v", moved, err)
	}
	wait("a hand-over to this node")
	items, err := db.Inbox(ctx, 10)
	if err != nil || len(items) != 2 || items[1].Kind != InboxAdopt {
		t.Fatalf("inbox: %+v %v", items, err)
	}
}
