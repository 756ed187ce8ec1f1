// Command sipis-load measures the registration engine at scale on loopback: it seeds N
// instances in a store (SQLite, or the database -database names), starts the real instance manager and SIP user agent against a
// registrar that challenges every REGISTER (running in a child process, so that the figures
// are sipis's alone), and reports
//
//	(a) full REGISTER cycles per second (401 challenge + authenticated REGISTER + 200),
//	(b) resident memory per held instance,
//	(c) CPU time per 1,000 refreshes (one REGISTER and its 200 each: the nonce is reused), and
//	    with -database-pid that of the database server too (a PostgreSQL store's write cost),
//	(d) the time to resume every instance from the store.
//
// With -api it measures the registration API instead (api.go); with -resume, a restart of a node
// that held N registrations and the refreshes that follow it (resume.go).
//
// All traffic goes to 127.0.0.1; every phase is bounded in time and the tool stops by itself.
// It must never be pointed at a real proxy (it has no flag to do so), and it must not measure
// through the web server or push services: it times the engine alone.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sipis-load:", err)
		os.Exit(1)
	}
}

type figures struct {
	Instances           int     `json:"instances"`
	SeedSeconds         float64 `json:"seedSeconds"`
	RegisterSeconds     float64 `json:"registerSeconds"`
	CyclesPerSecond     float64 `json:"cyclesPerSecond"`
	RSSBaselineMiB      float64 `json:"rssBaselineMiB"`
	RSSHeldMiB          float64 `json:"rssHeldMiB"`
	RSSPerInstanceBytes float64 `json:"rssPerInstanceBytes"`
	HeapPerInstance     float64 `json:"heapPerInstanceBytes"`
	Refreshes           int64   `json:"refreshes"`
	RefreshWindowSecs   float64 `json:"refreshWindowSeconds"`
	CPUmsPer1000        float64 `json:"cpuMsPer1000Refreshes"`
	DBCPUmsPer1000      float64 `json:"databaseCpuMsPer1000Refreshes,omitempty"`
	Database            string  `json:"database"`
	ResumeLoadSeconds   float64 `json:"resumeLoadSeconds"`
	Failures            int64   `json:"registerFailures"`
}

