package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"
)

// openNode opens the database at path as node name (several nodes on one file: the test bed
// of the lease logic; WAL and busy_timeout serialise the writers).
func openNode(tb testing.TB, target, name string) *DB {
	tb.Helper()
	db, err := Open(context.Background(), Options{OpenString: target, DataKey: testKey(1), Node: name})
	if err != nil {
		tb.Fatalf("Open %s: %v", name, err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func join(tb testing.TB, db *DB, inc string, now time.Time) {
	tb.Helper()
	if err := db.JoinCluster(context.Background(), Node{Address: "127.0.0.1:5060", Incarnation: inc}, now,
		now.Add(15*time.Second)); err != nil {
		tb.Fatalf("JoinCluster %s: %v", db.Node(), err)
	}
}

func TestJoinRefusesSecondLiveNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testBackend) { testJoinRefusesSecondLiveNode(t, be.newTarget(t)) })
}

func testJoinRefusesSecondLiveNode(t *testing.T, path string) {
	a := openNode(t, path, "a")
	a2 := openNode(t, path, "a")
	ctx := context.Background()
	join(t, a, "inc-1", t0)
	err := a2.JoinCluster(ctx, Node{Incarnation: "inc-2"}, t0.Add(time.Second), t0.Add(16*time.Second))
	if !errors.Is(err, ErrNodeLive) {
		t.Fatalf("second live node with the same name: err = %v, want ErrNodeLive", err)
	}
	nodes, err := a.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Incarnation != "inc-1" || nodes[0].State != NodeLive {
		t.Fatalf("refused join changed the nodes table: %+v, %v", nodes, err)
	}
	// The first one's renewal still works, the second cannot renew a lease it does not hold.
	if err := a.RenewLease(ctx, "inc-1", t0.Add(5*time.Second), t0.Add(20*time.Second), 0); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if err := a2.RenewLease(ctx, "inc-2", t0.Add(5*time.Second), t0.Add(20*time.Second), 0); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("RenewLease of the refused incarnation: %v, want ErrLeaseLost", err)
	}
	// Once the lease has passed (the first process died), the name may start again.
	if err := a2.JoinCluster(ctx, Node{Incarnation: "inc-2"}, t0.Add(21*time.Second), t0.Add(36*time.Second)); err != nil {
		t.Fatalf("join after the old lease passed: %v", err)
	}
	if err := a.RenewLease(ctx, "inc-1", t0.Add(22*time.Second), t0.Add(37*time.Second), 0); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("the old incarnation renewed over the new one: %v", err)
	}
}

func TestClaimOnlyAfterLeasePassed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testBackend) { testClaimOnlyAfterLeasePassed(t, be.newTarget(t)) })
}

func testClaimOnlyAfterLeasePassed(t *testing.T, path string) {
	a := openNode(t, path, "a")
	b := openNode(t, path, "b")
	ctx := context.Background()
	fill(t, a, 10)
	for i := 0; i < 10; i++ {
		sel := fmt.Sprintf("%08x", i)
		d := sampleDevice(sel)
		mustPutDevice(t, a, sel, d)
	}
	join(t, a, "ia", t0)
	join(t, b, "ib", t0)

	// a's lease runs until t0+15s: nothing can be claimed before.
	got, err := b.ClaimFrom(ctx, "a", "ib", 1, t0.Add(14*time.Second))
	if err != nil || len(got) != 0 {
		t.Fatalf("claim from a live node: %v, %v", got, err)
	}
	if err := b.RenewLease(ctx, "ib", t0.Add(10*time.Second), t0.Add(25*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	// After it: b takes its share of three survivors (ceil(10/3) = 4), then the rest.
	now := t0.Add(16 * time.Second)
	got, err = b.ClaimFrom(ctx, "a", "ib", 3, now)
	if err != nil || len(got) != 4 {
		t.Fatalf("claim 4: %v, %v", got, err)
	}
	for _, c := range got {
		if c.Epoch != 2 || c.From != "a" || c.FromAddress != "127.0.0.1:5060" {
			t.Fatalf("claimed %+v, want epoch 2 from a at 127.0.0.1:5060", c)
		}
	}
	nodes, _ := b.Nodes(ctx)
	if nodes[0].Name != "a" || nodes[0].State != NodeDead || nodes[0].Instances != 10 || nodes[0].Unclaimed != 6 {
		t.Fatalf("a not marked dead with 10 instances at death, 6 unclaimed: %+v", nodes[0])
	}
	// The moved instances are b's with their devices and secrets; a sees only the others.
	if n, _ := b.CountInstances(ctx); n != 4 {
		t.Fatalf("b holds %d instances, want 4", n)
	}
	if n, _ := a.CountInstances(ctx); n != 6 {
		t.Fatalf("a holds %d instances, want 6", n)
	}
	devs, err := b.Devices(ctx, got[0].Selector)
	if err != nil || len(devs) != 1 || devs[0].Secret != "Device-Secret-Quokka-4242" {
		t.Fatalf("devices moved with the instance: %+v, %v", devs, err)
	}
	if err := b.CheckDeviceSecret(ctx, got[0].Selector, "dev-1", "Device-Secret-Quokka-4242"); err != nil {
		t.Fatalf("moved device secret does not open: %v", err)
	}
	rest, err := b.ClaimFrom(ctx, "a", "ib", 1, now)
	if err != nil || len(rest) != 6 {
		t.Fatalf("claim the rest: %d, %v", len(rest), err)
	}
	// A node whose own lease has passed claims nothing.
	fill2 := openNode(t, path, "c")
	join(t, fill2, "ic", t0)
	if _, err := b.ClaimFrom(ctx, "c", "ib", 1, t0.Add(40*time.Second)); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("claim with an expired own lease: %v, want ErrLeaseLost", err)
	}
	owned, err := b.Owned(ctx)
	if err != nil || len(owned) != 10 {
		t.Fatalf("Owned: %d, %v", len(owned), err)
	}
	if node, epoch, err := a.OwnerOf(ctx, "00000003"); err != nil || node != "b" || epoch != 2 {
		t.Fatalf("OwnerOf = %s %d %v", node, epoch, err)
	}
}

func mustPutDevice(tb testing.TB, db *DB, sel string, d *Device) {
	tb.Helper()
	in, err := db.Instance(context.Background(), sel)
	if err != nil {
		tb.Fatal(err)
	}
	in.Mode = ModeBackground
	mustPut(tb, db, in, d, "n-"+sel)
}

func TestFencedWriteWithStaleEpochChangesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testBackend) { testFencedWriteWithStaleEpochChangesNothing(t, be.newTarget(t)) })
}

