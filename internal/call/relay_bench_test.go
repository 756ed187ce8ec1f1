package call

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

// tokenPusher accepts every push at once and hands each call push's token to whoever waits
// for that caller URI (the benchmark's devices), so that a thousand calls never queue behind
// one channel.
type tokenPusher struct {
	mu     sync.Mutex
	tokens map[string]chan string
}

func (p *tokenPusher) wait(uri string) chan string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := p.tokens[uri]
	if ch == nil {
		ch = make(chan string, 1)
		p.tokens[uri] = ch
	}
	return ch
}

func (p *tokenPusher) Send(_ context.Context, n push.Notification) (push.Result, error) {
	if n.Kind == push.KindCall {
		select {
		case p.wait(n.CallerURI) <- n.Token:
		default:
		}
	}
	return push.Result{Accepted: true, Status: 200, Attempts: 1}, nil
}

// heldCall is one established call of the benchmark.
type heldCall struct {
	inv *siptest.CallInvite
	ok  *siptest.CallResponse
	d   *siptest.Device
}

// BenchmarkRelayedCalls establishes b.N relayed calls on loopback (caller over UDP -> sipis ->
// one device TCP flow per call, no media, pushes accepted by a fake) in rounds of at most
// 1,000 held at once (SIPIS_HELD_CALLS changes it; each held call is a TCP connection), holds
// each round's calls, then hangs every one up with BYE from the caller. Setup runs on 32
// workers (SIPIS_SETUP_WORKERS changes it). ns/op is the wall time of one call's setup and
// BYE; it also reports the setup rate, the INVITE -> first 180 latency (p50, p99), heap and
// RSS growth per held call (first round) and CPU time per call. The test's own caller and
// devices live in the same process, so memory and CPU include their share.
// Run: go test -run '^$' -bench RelayedCalls -benchtime=1000x ./internal/call/
func BenchmarkRelayedCalls(b *testing.B) {
	held := 1000
	if v := os.Getenv("SIPIS_HELD_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SIPIS_HELD_CALLS=%q is not a positive number", v)
		}
		held = n
	}
	workers := 32
	if v := os.Getenv("SIPIS_SETUP_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SIPIS_SETUP_WORKERS=%q is not a positive number", v)
		}
		workers = n
	}
	p := &tokenPusher{tokens: map[string]chan string{}}
	e := newEnv(b, func(o *Options) { o.Push = p; o.MaxCalls = 1 << 20; o.Clock = realClock{} })
	dev := benchDeviceListener(e) // all 1,000 devices come from 127.0.0.1

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rssBefore := rssBytes()
	cpuBefore := cpuTime()

	ringing := make([]time.Duration, 0, b.N)
	var setup, teardown time.Duration
	var heldHeap, heldRSS float64 // per call, measured with the first round held
	var gcs uint32
	b.ResetTimer()
	for first := 0; first < b.N; first += held {
		n := min(held, b.N-first)
		calls := make([]*heldCall, n)
		ring := make([]time.Duration, n)
		var next, failed atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					c, r, err := e.establish(p, dev, first+i)
					if err != nil {
						if failed.Add(1) <= 5 {
							b.Errorf("call %d: %v", first+i, err)
						}
						continue
					}
					calls[i], ring[i] = c, r
				}
			}()
		}
		wg.Wait()
		setup += time.Since(start)
		b.StopTimer()
		if failed.Load() > 0 {
			b.Fatalf("%d of %d calls failed to set up", failed.Load(), n)
		}
		if got := e.m.ActiveCalls(testSel); got != n {
			b.Fatalf("active calls %d while holding %d", got, n)
		}
		ringing = append(ringing, ring...)
		if first == 0 {
			runtime.GC()
			var h runtime.MemStats
			runtime.ReadMemStats(&h)
			heldHeap = float64(int64(h.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
			heldRSS = float64(rssBytes()-rssBefore) / float64(n)
			gcs = h.NumGC - before.NumGC
		}

		// Hang up every call from the caller's side; the devices answer the BYE.
		b.StartTimer()
		byeStart := time.Now()
		var byeFails atomic.Int64
		next.Store(0)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					if err := e.hangUpBench(calls[i]); err != nil && byeFails.Add(1) <= 5 {
						b.Errorf("BYE %d: %v", first+i, err)
					}
				}
			}()
		}
		wg.Wait()
		teardown += time.Since(byeStart)
		b.StopTimer()
		deadline := time.Now().Add(10 * time.Second)
		for e.m.ActiveCalls(testSel) != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // not timed: the calls' records settle
		}
		if got := e.m.ActiveCalls(testSel); got != 0 {
			b.Fatalf("%d calls still active after BYE", got)
		}
		for _, c := range calls {
			c.d.Close()
		}
		b.StartTimer()
	}
	b.StopTimer()
	cpu := cpuTime() - cpuBefore

	n := float64(b.N)
	b.ReportMetric(n/setup.Seconds(), "setups/s")
	b.ReportMetric(n/teardown.Seconds(), "byes/s")
	report(b, "first180", ringing)
	b.ReportMetric(heldHeap/1024, "heap-KiB/call")
	b.ReportMetric(heldRSS/1024, "rss-KiB/call")
	b.ReportMetric(float64(cpu.Microseconds())/n/1000, "cpu-ms/call")
	b.ReportMetric(float64(gcs), "gcs")
}

