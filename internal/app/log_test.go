package app

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// TestInstanceLogThroughWeb: /log?s= (admin) turns on the instance's detailed log, the next
// REGISTER is written to its file (password never), and the page shows the file.
func TestInstanceLogThroughWeb(t *testing.T) {
	reg := siptest.NewRegistrar(t)
	a := startApp(t, testSettings(t, t.TempDir(), ""))
	defer a.Stop()
	r := newReg("10ab10ab10ab10ab", "logger", reg, registration.ModeBackground)
	sealed, _ := registration.Seal(r, a.PublicKey())
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	waitPhase(t, a, r.Selector, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})

	get := func(user, pass string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, a.HTTPURL()+"/log?s="+r.Selector, nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("admin", "wrong"); code != 401 {
		t.Fatalf("wrong password: %d", code)
	}
	if s, _ := a.Manager().Snapshot(r.Selector); s.Logging {
		t.Fatal("a refused /log turned logging on")
	}
	if code, body := get("admin", "secret-admin"); code != 200 {
		t.Fatalf("/log: %d %s", code, body)
	}
	// A new registration from the app makes a REGISTER now.
	r2 := *r
	r2.Nonce, r2.Timestamp = registration.NewNonce(), time.Now().UTC()
	sealed, _ = registration.Seal(&r2, a.PublicKey())
	post(t, a.HTTPURL(), sealed)
	path := a.instanceLogPath(r.Selector)
	var content string
	waitAll(t, "REGISTER in the instance log", 5*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(path)
		content = string(b)
		return strings.Contains(content, "REGISTER sip:"), content
	})
	if strings.Contains(content, "pw-logger") {
		t.Error("the password is in the instance log")
	}
	if _, body := get("admin", "secret-admin"); !strings.Contains(body, "REGISTER sip:") {
		t.Error("/log does not show the file's content")
	}
}

// TestNoInstanceLog: <Log InstanceFileName="/dev/null"> means no instance log: /log says so
// with 409, turns nothing on and writes no file.
func TestNoInstanceLog(t *testing.T) {
	reg := siptest.NewRegistrar(t)
	s := testSettings(t, t.TempDir(), "")
	s.Log.InstanceFileName = config.NoInstanceLog
	a := startApp(t, s)
	defer a.Stop()
	r := newReg("20ab20ab20ab20ab", "nolog", reg, registration.ModeBackground)
	sealed, _ := registration.Seal(r, a.PublicKey())
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	req, _ := http.NewRequest(http.MethodGet, a.HTTPURL()+"/log?s="+r.Selector, nil)
	req.SetBasicAuth("admin", "secret-admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "instance logs are off") {
		t.Errorf("/log = %d %s, want 409 saying instance logs are off", resp.StatusCode, body)
	}
	if snap, _ := a.Manager().Snapshot(r.Selector); snap.Logging {
		t.Error("/log turned logging on")
	}
	if l := a.instanceLogger(r.Selector); l != nil {
		t.Error("an instance logger exists with instance logs off")
	}
}