func run() error {
	n := flag.Int("n", 10000, "instances")
	expires := flag.Int("expires", 60, "expiry the registrar grants, in seconds (refreshed 36 s before it, or at 0.9 of it)")
	window := flag.Duration("window", 30*time.Second, "how long to count refreshes for the CPU figure; 0 skips it")
	workers := flag.Int("workers", 256, "manager workers (REGISTERs in flight at most)")
	inflight := flag.Int("inflight", 256, "REGISTERs in flight per proxy at most")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	asJSON := flag.Bool("json", false, "print the figures as JSON")
	child := flag.Bool("registrar-child", false, "internal: run the loopback registrar and print its address")
	api := flag.Bool("api", false, "measure the registration API instead: -n sealed registrations POSTed by -concurrency clients (api.go)")
	concurrency := flag.Int("concurrency", 64, "with -api: clients posting at once")
	apiMode := flag.String("api-mode", "foreground", "with -api: the registrations' mode, foreground (intake only) or background (each also REGISTERs)")
	cpuProfile := flag.String("cpuprofile", "", "with -api: write a CPU profile of the posting phase to this file; with -resume, of the first resume")
	resume := flag.Bool("resume", false, "measure a restart instead: fill a store with -n registered instances, resume it -runs times, count refreshes over -window (resume.go)")
	runs := flag.Int("runs", 3, "with -resume: how many times to resume the store (the median is reported)")
	ab := flag.String("ab", "", "with -resume: another build of sipis-load; each resume is also run by it, interleaved (A/B)")
	resumeStore := flag.String("store", "", "internal: with -resume-child, the filled store to resume")
	resumeChildFlag := flag.Bool("resume-child", false, "internal: run one resume of -store")
	apiClient := flag.Bool("api-client-child", false, "internal: run the API clients")
	apiURL := flag.String("api-url", "", "internal: where the API clients post")
	apiPub := flag.String("api-pub", "", "internal: the server's public key, base64")
	apiProxy := flag.String("api-proxy", "", "internal: the registrar's host:port for the accounts")
	database := flag.String("database", "", "the store's OpenString (e.g. a postgres:// URL of an empty database on 127.0.0.1); default a SQLite file in a temporary folder")
	databasePID := flag.Int("database-pid", 0, "with -database: the database server's main process (PostgreSQL's postmaster); its CPU and its children's is counted with the refreshes")
	flag.Parse()
	if *child {
		return serveRegistrar(*expires)
	}
	if *apiClient {
		return runAPIClient(*n, *concurrency, *apiMode, *apiURL, *apiPub, *apiProxy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *api {
		return runAPI(ctx, *n, *concurrency, *apiMode, *cpuProfile, *asJSON)
	}
	rc := resumeConfig{n: *n, expires: *expires, runs: *runs, workers: *workers, inflight: *inflight,
		window: *window, cpuProfile: *cpuProfile, asJSON: *asJSON, other: *ab}
	if *resumeChildFlag {
		return resumeChild(ctx, *resumeStore, rc)
	}
	if *resume {
		return runResume(ctx, rc)
	}

	host, port, dir, done, err := startLoopback(*expires)
	if err != nil {
		return err
	}
	defer done()
	log := logrus.New()
	log.SetOutput(io.Discard)
	key := make([]byte, 32)
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(dir, "load.db"), OpenString: *database,
		DataKey: key, Node: "load", Logger: log})
	if err != nil {
		return err
	}
	defer db.Close()

	f := figures{Instances: *n, Database: string(db.Backend())}
	dbCPU := func() time.Duration { return 0 }
	if *databasePID > 0 {
		if _, err := siptest.ProcessUsage(*databasePID); err != nil {
			return fmt.Errorf("-database-pid %d: %w", *databasePID, err)
		}
		dbCPU = func() time.Duration { return serverCPU(*databasePID) }
	}
	fmt.Fprintf(os.Stderr, "seeding %d instances...\n", *n)
	t0 := time.Now()
	if err := seed(ctx, db, *n, *expires, host, port); err != nil {
		return err
	}
	f.SeedSeconds = time.Since(t0).Seconds()

	ua, err := startUA(ctx, log)
	if err != nil {
		return err
	}
	defer ua.Close()

	runtime.GC()
	debug.FreeOSMemory()
	base := rssBytes()
	f.RSSBaselineMiB = float64(base) / (1 << 20)
	var msBefore runtime.MemStats
	runtime.ReadMemStats(&msBefore)

	opts := instance.Options{Store: db, Registrar: ua, Logger: log, Node: "load", Workers: *workers,
		MaxInFlightPerProxy: *inflight, ResumeWindow: time.Nanosecond, MinExpires: min(*expires, 60), BackoffMin: time.Second}
	m, err := instance.New(opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "registering...\n")
	t1 := time.Now()
	if err := m.Start(ctx); err != nil {
		return err
	}
	registered := instance.Phase{State: instance.RegisterLoop, Status: instance.Registered}
	for {
		byPhase, _ := m.Counts()
		if byPhase[registered] == *n {
			break
		}
		if ctx.Err() != nil {
			m.Stop()
			return fmt.Errorf("only %d of %d registered: %v", byPhase[registered], *n, byPhase)
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.RegisterSeconds = time.Since(t1).Seconds()
	f.CyclesPerSecond = float64(*n) / f.RegisterSeconds

	runtime.GC()
	debug.FreeOSMemory()
	held := rssBytes()
	var msAfter runtime.MemStats
	runtime.ReadMemStats(&msAfter)
	f.RSSHeldMiB = float64(held) / (1 << 20)
	f.RSSPerInstanceBytes = float64(held-base) / float64(*n)
	f.HeapPerInstance = float64(int64(msAfter.HeapAlloc)-int64(msBefore.HeapAlloc)) / float64(*n)

	// Refreshes: count cycles and our CPU time over the window, once the first refreshes are due.
	// The first refreshes come at 0.9 of the expiry but 36 s before it at the latest, less
	// up to 20 % jitter (instance.Manager.refreshIn).
	lead := min(0.9*float64(*expires), float64(*expires)-36)
	wait := time.Duration(max(lead*0.8, float64(*expires)/3*0.8, 5) * float64(time.Second))
	if *window > 0 { // -window 0 skips the refresh figure (a long expiry would wait for hours)
		fmt.Fprintf(os.Stderr, "waiting %v for refreshes to start, then counting for %v...\n", wait, *window)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		r0, c0, d0 := m.Stats().Registers.Load(), cpuTime(), dbCPU()
		select {
		case <-time.After(*window):
		case <-ctx.Done():
		}
		r1, c1, d1 := m.Stats().Registers.Load(), cpuTime(), dbCPU()
		f.Refreshes = r1 - r0
		f.RefreshWindowSecs = window.Seconds()
		if f.Refreshes > 0 {
			f.CPUmsPer1000 = float64((c1 - c0).Milliseconds()) / float64(f.Refreshes) * 1000
			f.DBCPUmsPer1000 = float64((d1 - d0).Milliseconds()) / float64(f.Refreshes) * 1000
		}
	}
	f.Failures = m.Stats().RegisterFailures.Load()
	m.Stop()

	// Resume: a new manager loads and schedules every stored instance.
	opts.ResumeWindow = 5 * time.Minute
	m2, err := instance.New(opts)
	if err != nil {
		return err
	}
	t2 := time.Now()
	if err := m2.Start(ctx); err != nil {
		return err
	}
	f.ResumeLoadSeconds = time.Since(t2).Seconds()
	if got := m2.Len(); got != *n {
		m2.Stop()
		return fmt.Errorf("resumed %d of %d instances", got, *n)
	}
	m2.Stop()

	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	fmt.Printf("instances                         %d (store: %s)\n", f.Instances, f.Database)
	fmt.Printf("(a) full REGISTER cycles/s        %.0f  (%d in %.2f s, 401+200 each)\n", f.CyclesPerSecond, f.Instances, f.RegisterSeconds)
	fmt.Printf("(b) RSS held                      %.1f MiB (baseline %.1f MiB): %.0f bytes/instance; Go heap %.0f bytes/instance\n",
		f.RSSHeldMiB, f.RSSBaselineMiB, f.RSSPerInstanceBytes, f.HeapPerInstance)
	fmt.Printf("(c) CPU per 1,000 refreshes       %.1f ms  (%d refreshes in %.0f s)\n", f.CPUmsPer1000, f.Refreshes, f.RefreshWindowSecs)
	if *databasePID > 0 {
		fmt.Printf("    database server's CPU         %.1f ms per 1,000 refreshes\n", f.DBCPUmsPer1000)
	}
	fmt.Printf("(d) resume from the store         %.2f s\n", f.ResumeLoadSeconds)
	fmt.Printf("REGISTER failures                 %d\n", f.Failures)
	return nil
}

// seed stores n instances in the background mode, ready to register (fill).
func seed(ctx context.Context, db *store.DB, n, expires int, host string, port int) error {
	now := time.Now()
	return fill(ctx, db, n, expires, host, port, false, func(sel string) store.StateUpdate {
		return store.StateUpdate{Selector: sel, State: store.StateRegistering, Status: store.StatusRegistering, At: now}
	})
}

// fill stores n background instances of the loopback registrar's accounts, each handed over
// through PutRegistration (the store seals its password, as for a registration from an app) and
// then given the state that state returns for it, saved through SaveStates 500 at a time. With
// fromApp the rows also carry what an app's registration writes beside the account: settings and
// a device secret. It writes from seedWriters goroutines at once, so that the store's group
// commit takes many registrations per transaction (one at a time, 1,000,000 took longer than
// the run).
func fill(ctx context.Context, db *store.DB, n, expires int, host string, port int, fromApp bool,
	state func(sel string) store.StateUpdate) error {
	now := time.Now()
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
					CallID: fmt.Sprintf("%032x", i+1),
					Account: store.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: host, Port: port,
						Transport: "udp", Expires: expires}}
				dev := &store.Device{Selector: sel, ID: "phone", Platform: "none", LastSeen: now}
				if fromApp {
					inst.Settings = []byte(`{"v":1}`)
					dev.Secret = "secret-" + user
				}
				if err := db.PutRegistration(ctx, inst, dev, fmt.Sprintf("nonce-%016d", i), now); err != nil {
					errs <- err
					return
				}
				ups = append(ups, state(sel))
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

// seedWriters is how many goroutines seed the store at once.
const seedWriters = 64

// startRegistrarChild runs this program as the registrar in a child process.
func startRegistrarChild(expires int) (addr string, kill func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(exe, "-registrar-child", "-expires", strconv.Itoa(expires))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		return "", nil, errors.New("the registrar child did not start")
	}
	return strings.TrimSpace(line), func() { stdin.Close(); cmd.Wait() }, nil
}

