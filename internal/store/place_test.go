package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestPlaceNew: placements count on the node they pick at once, so a burst spreads evenly; a
// node that is not live, or whose lease passed, or whose HTTP server is unknown is never picked;
// self = false leaves this node out; with no live node it fails with ErrNotFound.
func TestPlaceNew(t *testing.T) { forEachBackend(t, testPlaceNew) }

func testPlaceNew(t *testing.T, b testBackend) {
	ctx := context.Background()
	db, _ := b.openTest(t)
	now := time.Now()
	if _, _, err := db.PlaceNew(ctx, "ab00", true, now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PlaceNew with no node: %v, want ErrNotFound", err)
	}
	join := func(name, url string, until time.Time) *DB {
		t.Helper()
		other := db.As(name)
		if err := other.JoinCluster(ctx, Node{HTTPURL: url, Incarnation: "inc-" + name}, now.Add(-time.Second), until); err != nil {
			t.Fatal(err)
		}
		return other
	}
	join(db.Node(), "", now.Add(10*time.Minute)) // this node: its own URL need not be known
	join("n2", "http://n2.test", now.Add(10*time.Minute))
	join("n3", "http://n3.test", now.Add(10*time.Minute))
	join("nourl", "", now.Add(10*time.Minute))
	join("expired", "http://expired.test", now.Add(time.Millisecond))
	drained := join("drained", "http://drained.test", now.Add(10*time.Minute))
	if err := drained.SetNodeState(ctx, "inc-drained", NodeDead); err != nil {
		t.Fatal(err)
	}
	at := now.Add(time.Second)
	got := map[string]int{}
	for i := 0; i < 30; i++ {
		node, url, err := db.PlaceNew(ctx, fmt.Sprintf("aa%02x", i), true, at)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]string{db.Node(): "", "n2": "http://n2.test", "n3": "http://n3.test"}[node]; url != want {
			t.Errorf("placed on %s with URL %q, want %q", node, url, want)
		}
		got[node]++
	}
	if len(got) != 3 || got[db.Node()] != 10 || got["n2"] != 10 || got["n3"] != 10 {
		t.Errorf("30 placements: %v, want 10 on each live node with a URL", got)
	}
	// A selector placed before goes where it went, from any node, and is not counted again.
	first, _, err := db.PlaceNew(ctx, "aa01", true, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, asker := range []*DB{db, db.As("n2"), db.As("n3")} {
		if again, _, err := asker.PlaceNew(ctx, "aa01", true, at); err != nil || again != first {
			t.Errorf("aa01 placed again by %s: %s %v, want %s", asker.Node(), again, err, first)
		}
	}
	// A draining node places on the others only.
	for i := 0; i < 4; i++ {
		node, _, err := db.PlaceNew(ctx, fmt.Sprintf("ab%02x", i), false, at)
		if err != nil || node == db.Node() {
			t.Fatalf("placement by a draining node: %s %v", node, err)
		}
		got[node]++
	}
	if got["n2"] != 12 || got["n3"] != 12 {
		t.Errorf("placements after the drain began: %v", got)
	}
	// An expired placement is made anew (and a draining node's placement is not kept).
	if again, _, err := db.PlaceNew(ctx, "aa01", false, at.Add(2*placementTTL)); err != nil || again == "" || again == db.Node() {
		t.Errorf("aa01 placed after its placement expired: %q %v", again, err)
	}
	// The renewal writes the real count back.
	if err := db.RenewLease(ctx, "inc-"+db.Node(), at, at.Add(time.Minute), 3); err != nil {
		t.Fatal(err)
	}
	nodes, err := db.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Name == db.Node() && n.Instances != 3 {
			t.Errorf("count after renewal: %d, want 3", n.Instances)
		}
	}
}

// BenchmarkPlaceNew measures the placement of one new instance with 100,000 stored: "counted"
// is PlaceNew (one UPDATE of the nodes table, whatever the number of instances), "countQuery"
// the alternative of counting every node's instances at each placement.
func BenchmarkPlaceNew(b *testing.B) {
	forEachBenchBackend(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		now := time.Now()
		for i, name := range []string{db.Node(), "n2", "n3"} {
			if err := db.As(name).JoinCluster(ctx, Node{HTTPURL: fmt.Sprintf("http://n%d.test", i), Incarnation: "i" + name},
				now, now.Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
		}
		b.Run("counted", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, _, err := db.PlaceNew(ctx, fmt.Sprintf("f%07x", i), true, now); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("countQuery", func(b *testing.B) {
			for b.Loop() {
				rows, err := db.read.QueryContext(ctx, "SELECT node, count(*) FROM instances GROUP BY node")
				if err != nil {
					b.Fatal(err)
				}
				for rows.Next() {
				}
				if err := rows.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
