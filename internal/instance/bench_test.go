package instance

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
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

// countingRegistrar is instantRegistrar with a gate and a count: no cycle starts before the
// gate opens, and done is closed when the n-th cycle was answered.
type countingRegistrar struct {
	instantRegistrar
	gate chan struct{}
	n    int64
	seen atomic.Int64
	done chan struct{}
}

func newCountingRegistrar(n int) *countingRegistrar {
	return &countingRegistrar{instantRegistrar: realistic(), gate: make(chan struct{}), n: int64(n), done: make(chan struct{})}
}

func (r *countingRegistrar) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	select {
	case <-r.gate:
	case <-ctx.Done():
		return sipua.Result{}, ctx.Err()
	}
	res, err := r.instantRegistrar.Register(ctx, b)
	if r.seen.Add(1) == r.n {
		close(r.done)
	}
	return res, err
}

// BenchmarkManagerCycle measures the manager's own cost of one REGISTER cycle (scheduling,
// state machine, bookkeeping, write-behind batch), with a registrar that answers at once:
// the manager is started (loading b.N instances) before the timer, the cycles are let go
// when it starts, and it stops when the b.N-th is answered; nothing polls the manager.
func BenchmarkManagerCycle(b *testing.B) {
	st := newMemStore()
	seed(st, b.N)
	reg := newCountingRegistrar(b.N)
	m, err := New(Options{Store: st, Registrar: reg, ResumeWindow: time.Nanosecond, Workers: 64, MaxInFlightPerProxy: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	b.ReportAllocs()
	b.ResetTimer()
	close(reg.gate)
	<-reg.done
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}

// BenchmarkHeldInstanceMemory reports the Go heap held per registered instance (its state,
// its timer entry, its digest nonce; the last REGISTER exchange is kept only in error).
func BenchmarkHeldInstanceMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var perInstance float64
			for range b.N {
				// Before the seeding: the store's copy is dropped before the second reading,
				// so the difference is the manager's share alone.
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				st := newMemStore()
				seed(st, n)
				reg := newCountingRegistrar(n)
				close(reg.gate)
				m, err := New(Options{Store: st, Registrar: reg, ResumeWindow: time.Nanosecond, Workers: 64, MaxInFlightPerProxy: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				<-reg.done
				waitSettled(b, m, n)
				st.insts, st.devs = nil, nil // only the manager's share counts
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				perInstance += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
				m.Stop()
			}
			b.ReportMetric(perInstance/float64(b.N), "heap-B/instance")
		})
	}
}

// waitSettled waits (outside any timed part) until n instances are registered: the cycles'
// bookkeeping ends a little after the registrar answered.
func waitSettled(b *testing.B, m *Manager, n int) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		byPhase, _ := m.Counts()
		if byPhase[Phase{RegisterLoop, Registered}] == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d registered", byPhase[Phase{RegisterLoop, Registered}], n)
		}
		time.Sleep(5 * time.Millisecond) // not timed: the memory is measured after
	}
}

// BenchmarkResume100k measures Start on 100,000 stored instances: loading and scheduling
// them. Only Start is timed; ns/op is one Start.
func BenchmarkResume100k(b *testing.B) {
	st := newMemStore()
	seed(st, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		m, err := New(Options{Store: st, Registrar: realistic(), ResumeWindow: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := m.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if got := m.Len(); got != 100_000 {
			b.Fatalf("resumed %d of 100000", got)
		}
		m.Stop()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
}

// BenchmarkResumeStore100k measures Start on a SQLite store holding 100,000 registered
// instances, stored as a running node leaves them: each handed over through PutRegistration
// (its password sealed by the store, as for an app's registration), its state then saved
// through SaveStates as Registered, with a binding refreshed at a random moment of its refresh
// interval. Only Start is timed (the scan, opening every password, building and scheduling
// every instance); ns/op is one Start, and cpu-ms/start the process's CPU time for it (the
// steadier figure on a shared machine: the scan runs in parallel ranges).
func BenchmarkResumeStore100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(b.TempDir(), "resume.db"), DataKey: make([]byte, store.DataKeySize), Node: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := fillRegistered(ctx, db, n, 3600); err != nil {
		b.Fatal(err)
	}
	var cpu time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m, err := New(Options{Store: db, Registrar: realistic(), Node: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		c0 := cpuTime()
		if err := m.Start(ctx); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - c0
		b.StopTimer()
		if got := m.Len(); got != n {
			b.Fatalf("resumed %d of %d", got, n)
		}
		m.Stop()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/start")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/start")
}

// fillRegistered stores n registered background instances in db through the paths a running
// node writes them by (see BenchmarkResumeStore100k), from many goroutines so that the store's
// group commit takes many registrations per transaction.
func fillRegistered(ctx context.Context, db *store.DB, n, expires int) error {
	now := time.Now()
	grant := time.Duration(expires) * time.Second
	const writers = 64
	var next atomic.Int64
	errs := make(chan error, writers)
	for range writers {
		go func() {
			var ups []store.StateUpdate
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					errs <- db.SaveStates(ctx, ups)
					return
				}
				sel, user := fmt.Sprintf("%016x", i+1), fmt.Sprintf("user%07d", i)
				inst := &store.Instance{Selector: sel, Mode: store.ModeBackground, LastActivity: now, CreatedAt: now,
					Account: store.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: "127.0.0.1", Port: 5060,
						Transport: "udp", Expires: expires}}
				dev := &store.Device{Selector: sel, ID: "phone", Platform: "none", LastSeen: now, Secret: "secret-" + user}
				if err := db.PutRegistration(ctx, inst, dev, "nonce-"+sel, now); err != nil {
					errs <- err
					return
				}
				interval := 0.9 * float64(grant) * (1 - 0.2*rand.Float64())
				refreshed := now.Add(-time.Duration(rand.Float64() * interval))
				ups = append(ups, store.StateUpdate{Selector: sel, State: store.StateRegisterLoop, Status: store.StatusRegistered,
					CSeq: 9, ExpiresAt: refreshed.Add(grant), At: refreshed})
				if len(ups) == 500 {
					if err := db.SaveStates(ctx, ups); err != nil {
						errs <- err
						return
					}
					ups = ups[:0]
				}
			}
		}()
	}
	var first error
	for range writers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// cpuTime is the process's CPU time (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
