package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// placeSettings is a cluster node's settings whose renewals (which correct the nodes' counts)
// come only every 20 s: a burst of placements within one renewal interval sees only the counts
// the placements themselves keep.
func placeSettings(t *testing.T, shared, db, name string, apns *pushtest.APNs) *config.Settings {
	s := clusterSettings(t, shared, db, name, apns)
	s.Cluster.Lease, s.Cluster.Renew, s.Cluster.Margin = 60*time.Second, 20*time.Second, 10*time.Second
	return s
}

// postNew posts a background registration for a new selector sel to node a.
func postNew(t *testing.T, a *App, r *siptest.Registrar, sel string) {
	t.Helper()
	sealed, err := registration.Seal(newReg(sel, "u"+sel, r, registration.ModeBackground), a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register %s at %s: %d %s", sel, a.settings.Server.Name, code, body)
	}
}

// TestClusterPlaceBurst: a burst of new selectors, first all posted to one node, then to the
// three nodes in turn, is spread evenly over the nodes although no renewal updated their counts
// meanwhile.
func TestClusterPlaceBurst(t *testing.T) {
	clusterBackends(t, testClusterPlaceBurst)
}

func testClusterPlaceBurst(t *testing.T, db string) {
	r := siptest.NewRegistrar(t)
	apns := pushtest.NewAPNs(t)
	shared := t.TempDir()
	nodes := make([]*App, 3)
	for i, name := range []string{"node-a", "node-b", "node-c"} {
		nodes[i] = startApp(t, placeSettings(t, shared, db, name, apns))
		defer nodes[i].Stop()
	}
	const burst = 30
	check := func(phase string, total int) {
		t.Helper()
		lo, hi, sum := total, 0, 0
		for _, a := range nodes {
			owned, err := a.db.Owned(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if held := a.Manager().Len(); held != len(owned) {
				t.Errorf("%s: %s holds %d instances, owns %d in the store", phase, a.settings.Server.Name, held, len(owned))
			}
			lo, hi, sum = min(lo, len(owned)), max(hi, len(owned)), sum+len(owned)
		}
		if sum != total {
			t.Fatalf("%s: %d instances stored, want %d", phase, sum, total)
		}
		// Sequential posts: every placement sees the counts of all before it.
		if hi-lo > 1 {
			t.Errorf("%s: the nodes own between %d and %d of %d instances, want an even spread", phase, lo, hi, total)
		}
		t.Logf("%s: %d instances, %d to %d a node", phase, total, lo, hi)
	}
	for i := range burst {
		postNew(t, nodes[0], r, fmt.Sprintf("%016x", 0xb0000+i))
	}
	check("all posted to node-a", burst)
	for i := range burst {
		postNew(t, nodes[i%3], r, fmt.Sprintf("%016x", 0xb1000+i))
	}
	check("posted in turn", 2*burst)
}

// TestClusterDuplicateNewSelector: one new selector posted to two nodes at the same instant is
// created on one node only, in memory and in the store, and both posts are accepted.
func TestClusterDuplicateNewSelector(t *testing.T) {
	clusterBackends(t, testClusterDuplicateNewSelector)
}

func testClusterDuplicateNewSelector(t *testing.T, db string) {
	r := siptest.NewRegistrar(t)
	apns := pushtest.NewAPNs(t)
	shared := t.TempDir()
	a := startApp(t, placeSettings(t, shared, db, "node-a", apns))
	defer a.Stop()
	b := startApp(t, placeSettings(t, shared, db, "node-b", apns))
	defer b.Stop()
	const rounds = 20
	for i := range rounds {
		sel := fmt.Sprintf("%016x", 0xd0000+i)
		var wg sync.WaitGroup
		codes := make([]int, 2)
		bodies := make([]string, 2)
		start := make(chan struct{})
		for j, node := range []*App{a, b} {
			sealed, err := registration.Seal(newReg(sel, "u"+sel, r, registration.ModeBackground), node.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				resp, err := http.Post(node.HTTPURL()+"/sipis/register", "application/octet-stream", bytes.NewReader(sealed))
				if err != nil {
					bodies[j] = err.Error()
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				codes[j], bodies[j] = resp.StatusCode, string(body)
			}()
		}
		close(start)
		wg.Wait()
		for j := range codes {
			if codes[j] != 200 {
				t.Errorf("round %d: post %d: %d %s", i, j, codes[j], bodies[j])
			}
		}
		var inMemory, inStore []string
		for _, node := range []*App{a, b} {
			if _, ok := node.Manager().Snapshot(sel); ok {
				inMemory = append(inMemory, node.settings.Server.Name)
			}
			owned, err := node.db.Owned(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := owned[sel]; ok {
				inStore = append(inStore, node.settings.Server.Name)
			}
		}
		if len(inMemory) != 1 || len(inStore) != 1 || inMemory[0] != inStore[0] {
			t.Fatalf("round %d: %s held by %v, stored for %v: want one node", i, sel, inMemory, inStore)
		}
	}
}
