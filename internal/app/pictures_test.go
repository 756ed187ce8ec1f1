package app

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/trend"
	"github.com/sipis/sipis/pkg/registration"
)

// fillTrends replaces a's trends with a day of synthetic samples up to now: every chart
// full (with every series the sampler reads, so that a real sample cannot add one), a burst of
// failures and a probe going down in the last hour.
func fillTrends(a *App, now time.Time) {
	r := trend.New()
	defer a.pics.trends.Store(r)
	start := now.Add(-24 * time.Hour)
	var cycles, fails, acc, missed, rej, sent, refused float64
	for m := 0; m <= 24*60; m++ {
		at := start.Add(time.Duration(m) * time.Minute)
		cycles += 30 + float64(m%7)
		fails++
		if m == 24*60-20 {
			fails += 60
		}
		acc += float64(m % 3)
		missed += float64(m % 2)
		rej += float64(m%5) / 4
		sent += float64(m%4 + 1)
		refused += float64(m % 2)
		down := 0.0
		if m > 24*60-45 && m < 24*60-30 {
			down = 1
		}
		r.Add(at, []trend.Reading{
			{Name: "instances.idle", Kind: trend.Gauge, Value: 20 + float64(m%11)},
			{Name: "instances.registered", Kind: trend.Gauge, Value: 900 + float64(m/30)},
			{Name: "instances.error", Kind: trend.Gauge, Value: 5 + 40*down},
			{Name: "instances.unauthorized", Kind: trend.Gauge, Value: 2},
			{Name: "instances.registering", Kind: trend.Gauge, Value: float64(m % 4)},
			{Name: "register.cycles", Kind: trend.Counter, Value: cycles},
			{Name: "register.failures", Label: "REGISTER failures", Kind: trend.Counter, Watch: trend.WatchBurst, Value: fails},
			{Name: "calls.accepted", Kind: trend.Counter, Value: acc},
			{Name: "calls.missed", Kind: trend.Counter, Value: missed},
			{Name: "calls.rejected", Kind: trend.Counter, Value: rej},
			{Name: "push.APNs sent", Kind: trend.Counter, Value: sent},
			{Name: "push.FCM refused UNREGISTERED", Kind: trend.Counter, Value: refused},
			{Name: "probes.up", Kind: trend.Gauge, Value: 2 - down},
			{Name: "probes.down", Label: "probes down", Kind: trend.Gauge, Watch: trend.WatchChange, Value: down},
		})
	}
}

// adminGet fetches path as the administrator.
func adminGet(t *testing.T, a *App, path string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", a.HTTPURL()+path, nil)
	req.SetBasicAuth("admin", "secret-admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// picturesInstance registers an instance with an APNs device at the digest registrar while
// someone watches its /debug page, calls it and cancels, and sends it a MESSAGE.
func picturesInstance(t *testing.T) (*App, string) {
	t.Helper()
	apns := pushtest.NewAPNs(t)
	dir := t.TempDir()
	a := startApp(t, apnsSettings(t, dir, apns, ""))
	t.Cleanup(a.Stop)
	reg := siptest.NewRegistrar(t, siptest.WithPassword("carol", "pw-carol"))
	const sel = "1add3e1add3e1add"
	send := func(mode registration.Mode) {
		r := newReg(sel, "carol", reg, mode)
		r.Device = registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK,
			AlertToken: pushtest.TokenOK + "02", AppID: apns.Topic, Secret: "device-secret-carol"}
		sealed, _ := registration.Seal(r, a.PublicKey())
		if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
			t.Fatalf("register: %d %s", code, body)
		}
	}
	send(registration.ModeForeground)
	if page := adminGet(t, a, "/debug?s="+sel); !strings.Contains(page, "No call recorded.") {
		t.Fatalf("a fresh instance's ladder is not empty:\n%s", page)
	}
	send(registration.ModeBackground)
	waitPhase(t, a, sel, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})

	d, _ := a.mgr.Debug(sel)
	caller := siptest.NewCaller(t)
	next := func(callID, method string) *siptest.CallResponse {
		t.Helper()
		res, err := caller.Next(callID, method, 5*time.Second)
		if err != nil {
			t.Fatalf("waiting for a response to %s: %v", method, err)
		}
		return res
	}
	inv := caller.Invite(a.SIPAddr("udp"), d.ContactUser, `P-Asserted-Identity: "Dave" <sip:+41449876543@example.org>`)
	if r := next(inv.CallID, "INVITE"); r.Header("X-Sipis-Push-Status") != "Alerting-Device" {
		t.Fatalf("first 180 %d %q", r.Status, r.Header("X-Sipis-Push-Status"))
	}
	if r := next(inv.CallID, "INVITE"); r.Header("X-Sipis-Push-Status") != "Push-Notification-Sent" {
		t.Fatalf("second 180 %d %q", r.Status, r.Header("X-Sipis-Push-Status"))
	}
	inv.Cancel()
	if r := next(inv.CallID, "CANCEL"); r.Status != 200 {
		t.Fatalf("CANCEL: %d", r.Status)
	}
	if r := next(inv.CallID, "INVITE"); r.Status != 487 {
		t.Fatalf("INVITE after CANCEL: %d", r.Status)
	}
	id := caller.Message(a.SIPAddr("udp"), d.ContactUser, "text/plain", []byte("call me back"))
	if r := next(id, "MESSAGE"); r.Status != 200 {
		t.Fatalf("MESSAGE: %d", r.Status)
	}
	// The pushes are answered before they are drawn: wait for the missed-call and message pushes.
	deadline := time.Now().Add(5 * time.Second)
	for len(apns.Pushes()) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	return a, sel
}

