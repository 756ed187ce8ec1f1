package web

import (
	"encoding/json"
	"math"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeTrends is an hour of synthetic history: instances by state, REGISTER cycles and a burst
// of failures at minute 40, calls, pushes, and a probe down from minute 20 to 30.
type fakeTrends struct{ now time.Time }

func (f fakeTrends) Trends(since time.Time) ([]TrendSeries, []TrendMark) {
	to := f.now.Truncate(time.Minute)
	mk := func(name string, counter bool, v func(m int) float64) TrendSeries {
		s := TrendSeries{Name: name, Counter: counter}
		for m := 60; m >= 1; m-- {
			at := to.Add(-time.Duration(m-1) * time.Minute)
			if at.Before(since) {
				continue
			}
			s.Points = append(s.Points, TrendPoint{At: at, Value: v(60 - m)})
		}
		return s
	}
	down := func(m int) bool { return m >= 20 && m < 30 }
	series := []TrendSeries{
		mk("instances.registered", false, func(m int) float64 { return 900 + float64(m) }),
		mk("instances.error", false, func(m int) float64 {
			if down(m) {
				return 120
			}
			return 3
		}),
		mk("instances.idle", false, func(m int) float64 { return 50 }),
		mk("register.cycles", true, func(m int) float64 { return 30 + 5*math.Sin(float64(m)/5) }),
		mk("register.failures", true, func(m int) float64 {
			if m == 40 {
				return 80
			}
			return 1
		}),
		mk("calls.accepted", true, func(m int) float64 { return float64(m % 4) }),
		mk("calls.missed", true, func(m int) float64 { return float64(m % 3) }),
		mk("calls.rejected", true, func(m int) float64 {
			if m == 33 { // a minute without a reading breaks the line
				return math.NaN()
			}
			return 1
		}),
		mk("push.APNs sent", true, func(m int) float64 { return float64(m % 5) }),
		mk("push.FCM refused BadToken", true, func(m int) float64 { return float64(m % 2) }),
		mk("probes.up", false, func(m int) float64 {
			if down(m) {
				return 1
			}
			return 2
		}),
		mk("probes.down", false, func(m int) float64 {
			if down(m) {
				return 1
			}
			return 0
		}),
	}
	marks := []TrendMark{
		{At: to.Add(-39 * time.Minute), Text: "probe sip.example.com down"},
		{At: to.Add(-29 * time.Minute), Text: "probe sip.example.com up"},
		{At: to.Add(-19 * time.Minute), Text: "burst of REGISTER failures: 80 a minute"},
	}
	var out []TrendMark
	for _, m := range marks {
		if !m.At.Before(since) {
			out = append(out, m)
		}
	}
	return series, out
}

// TestStatsCharts: /stats draws a chart per group above the tables, a line per series (two
// where a minute is missing), the marks of the changes of state, and nothing the CSP would
// block: no script and no style attribute in the charts.
func TestStatsCharts(t *testing.T) {
	f := newFake()
	f.add(row("01", 1000))
	s, _ := newTestServer(t, f, func(o *Options) { o.Trends = fakeTrends{now: testNow} })
	res := do(t, s, req{path: "/stats"})
	if res.Code != 200 {
		t.Fatalf("/stats: %d %s", res.Code, res.Body)
	}
	body := res.Body.String()
	i, j := strings.Index(body, `<h2 id="trends">`), strings.Index(body, "<h2>Server</h2>")
	if i < 0 || j < i {
		t.Fatalf("no trends section above the tables:\n%s", body)
	}
	charts := body[i:j]
	for _, id := range []string{"instances", "register", "calls", "push", "probes"} {
		if !strings.Contains(charts, `<figure class="chart" id="chart-`+id+`">`) {
			t.Errorf("no chart %s", id)
		}
	}
	if n := strings.Count(charts, `<g class="series"`); n != 12 {
		t.Errorf("%d series drawn, want 12", n)
	}
	if n := strings.Count(charts, "<polyline "); n != 13 {
		t.Errorf("%d polylines, want 13 (calls.rejected broken in two)", n)
	}
	if n := strings.Count(charts, `<g class="mark">`); n != 3*5 {
		t.Errorf("%d marks, want 3 on each of 5 charts", n)
	}
	for _, want := range []string{`data-series="failures"`, `data-series="FCM refused BadToken"`,
		"probe sip.example.com down", "burst of REGISTER failures: 80 a minute", ">03:04 UTC<", ">02:04<", ">02:34<"} {
		if !strings.Contains(charts, want) {
			t.Errorf("charts lack %q", want)
		}
	}
	if strings.Contains(charts, "style=") || strings.Contains(charts, "<script") {
		t.Error("charts use a style attribute or a script, which the CSP blocks")
	}
	// Every point lies inside the plot.
	for _, m := range regexp.MustCompile(`points="([^"]*)"`).FindAllStringSubmatch(charts, -1) {
		for _, p := range strings.Fields(m[1]) {
			var x, y float64
			if _, err := fmtSscanf(p, &x, &y); err != nil || x < chartLeft || x > chartW-chartRight || y < chartTop || y > chartH-chartBot {
				t.Fatalf("point %q outside the plot", p)
			}
		}
	}
	res = do(t, s, req{path: "/stats?window=24h"})
	if res.Code != 200 || !strings.Contains(res.Body.String(), "Last 24 hours") {
		t.Errorf("/stats?window=24h: %d", res.Code)
	}
	if res := do(t, s, req{path: "/stats?window=2y"}); res.Code != 400 {
		t.Errorf("/stats?window=2y: %d, want 400", res.Code)
	}
	// Without a trend source there is no chart.
	s2, _ := newTestServer(t, f)
	if strings.Contains(do(t, s2, req{path: "/stats"}).Body.String(), `id="trends"`) {
		t.Error("trends section without a source")
	}
}

func fmtSscanf(p string, x, y *float64) (int, error) {
	var err error
	xs, ys, _ := strings.Cut(p, ",")
	if *x, err = parseFloat(xs); err != nil {
		return 0, err
	}
	*y, err = parseFloat(ys)
	return 2, err
}

func parseFloat(s string) (float64, error) {
	var f float64
	err := json.Unmarshal([]byte(s), &f)
	return f, err
}

// TestTrendsJSON: /stats/trends/json carries every series a point a minute, null where there
// was no reading, and the marks.
func TestTrendsJSON(t *testing.T) {
	s, _ := newTestServer(t, newFake(), func(o *Options) { o.Trends = fakeTrends{now: testNow} })
	res := do(t, s, req{path: "/stats/trends/json"})
	if res.Code != 200 || !strings.HasPrefix(res.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("%d %s", res.Code, res.Header().Get("Content-Type"))
	}
	var doc struct {
		StepSeconds int
		Series      []struct {
			Name, Kind string
			Points     []struct {
				At    time.Time
				Value *float64
			}
		}
		Marks []struct {
			At   time.Time
			Text string
		}
	}
	if err := json.Unmarshal(res.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.StepSeconds != 60 || len(doc.Series) != 12 || len(doc.Marks) != 3 {
		t.Fatalf("step %d, %d series, %d marks", doc.StepSeconds, len(doc.Series), len(doc.Marks))
	}
	for _, sr := range doc.Series {
		if len(sr.Points) != 60 {
			t.Errorf("%s: %d points", sr.Name, len(sr.Points))
		}
		if sr.Name == "register.failures" && (sr.Kind != "counter" || *sr.Points[40].Value != 80) {
			t.Errorf("failures %s %v", sr.Kind, *sr.Points[40].Value)
		}
		if sr.Name == "calls.rejected" && sr.Points[33].Value != nil {
			t.Errorf("missing minute is %v, want null", *sr.Points[33].Value)
		}
		if sr.Name == "instances.registered" && sr.Kind != "gauge" {
			t.Errorf("instances kind %s", sr.Kind)
		}
	}
	if res := do(t, s, req{path: "/stats/trends/json?window=1h"}); res.Code != 200 {
		t.Errorf("window=1h: %d", res.Code)
	}
}

// testLadder is an instance that registered (challenged), was called and the caller
// cancelled, and got a MESSAGE; the REGISTER's text carries credentials that must not show.
func testLadder(bodies bool) *Ladder {
	t0 := testNow.Add(-10 * time.Minute)
	ms := func(d int) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }
	body := ""
	if bodies {
		body = "REGISTER sip:example.com SIP/2.0\r\nAuthorization: Digest username=\"alice\", response=\"0123abcd\"\r\nCall-ID: reg-1\r\n"
	}
	return &Ladder{
		Devices: []string{"iphone", "pixel"},
		Bodies:  bodies,
		Transactions: []LadderExchange{
			{Kind: "REGISTER", Key: "reg-1", Start: t0, Outcome: "registered, expires 3600 s", Msgs: []LadderMsg{
				{At: ms(0), Timed: true, From: LadderSipis, To: LadderProxy, Label: "REGISTER", Note: "expires 3600"},
				{From: LadderProxy, To: LadderSipis, Label: "401 Unauthorized", Note: "challenge"},
				{From: LadderSipis, To: LadderProxy, Label: "REGISTER", Note: "Authorization: Not Empty", Body: body},
				{At: ms(42), Timed: true, From: LadderProxy, To: LadderSipis, Label: "200 OK", Note: "expires 3600"},
			}},
			{Kind: "MESSAGE", Key: "msg-1", Start: ms(60_000), Outcome: "stored", Msgs: []LadderMsg{
				{At: ms(60_000), Timed: true, From: LadderProxy, To: LadderSipis, Label: "MESSAGE"},
				{At: ms(60_005), Timed: true, From: LadderSipis, To: LadderProxy, Label: "200 OK"},
				{At: ms(60_006), Timed: true, From: LadderSipis, To: LadderPush, Label: "message push to iphone (APNs)"},
				{At: ms(60_090), Timed: true, From: LadderPush, To: LadderSipis, Label: "200 accepted"},
			}},
		},
		Calls: []LadderExchange{
			{Kind: "call", Key: "call-1@example.org", Start: ms(30_000), Outcome: "487 Request Terminated", Msgs: []LadderMsg{
				{At: ms(30_000), Timed: true, From: LadderProxy, To: LadderSipis, Label: "INVITE"},
				{At: ms(30_002), Timed: true, From: LadderSipis, To: LadderProxy, Label: "180 Ringing", Note: "Alerting-Device"},
				{At: ms(30_003), Timed: true, From: LadderSipis, To: LadderPush, Label: "call push to iphone (APNs, topic com.example.phone.voip)"},
				{At: ms(30_150), Timed: true, From: LadderPush, To: LadderSipis, Label: "200 accepted"},
				{At: ms(30_151), Timed: true, From: LadderSipis, To: LadderProxy, Label: "180 Ringing", Note: "Push-Notification-Sent"},
				{At: ms(34_000), Timed: true, From: LadderProxy, To: LadderSipis, Label: "CANCEL"},
				{At: ms(34_001), Timed: true, From: LadderSipis, To: LadderProxy, Label: "200 OK"},
				{At: ms(34_002), Timed: true, From: LadderSipis, To: LadderProxy, Label: "487 Request Terminated"},
				{At: ms(34_003), Timed: true, From: LadderSipis, To: LadderPush, Label: "cancel push to iphone (APNs)"},
				{At: ms(34_090), Timed: true, From: LadderPush, To: LadderSipis, Label: "200 accepted"},
			}},
		},
	}
}

// TestDebugLadder: /debug draws the calls and transactions as sequence diagrams with a column
// for the proxy, sipis, each device and the push service; arrows carry method or status, the
// push stage and the time since the first message; bodies show only when recorded, and never
// an Authorization value.
func TestDebugLadder(t *testing.T) {
	for _, bodies := range []bool{false, true} {
		f := newFake()
		f.add(row("0a", 1000))
		f.ladder = testLadder(bodies)
		s, _ := newTestServer(t, f)
		res := do(t, s, req{path: "/debug?s=0a", basic: []string{"admin", "s3cret"}})
		if res.Code != 200 {
			t.Fatalf("/debug: %d %s", res.Code, res.Body)
		}
		body := res.Body.String()
		for _, want := range []string{
			`<h2 id="ladder">`, `id="call-1"`, `id="tx-1"`, `id="tx-2"`,
			">proxy</text>", ">sipis</text>", ">device iphone</text>", ">device pixel</text>", ">push service</text>",
			">INVITE", ">CANCEL", ">487 Request Terminated", ">MESSAGE", ">401 Unauthorized",
			`<tspan class="note">Alerting-Device</tspan>`, `<tspan class="note">Push-Notification-Sent</tspan>`,
			"call push to iphone (APNs, topic com.example.phone.voip)", ">&#43;0.150 s<", ">&#43;4.002 s<", ">&#43;0.042 s<",
			`<g class="arrow push"`, `<g class="arrow resp"`, `<g class="arrow req"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("bodies=%t: /debug lacks %q", bodies, want)
			}
		}
		if n := strings.Count(body, `<g class="arrow `); n != 18 {
			t.Errorf("bodies=%t: %d arrows, want 18", bodies, n)
		}
		if got := strings.Count(body, `<details class="body">`); (got == 1) != bodies {
			t.Errorf("bodies=%t: %d message texts shown", bodies, got)
		}
		for _, secret := range []string{"0123abcd", `username="alice"`, "hunter2"} {
			if strings.Contains(body, secret) {
				t.Errorf("bodies=%t: secret %q on /debug", bodies, secret)
			}
		}
		if bodies && !strings.Contains(body, "Authorization: Not Empty\r\nCall-ID: reg-1") {
			t.Errorf("body not shown redacted")
		}
	}
}

// TestTestPushFromDebug: the test push sent from /debug returns to /debug with each device's
// platform, topic and the push service's answer.
func TestTestPushFromDebug(t *testing.T) {
	f := newFake()
	f.add(row("0a", 1000))
	s, _ := newTestServer(t, f)
	res := do(t, s, req{method: "POST", path: "/stats/actions/testpush", basic: []string{"admin", "s3cret"},
		form: url.Values{"s": {"0a"}, "return": {"debug"}, "csrf": {s.csrfToken("admin")}}})
	if res.Code != 200 {
		t.Fatalf("%d %s", res.Code, res.Body)
	}
	body := res.Body.String()
	for _, want := range []string{"<title>Debug 0a", `<table id="push-results">`,
		`<tr data-device="dev-1"><td>dev-1</td><td>APNs</td><td>com.example.phone</td><td>Accepted</td><td>200 apns-id 5E1A</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	// From /stats, the action page shows the same table.
	res = do(t, s, req{method: "POST", path: "/stats/actions/testpush", basic: []string{"admin", "s3cret"},
		form: url.Values{"s": {"0a"}, "csrf": {s.csrfToken("admin")}}})
	if body := res.Body.String(); !strings.Contains(body, "<td>com.example.phone</td><td>Accepted</td><td>200 apns-id 5E1A</td>") {
		t.Errorf("action page:\n%s", body)
	}
}

// BenchmarkStatsCharts is the cost of the charts on /stats: the page with and without them.
func BenchmarkStatsCharts(b *testing.B) {
	f := newFake()
	f.add(row("01", 1000))
	for _, on := range []bool{false, true} {
		s, _ := newTestServer(b, f, func(o *Options) {
			if on {
				o.Trends = fakeTrends{now: testNow}
			}
		})
		b.Run(map[bool]string{false: "without", true: "with"}[on], func(b *testing.B) {
			for range b.N {
				if res := do(b, s, req{path: "/stats"}); res.Code != 200 {
					b.Fatal(res.Code)
				}
			}
		})
	}
}
