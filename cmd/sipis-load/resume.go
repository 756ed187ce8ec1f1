package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// The resume mode (-resume) measures a restart of a node that held N registrations, without the
// N real REGISTERs that would take a quarter of an hour at a million: it fills a SQLite store
// with N instances as a running server leaves them (each stored through PutRegistration, the
// path the registration API takes, so the password is sealed exactly as the intake seals it;
// then its state written through SaveStates, the persister's path, as Registered, with a
// registered-until time as if it had last been refreshed at a random moment of its refresh
// interval). Then it starts a new instance manager on that store -runs times and reports how
// long Start took (loading and scheduling every instance), the resident memory and Go heap per
// resumed instance; and, on the last run, counts the refreshes that come due over -window
// against the loopback registrar (in a child process, as in the default mode) with sipis's CPU.
//
// The registrar grants every REGISTER, after a digest challenge, for -expires seconds and
// checks the password, so a refresh that used a badly opened password fails and is counted.

// resumeFigures are the results of one resume measurement.
type resumeFigures struct {
	Instances          int       `json:"instances"`
	Expires            int       `json:"expires"`
	FillSeconds        float64   `json:"fillSeconds"`
	ResumeSeconds      []float64 `json:"resumeSeconds"`
	ResumeMedian       float64   `json:"resumeSecondsMedian"`
	ResumeCPUSeconds   []float64 `json:"resumeCPUSeconds"`
	RSSBaselineMiB     float64   `json:"rssBaselineMiB"`
	RSSResumedMiB      float64   `json:"rssResumedMiB"`
	RSSPerInstance     float64   `json:"rssPerInstanceBytes"`
	HeapPerInstance    float64   `json:"heapPerInstanceBytes"`
	WindowSeconds      float64   `json:"refreshWindowSeconds"`
	Refreshes          int64     `json:"refreshes"`
	RefreshesPerSecond float64   `json:"refreshesPerSecond"`
	NeededPerSecond    float64   `json:"refreshesPerSecondNeeded"`
	Failures           int64     `json:"refreshFailures"`
	CPUPerSecond       float64   `json:"cpuSecondsPerSecond"`
	CPUmsPer1000       float64   `json:"cpuMsPer1000Refreshes"`
	RSSAfterWindowMiB  float64   `json:"rssAfterWindowMiB"`
	NotRegistered      int       `json:"notRegisteredAfterWindow"`
}

// resumeConfig are the flags of the resume mode.
type resumeConfig struct {
	n, expires, runs, workers, inflight int
	window                              time.Duration
	cpuProfile                          string
	asJSON                              bool
}

