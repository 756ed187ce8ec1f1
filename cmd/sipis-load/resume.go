package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
)

// The resume mode (-resume) measures a restart of a node that held N registrations, without the
// N real REGISTERs that would take a quarter of an hour at a million: it fills a SQLite store
// with N instances as a running server leaves them (each stored through PutRegistration, the
// path the registration API takes, so the password is sealed exactly as the intake seals it;
// then its state written through SaveStates, the persister's path, as Registered, with a
// registered-until time as if it had last been refreshed at a random moment of its refresh
// interval). Then it starts a new instance manager on that store -runs times, each in a new
// process as after a restart, and reports how long Start took (loading and scheduling every instance), the resident memory and Go heap per
// resumed instance; and, on the last run, counts the refreshes that come due over -window
// against the loopback registrar (in a child process, as in the default mode) with sipis's CPU.
//
// The registrar grants every REGISTER, after a digest challenge, for -expires seconds and
// checks the password, so a refresh that used a badly opened password fails and is counted.
// Before each resume the stored times are moved on by the time since the fill (the earlier
// runs take minutes at a million), as if the node had stopped just before it.

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
	NotResumed         int64     `json:"rowsNotResumed"`
	ResumeCPUMedian    float64   `json:"resumeCPUSecondsMedian"`
	// With -ab: the other build's resumes of the same store, each run just before ours.
	OtherSeconds    []float64 `json:"otherResumeSeconds,omitempty"`
	OtherCPUSeconds []float64 `json:"otherResumeCPUSeconds,omitempty"`
	OtherMedian     float64   `json:"otherResumeSecondsMedian,omitempty"`
	OtherCPUMedian  float64   `json:"otherResumeCPUSecondsMedian,omitempty"`
	// and its refreshes over the same window (its last run)
	OtherRefreshesPerSecond float64 `json:"otherRefreshesPerSecond,omitempty"`
	OtherCPUPerSecond       float64 `json:"otherCpuSecondsPerSecond,omitempty"`
	OtherFailures           int64   `json:"otherRefreshFailures,omitempty"`
}

// resumeConfig are the flags of the resume mode.
type resumeConfig struct {
	n, expires, runs, workers, inflight int
	window                              time.Duration
	cpuProfile                          string
	other                               string // -ab: another build of this program, resumed interleaved
	asJSON                              bool
}

