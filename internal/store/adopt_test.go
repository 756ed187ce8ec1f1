package store

import (
	"context"
	"fmt"
	"testing"
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
