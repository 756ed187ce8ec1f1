package instance

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// The side-by-side benchmark with Kamailio's uac_reg is long (three interleaved runs of two
// minutes each, per peer), so it runs only when asked: make bench passes -uacreg.
var (
	uacRegRun      = flag.Bool("uacreg", false, "run BenchmarkRefreshVsUacReg (Kamailio's uac_reg against sipis)")
	uacRegAccounts = flag.Int("uacreg.accounts", 10000, "accounts each peer holds")
	uacRegWindow   = flag.Duration("uacreg.window", 120*time.Second, "measured window of each run")
	uacRegExpires  = flag.Int("uacreg.expires", 60, "expiry both peers ask for, in seconds")
	uacRegRuns     = flag.Int("uacreg.runs", 3, "interleaved runs per peer")
	uacRegTimer    = flag.Int("uacreg.timer", 5, "uac_reg's reg_timer_interval, in seconds")
	uacRegProfile  = flag.String("uacreg.cpuprofile", "", "write a CPU profile of sipis's first window to this file")
	uacRegSkipUac  = flag.Bool("uacreg.sipisonly", false, "measure sipis only (for profiling)")
)

// peerRun is one measured window of one peer.
type peerRun struct {
	accepted int64         // REGISTERs the registrar accepted (registrar:accepted_regs)
	received int64         // REGISTERs the registrar received, retransmissions included
	cycles   int64         // sipis only: REGISTER cycles the manager ran
	cpu      time.Duration // the peer's utime+stime over the window
	rss      int64         // the peer's memory at the end of the window (Kamailio: PSS sum)
}

func (r peerRun) msPer1000() float64 {
	if r.accepted == 0 {
		return 0
	}
	return float64(r.cpu.Microseconds()) / 1000 / float64(r.accepted) * 1000
}