func runResume(ctx context.Context, c resumeConfig) error {
	host, port, dir, done, err := startLoopback(c.expires)
	if err != nil {
		return err
	}
	defer done()
	path := filepath.Join(dir, "load.db")
	log := logrus.New()
	log.SetOutput(io.Discard)
	db, err := store.Open(ctx, store.Options{Path: path, DataKey: make([]byte, store.DataKeySize), Node: "load", Logger: log})
	if err != nil {
		return err
	}
	f := resumeFigures{Instances: c.n, Expires: c.expires}
	fmt.Fprintf(os.Stderr, "filling the store with %d registered instances...\n", c.n)
	t0 := time.Now()
	err = fillRegistered(ctx, db, c.n, c.expires, host, port)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	f.FillSeconds = time.Since(t0).Seconds()
	filled := t0 // the rows' times are relative to the start of the fill
	var shifted time.Duration

	// Each resume is a new process, as after a restart: its heap grows from nothing, and
	// nothing read by an earlier run is cached in it.
	var last resumeRun
	for run := range max(c.runs, 1) {
		args := []string{"-resume-child", "-store", path, "-n", strconv.Itoa(c.n),
			"-workers", strconv.Itoa(c.workers), "-inflight", strconv.Itoa(c.inflight), "-expires", strconv.Itoa(c.expires)}
		if run == c.runs-1 {
			args = append(args, "-window", c.window.String())
		} else {
			args = append(args, "-window", "0")
		}
		if run == 0 && c.cpuProfile != "" {
			args = append(args, "-cpuprofile", c.cpuProfile)
		}
		// As if the node had stopped just now: the stored times move on by the time since the
		// fill, so that the refreshes due are those of a node that was not down for minutes.
		if d := time.Since(filled) - shifted; d > time.Second {
			if err := shiftTimes(ctx, path, d); err != nil {
				return err
			}
			shifted += d
		}
		if c.other != "" {
			// A/B: the same resume by the other build, interleaved, before each of ours.
			o, err := runChild(ctx, c.other, args)
			if err != nil {
				return fmt.Errorf("resume %d by %s: %w", run+1, c.other, err)
			}
			f.OtherSeconds = append(f.OtherSeconds, o.ResumeSeconds)
			f.OtherCPUSeconds = append(f.OtherCPUSeconds, o.ResumeCPUSeconds)
			f.OtherRefreshesPerSecond, f.OtherCPUPerSecond, f.OtherFailures = o.RefreshesPerSecond, o.CPUPerSecond, o.Failures
			fmt.Fprintf(os.Stderr, "resume %d by %s: %.2f s (%.2f CPU-s)\n", run+1, c.other, o.ResumeSeconds, o.ResumeCPUSeconds)
		}
		if last, err = runChild(ctx, "", args); err != nil {
			return fmt.Errorf("resume %d: %w", run+1, err)
		}
		f.ResumeSeconds = append(f.ResumeSeconds, last.ResumeSeconds)
		f.ResumeCPUSeconds = append(f.ResumeCPUSeconds, last.ResumeCPUSeconds)
		fmt.Fprintf(os.Stderr, "resume %d: %.2f s (%.2f CPU-s)\n", run+1, last.ResumeSeconds, last.ResumeCPUSeconds)
	}
	if c.other != "" {
		f.OtherMedian, f.OtherCPUMedian = median(f.OtherSeconds), median(f.OtherCPUSeconds)
	}
	f.ResumeMedian, f.ResumeCPUMedian = median(f.ResumeSeconds), median(f.ResumeCPUSeconds)
	f.RSSBaselineMiB, f.RSSResumedMiB = last.RSSBaselineMiB, last.RSSResumedMiB
	f.RSSPerInstance, f.HeapPerInstance = last.RSSPerInstance, last.HeapPerInstance
	f.WindowSeconds, f.Refreshes, f.Failures = last.WindowSeconds, last.Refreshes, last.Failures
	f.RefreshesPerSecond, f.CPUPerSecond, f.CPUmsPer1000 = last.RefreshesPerSecond, last.CPUPerSecond, last.CPUmsPer1000
	f.RSSAfterWindowMiB, f.NotRegistered, f.NotResumed = last.RSSAfterWindowMiB, last.NotRegistered, last.NotResumed
	// The refreshes due now: every instance refreshes at its own point, spread over the
	// interval by the fill, so they flow at about n / (0.9 · expires) per second from the start.
	f.NeededPerSecond = float64(c.n) / (0.9 * float64(c.expires))

	if c.asJSON {
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	fmt.Printf("instances                   %d (expires %d s), store filled in %.1f s\n", f.Instances, f.Expires, f.FillSeconds)
	fmt.Printf("resume from the store       median %.2f s of %.2f s (CPU-s %.2f); %d rows not resumed\n",
		f.ResumeMedian, f.ResumeSeconds, f.ResumeCPUSeconds, f.NotResumed)
	fmt.Printf("RSS resumed                 %.1f MiB (baseline %.1f MiB): %.0f bytes/instance; Go heap %.0f bytes/instance\n",
		f.RSSResumedMiB, f.RSSBaselineMiB, f.RSSPerInstance, f.HeapPerInstance)
	if c.other != "" {
		fmt.Printf("the other build (-ab)       median %.2f s of %.2f s (CPU-s median %.2f of %.2f; ours %.2f)\n",
			f.OtherMedian, f.OtherSeconds, f.OtherCPUMedian, f.OtherCPUSeconds, f.ResumeCPUMedian)
		if c.window > 0 {
			fmt.Printf("the other build's refreshes %.1f/s, %.3f CPU-s/s, %d failures\n",
				f.OtherRefreshesPerSecond, f.OtherCPUPerSecond, f.OtherFailures)
		}
	}
	if c.window > 0 {
		fmt.Printf("refreshes                   %.1f/s over %.0f s (needed %.1f/s), %d failures, %d not registered after\n",
			f.RefreshesPerSecond, f.WindowSeconds, f.NeededPerSecond, f.Failures, f.NotRegistered)
		fmt.Printf("CPU while refreshing        %.3f CPU-s/s, %.1f ms per 1,000 refreshes; RSS %.1f MiB\n",
			f.CPUPerSecond, f.CPUmsPer1000, f.RSSAfterWindowMiB)
	}
	return nil
}

// shiftTimes moves every stored registration time (expiry, last state save) d later, with
// the SQLite driver the store registers: the rows stay as the server wrote them, only older.
func shiftTimes(ctx context.Context, path string, d time.Duration) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=5000")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, `UPDATE instances SET expires_at = expires_at + ?, updated_at = updated_at + ?
		WHERE expires_at > 0`, int64(d), int64(d))
	if err != nil {
		return fmt.Errorf("shift the stored times: %w", err)
	}
	return nil
}

// resumeRun is what one resume child reports.
type resumeRun struct {
	ResumeSeconds      float64
	ResumeCPUSeconds   float64
	NotResumed         int64
	RSSBaselineMiB     float64
	RSSResumedMiB      float64
	RSSPerInstance     float64
	HeapPerInstance    float64
	WindowSeconds      float64
	Refreshes          int64
	RefreshesPerSecond float64
	Failures           int64
	CPUPerSecond       float64
	CPUmsPer1000       float64
	RSSAfterWindowMiB  float64
	NotRegistered      int
}

// runChild runs exe ("": this program) with args and decodes the resumeRun it prints.
func runChild(ctx context.Context, exe string, args []string) (resumeRun, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return resumeRun{}, err
		}
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return resumeRun{}, err
	}
	var r resumeRun
	if err := json.Unmarshal(out, &r); err != nil {
		return resumeRun{}, fmt.Errorf("child output: %w", err)
	}
	return r, nil
}

// resumeChild is one resume, in a process of its own: it opens the filled store at path,
// starts a manager on it (timed), measures its memory, and counts the refreshes over window.
func resumeChild(ctx context.Context, path string, c resumeConfig) error {
	log := logrus.New()
	log.SetOutput(io.Discard)
	db, err := store.Open(ctx, store.Options{Path: path, DataKey: make([]byte, store.DataKeySize), Node: "load", Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()
	ua, err := startUA(ctx, log)
	if err != nil {
		return err
	}
	defer ua.Close()

	var r resumeRun
	runtime.GC()
	base := rssBytes()
	r.RSSBaselineMiB = float64(base) / (1 << 20)
	var msBefore runtime.MemStats
	runtime.ReadMemStats(&msBefore)

	m, err := instance.New(instance.Options{Store: db, Registrar: ua, Logger: log, Node: "load", Workers: c.workers,
		MaxInFlightPerProxy: c.inflight, MinExpires: min(c.expires, 60), BackoffMin: time.Second})
	if err != nil {
		return err
	}
	if c.cpuProfile != "" {
		prof, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer prof.Close()
		if err := pprof.StartCPUProfile(prof); err != nil {
			return err
		}
	}
	c0, t := cpuTime(), time.Now()
	if err := m.Start(ctx); err != nil {
		return err
	}
	r.ResumeSeconds, r.ResumeCPUSeconds = time.Since(t).Seconds(), (cpuTime() - c0).Seconds()
	if c.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	defer m.Stop()
	r.NotResumed = m.Stats().NotResumed.Load()
	if got := m.Len(); got != c.n {
		return fmt.Errorf("resumed %d of %d instances", got, c.n)
	}

	runtime.GC()
	debug.FreeOSMemory()
	held := rssBytes()
	var msAfter runtime.MemStats
	runtime.ReadMemStats(&msAfter)
	r.RSSResumedMiB = float64(held) / (1 << 20)
	r.RSSPerInstance = float64(held-base) / float64(c.n)
	r.HeapPerInstance = float64(int64(msAfter.HeapAlloc)-int64(msBefore.HeapAlloc)) / float64(c.n)

	if c.window > 0 {
		fmt.Fprintf(os.Stderr, "counting refreshes for %v...\n", c.window)
		r0, e0, c0 := m.Stats().Registers.Load(), m.Stats().RegisterFailures.Load(), cpuTime()
		select {
		case <-time.After(c.window):
		case <-ctx.Done():
			return ctx.Err()
		}
		r1, e1, c1 := m.Stats().Registers.Load(), m.Stats().RegisterFailures.Load(), cpuTime()
		r.WindowSeconds = c.window.Seconds()
		r.Refreshes, r.Failures = r1-r0, e1-e0
		r.RefreshesPerSecond = float64(r.Refreshes) / r.WindowSeconds
		r.CPUPerSecond = (c1 - c0).Seconds() / r.WindowSeconds
		if r.Refreshes > 0 {
			r.CPUmsPer1000 = float64((c1 - c0).Milliseconds()) / float64(r.Refreshes) * 1000
		}
		r.RSSAfterWindowMiB = float64(rssBytes()) / (1 << 20)
		byPhase, _ := m.Counts()
		r.NotRegistered = c.n - byPhase[instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}]
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// fillRegistered stores n background instances as a server that held them leaves them (fill,
// with what an app's registration writes): registered, with a binding that expires as if it had
// last been refreshed at a random moment of its refresh interval, and the CSeq a refreshed
// instance has.
func fillRegistered(ctx context.Context, db *store.DB, n, expires int, host string, port int) error {
	now := time.Now()
	grant := time.Duration(expires) * time.Second
	return fill(ctx, db, n, expires, host, port, true, func(sel string) store.StateUpdate {
		// Its refresh interval is what the manager draws (0.9 of the grant, up to 20 %
		// earlier); it was last refreshed at a random moment of that interval.
		interval := 0.9 * float64(grant) * (1 - 0.2*rand.Float64())
		refreshed := now.Add(-time.Duration(rand.Float64() * interval))
		return store.StateUpdate{Selector: sel, State: store.StateRegisterLoop, Status: store.StatusRegistered,
			CSeq: uint32(2 + rand.IntN(200)), ExpiresAt: refreshed.Add(grant), At: refreshed}
	})
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
