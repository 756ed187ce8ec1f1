//go:build unix

package probe_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/probe"
)

// countingPinger answers 200 at once and lets the benchmark wait for a
// number of probes.
type countingPinger struct {
	count   atomic.Uint64
	want    atomic.Uint64
	reached chan struct{}
}

func (c *countingPinger) Options(context.Context, string, string) (int, string, time.Duration, error) {
	if c.count.Add(1) == c.want.Load() {
		select {
		case c.reached <- struct{}{}:
		default:
		}
	}
	return 200, "OK", time.Millisecond, nil
}

// waitFor returns once at least n probes were answered. A manual clock has
// one race real clocks shrug off: the scheduler reads Now, the driver then
// advances, and the scheduler arms its timer relative to the old reading, a
// little too late; once the driver stops advancing, that timer never fires.
// So if nothing happens for a while, waitFor nudges the clock by 1 ms and
// counts the nudge (a liveness fallback, not a timing assumption).
func (c *countingPinger) waitFor(n uint64, clk *fakeClock) (nudges int) {
	c.want.Store(n)
	for c.count.Load() < n {
		select {
		case <-c.reached:
		case <-time.After(20 * time.Millisecond):
			clk.Advance(time.Millisecond) // a third of the spacing of the 10k targets
			nudges++
		}
	}
	return nudges
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProber10k runs one simulated 30 s interval of 10,000 targets per
// iteration on a fake clock, advanced in 1,000 steps so the scheduler wakes
// about as often as it would in real time, and reports the process CPU time
// per interval as a share of one core over the 30 s.
func BenchmarkProber10k(b *testing.B) {
	const (
		targets  = 10_000
		interval = 30 * time.Second
		steps    = 1000
	)
	clk := newFakeClock()
	pinger := &countingPinger{reached: make(chan struct{}, 1)}
	p, err := probe.NewProber(probe.Options{Pinger: pinger, Clock: clk, Interval: interval, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	list := make([]probe.Target, targets)
	for i := range list {
		list[i] = probe.Target{URI: fmt.Sprintf("sip:proxy%d.example.com", i)}
	}
	if err := p.SetTargets(list); err != nil {
		b.Fatal(err)
	}
	if err := p.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	defer p.Stop()

	done, nudges := 0, 0
	runInterval := func() {
		for range steps {
			clk.Advance(interval / steps)
		}
		done++
		nudges += pinger.waitFor(uint64(done*targets), clk)
	}
	runInterval() // warm up: every target Unknown -> Up

	cpu0, wall0, n := cpuTime(), time.Now(), 0
	for b.Loop() {
		runInterval()
		n++
	}
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	perInterval := cpu / time.Duration(n)
	b.ReportMetric(float64(perInterval.Microseconds())/1000, "cpu-ms/interval")
	b.ReportMetric(100*perInterval.Seconds()/interval.Seconds(), "%core")
	b.ReportMetric(float64(wall.Microseconds())/1000/float64(n), "wall-ms/interval")
	b.ReportMetric(float64(nudges)/float64(done), "nudges/interval")
	st := p.Stats()
	b.ReportMetric(float64(st.Skipped)/float64(done), "skipped/interval")
	if st.Probes < uint64(done*targets) {
		b.Errorf("only %d probes after %d intervals", st.Probes, done)
	}
}