func testFencedWriteWithStaleEpochChangesNothing(t *testing.T, path string) {
	a := openNode(t, path, "a")
	b := openNode(t, path, "b")
	ctx := context.Background()
	fill(t, a, 3)
	join(t, a, "ia", t0)
	join(t, b, "ib", t0)
	// a writes under epoch 1: fine.
	up := func(sel string, epoch uint64, cseq uint32) FencedUpdate {
		return FencedUpdate{StateUpdate{Selector: sel, State: StateRegisterLoop, Status: StatusRegistered, CSeq: cseq}, epoch}
	}
	stale, err := a.SaveStatesFenced(ctx, []FencedUpdate{up("00000000", 1, 7)})
	if err != nil || len(stale) != 0 {
		t.Fatalf("fenced write at the current epoch: %v, %v", stale, err)
	}
	if err := b.RenewLease(ctx, "ib", t0.Add(10*time.Second), t0.Add(30*time.Second), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ClaimFrom(ctx, "a", "ib", 1, t0.Add(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	// a, paused through the take-over, writes its old state: nothing changes, and it learns
	// which instances it lost.
	stale, err = a.SaveStatesFenced(ctx, []FencedUpdate{up("00000000", 1, 99), up("00000001", 1, 99)})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(stale)
	if fmt.Sprint(stale) != "[00000000 00000001]" {
		t.Fatalf("stale = %v", stale)
	}
	in, err := b.Instance(ctx, "00000000")
	if err != nil || in.CSeq != 7 {
		t.Fatalf("stale write reached the row: cseq %d, %v", in.CSeq, err)
	}
	// b writes under epoch 2.
	if stale, err := b.SaveStatesFenced(ctx, []FencedUpdate{up("00000000", 2, 120)}); err != nil || len(stale) != 0 {
		t.Fatalf("new owner's write: %v, %v", stale, err)
	}
	// Bad input changes nothing.
	if _, err := b.SaveStatesFenced(ctx, []FencedUpdate{up("00000000", 2, 200), up("00000001", 0, 200)}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("update without epoch: %v, want ErrInvalid", err)
	}
	if in, _ := b.Instance(ctx, "00000000"); in.CSeq != 120 {
		t.Fatalf("invalid batch wrote: cseq %d", in.CSeq)
	}
}

func TestHandOverAndInbox(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testBackend) { testHandOverAndInbox(t, be.newTarget(t)) })
}

func testHandOverAndInbox(t *testing.T, path string) {
	a := openNode(t, path, "a")
	b := openNode(t, path, "b")
	ctx := context.Background()
	fill(t, a, 4)
	join(t, a, "ia", t0)
	if _, err := a.HandOver(ctx, []string{"00000000"}, "b", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("hand over to a node that never joined: %v", err)
	}
	join(t, b, "ib", t0)
	moved, err := a.HandOver(ctx, []string{"00000000", "00000001", "0000ffff"}, "b", t0.Add(time.Second))
	if err != nil || len(moved) != 2 {
		t.Fatalf("HandOver: %+v, %v", moved, err)
	}
	items, err := b.Inbox(ctx, 10)
	if err != nil || len(items) != 2 || items[0].Kind != InboxAdopt || items[0].Arg != "a" {
		t.Fatalf("b's inbox: %+v, %v", items, err)
	}
	if err := b.Post(ctx, "b", InboxItem{Selector: "00000000", Kind: "bogus"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Post of a bad kind: %v", err)
	}
	if err := a.Post(ctx, "b", InboxItem{Selector: "00000000", Kind: InboxTurnOff}); err != nil {
		t.Fatal(err)
	}
	items, _ = b.Inbox(ctx, 10)
	if len(items) != 3 || items[2].Kind != InboxTurnOff {
		t.Fatalf("inbox after post: %+v", items)
	}
	if err := b.DoneInbox(ctx, items[1].ID); err != nil {
		t.Fatal(err)
	}
	if items, _ = b.Inbox(ctx, 10); len(items) != 1 {
		t.Fatalf("inbox after done: %+v", items)
	}
	if n, _ := a.Inbox(ctx, 10); len(n) != 0 {
		t.Fatalf("a sees b's inbox: %+v", n)
	}
	// Leaving ends the lease at once.
	if err := a.SetNodeState(ctx, "ia", NodeDead); err != nil {
		t.Fatal(err)
	}
	got, err := b.ClaimFrom(ctx, "a", "ib", 1, t0.Add(2*time.Second))
	if err != nil || len(got) != 2 {
		t.Fatalf("claim from a node that left: %d, %v", len(got), err)
	}
}
