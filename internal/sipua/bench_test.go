package sipua_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

// BenchmarkRegisterCycle measures full REGISTER cycles (REGISTER, 401,
// authenticated REGISTER, 200) over UDP loopback against the in-process
// fake registrar, with 256 cycles in flight.
func BenchmarkRegisterCycle(b *testing.B) { benchmarkCycles(b, false) }

// BenchmarkRefreshCycle is BenchmarkRegisterCycle for refreshes that reuse the nonce of the
// previous cycle (RFC 7616 §3.4): one REGISTER and its 200 each, as a held binding refreshes.
func BenchmarkRefreshCycle(b *testing.B) { benchmarkCycles(b, true) }

func benchmarkCycles(b *testing.B, reuse bool) {
	const inFlight = 256
	r := siptest.NewRegistrar(b)
	u := newUA(b, func(c *sipua.Config) { c.TransactionTimeout = 10 * time.Second })
	binds := make([]sipua.Binding, inFlight)
	for i := range binds {
		binds[i] = binding(r, fmt.Sprintf("bench%04d", i))
	}
	var next atomic.Int64
	var fails atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bd := binds[w]
			for next.Add(1) <= int64(b.N) {
				res, err := u.Register(context.Background(), bd)
				if err != nil || res.Status != 200 {
					fails.Add(1)
					continue
				}
				bd.CSeq = res.CSeq
				if reuse {
					bd.Nonce = res.Nonce
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "cycles/s")
	if f := fails.Load(); f > 0 {
		b.Fatalf("%d of %d cycles failed", f, b.N)
	}
}