// TestLadderOfARealInstance: /debug draws the REGISTER with its challenge, the call with the
// push stages, the push to APNs with its topic and answer, the CANCEL and 487, and the MESSAGE
// with its push; no password or Authorization value appears, and no message text while the
// instance's log is off.
func TestLadderOfARealInstance(t *testing.T) {
	a, sel := picturesInstance(t)
	page := adminGet(t, a, "/debug?s="+sel)
	ladder := page[strings.Index(page, `<h2 id="ladder">`):strings.Index(page, "<h2>State</h2>")]
	for _, want := range []string{
		">REGISTER <tspan", "401 Unauthorized", "200 OK <tspan class=\"note\">expires 3600</tspan>",
		`id="call-1"`, "call at ", "— 487 Request Terminated", ">INVITE <tspan", `<tspan class="note">Alerting-Device</tspan>`,
		`<tspan class="note">Push-Notification-Sent</tspan>`, ">CANCEL <tspan", "200 OK (CANCEL)", ">487 Request Terminated<",
		"call push to iphone (APNs, topic " + "com.example.softphone" + ".voip)", "missed-call push to iphone (APNs, topic com.example.softphone)",
		">200 accepted", ">MESSAGE <tspan", "message push to iphone (APNs", ">device iphone</text>", ">push service</text>",
	} {
		if !strings.Contains(ladder, want) {
			t.Errorf("ladder lacks %q", want)
		}
	}
	for _, secret := range []string{"pw-carol", "Digest ", "response=", "call me back", "device-secret"} {
		if strings.Contains(page, secret) {
			t.Errorf("/debug shows %q", secret)
		}
	}
	if strings.Contains(ladder, `<details class="body">`) {
		t.Error("message texts shown while the log is off")
	}
	// The time since the first message grows down the call.
	var times []string
	call := ladder[strings.Index(ladder, `id="call-1"`):]
	call = call[:strings.Index(call, "</svg>")]
	for _, m := range regexp.MustCompile(`>&#43;(\d+\.\d{3}) s<`).FindAllStringSubmatch(call, -1) {
		times = append(times, m[1])
	}
	if len(times) < 8 || times[0] != "0.000" {
		t.Errorf("call times %v", times)
	}
	for i := 1; i < len(times); i++ {
		if times[i] < times[i-1] && len(times[i]) == len(times[i-1]) {
			t.Errorf("times not in order: %v", times)
		}
	}
}

