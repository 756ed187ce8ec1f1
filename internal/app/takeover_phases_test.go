package app

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
)

// takeOverProfile names a file for a CPU profile of the take-over of BenchmarkClusterTakeOver's
// first run (from the death to the last instance bound): the survivors, not the set-up.
var takeOverProfile = flag.String("takeover-cpuprofile", "", "write a CPU profile of the first take-over to this file")

// phases records, for BenchmarkClusterTakeOver, when each step of one take-over happened
// after the death: the dead node's lease passing as the store says, its claim (state dead),
// the survivors' first and last adopted instance, their first REGISTER cycle done, and the
// first, half and all of the count of REGISTERs Kamailio accepted; with the CPU time the test process (all nodes) and
// Kamailio used from the death to the end.
type phases struct {
	b      testing.TB
	k      *siptest.Kamailio
	nb, nc *App
	done   chan struct{}
	wg     sync.WaitGroup

	prof                         *os.File
	mu                           sync.Mutex
	at                           time.Time
	regs0                        int64
	cpu0, kcpu0                  time.Duration
	leaseUntil                   time.Time
	dead, held1, heldAll, sent1  time.Duration
	bound1, boundHalf, boundLast time.Duration
	total                        int
}

func startPhases(b testing.TB, k *siptest.Kamailio, nb, nc *App) *phases {
	return &phases{b: b, k: k, nb: nb, nc: nc, done: make(chan struct{}),
		dead: -1, held1: -1, heldAll: -1, sent1: -1, bound1: -1, boundHalf: -1, boundLast: -1}
}

func (p *phases) registers() int64 {
	return p.nb.Manager().Stats().Registers.Load() + p.nc.Manager().Stats().Registers.Load()
}

func cpuOf(u siptest.Usage, err error) time.Duration {
	if err != nil {
		return 0
	}
	return u.CPU
}

// died starts the sampling at the death.
func (p *phases) died(at time.Time) {
	p.mu.Lock()
	p.at, p.regs0 = at, p.registers()
	p.cpu0 = cpuOf(siptest.ProcessUsage(os.Getpid()))
	p.kcpu0 = cpuOf(p.k.Usage())
	p.mu.Unlock()
	if *takeOverProfile != "" {
		if f, err := os.Create(*takeOverProfile); err == nil && pprof.StartCPUProfile(f) == nil {
			p.prof = f
			*takeOverProfile = "" // the first run's only
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			p.sample()
			select {
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
}

func (p *phases) sample() {
	since := time.Since(p.at)
	nodes, err := p.nb.Store().Nodes(context.Background())
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		for _, n := range nodes {
			if n.Name == "node-a" {
				p.leaseUntil = n.LeaseUntil
				if n.State == store.NodeDead && p.dead < 0 {
					p.dead = since
				}
			}
		}
	}
	held := p.nb.Manager().Len() + p.nc.Manager().Len()
	if held > 0 && p.held1 < 0 {
		p.held1 = since
	}
	if held > 0 && p.dead >= 0 && p.heldAll < 0 {
		if nodes, err := p.nb.Store().Nodes(context.Background()); err == nil {
			for _, n := range nodes {
				if n.Name == "node-a" && n.Unclaimed == 0 && held >= n.Instances {
					p.heldAll = since
				}
			}
		}
	}
	if p.registers() > p.regs0 && p.sent1 < 0 {
		p.sent1 = since
	}
}

// accepted records that m REGISTERs (of total instances) were accepted by Kamailio since the
// death.
func (p *phases) accepted(m, total int) {
	since := time.Since(p.at)
	p.mu.Lock()
	defer p.mu.Unlock()
	if m > 0 && p.bound1 < 0 {
		p.bound1 = since
	}
	if 2*m >= total && p.boundHalf < 0 {
		p.boundHalf = since
	}
	if m >= total && p.boundLast < 0 {
		p.boundLast = since
	}
}

// stop ends the sampling and returns the phases as one line.
func (p *phases) stop() string {
	close(p.done)
	p.wg.Wait()
	if p.prof != nil {
		pprof.StopCPUProfile()
		p.prof.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	cpu := cpuOf(siptest.ProcessUsage(os.Getpid())) - p.cpu0
	kcpu := cpuOf(p.k.Usage()) - p.kcpu0
	s := func(d time.Duration) string {
		if d < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "lease passed %s, declared dead %s, first held %s, all held %s, first REGISTER %s, Kamailio accepted the first REGISTER %s, half %s, all %s; REGISTER cycles %d; CPU nodes %.1fs, Kamailio %.1fs",
		s(p.leaseUntil.Sub(p.at)), s(p.dead), s(p.held1), s(p.heldAll), s(p.sent1), s(p.bound1), s(p.boundHalf), s(p.boundLast),
		p.registers()-p.regs0, cpu.Seconds(), kcpu.Seconds())
	return b.String()
}
