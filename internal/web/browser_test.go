package web

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sipis/sipis/internal/testutil/browser"
)

// TestBrowserStats loads /stats as the administrator in headless Chromium,
// checks the MAD colours as the browser computes them and the Lock of the
// turn-off-all button, then turns off all instances through the page.
func TestBrowserStats(t *testing.T) {
	bctx := browser.Start(t, 30*time.Second, "admin", "s3cret")

	f := newFake()
	f.add(
		row("01", 50),        // low
		row("02", 10_000),    // normal
		row("03", 9_000),     // medium
		row("04", 9_500),     // medium
		row("05", 10_500),    // medium
		row("06", 11_000),    // medium
		row("07", 10_200),    // medium
		row("08", 5_000_000), // high
	)
	s, _ := newTestServer(t, f)
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	err := chromedp.Do(bctx,
		chromedp.Navigate(s.URL()+"/stats"),
		chromedp.WaitVisible(chromedp.CSS("#instances-table")),
	)
	if err != nil {
		t.Fatalf("load /stats: %v", err)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := t.TempDir()
	if d := os.Getenv("SIPIS_SCREENSHOT_DIR"); d != "" {
		dir = d // keep the screenshot after the test
	}
	path := filepath.Join(dir, "stats.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of /stats: %s", path)

	bg := func(sel string) [4]float64 {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(
			`getComputedStyle(document.querySelector('tr[data-selector="%s"]')).backgroundColor`, sel)))
		if err != nil {
			t.Fatalf("background of %s: %v", sel, err)
		}
		var c [4]float64
		c[3] = 1
		if n, _ := fmt.Sscanf(v, "rgb(%g, %g, %g)", &c[0], &c[1], &c[2]); n != 3 {
			if n, _ := fmt.Sscanf(v, "rgba(%g, %g, %g, %g)", &c[0], &c[1], &c[2], &c[3]); n != 4 {
				t.Fatalf("background of %s: cannot parse %q", sel, v)
			}
		}
		t.Logf("row %s background %s", sel, v)
		return c
	}
	blueish := func(c [4]float64) bool { return c[3] > 0 && c[2] > c[0]+30 }
	redish := func(c [4]float64) bool { return c[3] > 0 && c[0] > c[2]+30 }
	if c := bg("01"); !blueish(c) {
		t.Errorf("low row is not blue: %v", c)
	}
	if c := bg("08"); !redish(c) {
		t.Errorf("high row is not red: %v", c)
	}
	if c := bg("02"); blueish(c) || redish(c) {
		t.Errorf("normal row is coloured: %v", c)
	}

	disabled := func() bool {
		t.Helper()
		d, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.getElementById('offall').disabled`))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if !disabled() {
		t.Fatal("turn-off-all button enabled while Lock is checked")
	}
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS("#lock"))); err != nil {
		t.Fatal(err)
	}
	if disabled() {
		t.Fatal("turn-off-all button still disabled after unchecking Lock")
	}
	if got := f.changes(); got != "[] 0 [] [] 0" {
		t.Fatalf("backend changed before the click: %s", got)
	}
	err = chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS("#offall")),
		chromedp.WaitVisible(chromedp.CSS("p.msg")),
	)
	if err != nil {
		t.Fatalf("click turn off all: %v", err)
	}
	msg, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("p.msg")))
	if err != nil {
		t.Fatal(err)
	}
	if msg != "Turned off 8 instances." {
		t.Errorf("result message %q", msg)
	}
	f.mu.Lock()
	n := f.turnOffAll
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("TurnOffAll called %d times, want 1", n)
	}
}