// BenchmarkRefreshVsUacReg holds the same accounts at one Kamailio registrar with Kamailio's
// uac_reg (the uac module reading a uacreg table in SQLite) and with sipis (the manager, the
// real UA and the SQLite store, in this process), in interleaved runs, and compares each
// peer's CPU time per 1,000 REGISTERs the registrar accepted over the same window. Counts
// come from the registrar; uac_reg's timer sends its refreshes in bursts, and the
// retransmissions a burst causes are accepted (and counted) again: "received" shows them.
//
// It runs once whatever b.N (use -benchtime 1x) and only with -uacreg:
//
//	go test -run '^$' -bench RefreshVsUacReg -benchtime 1x ./internal/instance \
//	  -args -uacreg -uacreg.accounts 2000 -uacreg.window 30s -uacreg.runs 1
func BenchmarkRefreshVsUacReg(b *testing.B) {
	if !*uacRegRun {
		b.Skip("long: run with -args -uacreg (make bench does when Kamailio is installed)")
	}
	n, expires := *uacRegAccounts, *uacRegExpires
	reg := siptest.StartKamailio(b, siptest.KamailioOptions{MinExpires: 10, MaxExpires: 3600, Debug: 1})
	dbPath := filepath.Join(b.TempDir(), "uacreg.db")
	createUacRegTable(b, dbPath, reg, n, expires)

	var uac, sip []peerRun
	for run := range *uacRegRuns {
		u := peerRun{accepted: 1}
		if !*uacRegSkipUac {
			u = runUacReg(b, reg, dbPath, n)
		}
		uac = append(uac, u)
		s := runSipis(b, reg, n, expires, run == 0)
		sip = append(sip, s)
		b.Logf("run %d: uac_reg %6.1f ms/1000 (%d accepted, %d received, CPU %v, PSS %.1f MiB) | "+
			"sipis %6.1f ms/1000 (%d accepted, %d received, %d cycles, CPU %v, RSS %.1f MiB) | ratio %.2f",
			run+1, u.msPer1000(), u.accepted, u.received, u.cpu.Round(time.Millisecond), float64(u.rss)/(1<<20),
			s.msPer1000(), s.accepted, s.received, s.cycles, s.cpu.Round(time.Millisecond), float64(s.rss)/(1<<20),
			s.msPer1000()/u.msPer1000())
	}
	med := func(rs []peerRun, f func(peerRun) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	per1000 := func(r peerRun) float64 { return r.msPer1000() }
	cpuPerSec := func(r peerRun) float64 { return float64(r.cpu.Microseconds()) / 1000 / uacRegWindow.Seconds() }
	mib := func(r peerRun) float64 { return float64(r.rss) / (1 << 20) }
	uacMs, sipMs := med(uac, per1000), med(sip, per1000)
	uacTot, sipTot := med(uac, cpuPerSec), med(sip, cpuPerSec)
	b.Logf("medians of %d runs, %d accounts, expires %d s, window %v: CPU per 1,000 accepted: uac_reg %.1f ms, sipis %.1f ms (ratio %.2f); "+
		"CPU while holding: uac_reg %.2f ms/s, sipis %.2f ms/s (ratio %.2f); memory: uac_reg %.1f MiB PSS, sipis %.1f MiB RSS",
		len(uac), n, expires, *uacRegWindow, uacMs, sipMs, sipMs/uacMs, uacTot, sipTot, sipTot/uacTot, med(uac, mib), med(sip, mib))
	b.ReportMetric(uacMs, "uacreg-ms/1000")
	b.ReportMetric(sipMs, "sipis-ms/1000")
	b.ReportMetric(sipMs/uacMs, "ratio-per-cycle")
	b.ReportMetric(sipTot/uacTot, "ratio-total")
}

// createUacRegTable writes the uac module's tables (schema version 5, as in Kamailio's uac
// module documentation and its db_sqlite scripts) with n accounts of the registrar.
func createUacRegTable(b *testing.B, path string, reg *siptest.Kamailio, n, expires int) {
	b.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	schema := []string{
		`CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL, table_name VARCHAR(32) NOT NULL,
			table_version INTEGER DEFAULT 0 NOT NULL, CONSTRAINT version_table_name_idx UNIQUE (table_name))`,
		`INSERT INTO version (table_name, table_version) VALUES ('uacreg', 5)`,
		`CREATE TABLE uacreg (id INTEGER PRIMARY KEY NOT NULL,
			l_uuid VARCHAR(64) DEFAULT '' NOT NULL, l_username VARCHAR(64) DEFAULT '' NOT NULL,
			l_domain VARCHAR(64) DEFAULT '' NOT NULL, r_username VARCHAR(64) DEFAULT '' NOT NULL,
			r_domain VARCHAR(64) DEFAULT '' NOT NULL, realm VARCHAR(64) DEFAULT '' NOT NULL,
			auth_username VARCHAR(64) DEFAULT '' NOT NULL, auth_password VARCHAR(64) DEFAULT '' NOT NULL,
			auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL, auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
			expires INTEGER DEFAULT 0 NOT NULL, flags INTEGER DEFAULT 0 NOT NULL,
			reg_delay INTEGER DEFAULT 0 NOT NULL, contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
			socket VARCHAR(128) DEFAULT '' NOT NULL, CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid))`,
	}
	for _, s := range schema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			b.Fatalf("uacreg schema: %v", err)
		}
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain,
		realm, auth_username, auth_password, auth_proxy, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		user := benchUser(i)
		_, err := ins.ExecContext(ctx, fmt.Sprintf("uac%06d", i), user, reg.Domain(), user, reg.Domain(),
			reg.Domain(), user, siptest.KamailioPassword(user), "sip:"+reg.Addr(), expires)
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
}

// benchUser is account i's user name; both peers hold the same accounts.
func benchUser(i int) string { return fmt.Sprintf("bench%06d", i) }

// registrarCounts reads the registrar's accepted and received REGISTERs.
func registrarCounts(b *testing.B, reg *siptest.Kamailio) (accepted, received int64) {
	b.Helper()
	accepted, err := reg.Stat("accepted_regs")
	if err != nil {
		b.Fatal(err)
	}
	received, err = reg.Stat("rcv_requests_register")
	if err != nil {
		b.Fatal(err)
	}
	return accepted, received
}

// waitAccepted waits until the registrar accepted n more REGISTERs than from, the first
// registration of every account; it polls the registrar's counter, bounded in time.
func waitAccepted(b *testing.B, reg *siptest.Kamailio, from int64, n int, limit time.Duration, who string) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for {
		a, _ := registrarCounts(b, reg)
		if a-from >= int64(n) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: only %d of %d accounts registered within %v", who, a-from, n, limit)
		}
		time.Sleep(200 * time.Millisecond) // polling a counter in another process
	}
}

