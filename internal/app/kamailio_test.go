package app

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// dumpBindings returns, per AoR, the contact URIs Kamailio's usrloc holds (JSON-RPC ul.dump).
func dumpBindings(t *testing.T, k *siptest.Kamailio) map[string][]string {
	t.Helper()
	b, err := k.Bindings()
	if err != nil {
		t.Fatalf("ul.dump: %v", err)
	}
	return b
}

func kamailioSettings(t *testing.T, dir string, port int) *config.Settings {
	s := testSettings(t, dir, "")
	s.Sip.Register.MinExpires = 10 * time.Second
	s.Sip.Register.Workers = 64
	if port != 0 {
		s.Sip.Listeners[0].Port = port
	}
	return s
}

func waitAll(t testing.TB, what string, within time.Duration, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		done, state := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, within, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKamailioRegistrationEngine runs the registration engine against a real Kamailio
// registrar with digest auth: many instances, refreshes before expiry, foreground, a wrong
// password, a restart of sipis and an outage of Kamailio.
func TestKamailioRegistrationEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	const n = 200
	const expires = 12 // seconds: short, so refreshes and expiry happen during the test
	k := siptest.StartKamailio(t, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600})
	dir := t.TempDir()
	a := startApp(t, kamailioSettings(t, dir, 0))
	stopped := false
	defer func() {
		if !stopped {
			a.Stop()
		}
	}()
	users := k.Users(n + 1)
	sel := func(i int) string { return fmt.Sprintf("%016x", 0xa000+i) }
	post1 := func(a *App, i int, mode registration.Mode, password string) {
		t.Helper()
		r := &registration.Registration{
			Version: registration.Version, Selector: sel(i), Mode: mode,
			Account: registration.Account{User: users[i].Name, Password: password, Domain: k.Domain(),
				Proxy: k.Host(), Port: k.Port(), Transport: "udp", Expires: expires},
			Device:    registration.Device{ID: "phone", Platform: "none", Secret: "secret-" + users[i].Name},
			Timestamp: time.Now().UTC(), Nonce: registration.NewNonce(),
		}
		sealed, err := registration.Seal(r, a.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
			t.Fatalf("register %d: %d %s", i, code, body)
		}
	}
	for i := range n {
		post1(a, i, registration.ModeBackground, users[i].Password)
	}
	ours := func(a *App, i int) string {
		s, _ := a.Manager().Snapshot(sel(i))
		return s.ContactUser
	}
	// Every instance registered, and Kamailio holds exactly our contact for each.
	allBound := func(a *App, skip int) func() (bool, string) {
		return func() (bool, string) {
			b := dumpBindings(t, k)
			missing := 0
			for i := range n {
				if i == skip {
					continue
				}
				c := b[users[i].Name]
				if len(c) != 1 || !strings.Contains(c[0], ours(a, i)) {
					missing++
				}
			}
			return missing == 0, fmt.Sprintf("%d of %d bindings missing", missing, n)
		}
	}
	waitAll(t, "all registered", 30*time.Second, allBound(a, -1))
	byPhase, _ := a.Manager().Counts()
	if got := byPhase[instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}]; got != n {
		t.Fatalf("%d of %d Registered: %v", got, n, byPhase)
	}

	// Refreshes come before expiry: after twice the granted time every binding is still there,
	// and each instance has refreshed at least once.
	cseq := map[int]uint32{}
	for i := range n {
		s, _ := a.Manager().Snapshot(sel(i))
		cseq[i] = s.CSeq
	}
	// Real time on purpose: the behaviour under test is that a real Kamailio still holds the
	// bindings after twice their expiry, so the wait cannot run on a fake clock.
	time.Sleep(2 * expires * time.Second)
	if ok, state := allBound(a, -1)(); !ok {
		t.Fatalf("after %d s: %s", 2*expires, state)
	}
	for i := range n {
		if s, _ := a.Manager().Snapshot(sel(i)); s.CSeq <= cseq[i] || s.Phase.Status != instance.Registered {
			t.Fatalf("instance %d did not refresh: CSeq %d -> %d, %v", i, cseq[i], s.CSeq, s.Phase)
		}
	}

	// Foreground removes exactly that instance's binding.
	post1(a, 7, registration.ModeForeground, "")
	waitAll(t, "foreground unbinds", 10*time.Second, func() (bool, string) {
		c := dumpBindings(t, k)[users[7].Name]
		return len(c) == 0, fmt.Sprint(c)
	})
	if ok, state := allBound(a, 7)(); !ok {
		t.Fatalf("foreground of one instance disturbed others: %s", state)
	}

	// A wrong password ends in Register Loop / Unauthorized (the Error case the user must fix).
	post1(a, n, registration.ModeBackground, "wrong-password")
	waitAll(t, "wrong password refused", 10*time.Second, func() (bool, string) {
		s, _ := a.Manager().Snapshot(sel(n))
		return s.Phase == instance.Phase{State: instance.RegisterLoop, Status: instance.Unauthorized} && s.LastError != "", s.Phase.String()
	})

	// Restart sipis (as after a kill: nothing is unregistered): every binding is kept alive.
	port := atoi(t, a.SIPAddr("udp")[strings.LastIndex(a.SIPAddr("udp"), ":")+1:])
	a.Stop()
	a = startApp(t, kamailioSettings(t, dir, port))
	if got := a.Manager().Len(); got != n+1 {
		t.Fatalf("%d instances after restart, want %d", got, n+1)
	}
	// Real time on purpose: the behaviour under test is that a real Kamailio still holds the
	// bindings after twice their expiry, so the wait cannot run on a fake clock.
	time.Sleep(2 * expires * time.Second)
	if ok, state := allBound(a, 7)(); !ok {
		t.Fatalf("after a restart: %s", state)
	}

	// Kamailio goes away (losing its in-memory bindings) and comes back: every instance
	// recovers, and the retries during the outage stay bounded by the backoff.
	k.Stop()
	before := a.Manager().Stats().Registers.Load()
	const outage = 8 * time.Second
	time.Sleep(outage) // real time on purpose: the outage is the behaviour under test
	during := a.Manager().Stats().Registers.Load() - before
	k.Start()
	waitAll(t, "recovered after the outage", 40*time.Second, allBound(a, 7))
	// With backoff from 1 s (equal jitter) to 4 s, an instance retries at most about
	// 1+log2 steps then every 2-4 s: 6 tries in 8 s is the ceiling; a retry storm would be
	// hundreds per instance.
	if max := int64(6 * n); during > max {
		t.Errorf("%d REGISTER attempts during an %v outage of %d instances (more than %d)", during, outage, n, max)
	}
	t.Logf("%d instances; %d REGISTER cycles during the %v outage (%.1f per instance)", n, during, outage, float64(during)/n)
	byPhase, _ = a.Manager().Counts()
	if got := byPhase[instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}]; got != n-1 {
		t.Errorf("%d Registered after recovery, want %d: %v", got, n-1, byPhase)
	}
	a.Stop()
	stopped = true
}
