package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/testutil"
	"github.com/sipis/sipis/internal/testutil/pgtest"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(func() int {
		return testutil.CheckLeaks(m, testutil.Matching("internal/cluster", "internal/instance", "database/sql.", "jackc/pgx"))
	}))
}

// forBackends runs f once on a fresh SQLite file (several handles on one file) and once on a
// fresh PostgreSQL database (skipped when PostgreSQL is not installed, unless
// SIPIS_REQUIRE_POSTGRES=1); target is the store's OpenString.
func forBackends(t *testing.T, f func(t *testing.T, target string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "sipis.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, pgtest.NewDatabase(t)) })
}

// Short timings for the in-process tests; the defaults are checked by the take-over
// benchmark against real Kamailio.
const (
	tLease  = 3 * time.Second
	tRenew  = 500 * time.Millisecond
	tMargin = time.Second
	tScan   = 300 * time.Millisecond
)

// cutStore is a Store whose connection can be cut: every call fails while cut is set, like a
// node partitioned from its database.
type cutStore struct {
	*store.DB
	cut atomic.Bool
}

var errCut = errors.New("test: database connection cut")

func (s *cutStore) RenewLease(ctx context.Context, inc string, now, until time.Time, n int) error {
	if s.cut.Load() {
		return errCut
	}
	return s.DB.RenewLease(ctx, inc, now, until, n)
}

func (s *cutStore) ClaimFrom(ctx context.Context, from, inc string, survivors int, now time.Time) ([]store.Claimed, error) {
	if s.cut.Load() {
		return nil, errCut
	}
	return s.DB.ClaimFrom(ctx, from, inc, survivors, now)
}

func (s *cutStore) SaveStatesFenced(ctx context.Context, ups []store.FencedUpdate) ([]string, error) {
	if s.cut.Load() {
		return nil, errCut
	}
	return s.DB.SaveStatesFenced(ctx, ups)
}

func (s *cutStore) Nodes(ctx context.Context) ([]store.Node, error) {
	if s.cut.Load() {
		return nil, errCut
	}
	return s.DB.Nodes(ctx)
}

// sendLog records every REGISTER the fence let out, by time.
type sendLog struct {
	next instance.Registrar
	mu   sync.Mutex
	at   []time.Time
}

func (l *sendLog) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	l.mu.Lock()
	l.at = append(l.at, time.Now())
	l.mu.Unlock()
	return l.next.Register(ctx, b)
}

