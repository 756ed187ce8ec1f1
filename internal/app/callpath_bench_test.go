package app

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
)

// BenchmarkCallPathKamailio measures the call path on the wire: SIPp calls a sleeping account
// through a real Kamailio (the user's proxy and registrar) to sipis, b.N calls at 100 calls/s
// (SIPIS_CALL_RATE changes the rate), each cancelled once both wake-up 180s have come. Pushes
// go to the APNs fake.
//
// sipis's own time is taken at its socket by the proxy-facing UA's Wiretap: from the INVITE
// being read to the first 180 (Alerting-Device) being written, and to the second 180
// (Push-Notification-Sent, which waits for the push service). The figures are sipis-180-p50/p99
// and sipis-pushsent-p50/p99 in µs. The tap runs on the goroutine that reads or writes the
// datagram, right after the system call returns, so a datagram's wait in the kernel's receive
// buffer before sipis reads it is not counted (at 100 calls/s the reader is idle between
// datagrams). SIPp's own response times are not used: its clock ticks in milliseconds.
//
// The order of the two 180s is checked at both ends: sipis-reordered counts calls whose 180s
// left sipis's socket out of order (the benchmark fails on any), caller-reordered those whose
// Push-Notification-Sent reached SIPp first. SIPIS_KAMAILIO_CHILDREN sets Kamailio's UDP
// worker processes (default 2): with 1, Kamailio relays the datagrams in the order it got them.
//
// Run (30 s at 100 calls/s, three runs):
//
//	go test -run '^$' -bench BenchmarkCallPathKamailio -benchtime 3000x -count 3 ./internal/app
//
// It needs kamailio and sipp; without them it is skipped.
func BenchmarkCallPathKamailio(b *testing.B) {
	sipp := siptest.SIPp(b)
	rate := 100
	if v := os.Getenv("SIPIS_CALL_RATE"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			b.Fatalf("SIPIS_CALL_RATE=%q is not a rate from 1 to 1000", v)
		}
		rate = n
	}
	children := 0 // the harness's default, 2
	if v := os.Getenv("SIPIS_KAMAILIO_CHILDREN"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 16 {
			b.Fatalf("SIPIS_KAMAILIO_CHILDREN=%q is not a number of processes from 1 to 16", v)
		}
		children = n
	}
	k := siptest.StartKamailio(b, siptest.KamailioOptions{Children: children})
	apns := pushtest.NewAPNs(b)
	dir := b.TempDir()
	s := apnsSettings(b, dir, apns, "")
	s.Instance.MaxCalls = 1000 // one account takes every call
	tap := &wireClock{calls: make(map[string]*wireCall)}
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.WarnLevel) // the default <Log Level="Warning">
	a, err := New(s, WithLogger(l), func(a *App) { a.wiretap = tap.tap })
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Stop)
	const sel, user = "ca11ba7cca11ba7c", "user0077"
	holdAtKamailio(b, a, k, apns, sel, user, "device-secret-77")

	scenario, err := os.ReadFile(filepath.Join("testdata", "sipp", "callpath_uac.xml"))
	if err != nil {
		b.Fatal(err)
	}
	work := b.TempDir() // SIPp writes its log file next to the scenario
	if err := os.WriteFile(filepath.Join(work, "callpath.xml"), scenario, 0o600); err != nil {
		b.Fatal(err)
	}
	limit := time.Duration(b.N)*time.Second/time.Duration(rate) + 30*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), limit+10*time.Second)
	defer cancel()
	// -p 0: SIPp binds a free port; -recv_timeout: a lost response fails its call instead of
	// holding the run.
	cmd := exec.CommandContext(ctx, sipp, "-sf", "callpath.xml", "-s", user, "-i", "127.0.0.1", "-p", "0",
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(b.N), "-l", "1000", "-recv_timeout", "10000",
		"-timeout", strconv.Itoa(int(limit/time.Second))+"s", "-timeout_error", "-nostdin",
		"-trace_logs", "-trace_err", k.Addr())
	cmd.Dir = work
	b.ResetTimer()
	out, err := cmd.CombinedOutput()
	b.StopTimer()
	if err != nil {
		// The figures below still say what left sipis, e.g. whether a 180 SIPp missed was
		// sent.
		b.Errorf("sipp failed: %v\n%s", err, tailLines(string(out), 40))
	}

	calls, sipisReordered := tap.figures()
	b.Logf("at sipis's socket: %d INVITEs in, %d Alerting-Device and %d Push-Notification-Sent 180s out, %d out of order",
		tap.invites(), len(calls.ringing), len(calls.pushSent), sipisReordered)
	if len(calls.ringing) != b.N || len(calls.pushSent) != b.N {
		b.Errorf("sipis sent %d first and %d second 180s for %d calls", len(calls.ringing), len(calls.pushSent), b.N)
	}
	if sipisReordered > 0 {
		b.Errorf("%d calls' Push-Notification-Sent left sipis before their Alerting-Device", sipisReordered)
	}
	callerReordered, err := countLines(work, "_logs.log", "reordered ")
	if err != nil {
		b.Fatal(err)
	}
	reportMicros(b, "sipis-180", calls.ringing)
	reportMicros(b, "sipis-pushsent", calls.pushSent)
	b.ReportMetric(float64(sipisReordered), "sipis-reordered")
	b.ReportMetric(float64(callerReordered), "caller-reordered")
}

