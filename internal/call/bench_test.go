package call

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

// BenchmarkIncomingCall sends b.N INVITEs over UDP loopback at a steady rate (100 calls/s;
// SIPIS_CALL_RATE changes it) to a Manager behind a real sipua.UA, with pushes going through
// the real APNs notifier to the pushtest fake, and cancels each call once the push is out. It
// reports the latency from sending the INVITE to the first 180 and to the fake APNs receiving
// the VoIP push (p50, p99). The wall time of a paced loop is the pacing, not a cost, so the
// timer is stopped and ns/op is replaced by the process's CPU time per call (the caller and
// the fake APNs, in this process too, included). Run 30 s at 100/s with -benchtime=3000x.
func BenchmarkIncomingCall(b *testing.B) {
	rate := 100
	if v := os.Getenv("SIPIS_CALL_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("SIPIS_CALL_RATE=%q is not a positive number", v)
		}
		rate = n
	}
	fake := pushtest.NewAPNs(b)
	apns, err := push.NewAPNs(push.APNsOptions{Endpoint: fake.URL, SandboxEndpoint: fake.URL, KeyFile: fake.KeyFile,
		KeyID: fake.KeyID, TeamID: fake.TeamID, RootCAs: fake.RootCAs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { apns.Close() })
	e := newEnv(b, func(o *Options) { o.Push = push.NewDispatcher(apns); o.MaxCalls = 1 << 20 })

	var (
		mu      sync.Mutex
		sent    = make(map[string]time.Time, b.N) // caller URI -> INVITE sent
		ringing []time.Duration
		fails   int
		wg      sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	b.StopTimer()
	cpu0 := cpuTime()
	for i := range b.N {
		<-tick.C
		uri := fmt.Sprintf("sip:%d@bench.example", i)
		start := time.Now()
		inv := e.caller.Invite(e.target, testContact, "P-Asserted-Identity: <"+uri+">")
		mu.Lock()
		sent[uri] = start
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.caller.Next(inv.CallID, "INVITE", 10*time.Second)
			if err != nil || r.Status != 180 {
				mu.Lock()
				fails++
				mu.Unlock()
				return
			}
			mu.Lock()
			ringing = append(ringing, r.Arrived.Sub(start))
			mu.Unlock()
			// Wait for the push to be out, then hang up as a caller would.
			if r, err = e.caller.Next(inv.CallID, "INVITE", 10*time.Second); err == nil && r.Status == 180 {
				inv.Cancel()
				_, _ = e.caller.Next(inv.CallID, "INVITE", 10*time.Second)
				_, _ = e.caller.Next(inv.CallID, "CANCEL", 10*time.Second)
			}
		}()
	}
	wg.Wait()
	cpu := cpuTime() - cpu0
	var pushed []time.Duration
	for _, p := range fake.Pushes() {
		if p.Payload["kind"] != "call" {
			continue
		}
		uri, _ := p.Payload["caller_uri"].(string)
		if s, ok := sent[uri]; ok {
			pushed = append(pushed, p.Arrived.Sub(s))
		}
	}
	if fails > 0 || len(pushed) != b.N {
		b.Errorf("%d INVITEs without 180, %d of %d call pushes arrived", fails, len(pushed), b.N)
	}
	report(b, "180", ringing)
	report(b, "push", pushed)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "ns/op")
	b.ReportMetric(float64(rate), "calls/s")
}

func report(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) float64 { return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.50), name+"-p50-ms")
	b.ReportMetric(q(0.99), name+"-p99-ms")
}
