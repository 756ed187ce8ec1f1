package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
)

// pauseChildEnv names the settings file TestPausedNodeChild serves.
const pauseChildEnv = "SIPIS_TEST_SERVE_SETTINGS"

// TestPausedNodeChild is not a test by itself: TestPausedNodeSendsNothing runs the test binary
// again with only this test and pauseChildEnv set, as the real server process ("sipis serve")
// that it stops with SIGSTOP and kills with SIGKILL.
func TestPausedNodeChild(t *testing.T) {
	path := os.Getenv(pauseChildEnv)
	if path == "" {
		t.Skip("helper process for TestPausedNodeSendsNothing")
	}
	if err := run([]string{"serve", "-settings", path}, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// shortCluster are cluster timings that make a pause test run in seconds.
const shortCluster = `<Cluster Enabled="Yes"><Lease Seconds="6"/><Renew Seconds="2"/><Margin Seconds="2"/><Scan Seconds="1"/></Cluster>`

// clusterXML is the settings of node name of a cluster on the SQLite file and keys in shared,
// with the <Cluster> element cluster.
func clusterXML(shared, name, cluster string) string {
	return `<Sipis><Server Name="` + name + `" Address="127.0.0.1" Port="0"/>
		<Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/><Register><MinExpires Seconds="10"/></Register></Sip>
		<HttpServer Address="127.0.0.1" Port="0"/><Administrator UserName="admin" Password="pw-admin-7"/>
		<Database OpenString="` + filepath.Join(shared, "sipis.db") + `"/>
		<Keys PrivateKeyFile="` + filepath.Join(shared, "server.key") + `" PublicKeyFile="` + filepath.Join(shared, "server.pub") + `"
			DataKeyFile="` + filepath.Join(shared, "data.key") + `"/>
		<Log Stdio="None"/><Probe Enabled="No"/>` + cluster + `</Sipis>`
}

// childNode is node-a, a real server process (this test binary as "sipis serve"), holding n
// instances bound at k.
type childNode struct {
	cmd   *exec.Cmd
	db    *store.DB // an observer's handle on the shared database
	node  store.Node
	port  string // ":port" of its Contact
	want  map[string]bool
	bound func(port string) func() bool
}

// startChildNode starts node-a on a cluster database in shared with the <Cluster> element
// cluster, registers n instances through it and waits until Kamailio holds them.
func startChildNode(t *testing.T, k *siptest.Kamailio, shared, cluster string, n int) *childNode {
	t.Helper()
	settings := filepath.Join(t.TempDir(), "Settings.xml")
	if err := os.WriteFile(settings, []byte(clusterXML(shared, "node-a", cluster)), 0o600); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestPausedNodeChild$")
	child.Env = append(os.Environ(), pauseChildEnv+"="+settings)
	child.Stdout, child.Stderr = io.Discard, io.Discard
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { child.Wait(); close(done) }()
	t.Cleanup(func() {
		child.Process.Signal(syscall.SIGCONT)
		child.Process.Kill()
		<-done
	})

	// The child's addresses are in the nodes table once it joined.
	ctx := context.Background()
	var db *store.DB
	var nodeA store.Node
	waitUntil(t, 30*time.Second, "node-a joins", func() bool {
		if db == nil {
			if _, err := os.Stat(filepath.Join(shared, "data.key")); err != nil {
				return false
			}
			s, err := config.Parse([]byte(clusterXML(shared, "observer", cluster)), shared)
			if err != nil {
				t.Fatal(err)
			}
			dk, err := app.ReadDataKey(s)
			if err != nil {
				return false
			}
			if db, err = store.Open(ctx, store.Options{OpenString: s.Database.OpenString, DataKey: dk, Node: "observer"}); err != nil {
				db = nil
				return false
			}
			t.Cleanup(func() { db.Close() })
		}
		nodes, err := db.Nodes(ctx)
		if err != nil || len(nodes) == 0 || nodes[0].HTTPURL == "" {
			return false
		}
		nodeA = nodes[0]
		return true
	})
	pub, err := registration.ReadKeyFile(filepath.Join(shared, "server.pub"))
	if err != nil {
		t.Fatal(err)
	}
	users := k.Users(n)
	want := map[string]bool{}
	for i := range n {
		want[users[i].Name] = true
		r := &registration.Registration{Version: registration.Version, Selector: fmt.Sprintf("%016x", 0xfa05e000+i),
			Mode: registration.ModeBackground,
			Account: registration.Account{User: users[i].Name, Password: users[i].Password, Domain: k.Domain(),
				Proxy: k.Host(), Port: k.Port(), Transport: "udp", Expires: 10},
			Device:    registration.Device{ID: "phone", Platform: "none", Secret: "secret-" + users[i].Name},
			Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
		sealed, err := registration.Seal(r, pub)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := postRegistration(t, nodeA.HTTPURL, sealed); code != http.StatusOK {
			t.Fatalf("register %d: %d %s", i, code, body)
		}
	}
	aPort := nodeA.Address[strings.LastIndex(nodeA.Address, ":"):]
	bound := func(port string) func() bool {
		return func() bool {
			ok := 0
			for user, cs := range ulDump(t, k) {
				if want[user] && len(cs) == 1 && strings.Contains(cs[0], port) {
					ok++
				}
			}
			return ok == n
		}
	}
	waitUntil(t, 30*time.Second, "node-a binds its instances", bound(aPort))

	return &childNode{cmd: child, db: db, node: nodeA, port: aPort, want: want, bound: bound}
}

// TestPausedNodeSendsNothing: a real sipis process holds instances at Kamailio; it is stopped
// (SIGSTOP) past its lease, a second node takes its instances over, and after SIGCONT the paused
// node sends nothing for the instances it lost: usrloc's ul.dump (JSON-RPC), sampled throughout, never
// shows an instance at two Contacts nor the paused node's Contact again, and the node drops the
// instances and joins again.
func TestPausedNodeSendsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	const n = 30
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	shared := t.TempDir()
	a := startChildNode(t, k, shared, shortCluster, n)
	ctx := context.Background()
	child, db, aPort, want, bound := a.cmd, a.db, a.port, a.want, a.bound

	// Node b, in this process.
	s, err := config.Parse([]byte(clusterXML(shared, "node-b", shortCluster)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startSettings(t, s)
	bAddr := b.SIPAddr("udp")
	bPort := bAddr[strings.LastIndex(bAddr, ":"):]

	var doubles, aAgain atomic.Int64
	var contMu sync.Mutex
	var continued time.Time
	stopSampling := k.SampleBindings(50*time.Millisecond, func(b map[string][]string) {
		for user, cs := range b {
			if !want[user] {
				continue
			}
			if len(cs) > 1 {
				doubles.Add(1)
			}
			contMu.Lock()
			after := !continued.IsZero()
			contMu.Unlock()
			for _, c := range cs {
				if after && strings.Contains(c, aPort) {
					aAgain.Add(1)
				}
			}
		}
	})
	defer stopSampling()

	if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	waitUntil(t, 30*time.Second, "node-b binds the paused node's instances", bound(bPort))
	t.Logf("take-over from the paused node: %s", time.Since(paused).Round(100*time.Millisecond))
	// Past the refresh time of node-a's 10 s bindings, so that its refreshes are due the
	// moment it runs again.
	if d := 12*time.Second - time.Since(paused); d > 0 {
		time.Sleep(d) // the pause itself is what is tested: it must outlast the lease
	}
	contMu.Lock()
	continued = time.Now()
	contMu.Unlock()
	if err := child.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// node-a renews (refused: declared dead), joins again and drops what it lost.
	waitUntil(t, 20*time.Second, "node-a joins again after the pause", func() bool {
		nodes, err := db.Nodes(ctx)
		return err == nil && nodes[0].Name == "node-a" && nodes[0].State == store.NodeLive &&
			nodes[0].HeartbeatAt.After(continued.Add(-time.Second))
	})
	waitUntil(t, 10*time.Second, "node-a reports no instance", func() bool {
		nodes, err := db.Nodes(ctx)
		return err == nil && nodes[0].Instances == 0
	})
	if stopSampling() == 0 {
		t.Error("ul.dump was never read: nothing sampled")
	}
	if d := doubles.Load(); d > 0 {
		t.Errorf("ul.dump showed an instance at two Contacts %d times", d)
	}
	if d := aAgain.Load(); d > 0 {
		t.Errorf("the paused node's Contact was bound again after SIGCONT (%d samples)", d)
	}
	if !bound(bPort)() {
		t.Error("not every instance is bound at node-b after node-a came back")
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ulDump returns user -> Contact URIs from usrloc (JSON-RPC ul.dump; nil while Kamailio stops).
func ulDump(t *testing.T, k *siptest.Kamailio) map[string][]string {
	b, err := k.Bindings()
	if err != nil {
		return nil
	}
	return b
}

func postRegistration(t *testing.T, base string, sealed []byte) (int, string) {
	t.Helper()
	resp, err := http.Post(base+"/sipis/register", "application/octet-stream", bytes.NewReader(sealed))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestKilledNodeTakenOver: a real sipis process holding instances at Kamailio is killed
// (SIGKILL, nothing unregistered); with the default cluster timings a second node holds every
// one of them, at its own Contact and never two at once, within 30 s of the death.
func TestKilledNodeTakenOver(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	const n = 30
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	shared := t.TempDir()
	const defaults = `<Cluster Enabled="Yes"/>`
	a := startChildNode(t, k, shared, defaults, n)
	s, err := config.Parse([]byte(clusterXML(shared, "node-b", defaults)), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startSettings(t, s)
	bAddr := b.SIPAddr("udp")
	bPort := bAddr[strings.LastIndex(bAddr, ":"):]
	var doubles atomic.Int64
	stopSampling := k.SampleBindings(50*time.Millisecond, func(b map[string][]string) {
		for user, cs := range b {
			if a.want[user] && len(cs) > 1 {
				doubles.Add(1)
			}
		}
	})
	defer stopSampling()
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	waitUntil(t, 30*time.Second, "node-b binds the killed node's instances", a.bound(bPort))
	t.Logf("take-over after kill -9 (default timings): %s", time.Since(died).Round(100*time.Millisecond))
	if stopSampling() == 0 {
		t.Error("ul.dump was never read: nothing sampled")
	}
	if d := doubles.Load(); d > 0 {
		t.Errorf("ul.dump showed an instance at two Contacts %d times", d)
	}
	owned, err := b.Store().Owned(context.Background())
	if err != nil || len(owned) != n {
		t.Errorf("node-b owns %d instances in the store, want %d (%v)", len(owned), n, err)
	}
}