func (l *sendLog) after(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.at {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

type node struct {
	name string
	db   *store.DB
	cs   *cutStore
	ua   *sipua.UA
	cl   *Cluster
	m    *instance.Manager
	sent *sendLog
	stop sync.Once
}

func (n *node) contactPort() string {
	a := n.ua.Addr("udp")
	return a[strings.LastIndex(a, ":")+1:]
}

func (n *node) Stop() {
	n.stop.Do(func() {
		n.cl.Stop()
		n.m.Stop()
		n.ua.Close()
	})
}

func startNode(t *testing.T, path, name string) *node {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{OpenString: path, DataKey: bytes.Repeat([]byte{7}, store.DataKeySize), Node: name})
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}},
		TransactionTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := ua.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, db: db, ua: ua, cs: &cutStore{DB: db}}
	n.cl, err = New(Options{Store: n.cs, Address: ua.Addr("udp"), Lease: tLease, Renew: tRenew, Margin: tMargin,
		Scan: tScan, AdoptWindow: 300 * time.Millisecond, InboxPoll: 200 * time.Millisecond, Logger: testLog(t, name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cl.Join(ctx); err != nil {
		t.Fatal(err)
	}
	n.sent = &sendLog{next: ua}
	n.m, err = instance.New(instance.Options{
		Store: n.cl.FencedStore(db), Registrar: instance.FencedRegistrar(n.sent, n.cl), Node: name,
		ResumeWindow: 300 * time.Millisecond, MinExpires: 5, BackoffMin: 200 * time.Millisecond,
		BackoffMax: time.Second, TransactionTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n.cl.Run(n.m)
	t.Cleanup(func() { n.Stop(); db.Close() })
	return n
}

// testLog shows the cluster's log lines in a verbose run.
func testLog(t *testing.T, name string) logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
	}
	return l.WithField("test", t.Name()).WithField("n", name)
}

func user(i int) string { return fmt.Sprintf("u%04d", i) }

// seed stores instances from..from+n-1 held in the background on node db, registering at r.
func seed(t *testing.T, db *store.DB, r *siptest.Registrar, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		sel := fmt.Sprintf("%04x", i)
		in := &store.Instance{Selector: sel, Mode: store.ModeBackground, State: store.StateRegistering,
			Status: store.StatusRegistering,
			Account: store.Account{User: user(i), Password: "pw-" + user(i), Domain: "sipis.test",
				Proxy: r.Host(), Port: r.Port(), Transport: "udp", Expires: 6}}
		dev := &store.Device{ID: "d", Platform: "fcm", PushToken: "tok-" + sel, Secret: "s"}
		if err := db.PutRegistration(context.Background(), in, dev, "n"+sel, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// boundAt reports how many of the n users have exactly one binding, at a Contact on port.
func boundAt(r *siptest.Registrar, n int, ports ...string) int {
	bound := 0
	for i := 0; i < n; i++ {
		cs := r.Contacts(user(i))
		if len(cs) != 1 {
			continue
		}
		for _, p := range ports {
			if strings.Contains(cs[0].URI, ":"+p) {
				bound++
				break
			}
		}
	}
	return bound
}

// watchDoubles samples the registrar until stop is closed and counts users seen bound at two
// Contacts at once.
func watchDoubles(r *siptest.Registrar, n int, stop <-chan struct{}) *atomic.Int64 {
	var doubles atomic.Int64
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for i := 0; i < n; i++ {
				if len(r.Contacts(user(i))) > 1 {
					doubles.Add(1)
				}
			}
		}
	}()
	return &doubles
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// seedNode stores n instances for node name before it starts.
func seedNode(t *testing.T, path, name string, r *siptest.Registrar, from, n int) {
	t.Helper()
	db, err := store.Open(context.Background(), store.Options{OpenString: path,
		DataKey: bytes.Repeat([]byte{7}, store.DataKeySize), Node: name})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seed(t, db, r, from, n)
}

// TestTakeOverAfterDeath: three nodes; one dies without a word (its process gone, its bindings
// left at the registrar); the two survivors split its instances, remove its bindings and
// register their own, and the registrar never holds an instance at two Contacts.
func TestTakeOverAfterDeath(t *testing.T) {
	forBackends(t, testTakeOverAfterDeath)
}

func testTakeOverAfterDeath(t *testing.T, path string) {
	const n = 60
	r := siptest.NewRegistrar(t, siptest.WithMaxExpires(30))
	seedNode(t, path, "a", r, 0, n)
	a := startNode(t, path, "a")
	waitFor(t, 10*time.Second, "a binds its instances", func() bool { return boundAt(r, n, a.contactPort()) == n })
	b := startNode(t, path, "b")
	c := startNode(t, path, "c")

	stop := make(chan struct{})
	doubles := watchDoubles(r, n, stop)
	a.Stop() // like kill -9: nothing unregistered, the lease left to run out
	died := time.Now()
	took := waitFor(t, 20*time.Second, "survivors bind a's instances", func() bool {
		return boundAt(r, n, b.contactPort(), c.contactPort()) == n
	})
	close(stop)
	// One REGISTER cycle per moved instance: it removes a's Contact and adds the survivor's
	// (an unREGISTER and a REGISTER would be two).
	if cycles := b.sent.after(died) + c.sent.after(died); cycles != n {
		t.Errorf("survivors ran %d REGISTER cycles for %d moved instances, want one each", cycles, n)
	}
	t.Logf("take-over of %d instances: %s after the death (lease %s)", n, time.Since(died).Round(time.Millisecond), tLease)
	if took > tLease+tScan+5*time.Second {
		t.Errorf("take-over took %s", took)
	}
	if d := doubles.Load(); d != 0 {
		t.Errorf("an instance was bound at two Contacts at once (%d samples)", d)
	}
	// Spread across the survivors, nothing lost from the store, and the devices moved along.
	nb, nc := b.m.Len(), c.m.Len()
	if nb+nc != n || nb == 0 || nc == 0 {
		t.Errorf("survivors hold %d and %d instances, want %d spread over both", nb, nc, n)
	}
	ob, _ := b.db.Owned(context.Background())
	oc, _ := c.db.Owned(context.Background())
	if len(ob)+len(oc) != n {
		t.Errorf("store: %d + %d owned instances, want %d", len(ob), len(oc), n)
	}
	for sel, e := range ob {
		if e != 2 {
			t.Errorf("instance %s at epoch %d after one move", sel, e)
		}
		if devs, err := b.db.Devices(context.Background(), sel); err != nil || len(devs) != 1 {
			t.Errorf("devices of %s after the move: %v %v", sel, devs, err)
		}
	}
	nodes, _ := b.db.Nodes(context.Background())
	if nodes[0].Name != "a" || nodes[0].State != store.NodeDead || nodes[0].Unclaimed != 0 {
		t.Errorf("dead node's row: %+v", nodes[0])
	}
}

// TestCutNodeStopsSending: a node whose database connection is cut stops sending once its lease
// can no longer be proven; a survivor takes its instances over; when the connection comes back
// the node learns it lost them and drops them without sending anything for them.
func TestCutNodeStopsSending(t *testing.T) {
	forBackends(t, testCutNodeStopsSending)
}

func testCutNodeStopsSending(t *testing.T, path string) {
	const n = 20
	r := siptest.NewRegistrar(t, siptest.WithMaxExpires(6))
	seedNode(t, path, "a", r, 0, n)
	a := startNode(t, path, "a")
	waitFor(t, 10*time.Second, "a binds its instances", func() bool { return boundAt(r, n, a.contactPort()) == n })
	b := startNode(t, path, "b")

	stop := make(chan struct{})
	doubles := watchDoubles(r, n, stop)
	a.cs.cut.Store(true)
	waitFor(t, 20*time.Second, "b binds a's instances", func() bool { return boundAt(r, n, b.contactPort()) == n })
	// Every renewal since the cut failed, so the fence's end is final now. a's 6 s bindings
	// were due for refresh meanwhile: the fence kept every one in.
	fenceEnd, open := a.cl.SendUntil("")
	if open {
		t.Fatal("a's fence is open with its database cut past the lease")
	}
	if got := a.sent.after(fenceEnd); got != 0 {
		t.Errorf("a sent %d REGISTERs after its lease could not be proven", got)
	}
	a.cs.cut.Store(false)
	waitFor(t, 10*time.Second, "a drops the instances it lost", func() bool { return a.m.Len() == 0 })
	if _, ok := a.cl.SendUntil(""); !ok {
		t.Errorf("a's fence did not open again after it rejoined")
	}
	close(stop)
	if d := doubles.Load(); d != 0 {
		t.Errorf("an instance was bound at two Contacts at once (%d samples)", d)
	}
	if got := a.sent.after(fenceEnd); got != 0 {
		t.Errorf("a sent %d REGISTERs for instances it lost", got)
	}
	if got := boundAt(r, n, b.contactPort()); got != n {
		t.Errorf("%d of %d instances bound at b after a came back", got, n)
	}
	nodes, _ := b.db.Nodes(context.Background())
	if nodes[0].Name != "a" || nodes[0].State != store.NodeLive {
		t.Errorf("a did not join again: %+v", nodes[0])
	}
}

// TestSecondNodeOfSameNameRefused: Join fails while a live node holds the name.
func TestSecondNodeOfSameNameRefused(t *testing.T) {
	forBackends(t, testSecondNodeOfSameNameRefused)
}

func testSecondNodeOfSameNameRefused(t *testing.T, path string) {
	startNode(t, path, "a")
	db, err := store.Open(context.Background(), store.Options{OpenString: path,
		DataKey: bytes.Repeat([]byte{7}, store.DataKeySize), Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cl, err := New(Options{Store: db, Lease: tLease, Renew: tRenew, Margin: tMargin})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Join(context.Background()); !errors.Is(err, store.ErrNodeLive) {
		t.Fatalf("second node named a: %v, want ErrNodeLive", err)
	}
	if _, ok := cl.SendUntil(""); ok {
		t.Fatal("refused node's fence is open")
	}
}

// TestDrainHandsOver: a drained node hands every instance to the others and leaves; the
// receivers bind them with their own Contact, the registrar never holds one at both nodes, and
// the drained node holds and sends nothing more.
func TestDrainHandsOver(t *testing.T) {
	forBackends(t, testDrainHandsOver)
}

func testDrainHandsOver(t *testing.T, path string) {
	const n = 30
	r := siptest.NewRegistrar(t, siptest.WithMaxExpires(30))
	seedNode(t, path, "a", r, 0, n)
	a := startNode(t, path, "a")
	waitFor(t, 10*time.Second, "a binds its instances", func() bool { return boundAt(r, n, a.contactPort()) == n })
	if _, err := a.cl.Drain(context.Background()); !errors.Is(err, ErrNoSurvivor) {
		t.Fatalf("drain with no other node: %v, want ErrNoSurvivor", err)
	}
	if a.m.Len() != n || a.cl.Draining() {
		t.Fatalf("a failed drain changed the node: %d instances, draining %v", a.m.Len(), a.cl.Draining())
	}
	b := startNode(t, path, "b")
	c := startNode(t, path, "c")
	var contacts []string
	for i := 0; i < n; i++ {
		s, ok := a.m.Snapshot(fmt.Sprintf("%04x", i))
		if !ok || s.ContactUser == "" {
			t.Fatalf("instance %04x not held by a before the drain", i)
		}
		contacts = append(contacts, s.ContactUser)
	}
	stop := make(chan struct{})
	doubles := watchDoubles(r, n, stop)
	moved, err := a.cl.Drain(context.Background())
	if err != nil || moved != n {
		t.Fatalf("Drain: %d moved, %v", moved, err)
	}
	drained := time.Now()
	waitFor(t, 10*time.Second, "b and c bind a's instances", func() bool {
		return boundAt(r, n, b.contactPort(), c.contactPort()) == n
	})
	close(stop)
	if d := doubles.Load(); d != 0 {
		t.Errorf("an instance was bound at two Contacts at once (%d samples)", d)
	}
	if a.m.Len() != 0 {
		t.Errorf("drained node still holds %d instances", a.m.Len())
	}
	// Calls still routed to the drained node's Contacts in the gap are told to try again.
	for _, u := range contacts {
		if !a.cl.Moved(u) {
			t.Errorf("Contact %s of a drained instance not known as moved", u)
		}
	}
	if a.cl.Moved("nosuchcontact") || b.cl.Moved(contacts[0]) {
		t.Error("Moved reports a Contact that was not handed over by this node")
	}
	if got := a.sent.after(drained); got != 0 {
		t.Errorf("drained node sent %d REGISTERs", got)
	}
	if _, ok := a.cl.SendUntil(""); ok {
		t.Error("drained node's fence is open")
	}
	if b.m.Len()+c.m.Len() != n || b.m.Len() == 0 || c.m.Len() == 0 {
		t.Errorf("receivers hold %d and %d", b.m.Len(), c.m.Len())
	}
	nodes, _ := b.db.Nodes(context.Background())
	if nodes[0].Name != "a" || nodes[0].State != store.NodeDead {
		t.Errorf("drained node's row: %+v", nodes[0])
	}
}
