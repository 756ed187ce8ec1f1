package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sipis/sipis/internal/testutil/browser"
)

func js[T any](t *testing.T, bctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(bctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// TestBrowserPicturesOfARealServer: a real server whose instance registered, was called,
// cancelled and messaged, with a day of synthetic trend history: Chromium draws /debug's ladder
// and /stats's charts, takes screenshots, and the test checks the elements as drawn.
func TestBrowserPicturesOfARealServer(t *testing.T) {
	bctx := browser.Start(t, 90*time.Second, "admin", "secret-admin")
	a, sel := picturesInstance(t)
	fillTrends(a, time.Now())

	if err := chromedp.Do(bctx, chromedp.Navigate(a.HTTPURL()+"/debug?s="+sel), chromedp.WaitVisible(chromedp.CSS("#call-1"))); err != nil {
		t.Fatalf("load /debug: %v", err)
	}
	browser.Screenshot(t, bctx, "debug-real-instance.png")
	arrows := js[string](t, bctx, `[...document.querySelectorAll('#call-1 + svg g.arrow text.label')].map(e => e.textContent).join('|')`)
	for _, want := range []string{"INVITE from 127.0.0.1:", "180 Ringing Alerting-Device", "call push to iphone (APNs, topic com.example.softphone.voip)",
		"180 Ringing Push-Notification-Sent", "CANCEL from", "200 OK (CANCEL)", "487 Request Terminated", "missed-call push to iphone"} {
		if !strings.Contains(arrows, want) {
			t.Errorf("call arrows lack %q: %s", want, arrows)
		}
	}
	kinds := js[string](t, bctx, `[...document.querySelectorAll('h3.exchange')].map(e => e.textContent.split(' ')[0]).join(',')`)
	if kinds != "call,REGISTER,MESSAGE" {
		t.Errorf("exchanges %q, want call,REGISTER,MESSAGE", kinds)
	}
	if n := js[int](t, bctx, `document.querySelectorAll('svg.ladder g.arrow.push').length`); n != 6 {
		t.Errorf("%d push arrows, want 6 (call, missed-call and message push, each with its answer)", n)
	}
	if n := js[int](t, bctx, `document.body.innerText.indexOf('pw-carol') + document.body.innerText.indexOf('response=') + 2`); n != 0 {
		t.Error("a secret shows on /debug")
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(a.HTTPURL()+"/stats"), chromedp.WaitVisible(chromedp.CSS("#chart-probes"))); err != nil {
		t.Fatalf("load /stats: %v", err)
	}
	browser.Screenshot(t, bctx, "stats-real-server.png")
	if got := js[string](t, bctx, `[...document.querySelectorAll('figure.chart')].map(f => f.id + ':' + f.querySelectorAll('g.series').length).join(',')`); got !=
		"chart-instances:5,chart-register:2,chart-calls:3,chart-push:2,chart-probes:2" {
		t.Errorf("charts and their series: %s", got)
	}
	if got := js[string](t, bctx, `document.querySelector('#trend-marks').innerText`); !strings.Contains(got, "burst of REGISTER failures: 61 a minute") ||
		!strings.Contains(got, "probes down: 0 → 1") || !strings.Contains(got, "probes down: 1 → 0") {
		t.Errorf("marks %q", got)
	}
	if n := js[int](t, bctx, `[...document.querySelectorAll('#chart-register polyline')].filter(p => p.getBBox().width > 400).length`); n != 2 {
		t.Errorf("%d REGISTER lines across the hour, want 2", n)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(a.HTTPURL()+"/stats?window=24h"), chromedp.WaitVisible(chromedp.CSS("#chart-probes"))); err != nil {
		t.Fatalf("load /stats?window=24h: %v", err)
	}
	browser.Screenshot(t, bctx, "stats-real-server-24h.png")
	if n := js[int](t, bctx, `document.querySelector('#chart-register polyline').getAttribute('points').split(' ').length`); n < 280 || n > 290 {
		t.Errorf("24 h line has %d points, want one per 5 minutes", n)
	}
}
