package push_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/testutil"
)

// TestMain fails the run when goroutines started by the tests (HTTP/2 connections, servers,
// timers) outlive them.
func TestMain(m *testing.M) {
	os.Exit(testutil.CheckLeaks(m, testutil.Every))
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
