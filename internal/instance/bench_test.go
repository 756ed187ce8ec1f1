package instance

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// instantRegistrar grants every REGISTER at once, with messages the size of real ones, so
// the benchmarks measure the manager, not the network.
type instantRegistrar struct{ req, resp string }

func (r instantRegistrar) Register(_ context.Context, b sipua.Binding) (sipua.Result, error) {
	return sipua.Result{Status: 200, Reason: "OK", Expires: b.Expires, CSeq: b.CSeq + 2,
		Request: strings.Clone(r.req), Response: strings.Clone(r.resp), BytesIn: 900, BytesOut: 1300}, nil
}

func realistic() instantRegistrar {
	return instantRegistrar{req: strings.Repeat("R", 620), resp: strings.Repeat("S", 480)}
}

// seed stores n background instances that have never registered.
func seed(st *memStore, n int) {
	now := time.Now()
	for i := range n {
		sel := fmt.Sprintf("%016x", i)
		st.insts[sel] = &store.Instance{
			Selector: sel, Mode: "background", State: "Registering", Status: "Registering",
			Account:     store.Account{User: fmt.Sprintf("user%06d", i), Password: "password-12345", Domain: "sipis.test", Proxy: "127.0.0.1", Port: 5060, Transport: "udp", Expires: 3600},
			ContactUser: randomToken(16), CallID: randomToken(16), CreatedAt: now, LastActivity: now,
		}
		st.devs[sel] = map[string]store.Device{"d": {ID: "d"}}
	}
}

// BenchmarkManagerCycle measures the manager's own cost of one REGISTER cycle (scheduling,
// state machine, bookkeeping, write-behind batch), with a registrar that answers at once.
func BenchmarkManagerCycle(b *testing.B) {
	st := newMemStore()
	seed(st, b.N)
	m, err := New(Options{Store: st, Registrar: realistic(), ResumeWindow: time.Nanosecond, Workers: 64, MaxInFlightPerProxy: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for {
		byPhase, _ := m.Counts()
		if byPhase[Phase{RegisterLoop, Registered}] == b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	m.Stop()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}

// BenchmarkHeldInstanceMemory reports the Go heap held per registered instance (with its
// last REGISTER request and response kept for the debug page, and its timer entry).
func BenchmarkHeldInstanceMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				st := newMemStore()
				seed(st, n)
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				m, _ := New(Options{Store: st, Registrar: realistic(), ResumeWindow: time.Nanosecond, Workers: 64, MaxInFlightPerProxy: 1 << 20})
				m.Start(context.Background())
				for {
					byPhase, _ := m.Counts()
					if byPhase[Phase{RegisterLoop, Registered}] == n {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				st.insts, st.devs = nil, nil // only the manager's share counts
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "heap-B/instance")
				m.Stop()
			}
		})
	}
}

// BenchmarkResume100k measures Start on n stored instances: loading and scheduling them.
func BenchmarkResume100k(b *testing.B) {
	st := newMemStore()
	seed(st, 100_000)
	for range b.N {
		m, _ := New(Options{Store: st, Registrar: realistic(), ResumeWindow: time.Hour})
		start := time.Now()
		m.Start(context.Background())
		b.ReportMetric(time.Since(start).Seconds()*1000, "ms/start")
		m.Stop()
	}
}
