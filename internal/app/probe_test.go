package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// mailSink is a local SMTP server keeping every message it receives.
type mailSink struct {
	mu   sync.Mutex
	msgs []string
	addr *net.TCPAddr
}

type sinkSession struct{ s *mailSink }

func (ss sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (ss sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss sinkSession) Reset()                               {}
func (ss sinkSession) Logout() error                        { return nil }
func (ss sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, string(b))
	ss.s.mu.Unlock()
	return err
}

func newMailSink(t *testing.T) *mailSink {
	s := &mailSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }))
	srv.Domain = "localhost"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().(*net.TCPAddr)
	return s
}

func (s *mailSink) about(target string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if strings.Contains(m, target) {
			out = append(out, m)
		}
	}
	return out
}

// hookSink receives signed webhook alerts.
type hookSink struct {
	mu     sync.Mutex
	bodies []map[string]any
	bad    int
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get(probe.SignatureHeader) != probe.Sign([]byte("webhook-secret-0123456789"), body) {
		h.bad++
		w.WriteHeader(401)
		return
	}
	var doc map[string]any
	json.Unmarshal(body, &doc)
	h.bodies = append(h.bodies, doc)
}

func (h *hookSink) about(target string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, b := range h.bodies {
		if b["target"] == target {
			out = append(out, b)
		}
	}
	return out
}

func TestProbesAgainstKamailioWithAlerts(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	mail := newMailSink(t)
	hooks := &hookSink{}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()

	dir := t.TempDir()
	s := testSettings(t, dir, "")
	probeXML := fmt.Sprintf(`<Sipis>
  <Probe Enabled="Yes" DownAfter="2" UpAfter="2" ProbeInstanceProxies="Yes">
    <Interval Seconds="2"/><Timeout Seconds="1"/>
    <Target Uri="sip:no-such-host.invalid" Transport="udp"/>
    <Alerts>
      <MinInterval Seconds="1"/>
      <Smtp Host="127.0.0.1" Port="%d" StartTls="No" From="sipis@test.invalid"/>
      <EmailTo Address="ops@test.invalid"/>
      <Webhook Url="%s" Secret="webhook-secret-0123456789"/>
    </Alerts>
  </Probe></Sipis>`, mail.addr.Port, hookSrv.URL)
	ps, err := parseSettingsFragment(probeXML, dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Probe = ps.Probe
	a := startApp(t, s)
	defer a.Stop()

	// An instance whose proxy is Kamailio makes Kamailio a probe target.
	r := &registration.Registration{Version: registration.Version, Selector: "cafe0001cafe0001", Mode: registration.ModeBackground,
		Account: registration.Account{User: "user0001", Password: siptest.KamailioPassword("user0001"), Domain: k.Domain(),
			Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
		Device: registration.Device{ID: "p", Platform: "none"}, Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
	sealed, _ := registration.Seal(r, a.PublicKey())
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	target := fmt.Sprintf("sip:%s:%d;transport=udp", k.Host(), k.Port())
	mailKey := fmt.Sprintf("%s:%d", k.Host(), k.Port()) // mail bodies are quoted-printable: '=' is encoded
	state := func(tg string) (string, string) {
		for _, p := range (probeSource{a}).Probes() {
			if p.Target == tg {
				return p.State, p.LastError
			}
		}
		return "absent", ""
	}
	waitState := func(tg, want string, within time.Duration) {
		t.Helper()
		waitAll(t, tg+" "+want, within, func() (bool, string) {
			st, e := state(tg)
			return st == want, st + " " + e
		})
	}
	waitState(target, "up", 10*time.Second)
	waitState("sip:no-such-host.invalid;transport=udp", "down", 10*time.Second)
	if _, e := state("sip:no-such-host.invalid;transport=udp"); e == "" {
		t.Error("the unresolvable target is down without an error")
	}

	k.Stop()
	waitState(target, "down", 10*time.Second)
	var row bool
	(&backend{app: a}).Instances(t.Context(), webQuery{Selector: "cafe0001cafe0001"}, func(r webRow) error { row = r.ProxyDown; return nil })
	if !row {
		t.Error("the instance does not show that its proxy is down")
	}
	waitAll(t, "one alert per channel for down", 10*time.Second, func() (bool, string) {
		mail.mu.Lock()
		all := len(mail.msgs)
		mail.mu.Unlock()
		return len(mail.about(mailKey)) == 1 && len(hooks.about(target)) == 1,
			fmt.Sprintf("%d mails (%d in all), %d webhooks; prober %+v", len(mail.about(mailKey)), all, len(hooks.about(target)), a.prober.Stats())
	})
	if m := mail.about(mailKey)[0]; !strings.Contains(m, "DOWN") {
		t.Errorf("down mail:\n%s", m)
	}
	if h := hooks.about(target)[0]; h["newState"] != "down" || h["oldState"] != "up" {
		t.Errorf("down webhook %v", h)
	}

	k.Start()
	waitState(target, "up", 15*time.Second)
	waitAll(t, "one more alert per channel for up", 10*time.Second, func() (bool, string) {
		return len(mail.about(mailKey)) == 2 && len(hooks.about(target)) == 2,
			fmt.Sprintf("%d mails, %d webhooks", len(mail.about(mailKey)), len(hooks.about(target)))
	})
	// Nothing more may follow: an absence has no event to wait for, so this real-time wait
	// (several probe intervals) is the assertion itself.
	time.Sleep(2 * time.Second)
	if len(mail.about(mailKey)) != 2 || len(hooks.about(target)) != 2 || hooks.bad != 0 {
		t.Errorf("%d mails, %d webhooks, %d badly signed", len(mail.about(mailKey)), len(hooks.about(target)), hooks.bad)
	}
	if h := hooks.about(target)[1]; h["newState"] != "up" {
		t.Errorf("up webhook %v", h)
	}
	evs, err := a.Store().ProbeEvents(t.Context(), target, 10)
	if err != nil || len(evs) != 2 || evs[0].NewState != "up" || evs[1].NewState != "down" {
		t.Errorf("stored history %+v %v", evs, err)
	}
}