// measure runs the window: usage and registrar counters at its start and end.
func measure(b *testing.B, reg *siptest.Kamailio, usage func() (siptest.Usage, error)) peerRun {
	b.Helper()
	u0, err := usage()
	if err != nil {
		b.Fatal(err)
	}
	a0, r0 := registrarCounts(b, reg)
	time.Sleep(*uacRegWindow) // the measured window itself
	a1, r1 := registrarCounts(b, reg)
	u1, err := usage()
	if err != nil {
		b.Fatal(err)
	}
	return peerRun{accepted: a1 - a0, received: r1 - r0, cpu: u1.CPU - u0.CPU, rss: u1.RSS}
}

// runUacReg starts Kamailio's uac_reg on the table (db_sqlite takes what follows "sqlite://" less its first "/" as the path), waits for the first registration of every
// account and measures a window.
func runUacReg(b *testing.B, reg *siptest.Kamailio, dbPath string, n int) peerRun {
	b.Helper()
	a0, _ := registrarCounts(b, reg)
	k := siptest.StartKamailio(b, siptest.KamailioOptions{Template: "uacreg.cfg.tmpl", Debug: 1,
		SharedMB: 256, PrivateMB: 64,
		Vars: map[string]any{"DBURL": "sqlite:///" + dbPath, "RegTimer": *uacRegTimer}})
	defer k.Stop()
	waitAccepted(b, reg, a0, n, 2*time.Minute, "uac_reg")
	return measure(b, reg, k.Usage)
}

// runSipis seeds a new store with the accounts, starts the manager and a UA, waits for the
// first registration of every account and measures a window.
func runSipis(b *testing.B, reg *siptest.Kamailio, n, expires int, first bool) peerRun {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := logrus.New()
	log.SetLevel(logrus.ErrorLevel)
	log.SetOutput(os.Stderr)
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(b.TempDir(), "sipis.db"), DataKey: make([]byte, store.DataKeySize),
		Node: "bench", Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	ups := make([]store.StateUpdate, 0, 500)
	for i := range n {
		sel, user := fmt.Sprintf("%016x", i+1), benchUser(i)
		inst := &store.Instance{Selector: sel, Node: "bench", Mode: store.ModeBackground, LastActivity: now, CreatedAt: now,
			ContactUser: randomToken(12), CallID: randomToken(16),
			Account: store.Account{User: user, Password: siptest.KamailioPassword(user), Domain: reg.Domain(),
				Proxy: reg.Host(), Port: reg.Port(), Transport: "udp", Expires: expires}}
		dev := &store.Device{Selector: sel, ID: "phone", Platform: "none", LastSeen: now}
		if err := db.PutRegistration(ctx, inst, dev, "nonce-"+sel, now); err != nil {
			b.Fatal(err)
		}
		ups = append(ups, store.StateUpdate{Selector: sel, State: store.StateRegistering, Status: store.StatusRegistering, At: now})
		if len(ups) == cap(ups) || i == n-1 {
			if err := db.SaveStates(ctx, ups); err != nil {
				b.Fatal(err)
			}
			ups = ups[:0]
		}
	}
	ua, err := sipua.New(sipua.Config{Listeners: []sipua.Listener{{Transport: "udp", Address: "127.0.0.1:0"}}, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	if err := ua.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer ua.Close()
	m, err := New(Options{Store: db, Registrar: ua, Logger: log, Node: "bench", MinExpires: min(expires, 60),
		ResumeWindow: time.Nanosecond})
	if err != nil {
		b.Fatal(err)
	}
	a0, _ := registrarCounts(b, reg)
	if err := m.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer m.Stop()
	waitAccepted(b, reg, a0, n, 2*time.Minute, "sipis")
	runtime.GC() // the seeding's garbage is not the refreshes' cost
	c0 := m.Stats().Registers.Load()
	if first && *uacRegProfile != "" {
		f, err := os.Create(*uacRegProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	r := measure(b, reg, func() (siptest.Usage, error) { return siptest.ProcessUsage(os.Getpid()) })
	r.cycles = m.Stats().Registers.Load() - c0
	if f := m.Stats().RegisterFailures.Load(); f > 0 {
		b.Logf("sipis: %d REGISTER failures", f)
	}
	return r
}