// serveRegistrar runs a registrar that challenges every REGISTER until stdin closes.
func serveRegistrar(expires int) error {
	r, err := siptest.StartRegistrar(siptest.WithMaxExpires(expires))
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Println(r.Addr())
	io.Copy(io.Discard, os.Stdin)
	return nil
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time of the process pid and of its live children: a PostgreSQL server's
// postmaster and its backends, each of which is in a process group of its own (setsid), so a
// group's usage would miss them. A backend that exited during the window is not counted.
func serverCPU(pid int) time.Duration {
	u, _ := siptest.ProcessUsage(pid)
	total := u.CPU
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The fields after the command's closing parenthesis: state, ppid, ...
		rest := stat[strings.LastIndexByte(string(stat), ')')+1:]
		fields := strings.Fields(string(rest))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		if cu, err := siptest.ProcessUsage(child); err == nil {
			total += cu.CPU
		}
	}
	return total
}

// startLoopback starts the challenging registrar in a child process and makes a temporary folder
// for the store; done stops the one and removes the other.
func startLoopback(expires int) (host string, port int, dir string, done func(), err error) {
	addr, kill, err := startRegistrarChild(expires)
	if err != nil {
		return "", 0, "", nil, err
	}
	host, portStr, _ := strings.Cut(addr, ":")
	port, _ = strconv.Atoi(portStr)
	dir, err = os.MkdirTemp("", "sipis-load-*")
	if err != nil {
		kill()
		return "", 0, "", nil, err
	}
	return host, port, dir, func() { os.RemoveAll(dir); kill() }, nil
}

// startUA starts the user agent the manager registers through, on one UDP socket of 127.0.0.1.
func startUA(ctx context.Context, log *logrus.Logger) (*sipua.UA, error) {
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}, Logger: log,
		TransactionTimeout: 8 * time.Second})
	if err != nil {
		return nil, err
	}
	if err := ua.Start(ctx); err != nil {
		ua.Close()
		return nil, err
	}
	return ua, nil
}
