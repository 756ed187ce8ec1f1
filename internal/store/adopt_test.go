package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestInstancesBatch: Instances reads many selectors in batches, the same rows Instance reads,
// with their device counts; selectors of another node or unknown ones are left out, and a bad
// selector is refused.
func TestInstancesBatch(t *testing.T) { forEachBackend(t, testInstancesBatch) }

func testInstancesBatch(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	const n = 1200 // more than two batches
	fill(t, db, n)
	for _, sel := range []string{"00000001", "00000002"} {
		mustPut(t, db, sampleInstance(sel), sampleDevice(sel), "n"+sel)
	}
	dev2 := sampleDevice("00000002")
	dev2.ID = "dev-2"
	mustPut(t, db, sampleInstance("00000002"), dev2, "n2b")
	var sels []string
	for i := range n {
		sels = append(sels, fmt.Sprintf("%08x", i))
	}
	sels = append(sels, "ffffffff") // nobody's
	insts, devs, err := db.Instances(ctx, sels)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != n {
		t.Fatalf("%d instances, want %d", len(insts), n)
	}
	for _, sel := range []string{"00000000", "00000001", "00000002", fmt.Sprintf("%08x", n-1)} {
		want, err := db.Instance(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		got := insts[sel]
		if got == nil || got.Account != want.Account || got.CallID != want.CallID || got.ContactUser != want.ContactUser ||
			got.CSeq != want.CSeq || got.Mode != want.Mode {
			t.Errorf("%s: %+v, want %+v", sel, got, want)
		}
	}
	if devs["00000000"] != 0 || devs["00000001"] != 1 || devs["00000002"] != 2 || len(devs) != 2 {
		t.Errorf("device counts %v, want 00000001:1 00000002:2", devs)
	}
	if _, ok := insts["ffffffff"]; ok {
		t.Error("an unknown selector was returned")
	}
	if _, _, err := db.Instances(ctx, []string{"00000001", "not hex!"}); err == nil {
		t.Error("a bad selector was not refused")
	}
}

// TestClaimInParts: ClaimPart claims a survivor's share in parts of at most limit, counting
// what it took in earlier parts, returns the share, and nothing more once the share is taken;
// the other survivor's parts leave it its own share.
func TestClaimInParts(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be testBackend) { testClaimInParts(t, be.newTarget(t)) })
}

func testClaimInParts(t *testing.T, path string) {
	a := openNode(t, path, "a")
	b := openNode(t, path, "b")
	c := openNode(t, path, "c")
	ctx := context.Background()
	fill(t, a, 10)
	join(t, a, "ia", t0)
	join(t, b, "ib", t0.Add(10*time.Second))
	join(t, c, "ic", t0.Add(10*time.Second))
	now := t0.Add(16 * time.Second) // a's lease passed, b's and c's not
	taken := map[*DB]int{}
	for _, step := range []struct {
		db        *DB
		inc       string
		want, all int
	}{{b, "ib", 3, 3}, {c, "ic", 3, 3}, {b, "ib", 2, 5}, {c, "ic", 2, 5}, {b, "ib", 0, 5}} {
		got, share, err := step.db.ClaimPart(ctx, "a", step.inc, 2, now, taken[step.db], 3)
		if err != nil || len(got) != step.want || step.want > 0 && share != 5 {
			t.Fatalf("%s claims after %d: %d claimed, share %d, %v; want %d, share 5", step.db.Node(), taken[step.db],
				len(got), share, err, step.want)
		}
		taken[step.db] += len(got)
		if n, _ := step.db.CountInstances(ctx); n != step.all {
			t.Fatalf("%s holds %d, want %d", step.db.Node(), n, step.all)
		}
	}
	if n, _ := a.CountInstances(ctx); n != 0 {
		t.Fatalf("a still holds %d", n)
	}
	if _, _, err := b.ClaimPart(ctx, "a", "ib", 2, now, -1, 3); err == nil {
		t.Fatal("a negative taken was not refused")
	}
}