// establish sets up call i: INVITE, the token from the push, the device's REGISTER on its own
// connection, 180 and 200 from the device, ACK from the caller. It returns the call and the
// time from INVITE to the first 180 at the caller.
func (e *env) establish(p *tokenPusher, dev string, i int) (*heldCall, time.Duration, error) {
	uri := fmt.Sprintf("sip:%d@bench.example", i)
	tok := p.wait(uri)
	sent := time.Now()
	inv := e.caller.Invite(e.target, testContact, "P-Asserted-Identity: <"+uri+">")
	next := func() (*siptest.CallResponse, error) {
		for {
			r, err := e.caller.Next(inv.CallID, "INVITE", 20*time.Second)
			if err != nil || r.Status != 100 {
				return r, err
			}
		}
	}
	r, err := next()
	if err != nil {
		return nil, 0, err
	}
	ring := r.Arrived.Sub(sent)
	var token string
	select {
	case token = <-tok:
	case <-time.After(20 * time.Second):
		return nil, 0, fmt.Errorf("no push for %s", uri)
	}
	d := siptest.DialDevice(e.t, dev)
	if code, err := d.Register(token, "iphone", testSecret); err != nil || code != 200 {
		return nil, 0, fmt.Errorf("REGISTER: %d %v", code, err)
	}
	in, err := d.Next("INVITE", false, 20*time.Second)
	if err != nil {
		return nil, 0, err
	}
	d.Respond(in, 180, "Ringing", "")
	d.Respond(in, 200, "OK", "v=0\r\n")
	for {
		if r, err = next(); err != nil {
			return nil, 0, err
		}
		if r.Status >= 200 {
			break
		}
	}
	if r.Status != 200 {
		return nil, 0, fmt.Errorf("final %d", r.Status)
	}
	inv.InDialog(r, "ACK", 0)
	if _, err := d.Next("ACK", false, 20*time.Second); err != nil {
		return nil, 0, err
	}
	return &heldCall{inv: inv, ok: r, d: d}, ring, nil
}

// hangUpBench sends the caller's BYE, answers it at the device and waits for the 200.
func (e *env) hangUpBench(c *heldCall) error {
	c.inv.InDialog(c.ok, "BYE", 2)
	bye, err := c.d.Next("BYE", false, 20*time.Second)
	if err != nil {
		return err
	}
	c.d.Respond(bye, 200, "OK", "")
	for {
		r, err := e.caller.Next(c.inv.CallID, "BYE", 20*time.Second)
		if err != nil {
			return err
		}
		if r.Status >= 200 {
			if r.Status != 200 {
				return fmt.Errorf("BYE answered %d", r.Status)
			}
			return nil
		}
	}
}

// rssBytes reads the process's resident set size from /proc (0 where there is none).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDeviceListener is env.deviceListener without the per-address connection limit, which
// 1,000 devices on one loopback address would hit.
func benchDeviceListener(e *env) string {
	e.t.Helper()
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "tcp", Address: "127.0.0.1:0"}},
		MaxConnsPerIP: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ua.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	ua.SetHandler(e.m)
	e.t.Cleanup(func() { ua.Close() })
	return ua.Addr("tcp")
}
