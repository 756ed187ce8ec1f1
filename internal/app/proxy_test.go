package app

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/siptest"
)

// stunnelSettings is a server whose HTTP port sits behind stunnel on
// 127.0.0.1, with a bcrypt administrator password.
func stunnelSettings(t *testing.T, dir, trusted, hash string) *config.Settings {
	t.Helper()
	xml := fmt.Sprintf(`<Sipis>
  <Server Name="test-node" Address="127.0.0.1" Port="0"/>
  <Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/></Sip>
  <HttpServer Address="127.0.0.1" Port="0" TrustedProxies="%s"/>
  <Administrator UserName="admin" Password="%s"/>
  <Database OpenString="sipis.db"/>
  <Lock FileName="sipis.lock"/>
  <Log Stdio="None" Level="Info"/>
  <Probe Enabled="No"/>
</Sipis>`, trusted, hash)
	s, err := config.Parse([]byte(xml), dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGuessStormThroughStunnelLocksOutOnlyTheGuesser puts a real stunnel4 in
// front of the HTTP port, as operators do, and sends 40 parallel wrong
// passwords from one client (127.0.0.2). With <HttpServer
// TrustedProxies="127.0.0.1"> stunnel's PROXY line names each client, so
// the guesser is locked out and another client (127.0.0.3) still logs in;
// without it every client is stunnel's address and shares the lockout.
func TestGuessStormThroughStunnelLocksOutOnlyTheGuesser(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("right-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		trusted      string
		victimLocked bool
	}{{"127.0.0.1", false}, {"", true}} {
		t.Run("TrustedProxies="+c.trusted, func(t *testing.T) {
			a := startApp(t, stunnelSettings(t, t.TempDir(), c.trusted, string(hash)))
			t.Cleanup(a.Stop)
			st := siptest.StartStunnel(t, siptest.StunnelOptions{
				Connect: strings.TrimPrefix(a.HTTPURL(), "http://"), ProxyProtocol: c.trusted != "",
			})
			guesser, victim := st.Client("127.0.0.2"), st.Client("127.0.0.3")
			get := func(cl *http.Client, pass string) int {
				req, _ := http.NewRequestWithContext(t.Context(), "GET", st.URL()+"/debug/pprof/cmdline", nil)
				req.SetBasicAuth("admin", pass)
				resp, err := cl.Do(req)
				if err != nil {
					t.Error(err)
					return 0
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			var mu sync.Mutex
			codes := map[int]int{}
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code := get(guesser, fmt.Sprintf("guess-%d", i))
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			t.Logf("40 parallel wrong passwords through stunnel: %v", codes)
			if codes[401] > 5 || codes[401]+codes[429] != 40 {
				t.Errorf("storm answers %v: want at most 5 checked (401), the rest 429", codes)
			}
			if code := get(guesser, "right-password"); code != 429 {
				t.Errorf("guesser with the right password: %d, want 429", code)
			}
			want := 200
			if c.victimLocked {
				want = 429
			}
			if code := get(victim, "right-password"); code != want {
				t.Errorf("other client with the right password: %d, want %d", code, want)
			}
		})
	}
}

// TestDeviceSecretGuessesThrottled guesses device secrets against the real
// /sipis/messages route: after five refusals the address waits (429) and
// the route's handler no longer checks the store, while another selector
// from the same address is still answered.
func TestDeviceSecretGuessesThrottled(t *testing.T) {
	a := startApp(t, testSettings(t, t.TempDir(), ""))
	t.Cleanup(a.Stop)
	get := func(sel string) (int, string) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", a.HTTPURL()+"/sipis/messages?s="+sel, nil)
		req.Header.Set("X-Sipis-Device", "phone-1")
		req.Header.Set("X-Sipis-Secret", "guess")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i := range 5 {
		if code, _ := get("0a1b2c3d"); code != 403 && code != 401 {
			t.Fatalf("guess %d: %d, want 401 or 403", i, code)
		}
	}
	if code, ra := get("0a1b2c3d"); code != 429 || ra == "" {
		t.Errorf("sixth guess: %d Retry-After %q, want 429 with Retry-After", code, ra)
	}
	if code, _ := get("0a1b2c3e"); code != 403 && code != 401 {
		t.Errorf("another selector: %d, want a refusal of its own, not 429", code)
	}
}
