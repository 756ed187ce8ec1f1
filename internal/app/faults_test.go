package app

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// TestFaultsStayWithTheirInstance gives one server accounts whose proxies refuse, stay
// silent, answer garbage, cannot be resolved or want another password, beside healthy
// ones: each faulty instance ends in a clear error state with its reason, and every healthy
// one registers as if nothing happened.
func TestFaultsStayWithTheirInstance(t *testing.T) {
	reg := siptest.NewRegistrar(t, siptest.WithPassword("wrongpw", "the-right-one"))
	reg.SetBehaviour("garbage", siptest.Garbage)
	reg.SetBehaviour("silent", siptest.NoAnswer)
	reg.SetBehaviour("forbidden", siptest.Answer403)
	reg.SetBehaviour("busy", siptest.Answer503(10*time.Minute))
	a := startApp(t, testSettings(t, t.TempDir(), ""))
	defer a.Stop()

	send := func(sel, user, proxy string, port int) {
		r := &registration.Registration{Version: registration.Version, Selector: sel, Mode: registration.ModeBackground,
			Account: registration.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: proxy, Port: port, Transport: "udp"},
			Device:  registration.Device{ID: "p", Platform: "none"}, Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
		sealed, _ := registration.Seal(r, a.PublicKey())
		if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
			t.Fatalf("%s: %d %s", user, code, body)
		}
	}
	faulty := []struct {
		sel, user, proxy string
		want             instance.Status
		reason           string
	}{
		{"f0000001", "garbage", reg.Host(), instance.Error, "no response"},
		{"f0000002", "silent", reg.Host(), instance.Error, "no response"},
		{"f0000003", "forbidden", reg.Host(), instance.Unauthorized, "403"},
		{"f0000004", "busy", reg.Host(), instance.Error, "503"},
		{"f0000005", "nohost", "no-such-host.invalid", instance.Error, "no-such-host.invalid"},
		{"f0000006", "wrongpw", reg.Host(), instance.Unauthorized, "401"},
	}
	for _, f := range faulty {
		send(f.sel, f.user, f.proxy, reg.Port())
	}
	const healthy = 30
	for i := range healthy {
		send(fmt.Sprintf("e%07d", i), fmt.Sprintf("ok%02d", i), reg.Host(), reg.Port())
	}
	// The transaction timeout of the test settings is 2 s: silent proxies show within it.
	for _, f := range faulty {
		waitAll(t, f.user, 10*time.Second, func() (bool, string) {
			s, _ := a.Manager().Snapshot(f.sel)
			return s.Phase == instance.Phase{State: instance.RegisterLoop, Status: f.want} && strings.Contains(s.LastError, f.reason),
				fmt.Sprintf("%v %q", s.Phase, s.LastError)
		})
	}
	for i := range healthy {
		s, _ := a.Manager().Snapshot(fmt.Sprintf("e%07d", i))
		if s.Phase != (instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}) {
			t.Errorf("healthy instance %d: %v %q", i, s.Phase, s.LastError)
		}
	}
	// The reason is shown to operators on /debug, and no password is.
	info, err := (&backend{app: a}).Debug(t.Context(), "f0000003")
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(info)
	if !strings.Contains(text, "403") || strings.Contains(text, "pw-forbidden") || !strings.Contains(text, "Not Empty") {
		t.Errorf("debug page: %s", text)
	}
}
