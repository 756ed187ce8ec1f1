package push_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/push/pushtest"
)

// BenchmarkAPNsCallPush measures the latency of one call push, from Send to
// the fake's 200, over a warm HTTP/2 connection on the loopback, and
// reports the median and 99th percentile.
func BenchmarkAPNsCallPush(b *testing.B) {
	fake := pushtest.NewAPNs(b)
	a := newAPNs(b, fake, nil)
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	ctx := context.Background()
	if _, err := a.Send(ctx, n); err != nil { // open the connection
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%1024 == 0 {
			fake.Reset() // keep the fake's record small
		}
		start := time.Now()
		if _, err := a.Send(ctx, n); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkAPNsCallPushParallel sends call pushes from many goroutines over
// the one shared HTTP/2 connection (multiplexed streams).
func BenchmarkAPNsCallPushParallel(b *testing.B) {
	fake := pushtest.NewAPNs(b)
	a := newAPNs(b, fake, nil)
	n := call(push.PlatformAPNs, pushtest.TokenOK, fake.Topic)
	if _, err := a.Send(context.Background(), n); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Send(context.Background(), n); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