// TestTrendsOfARealServer: the sampler puts the REGISTER cycles, the missed call, the pushes
// per platform and the instances per state in the trends, serves them on /stats/trends/json and
// draws them on /stats; after a restart the last hour comes back from the store.
func TestTrendsOfARealServer(t *testing.T) {
	a, _ := picturesInstance(t)
	a.pics.sample(context.Background())
	got := map[string]float64{}
	series, _ := trendSource{a.pics}.Trends(time.Now().Add(-time.Hour))
	for _, s := range series {
		sum := 0.0
		for _, p := range s.Points {
			if p.Value == p.Value { // not NaN
				if s.Counter {
					sum += p.Value
				} else {
					sum = p.Value
				}
			}
		}
		got[s.Name] = sum
	}
	if got["register.cycles"] < 1 || got["calls.missed"] != 1 || got["push.APNs sent"] != 3 ||
		got["instances.registered"] != 1 {
		t.Errorf("trend sums %v", got)
	}
	body := adminGet(t, a, "/stats/trends/json")
	if !strings.Contains(body, `"Name":"push.APNs sent","Kind":"counter"`) {
		t.Errorf("trends JSON %s", body[:min(400, len(body))])
	}
	page := adminGet(t, a, "/stats")
	if !strings.Contains(page, `id="chart-calls"`) || !strings.Contains(page, `data-series="APNs sent"`) {
		t.Errorf("/stats has no calls chart or pushes series")
	}

	settings := a.settings
	a.Stop()
	b := startApp(t, settings)
	defer b.Stop()
	series, _ = trendSource{b.pics}.Trends(time.Now().Add(-time.Hour))
	missed := 0.0
	for _, s := range series {
		for _, p := range s.Points {
			if s.Name == "calls.missed" && p.Value == p.Value {
				missed += p.Value
			}
		}
	}
	if missed != 1 {
		t.Errorf("missed calls after the restart %v, want 1 from the store", missed)
	}
}

// TestDeviceArrowsInTheLadder: a device taking a call and its answers become arrows between
// its column and sipis, and the responses relayed upstream arrows to the proxy.
func TestDeviceArrowsInTheLadder(t *testing.T) {
	p := (&App{}).newPictures()
	const sel = "0d0d"
	p.book.Watch(sel)
	r := callRecorder{p}
	r.Request(sel, "c1", "INVITE", "192.0.2.1:5060", func() string { return "" })
	r.DeviceMessage(sel, "c1", "iphone", false, "REGISTER", "X-Sipis-Token: Not Empty")
	r.DeviceMessage(sel, "c1", "iphone", true, "INVITE", "relayed")
	r.DeviceMessage(sel, "c1", "", false, "200 OK", "")
	r.Relayed(sel, "c1", 200, "OK")
	l := p.ladderOf(sel, []string{"iphone"})
	if len(l.Calls) != 1 {
		t.Fatalf("calls %+v", l.Calls)
	}
	var got []string
	for _, m := range l.Calls[0].Msgs {
		got = append(got, m.From+">"+m.To+" "+m.Label)
	}
	want := "proxy>sipis INVITE|device iphone>sipis REGISTER|sipis>device iphone INVITE|device ?>sipis 200 OK|sipis>proxy 200 OK"
	if strings.Join(got, "|") != want {
		t.Errorf("arrows\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
	if l.Calls[0].Outcome != "200 OK (from a device)" {
		t.Errorf("outcome %q", l.Calls[0].Outcome)
	}
}

// TestTestPushReportsOnDebug: the test push sent from /debug comes back to /debug with the
// device, platform, topic and APNs's answer, and is drawn in the ladder.
func TestTestPushReportsOnDebug(t *testing.T) {
	a, sel := picturesInstance(t)
	form := url.Values{"s": {sel}, "user": {"admin"}, "password": {"secret-admin"}, "return": {"debug"}}
	req, _ := http.NewRequest("POST", a.HTTPURL()+"/stats/actions/testpush", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", a.HTTPURL())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, page)
	}
	row := regexp.MustCompile(`<tr data-device="iphone"><td>iphone</td><td>APNs</td><td>com.example.softphone</td><td>Delivered</td><td>200 accepted id [0-9a-fA-F-]{36}</td>`)
	if !strings.Contains(page, "<title>Debug "+sel) || !row.MatchString(page) {
		t.Errorf("the result page lacks the device's result:\n%s", page)
	}
	if !strings.Contains(page, "test push to iphone (APNs, topic com.example.softphone)") {
		t.Error("the test push is not in the ladder")
	}
}
