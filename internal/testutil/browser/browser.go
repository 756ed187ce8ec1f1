// Package browser starts the headless Chromium that the page tests drive (chromedp), and
// saves their screenshots. Only _test.go files may import it: it is a separate package from
// testutil so that chromedp never reaches a binary through internal/siptest.
package browser

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Find returns the browser to drive: $SIPIS_CHROMIUM, else the first of chromium,
// chromium-browser, google-chrome on $PATH; "" when there is none.
func Find() string {
	if p := os.Getenv("SIPIS_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts headless Chromium for at most timeout, sending HTTP Basic credentials for user
// and password with every request (none when user is ""), and returns its context; it is
// closed when t ends. Without a browser the test is skipped, or fails when the environment
// has SIPIS_REQUIRE_CHROMIUM=1 (as CI does); -short skips it too.
func Start(t *testing.T, timeout time.Duration, user, password string) context.Context {
	t.Helper()
	path := Find()
	if path == "" {
		if os.Getenv("SIPIS_REQUIRE_CHROMIUM") == "1" {
			t.Fatal("no chromium found and SIPIS_REQUIRE_CHROMIUM=1")
		}
		t.Skip("no chromium found (set SIPIS_CHROMIUM to its path)")
	}
	if testing.Short() {
		t.Skip("short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	// The machine's network is closed: without the background-networking flags Chromium
	// keeps trying Google's hosts.
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1400, 1000), chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if user == "" {
		return bctx
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	if err := chromedp.Do(bctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders,
			network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	return bctx
}

// Screenshot saves a full-page PNG of bctx's page as name in $SIPIS_SCREENSHOT_DIR (else a
// temporary folder of t), logs where, and returns the path.
func Screenshot(t *testing.T, bctx context.Context, name string) string {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := t.TempDir()
	if d := os.Getenv("SIPIS_SCREENSHOT_DIR"); d != "" {
		dir = d
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
