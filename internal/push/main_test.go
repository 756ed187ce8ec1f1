package push_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
)

// TestMain fails the run when goroutines started by the tests (HTTP/2
// connections, servers, timers) outlive them.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to limit for every goroutine but the test
// runner's to end, and returns the stacks of those that do not.
func leakedGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if g = strings.TrimSpace(g); g == "" || strings.Contains(g, "leakedGoroutines") {
				continue
			}
			left = append(left, g)
		}
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fakeClock is a settable clock shared by a notifier and a fake service.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Sleep is a Dispatcher.Sleep that advances the clock instead of waiting
// and records every wait.
func (c *fakeClock) Sleep(waits *[]time.Duration) func(context.Context, time.Duration) error {
	var mu sync.Mutex
	return func(ctx context.Context, d time.Duration) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		mu.Lock()
		*waits = append(*waits, d)
		mu.Unlock()
		c.Advance(d)
		return nil
	}
}

// call returns a call notification for a device.
func call(platform, token, appID string) push.Notification {
	return push.Notification{
		Kind:         push.KindCall,
		Selector:     "5e1ec7",
		PairingID:    "pair-42",
		CallerName:   "Alice Example",
		CallerURI:    "sip:alice@example.org",
		RelayAddress: "relay.example.net:5061",
		Token:        "one-time-call-token",
		Device:       push.Device{ID: "dev-1", Platform: platform, PushToken: token, AppID: appID},
	}
}

// notice returns a notification of kind k to a device whose token (the
// alert token on APNs) is token.
func notice(k push.Kind, platform, token, appID string) push.Notification {
	n := call(platform, token, appID)
	n.Kind, n.RelayAddress, n.Token = k, "", ""
	if platform == push.PlatformAPNs {
		n.Device.PushToken, n.Device.AlertToken = "", token
	}
	return n
}

// quickDispatcher returns a dispatcher whose retries wait on a fake clock.
func quickDispatcher(clk *fakeClock, waits *[]time.Duration, ns ...push.Notifier) *push.Dispatcher {
	d := push.NewDispatcher(ns...)
	d.Now = clk.Now
	d.Sleep = clk.Sleep(waits)
	return d
}
