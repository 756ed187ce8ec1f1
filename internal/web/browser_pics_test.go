package web

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sipis/sipis/internal/testutil/browser"
)

func evalInt(t *testing.T, bctx context.Context, js string) int {
	t.Helper()
	n, err := chromedp.Run(bctx, chromedp.Evaluate[int](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return n
}

func evalString(t *testing.T, bctx context.Context, js string) string {
	t.Helper()
	s, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return s
}

// TestBrowserTrendCharts loads /stats with an hour of synthetic history in Chromium, takes a
// screenshot, and checks what the browser drew: five charts, their series as lines with a
// real extent, the marks, the legend, and that the CSP let the page's style apply.
func TestBrowserTrendCharts(t *testing.T) {
	f := newFake()
	f.add(row("01", 50), row("02", 10_000), row("03", 9_000))
	s, _ := newTestServer(t, f, func(o *Options) { o.Trends = fakeTrends{now: testNow} })
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bctx := browser.Start(t, 60*time.Second, "admin", "s3cret")
	if err := chromedp.Do(bctx, chromedp.Navigate(s.URL()+"/stats"), chromedp.WaitVisible(chromedp.CSS("#chart-probes svg"))); err != nil {
		t.Fatalf("load /stats: %v", err)
	}
	browser.Screenshot(t, bctx, "stats-trends.png")
	if n := evalInt(t, bctx, `document.querySelectorAll('figure.chart').length`); n != 5 {
		t.Errorf("%d charts, want 5", n)
	}
	if n := evalInt(t, bctx, `document.querySelectorAll('#chart-instances g.series').length`); n != 3 {
		t.Errorf("%d instance series, want 3", n)
	}
	// The lines are drawn: every polyline has a width in the page, and the failures' burst of
	// 80 reaches 0.8 of the chart's scale of 100.
	if n := evalInt(t, bctx, `[...document.querySelectorAll('polyline')].filter(p => p.getBBox().width > 100).length`); n < 12 {
		t.Errorf("%d polylines wider than 100 units, want at least 12", n)
	}
	if y := evalInt(t, bctx, `Math.round(document.querySelector('#chart-register g.series[data-series="failures"] polyline').getBBox().y)`); y != chartTop+plotH/5 {
		t.Errorf("failures line tops out at y=%d, want %d", y, chartTop+plotH/5)
	}
	if got := evalString(t, bctx, `document.querySelector('#chart-register svg text').textContent`); got != "100" {
		t.Errorf("register chart's scale %q, want 100", got)
	}
	if n := evalInt(t, bctx, `document.querySelectorAll('#chart-probes g.mark').length`); n != 3 {
		t.Errorf("%d marks on the probes chart, want 3", n)
	}
	if got := evalString(t, bctx, `document.querySelector('#trend-marks').innerText`); got !=
		"02:25 probe sip.example.com down\n02:35 probe sip.example.com up\n02:45 burst of REGISTER failures: 80 a minute" {
		t.Errorf("marks list %q", got)
	}
	if got := evalString(t, bctx, `document.querySelector('#chart-probes .legend').innerText`); strings.Fields(got)[0] != "down" || strings.Join(strings.Fields(got), " ") != "down 0 up 2" {
		t.Errorf("probes legend %q", got)
	}
	if got := evalString(t, bctx, `getComputedStyle(document.querySelector('figure.chart').parentElement).display`); got != "flex" {
		t.Errorf("charts' box display %q: the page's style was blocked", got)
	}
}

// TestBrowserLadder loads /debug of an instance that registered, was called, cancelled and
// messaged, takes a screenshot and checks the diagram's columns, arrows and labels as drawn.
func TestBrowserLadder(t *testing.T) {
	f := newFake()
	f.add(row("0a", 1000))
	f.ladder = testLadder(true)
	s, _ := newTestServer(t, f)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bctx := browser.Start(t, 60*time.Second, "admin", "s3cret")
	if err := chromedp.Do(bctx, chromedp.Navigate(s.URL()+"/debug?s=0a"), chromedp.WaitVisible(chromedp.CSS("#call-1"))); err != nil {
		t.Fatalf("load /debug: %v", err)
	}
	browser.Screenshot(t, bctx, "debug-ladder.png")
	if got := evalString(t, bctx, `[...document.querySelectorAll('svg.ladder')[0].querySelectorAll('text.col')].map(e => e.textContent).join('|')`); got != "proxy|sipis|device iphone|device pixel|push service" {
		t.Errorf("columns %q", got)
	}
	if n := evalInt(t, bctx, `document.querySelectorAll('svg.ladder g.arrow').length`); n != 18 {
		t.Errorf("%d arrows, want 18", n)
	}
	// The INVITE goes from the proxy's lifeline right to sipis's; the push to the push service
	// goes right past the devices; the 487 goes back left.
	dir := evalString(t, bctx, `(() => { const a = [...document.querySelectorAll('#call-1 + svg g.arrow')];
		const d = g => { const l = g.querySelector('line'); return (+l.getAttribute('x2') > +l.getAttribute('x1') ? 'R' : 'L') + ':' + g.querySelector('text.label').textContent; };
		return a.map(d).join('|'); })()`)
	want := "R:INVITE|L:180 Ringing Alerting-Device|R:call push to iphone (APNs, topic com.example.phone.voip)|L:200 accepted|" +
		"L:180 Ringing Push-Notification-Sent|R:CANCEL|L:200 OK|L:487 Request Terminated|R:cancel push to iphone (APNs)|L:200 accepted"
	if dir != want {
		t.Errorf("call arrows\n%s\nwant\n%s", dir, want)
	}
	if got := evalString(t, bctx, `getComputedStyle(document.querySelector('#call-1 + svg g.push line')).stroke`); got != "rgb(176, 90, 0)" {
		t.Errorf("push arrow colour %q: the page's style was blocked", got)
	}
	if n := evalInt(t, bctx, `document.body.innerText.indexOf('0123abcd')`); n != -1 {
		t.Error("the digest response shows on /debug")
	}
}