func runResume(ctx context.Context, c resumeConfig) error {
	addr, kill, err := startRegistrarChild(c.expires)
	if err != nil {
		return err
	}
	defer kill()
	host, portStr, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portStr)

	dir, err := os.MkdirTemp("", "sipis-load-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := logrus.New()
	log.SetOutput(io.Discard)
	key := make([]byte, store.DataKeySize)
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(dir, "load.db"), DataKey: key, Node: "load", Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()

	f := resumeFigures{Instances: c.n, Expires: c.expires}
	fmt.Fprintf(os.Stderr, "filling the store with %d registered instances...\n", c.n)
	t0 := time.Now()
	if err := fillRegistered(ctx, db, c.n, c.expires, host, port); err != nil {
		return err
	}
	f.FillSeconds = time.Since(t0).Seconds()

	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}, Logger: log,
		TransactionTimeout: 8 * time.Second})
	if err != nil {
		return err
	}
	if err := ua.Start(ctx); err != nil {
		return err
	}
	defer ua.Close()

	runtime.GC()
	debug.FreeOSMemory()
	base := rssBytes()
	f.RSSBaselineMiB = float64(base) / (1 << 20)
	var msBefore runtime.MemStats
	runtime.ReadMemStats(&msBefore)

	opts := instance.Options{Store: db, Registrar: ua, Logger: log, Node: "load", Workers: c.workers,
		MaxInFlightPerProxy: c.inflight, MinExpires: min(c.expires, 60), BackoffMin: time.Second}
	var m *instance.Manager
	for run := range max(c.runs, 1) {
		if m != nil {
			m.Stop()
			m = nil
			runtime.GC()
			debug.FreeOSMemory()
		}
		m, err = instance.New(opts)
		if err != nil {
			return err
		}
		var prof *os.File
		if c.cpuProfile != "" && run == 0 {
			if prof, err = os.Create(c.cpuProfile); err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(prof); err != nil {
				return err
			}
		}
		c0, t := cpuTime(), time.Now()
		if err := m.Start(ctx); err != nil {
			return err
		}
		secs, cpu := time.Since(t).Seconds(), (cpuTime() - c0).Seconds()
		if prof != nil {
			pprof.StopCPUProfile()
			prof.Close()
		}
		if got := m.Len(); got != c.n {
			m.Stop()
			return fmt.Errorf("resumed %d of %d instances", got, c.n)
		}
		f.ResumeSeconds = append(f.ResumeSeconds, secs)
		f.ResumeCPUSeconds = append(f.ResumeCPUSeconds, cpu)
		fmt.Fprintf(os.Stderr, "resume %d: %.2f s (%.2f CPU-s)\n", run+1, secs, cpu)
	}
	defer m.Stop()
	f.ResumeMedian = median(f.ResumeSeconds)

	runtime.GC()
	debug.FreeOSMemory()
	held := rssBytes()
	var msAfter runtime.MemStats
	runtime.ReadMemStats(&msAfter)
	f.RSSResumedMiB = float64(held) / (1 << 20)
	f.RSSPerInstance = float64(held-base) / float64(c.n)
	f.HeapPerInstance = float64(int64(msAfter.HeapAlloc)-int64(msBefore.HeapAlloc)) / float64(c.n)

	// The refreshes due now: every instance refreshes at its own point, spread over the
	// interval by the fill, so they flow at about n / (0.9 · expires) per second from the start.
	f.NeededPerSecond = float64(c.n) / (0.9 * float64(c.expires))
	if c.window > 0 {
		fmt.Fprintf(os.Stderr, "counting refreshes for %v...\n", c.window)
		r0, e0, c0 := m.Stats().Registers.Load(), m.Stats().RegisterFailures.Load(), cpuTime()
		select {
		case <-time.After(c.window):
		case <-ctx.Done():
			return ctx.Err()
		}
		r1, e1, c1 := m.Stats().Registers.Load(), m.Stats().RegisterFailures.Load(), cpuTime()
		f.WindowSeconds = c.window.Seconds()
		f.Refreshes, f.Failures = r1-r0, e1-e0
		f.RefreshesPerSecond = float64(f.Refreshes) / f.WindowSeconds
		f.CPUPerSecond = (c1 - c0).Seconds() / f.WindowSeconds
		if f.Refreshes > 0 {
			f.CPUmsPer1000 = float64((c1 - c0).Milliseconds()) / float64(f.Refreshes) * 1000
		}
		f.RSSAfterWindowMiB = float64(rssBytes()) / (1 << 20)
		byPhase, _ := m.Counts()
		f.NotRegistered = c.n - byPhase[instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}]
	}

	if c.asJSON {
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	fmt.Printf("instances                   %d (expires %d s), store filled in %.1f s\n", f.Instances, f.Expires, f.FillSeconds)
	fmt.Printf("resume from the store       median %.2f s of %v (CPU-s %v)\n", f.ResumeMedian, f.ResumeSeconds, f.ResumeCPUSeconds)
	fmt.Printf("RSS resumed                 %.1f MiB (baseline %.1f MiB): %.0f bytes/instance; Go heap %.0f bytes/instance\n",
		f.RSSResumedMiB, f.RSSBaselineMiB, f.RSSPerInstance, f.HeapPerInstance)
	if c.window > 0 {
		fmt.Printf("refreshes                   %.1f/s over %.0f s (needed %.1f/s), %d failures, %d not registered after\n",
			f.RefreshesPerSecond, f.WindowSeconds, f.NeededPerSecond, f.Failures, f.NotRegistered)
		fmt.Printf("CPU while refreshing        %.3f CPU-s/s, %.1f ms per 1,000 refreshes; RSS %.1f MiB\n",
			f.CPUPerSecond, f.CPUmsPer1000, f.RSSAfterWindowMiB)
	}
	return nil
}

// fillRegistered stores n background instances as a server that held them leaves them: each
// handed over through PutRegistration (its password sealed by the store, as for a registration
// from an app), then its state saved through SaveStates as registered, with a binding that
// expires as if it had last been refreshed at a random moment of its refresh interval, the CSeq and
// expiry a refreshed instance has. It writes from seedWriters goroutines, so that the store's
// group commit takes many registrations per transaction.
func fillRegistered(ctx context.Context, db *store.DB, n, expires int, host string, port int) error {
	now := time.Now()
	grant := time.Duration(expires) * time.Second
	var next atomic.Int64
	errs := make(chan error, seedWriters)
	for range seedWriters {
		go func() {
			ups := make([]store.StateUpdate, 0, 500)
			flush := func() error {
				err := db.SaveStates(ctx, ups)
				ups = ups[:0]
				return err
			}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					err := flush()
					if err == nil {
						err = ctx.Err()
					}
					errs <- err
					return
				}
				sel := fmt.Sprintf("%016x", i+1)
				user := fmt.Sprintf("load%07d", i)
				inst := &store.Instance{Selector: sel, Node: "load", Mode: store.ModeBackground, LastActivity: now, CreatedAt: now,
					CallID: fmt.Sprintf("%032x", i+1), Settings: []byte(`{"v":1}`),
					Account: store.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: host, Port: port,
						Transport: "udp", Expires: expires}}
				dev := &store.Device{Selector: sel, ID: "phone", Platform: "none", LastSeen: now, Secret: "secret-" + user}
				if err := db.PutRegistration(ctx, inst, dev, fmt.Sprintf("nonce-%016d", i), now); err != nil {
					errs <- err
					return
				}
				// Its refresh interval is what the manager draws (0.9 of the grant, up to 20 %
				// earlier); it was last refreshed at a random moment of that interval.
				interval := 0.9 * float64(grant) * (1 - 0.2*rand.Float64())
				refreshed := now.Add(-time.Duration(rand.Float64() * interval))
				ups = append(ups, store.StateUpdate{Selector: sel, State: store.StateRegisterLoop, Status: store.StatusRegistered,
					CSeq: uint32(2 + rand.IntN(200)), ExpiresAt: refreshed.Add(grant), At: refreshed})
				if len(ups) == cap(ups) {
					if err := flush(); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	var first error
	for range seedWriters {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
