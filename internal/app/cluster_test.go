package app

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/testutil/pgtest"
	"github.com/sipis/sipis/pkg/registration"
)

// clusterInstances is how many instances TestClusterTakeOverAtKamailio spreads over its nodes;
// the scale is -cluster-instances=3000.
var clusterInstances = flag.Int("cluster-instances", 150, "instances in the three-node Kamailio test")

// clusterSettings is node name's settings in a cluster whose nodes share the database db (an
// OpenString) and the keys in shared; each node has its own folder (lock, logs) and SIP and HTTP ports.
func clusterSettings(t testing.TB, shared, db, name string, apns *pushtest.APNs) *config.Settings {
	t.Helper()
	s := apnsSettings(t, t.TempDir(), apns, `<Cluster Enabled="Yes"/>`)
	s.Server.Name = name
	s.Database.OpenString = db
	s.Keys.PrivateKeyFile = filepath.Join(shared, "server.key")
	s.Keys.PublicKeyFile = filepath.Join(shared, "server.pub")
	s.Keys.DataKeyFile = filepath.Join(shared, "data.key")
	s.Sip.Register.MinExpires = 10 * time.Second
	s.Sip.Register.Workers = 64
	return s
}

// startClusterApp is startApp with the cluster's log lines on stderr in a verbose run.
func startClusterApp(t testing.TB, s *config.Settings) *App {
	t.Helper()
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.InfoLevel)
	}
	a, err := New(s, WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// contactsOf returns, per user, the Contact URIs Kamailio holds for the users in want.
func contactsOf(t *testing.T, k *siptest.Kamailio, want map[string]bool) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for user, cs := range dumpBindings(t, k) {
		if want[user] {
			out[user] = cs
		}
	}
	return out
}

// TestClusterTakeOverAtKamailio: three nodes on one database hold instances at a real
// Kamailio; one node dies without unregistering anything. Within 30 s the two survivors hold
// all of its instances, each bound at Kamailio at a survivor's Contact; usrloc's ul.dump (JSON-RPC),
// sampled throughout, never shows an instance bound at two Contacts; nothing is lost from the
// store; and an INVITE to a moved instance reaches a push.
func TestClusterTakeOverAtKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	clusterBackends(t, testClusterTakeOverAtKamailio)
}