// wireClock keeps, per Call-ID, when the INVITE was read from sipis's socket and when each of
// the two wake-up 180s was written to it.
type wireClock struct {
	mu    sync.Mutex
	calls map[string]*wireCall
}

type wireCall struct {
	invite, alerting, pushSent time.Time
	reordered                  bool // the Push-Notification-Sent 180 was written first
}

// tap is the UA's Wiretap: it reads the first line, Call-ID and X-Sipis-Push-Status only.
func (w *wireClock) tap(out bool, _ string, b []byte) {
	now := time.Now()
	switch {
	case !out && bytes.HasPrefix(b, []byte("INVITE ")):
		id := headerValue(b, "Call-ID", "i")
		w.mu.Lock()
		if w.calls[id] == nil {
			w.calls[id] = &wireCall{invite: now}
		}
		w.mu.Unlock()
	case out && bytes.HasPrefix(b, []byte("SIP/2.0 180 ")):
		id, status := headerValue(b, "Call-ID", "i"), headerValue(b, "X-Sipis-Push-Status", "")
		w.mu.Lock()
		if c := w.calls[id]; c != nil {
			switch status {
			case call.StatusAlerting:
				if c.alerting.IsZero() {
					c.alerting = now
				}
			case call.StatusPushSent:
				if c.pushSent.IsZero() {
					c.pushSent = now
					c.reordered = c.alerting.IsZero()
				}
			}
		}
		w.mu.Unlock()
	}
}

// invites returns the number of calls whose INVITE was read.
func (w *wireClock) invites() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

type wireFigures struct{ ringing, pushSent []time.Duration }

// figures returns the INVITE-to-180 times of every call that got each 180, and how many calls'
// 180s left out of order.
func (w *wireClock) figures() (f wireFigures, reordered int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.calls {
		if !c.alerting.IsZero() {
			f.ringing = append(f.ringing, c.alerting.Sub(c.invite))
		}
		if !c.pushSent.IsZero() {
			f.pushSent = append(f.pushSent, c.pushSent.Sub(c.invite))
		}
		if c.reordered {
			reordered++
		}
	}
	return f, reordered
}

// headerValue returns the value of the first header line named name (or its compact form),
// "" when there is none.
func headerValue(msg []byte, name, compact string) string {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		k = bytes.TrimSpace(k)
		if bytes.EqualFold(k, []byte(name)) || compact != "" && bytes.EqualFold(k, []byte(compact)) {
			return string(bytes.TrimSpace(v))
		}
	}
	return ""
}

// countLines counts the lines containing substr in the one file of dir ending in suffix (0
// when there is no such file: SIPp creates its log file on the first <log>).
func countLines(dir, suffix, substr string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil || len(files) == 0 {
		return 0, err
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return 0, err
	}
	return strings.Count(string(b), substr), nil
}

func reportMicros(b *testing.B, name string, d []time.Duration) {
	v := make([]float64, len(d))
	for i, x := range d {
		v[i] = float64(x.Nanoseconds()) / 1e3
	}
	reportQuantiles(b, name, "µs", v)
}

// reportQuantiles reports the median and the 99th percentile (nearest rank) of v.
func reportQuantiles(b *testing.B, name, unit string, v []float64) {
	if len(v) == 0 {
		return
	}
	slices.Sort(v)
	q := func(p float64) float64 { return v[int(p*float64(len(v)-1)+0.5)] }
	b.ReportMetric(q(0.50), name+"-p50-"+unit)
	b.ReportMetric(q(0.99), name+"-p99-"+unit)
}

func tailLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}
