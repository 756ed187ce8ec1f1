package push_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
)

// stub is a Notifier answering from a list of results.
type stub struct {
	platform string
	mu       sync.Mutex
	results  []push.Result
	sends    int
}

func (s *stub) Platform() string { return s.platform }

func (s *stub) Send(ctx context.Context, n push.Notification) (push.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends++
	r := s.results[min(s.sends, len(s.results))-1]
	if r.Accepted {
		return r, nil
	}
	return r, &push.StatusError{Platform: s.platform, Result: r}
}

func TestDispatcherBackoffGrowsWithJitter(t *testing.T) {
	s := &stub{platform: "apns", results: []push.Result{{Status: 503, Retryable: true}}}
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, s)
	d.MinBackoff, d.MaxBackoff, d.MaxAttempts = 100*time.Millisecond, time.Second, 7
	res, err := d.Send(context.Background(), call("apns", "t", "a"))
	if err == nil || res.Attempts != 7 || s.sends != 7 {
		t.Fatalf("Send = %+v, %v after %d sends; want 7 attempts", res, err, s.sends)
	}
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000}
	if len(waits) != len(nominal) {
		t.Fatalf("waits %v", waits)
	}
	for i, w := range waits {
		hi := nominal[i] * time.Millisecond
		if w < hi/2 || w > hi {
			t.Errorf("wait %d = %v, want within [%v, %v]", i, w, hi/2, hi)
		}
	}
}

func TestDispatcherStopsBeforeDeadline(t *testing.T) {
	s := &stub{platform: "fcm", results: []push.Result{{Status: 500, Retryable: true}}}
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, s)
	d.MaxAttempts = 1000
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(3*time.Second))
	defer cancel()
	start := clk.Now()
	res, err := d.Send(ctx, call("fcm", "t", ""))
	if err == nil || !res.Retryable || res.Attempts < 3 {
		t.Fatalf("Send = %+v, %v", res, err)
	}
	if spent := clk.Now().Sub(start); spent > 3*time.Second {
		t.Errorf("waited %v past a 3s deadline", spent)
	}
}

func TestDispatcherRetryAfterBeyondDeadlineGivesUp(t *testing.T) {
	s := &stub{platform: "fcm", results: []push.Result{{Status: 429, Retryable: true, RetryAfter: time.Minute}, {Accepted: true}}}
	clk := newFakeClock()
	var waits []time.Duration
	d := quickDispatcher(clk, &waits, s)
	ctx, cancel := context.WithDeadline(context.Background(), clk.Now().Add(10*time.Second))
	defer cancel()
	res, err := d.Send(ctx, call("fcm", "t", ""))
	if err == nil || res.Status != 429 || s.sends != 1 || len(waits) != 0 {
		t.Fatalf("Send = %+v, %v after %d sends, waits %v; want to give up at once", res, err, s.sends, waits)
	}
}

func TestDispatcherNoRetryForRefusals(t *testing.T) {
	for name, r := range map[string]push.Result{
		"dead token": {Status: 410, TokenInvalid: true, Retryable: true},
		"bad topic":  {Status: 400, Reason: "TopicDisallowed"},
	} {
		s := &stub{platform: "apns", results: []push.Result{r, {Accepted: true}}}
		var waits []time.Duration
		d := quickDispatcher(newFakeClock(), &waits, s)
		res, err := d.Send(context.Background(), call("apns", "t", "a"))
		if err == nil || s.sends != 1 || res.Attempts != 1 {
			t.Errorf("%s: %+v, %v after %d sends", name, res, err, s.sends)
		}
	}
}

func TestDispatcherCancelledWhileWaiting(t *testing.T) {
	s := &stub{platform: "webhook", results: []push.Result{{Status: 503, Retryable: true}}}
	d := push.NewDispatcher(s)
	d.MinBackoff, d.MaxBackoff = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	d.Sleep = func(ctx context.Context, w time.Duration) error {
		cancel() // the call ended while we waited
		<-ctx.Done()
		return ctx.Err()
	}
	res, err := d.Send(ctx, call("webhook", "t", ""))
	if err == nil || res.Status != 503 || s.sends != 1 {
		t.Fatalf("Send = %+v, %v after %d sends", res, err, s.sends)
	}
}

func TestDispatcherRealSleepHonoursCancel(t *testing.T) {
	s := &stub{platform: "webhook", results: []push.Result{{Status: 503, Retryable: true}}}
	d := push.NewDispatcher(s)
	d.MinBackoff, d.MaxBackoff = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := d.Send(ctx, call("webhook", "t", ""))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("cancelled send reported success")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send did not return after cancel")
	}
}

func TestDispatcherUnknownPlatform(t *testing.T) {
	d := push.NewDispatcher(&stub{platform: "apns"})
	_, err := d.Send(context.Background(), call("carrier-pigeon", "t", ""))
	if !errors.Is(err, push.ErrNoNotifier) || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Fatalf("err %v, want ErrNoNotifier naming the platform", err)
	}
	if p := d.Platforms(); len(p) != 1 || p[0] != "apns" {
		t.Errorf("Platforms() = %v", p)
	}
}

func TestShortToken(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"abc":              "a…",
		"abcdefgh":         "abcd…",
		"abcdefghijklmnop": "abcdefgh…",
	} {
		if got := push.ShortToken(in); got != want {
			t.Errorf("ShortToken(%q) = %q, want %q", in, got, want)
		}
	}
}