// clusterBackends runs f with the OpenString of a fresh SQLite file (nodes sharing one file:
// a test bed only) and of a fresh PostgreSQL database (skipped when PostgreSQL is not
// installed, unless SIPIS_REQUIRE_POSTGRES=1).
func clusterBackends(t *testing.T, f func(t *testing.T, db string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "sipis.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, pgtest.NewDatabase(t)) })
}

func testClusterTakeOverAtKamailio(t *testing.T, db string) {
	n := *clusterInstances
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	apns := pushtest.NewAPNs(t)
	shared := t.TempDir()
	nodes := make([]*App, 3)
	for i, name := range []string{"node-a", "node-b", "node-c"} {
		nodes[i] = startClusterApp(t, clusterSettings(t, shared, db, name, apns))
		defer nodes[i].Stop()
	}
	users := k.Users(n)
	sel := func(i int) string { return fmt.Sprintf("%016x", 0xc1a5000+i) }
	want := map[string]bool{}
	for i := range n {
		want[users[i].Name] = true
		// Posted to every node in turn; each goes to the least-loaded node (or its owner).
		a := nodes[i%3]
		r := &registration.Registration{Version: registration.Version, Selector: sel(i), Mode: registration.ModeBackground,
			Account: registration.Account{User: users[i].Name, Password: users[i].Password, Domain: k.Domain(),
				Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
			Device: registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK, AppID: apns.Topic,
				Secret: "secret-" + users[i].Name},
			Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
		sealed, err := registration.Seal(r, a.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
			t.Fatalf("register %d at %s: %d %s", i, a.settings.Server.Name, code, body)
		}
	}
	port := func(a *App) string {
		addr := a.SIPAddr("udp")
		return ":" + addr[strings.LastIndex(addr, ":")+1:]
	}
	boundAt := func(ok func(i int, contact string) bool) func() (bool, string) {
		return func() (bool, string) {
			cs := contactsOf(t, k, want)
			bad := 0
			for i := range n {
				c := cs[users[i].Name]
				if len(c) != 1 || !ok(i, c[0]) {
					bad++
				}
			}
			return bad == 0, fmt.Sprintf("%d of %d instances not bound as expected", bad, n)
		}
	}
	holder := func(i int) *App {
		for _, a := range nodes {
			if _, ok := a.Manager().Snapshot(sel(i)); ok {
				return a
			}
		}
		return nil
	}
	waitAll(t, "every node binds its instances", 60*time.Second, boundAt(func(i int, c string) bool {
		h := holder(i)
		return h != nil && strings.Contains(c, port(h))
	}))
	var deadOnes []int // the instances of the node about to die
	for i := range n {
		if holder(i) == nodes[0] {
			deadOnes = append(deadOnes, i)
		}
	}
	if len(deadOnes) == 0 {
		t.Fatal("the first node holds no instance: nothing to take over")
	}

	// Sample usrloc throughout the take-over: never two Contacts for one instance.
	var doubles atomic.Int64
	var firstDouble atomic.Value
	stopSampling := k.SampleBindings(100*time.Millisecond, func(b map[string][]string) {
		for aor, c := range b {
			if len(c) > 1 && want[aor] {
				if doubles.Add(1) == 1 {
					firstDouble.Store(aor + ": " + strings.Join(c, " "))
				}
			}
		}
	})
	defer stopSampling()

	dead := nodes[0]
	deadPort := port(dead)
	dead.Stop() // nothing unregistered: like kill -9, the bindings stay and the lease runs out
	died := time.Now()
	b, c := nodes[1], nodes[2]
	movedOK := func(i int, contact string) bool {
		return !strings.Contains(contact, deadPort) && (strings.Contains(contact, port(b)) || strings.Contains(contact, port(c)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for ok, _ := boundAt(movedOK)(); !ok; ok, _ = boundAt(movedOK)() {
		if time.Now().After(deadline) {
			stopSampling()
			cs := contactsOf(t, k, want)
			for _, i := range deadOnes {
				if got := cs[users[i].Name]; len(got) != 1 || !movedOK(i, got[0]) {
					sb, _ := b.Manager().Snapshot(sel(i))
					sc, _ := c.Manager().Snapshot(sel(i))
					t.Fatalf("instance %d not bound at a survivor within 30 s: contacts %v; at node-b %v %q, at node-c %v %q",
						i, got, sb.Phase, sb.LastError, sc.Phase, sc.LastError)
				}
			}
			t.Fatal("not all bound within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(died)
	samples := stopSampling()
	t.Logf("take-over of %d instances (of %d) after a node's death: %s (%d ul.dump samples)",
		len(deadOnes), n, took.Round(100*time.Millisecond), samples)
	if samples == 0 {
		t.Error("ul.dump was never read during the take-over: nothing sampled")
	}
	if d := doubles.Load(); d > 0 {
		t.Errorf("ul.dump showed an instance bound at two Contacts %d times, first %v", d, firstDouble.Load())
	}
	// Spread over both survivors, nothing lost from the store.
	hb, hc := b.Manager().Len(), c.Manager().Len()
	if hb+hc != n {
		t.Errorf("survivors hold %d and %d of %d instances", hb, hc, n)
	}
	// The dead node's instances are spread over both survivors.
	tookB := 0
	for _, i := range deadOnes {
		if _, ok := b.Manager().Snapshot(sel(i)); ok {
			tookB++
		}
	}
	if len(deadOnes) > 1 && (tookB == 0 || tookB == len(deadOnes)) {
		t.Errorf("node-b took %d of the dead node's %d instances: not spread over both survivors", tookB, len(deadOnes))
	}
	ctx := context.Background()
	ob, _ := b.Store().Owned(ctx)
	oc, _ := c.Store().Owned(ctx)
	if len(ob)+len(oc) != n {
		t.Errorf("store: %d + %d instances owned, want %d", len(ob), len(oc), n)
	}
	for _, i := range deadOnes {
		owner := b
		if _, ok := oc[sel(i)]; ok {
			owner = c
		}
		if devs, err := owner.Store().Devices(ctx, sel(i)); err != nil || len(devs) != 1 || devs[0].PushToken != pushtest.TokenOK {
			t.Fatalf("moved instance %s lost its device: %v %v", sel(i), devs, err)
		}
	}

	// A call to a moved instance reaches a push.
	before := len(apns.Pushes())
	caller := siptest.NewCaller(t)
	inv := caller.Invite(k.Addr(), users[deadOnes[0]].Name)
	for {
		res, err := caller.Next(inv.CallID, "INVITE", 5*time.Second)
		if err != nil {
			t.Fatalf("INVITE to the moved instance: %v", err)
		}
		if res.Status == 100 {
			continue
		}
		if res.Status != 180 || res.Header("X-Sipis-Push-Status") != "Alerting-Device" {
			t.Fatalf("INVITE to the moved instance: %d %q", res.Status, res.Header("X-Sipis-Push-Status"))
		}
		break
	}
	waitAll(t, "the call's push", 5*time.Second, func() (bool, string) {
		for _, p := range apns.Pushes()[before:] {
			if p.Payload["selector"] == sel(deadOnes[0]) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pushes", len(apns.Pushes())-before)
	})
	inv.Cancel()
}

// TestClusterDrainAtKamailio: the admin drain action hands a node's instances to the other
// node, which binds them at Kamailio with its own Contact; usrloc never shows an instance at
// both; the drained node holds nothing afterwards. Wrong credentials change nothing.
func TestClusterDrainAtKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	clusterBackends(t, testClusterDrainAtKamailio)
}

func testClusterDrainAtKamailio(t *testing.T, db string) {
	const n = 20
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	apns := pushtest.NewAPNs(t)
	shared := t.TempDir()
	a := startApp(t, clusterSettings(t, shared, db, "node-a", apns))
	defer a.Stop()
	users := k.Users(n)
	want := map[string]bool{}
	for i := range n {
		want[users[i].Name] = true
		// node-a alone: every new instance is placed on it.
		holdAtKamailio(t, a, k, apns, fmt.Sprintf("%016x", 0xd7a1000+i), users[i].Name, "secret")
	}
	b := startApp(t, clusterSettings(t, shared, db, "node-b", apns))
	defer b.Stop()
	drainURL := a.HTTPURL() + "/sipis/cluster/drain"
	postDrain := func(user, password string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, drainURL, nil)
		req.SetBasicAuth(user, password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := postDrain("admin", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("drain with a wrong password: %d", code)
	}
	if a.Manager().Len() != n {
		t.Fatalf("refused drain moved instances: %d left", a.Manager().Len())
	}
	var doubles atomic.Int64
	stopSampling := k.SampleBindings(50*time.Millisecond, func(b map[string][]string) {
		for aor, c := range b {
			if want[aor] && len(c) > 1 {
				doubles.Add(1)
			}
		}
	})
	defer stopSampling()
	code, body := postDrain("admin", "secret-admin")
	if code != 200 || !strings.Contains(body, `"moved":20`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	bPort := b.SIPAddr("udp")[strings.LastIndex(b.SIPAddr("udp"), ":"):]
	waitAll(t, "node-b binds the drained instances", 15*time.Second, func() (bool, string) {
		cs := contactsOf(t, k, want)
		ok := 0
		for _, c := range cs {
			if len(c) == 1 && strings.Contains(c[0], bPort) {
				ok++
			}
		}
		return ok == n, fmt.Sprintf("%d of %d bound at node-b", ok, n)
	})
	if stopSampling() == 0 {
		t.Error("ul.dump was never read during the drain: nothing sampled")
	}
	if d := doubles.Load(); d > 0 {
		t.Errorf("ul.dump showed an instance bound at both nodes %d times", d)
	}
	if a.Manager().Len() != 0 || b.Manager().Len() != n {
		t.Errorf("after the drain: node-a holds %d, node-b %d", a.Manager().Len(), b.Manager().Len())
	}
}

// TestClusterAnyNodeTakesRegistrations: a registration posted to any node reaches the node that
// owns the instance, and a new instance goes to the least-loaded live node.
func TestClusterAnyNodeTakesRegistrations(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	clusterBackends(t, testClusterAnyNodeTakesRegistrations)
}

func testClusterAnyNodeTakesRegistrations(t *testing.T, db string) {
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	apns := pushtest.NewAPNs(t)
	shared := t.TempDir()
	a := startApp(t, clusterSettings(t, shared, db, "node-a", apns))
	defer a.Stop()
	users := k.Users(3)
	// Two instances on node-a while it is alone.
	holdAtKamailio(t, a, k, apns, "a0a0a0a0a0a0a0a0", users[0].Name, "secret-0")
	holdAtKamailio(t, a, k, apns, "a1a1a1a1a1a1a1a1", users[1].Name, "secret-1")
	b := startApp(t, clusterSettings(t, shared, db, "node-b", apns))
	defer b.Stop()

	postTo := func(node *App, sel, user, secret string, mode registration.Mode) {
		t.Helper()
		r := &registration.Registration{Version: registration.Version, Selector: sel, Mode: mode,
			Account: registration.Account{User: user, Password: siptest.KamailioPassword(user), Domain: k.Domain(),
				Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
			Device:    registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK, AppID: apns.Topic, Secret: secret},
			Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
		sealed, err := registration.Seal(r, node.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if code, body := post(t, node.HTTPURL(), sealed); code != 200 {
			t.Fatalf("register %s at %s: %d %s", sel, node.settings.Server.Name, code, body)
		}
	}
	// A new instance posted to the loaded node goes to the idle one.
	postTo(a, "b2b2b2b2b2b2b2b2", users[2].Name, "secret-2", registration.ModeBackground)
	waitPhase(t, b, "b2b2b2b2b2b2b2b2", instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})
	if _, ok := a.Manager().Snapshot("b2b2b2b2b2b2b2b2"); ok {
		t.Fatal("the new instance is held by the loaded node too")
	}
	// A registration posted to the node that does not own the instance reaches its owner: the
	// app going to the foreground releases the binding at node-a.
	postTo(b, "a0a0a0a0a0a0a0a0", users[0].Name, "secret-0", registration.ModeForeground)
	waitPhase(t, a, "a0a0a0a0a0a0a0a0", instance.Phase{State: instance.Idle, Status: instance.NotRegistered})
	if _, ok := b.Manager().Snapshot("a0a0a0a0a0a0a0a0"); ok {
		t.Fatal("node-b made its own instance of node-a's selector")
	}
	// A forged forwarding mark does not make a node take another's instance.
	r := &registration.Registration{Version: registration.Version, Selector: "a1a1a1a1a1a1a1a1", Mode: registration.ModeForeground,
		Account:   registration.Account{User: users[1].Name, Password: siptest.KamailioPassword(users[1].Name), Domain: k.Domain(), Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
		Device:    registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK, AppID: apns.Topic, Secret: "secret-1"},
		Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
	sealed, _ := registration.Seal(r, b.PublicKey())
	req, _ := http.NewRequest(http.MethodPost, b.HTTPURL()+"/sipis/register", strings.NewReader(string(sealed)))
	req.Header.Set(forwardedHeader, "node-x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("forwarded-marked registration: %d", resp.StatusCode)
	}
	waitPhase(t, a, "a1a1a1a1a1a1a1a1", instance.Phase{State: instance.Idle, Status: instance.NotRegistered})
	if _, ok := b.Manager().Snapshot("a1a1a1a1a1a1a1a1"); ok {
		t.Fatal("a forged forwarding mark made node-b hold node-a's instance")
	}

	// Admin actions on node-a for node-b's instance: the test push goes out (from node-a, with
	// node-b's devices), the turn-off reaches node-b's state machine.
	action := func(node *App, path, sel string) (int, string) {
		t.Helper()
		form := url.Values{"s": {sel}, "user": {"admin"}, "password": {"secret-admin"}}
		req, _ := http.NewRequest(http.MethodPost, node.HTTPURL()+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", node.HTTPURL())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// (The device has only a VoIP token: the test, an alert, reports that it cannot be sent.)
	if code, page := action(a, "/stats/actions/testpush", "b2b2b2b2b2b2b2b2"); code != 200 ||
		!strings.Contains(page, "iphone") || !strings.Contains(page, "alert token") {
		t.Fatalf("test push at node-a for node-b's instance: %d %s", code, page)
	}
	if code, page := action(a, "/stats/actions/turnoff", "b2b2b2b2b2b2b2b2"); code != 200 && code != 303 {
		t.Fatalf("turn off at node-a for node-b's instance: %d %s", code, page)
	}
	waitPhase(t, b, "b2b2b2b2b2b2b2b2", instance.Phase{State: instance.Idle, Status: instance.NotRegistered})
	if s, _ := b.Manager().Snapshot("b2b2b2b2b2b2b2b2"); !s.Off {
		t.Fatal("turned-off instance is not off at node-b")
	}

	// The summary keeps its fields for the node and adds the cluster block; /stats shows it.
	resp, err = http.Get(b.HTTPURL() + "/stats/summary/json")
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Server   struct{ Name string }
		Instance struct{ Count int }
		Cluster  *struct {
			Node                 string
			LeaseValidForSeconds float64
			Nodes                []struct {
				Name, State string
				Instances   int
			}
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&sum)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Server.Name != "node-b" || sum.Instance.Count != 1 || sum.Cluster == nil || sum.Cluster.Node != "node-b" ||
		sum.Cluster.LeaseValidForSeconds <= 0 || len(sum.Cluster.Nodes) != 2 ||
		sum.Cluster.Nodes[0].Name != "node-a" || sum.Cluster.Nodes[0].State != "live" {
		t.Fatalf("summary of node-b: %+v cluster %+v", sum, sum.Cluster)
	}
	resp, err = http.Get(b.HTTPURL() + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "Cluster") || !strings.Contains(string(page), "Node node-a") {
		t.Fatalf("/stats has no cluster section")
	}
}
