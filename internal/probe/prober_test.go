package probe_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/probe"
)

// result is one scripted answer of fakePinger.
type result struct {
	code  int
	err   error
	delay time.Duration // how long the answer takes (fake time under synctest)
}

var (
	ok200  = result{code: 200}
	failTO = result{err: errors.New("timeout: no response")}
)

// fakePinger answers from a script per URI; the last entry repeats.
type fakePinger struct {
	mu          sync.Mutex
	script      map[string][]result
	def         result
	calls       map[string][]time.Time
	inFlight    int
	maxInFlight int
}

func newFakePinger(def result) *fakePinger {
	return &fakePinger{script: map[string][]result{}, def: def, calls: map[string][]time.Time{}}
}

func (f *fakePinger) set(uri string, rs ...result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script[uri] = rs
}

func (f *fakePinger) Options(ctx context.Context, uri, transport string) (int, string, time.Duration, error) {
	f.mu.Lock()
	r := f.def
	if rs := f.script[uri]; len(rs) > 0 {
		r = rs[0]
		if len(rs) > 1 {
			f.script[uri] = rs[1:]
		}
	}
	f.calls[uri] = append(f.calls[uri], time.Now())
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if r.delay > 0 {
		t := time.NewTimer(r.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, "", 0, ctx.Err()
		}
	}
	if r.err != nil {
		return 0, "", 0, r.err
	}
	return r.code, "Reason", 15 * time.Millisecond, nil
}

func (f *fakePinger) callTimes(uri string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls[uri]...)
}

// recorder is a History and an Alerter that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	events  []probe.Event
	changes []probe.Change
	times   []time.Time
}

func (r *recorder) AddProbeEvent(_ context.Context, ev probe.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) Alert(_ context.Context, ch probe.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, ch)
	r.times = append(r.times, time.Now())
	return nil
}

func (r *recorder) Events() []probe.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]probe.Event(nil), r.events...)
}

func (r *recorder) Changes() []probe.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]probe.Change(nil), r.changes...)
}

// start creates and starts a Prober inside a synctest bubble and stops it at
// the end of the test.
func start(t *testing.T, opt probe.Options, targets ...probe.Target) *probe.Prober {
	t.Helper()
	p, err := probe.NewProber(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTargets(targets); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// status returns the Status of one target.
func status(t *testing.T, p *probe.Prober, key string) probe.Status {
	t.Helper()
	for _, s := range p.Targets() {
		if s.Target == key {
			return s
		}
	}
	t.Fatalf("target %q not in Targets()", key)
	return probe.Status{}
}

// advance lets fake time run d and waits until every goroutine is idle.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func TestDownAfterNUpAfterM(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const uri = "sip:proxy.example.com"
		pinger := newFakePinger(ok200)
		pinger.set(uri, ok200, failTO, failTO, failTO, failTO, ok200, ok200, ok200)
		rec := &recorder{}
		p := start(t, probe.Options{
			Pinger: pinger, History: rec, Alerters: []probe.Alerter{rec},
			Interval: 10 * time.Second, Timeout: time.Second,
			DownAfter: 3, UpAfter: 2, MinAlertInterval: time.Millisecond,
		}, probe.Target{URI: uri})
		synctest.Wait()

		want := []struct {
			state               probe.State
			failures, successes int
		}{
			{probe.Up, 0, 1}, // first answer: Unknown -> Up, not recorded
			{probe.Up, 1, 0},
			{probe.Up, 2, 0},
			{probe.Down, 3, 0}, // N = 3 failures
			{probe.Down, 4, 0},
			{probe.Down, 0, 1},
			{probe.Up, 0, 2}, // M = 2 answers
			{probe.Up, 0, 3},
		}
		for i, w := range want {
			s := status(t, p, uri)
			if s.State != w.state || s.Failures != w.failures || s.Successes != w.successes {
				t.Fatalf("after probe %d: state %v failures %d successes %d, want %v %d %d",
					i+1, s.State, s.Failures, s.Successes, w.state, w.failures, w.successes)
			}
			advance(10 * time.Second)
		}

		evs := rec.Events()
		if len(evs) != 2 {
			t.Fatalf("history has %d events, want 2: %+v", len(evs), evs)
		}
		if evs[0].OldState != probe.Up || evs[0].NewState != probe.Down || evs[0].LastError != "timeout: no response" || evs[0].Code != 0 {
			t.Errorf("first event = %+v, want up->down with the error", evs[0])
		}
		if evs[1].OldState != probe.Down || evs[1].NewState != probe.Up || evs[1].Code != 200 || evs[1].RTT != 15*time.Millisecond {
			t.Errorf("second event = %+v, want down->up with code 200", evs[1])
		}
		if got := rec.Changes(); len(got) != 2 {
			t.Errorf("alerter got %d changes, want 2", len(got))
		}
		s := status(t, p, uri)
		if len(s.Recent) != 2 || s.Recent[1].NewState != probe.Up {
			t.Errorf("Recent = %+v, want the two changes", s.Recent)
		}
	})
}

func TestAnyFinalResponseIsAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pinger := newFakePinger(ok200)
		pinger.set("sip:a.example.com", result{code: 404})
		pinger.set("sip:b.example.com", result{code: 503})
		pinger.set("sip:c.example.com", result{code: 100}) // not final: a failure
		rec := &recorder{}
		p := start(t, probe.Options{Pinger: pinger, History: rec, Interval: 10 * time.Second, Timeout: time.Second, DownAfter: 1},
			probe.Target{URI: "sip:a.example.com"}, probe.Target{URI: "sip:b.example.com"}, probe.Target{URI: "sip:c.example.com"})
		advance(10 * time.Second)

		if s := status(t, p, "sip:a.example.com"); s.State != probe.Up || s.LastCode != 404 {
			t.Errorf("404 target: %+v, want up with code 404", s)
		}
		if s := status(t, p, "sip:b.example.com"); s.State != probe.Up || s.LastCode != 503 {
			t.Errorf("503 target: %+v, want up with code 503", s)
		}
		if s := status(t, p, "sip:c.example.com"); s.State != probe.Down || !strings.Contains(s.LastError, "no final response") {
			t.Errorf("100 target: %+v, want down", s)
		}
	})
}

func TestUnresolvableGoesDownWithError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const uri = "sip:nope.invalid"
		pinger := newFakePinger(ok200)
		pinger.set(uri, result{err: &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}})
		rec := &recorder{}
		p := start(t, probe.Options{Pinger: pinger, History: rec, Alerters: []probe.Alerter{rec},
			Interval: 10 * time.Second, Timeout: time.Second, DownAfter: 2},
			probe.Target{URI: uri, Transport: "TCP"})
		key := uri + ";transport=tcp"
		synctest.Wait()
		if s := status(t, p, key); s.State != probe.Unknown || s.Failures != 1 {
			t.Fatalf("after one failure: %+v, want unknown with 1 failure", s)
		}
		advance(10 * time.Second)
		s := status(t, p, key)
		if s.State != probe.Down || s.Transport != "tcp" || !strings.Contains(s.LastError, "no such host") {
			t.Fatalf("after two failures: %+v, want down with the DNS error", s)
		}
		ch := rec.Changes()
		if len(ch) != 1 || ch[0].OldState != probe.Unknown || ch[0].NewState != probe.Down ||
			ch[0].Target != key || ch[0].Transport != "tcp" || !strings.Contains(ch[0].LastError, "nope.invalid") {
			t.Errorf("alerts = %+v, want one unknown->down naming the host", ch)
		}
	})
}

func TestTimeoutIsFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const uri = "sip:slow.example.com"
		pinger := newFakePinger(result{code: 200, delay: 3 * time.Second})
		p := start(t, probe.Options{Pinger: pinger, Interval: 10 * time.Second, Timeout: 2 * time.Second, DownAfter: 1},
			probe.Target{URI: uri})
		advance(2*time.Second + time.Millisecond)
		if s := status(t, p, uri); s.State != probe.Down || !strings.Contains(s.LastError, "deadline exceeded") {
			t.Errorf("%+v, want down after the 2 s timeout", s)
		}
	})
}

func TestStaggeredFirstProbes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pinger := newFakePinger(ok200)
		t0 := time.Now()
		var targets []probe.Target
		for _, h := range []string{"a", "b", "c", "d"} {
			targets = append(targets, probe.Target{URI: "sip:" + h + ".example.com"})
		}
		start(t, probe.Options{Pinger: pinger, Interval: 40 * time.Second, Timeout: time.Second}, targets...)
		advance(80*time.Second - time.Millisecond)
		for i, tg := range targets {
			calls := pinger.callTimes(tg.URI)
			want := []time.Duration{time.Duration(i) * 10 * time.Second, time.Duration(i)*10*time.Second + 40*time.Second}
			if len(calls) != len(want) {
				t.Fatalf("%s probed %d times in 80 s, want 2", tg.URI, len(calls))
			}
			for j := range want {
				if got := calls[j].Sub(t0); got != want[j] {
					t.Errorf("%s probe %d at %v, want %v", tg.URI, j, got, want[j])
				}
			}
		}
	})
}

func TestMaxInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Ten targets spread over 10 s, each answering after 5 s: five would
		// be in flight at once without the limit.
		pinger := newFakePinger(result{code: 200, delay: 5 * time.Second})
		var targets []probe.Target
		for i := range 10 {
			targets = append(targets, probe.Target{URI: "sip:h" + string(rune('a'+i)) + ".example.com"})
		}
		p := start(t, probe.Options{Pinger: pinger, Interval: 10 * time.Second, Timeout: 8 * time.Second, MaxInFlight: 2}, targets...)
		advance(30 * time.Second)
		pinger.mu.Lock()
		got := pinger.maxInFlight
		pinger.mu.Unlock()
		if got != 2 {
			t.Errorf("max in flight = %d, want 2", got)
		}
		st := p.Stats()
		if st.Probes == 0 || st.Skipped == 0 {
			t.Errorf("stats = %+v, want probes done and some skipped (pool too small)", st)
		}
	})
}

func TestAlertsCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const uri = "sip:flappy.example.com"
		pinger := newFakePinger(ok200)
		// t=0 up (silent), 10 down (alert), 20 up, 30 down (both coalesced
		// into the alert at 70), 80 up (alone, sent when the window ends at 130).
		pinger.set(uri, ok200, failTO, ok200, failTO, failTO, failTO, failTO, failTO, ok200)
		rec := &recorder{}
		t0 := time.Now()
		p := start(t, probe.Options{Pinger: pinger, History: rec, Alerters: []probe.Alerter{rec},
			Interval: 10 * time.Second, Timeout: time.Second, DownAfter: 1, UpAfter: 1, MinAlertInterval: time.Minute},
			probe.Target{URI: uri})
		advance(135 * time.Second)

		if n := len(rec.Events()); n != 4 {
			t.Errorf("history has %d events, want all 4 changes", n)
		}
		got := rec.Changes()
		want := []struct {
			old, new   probe.State
			suppressed int
			at         time.Duration
		}{
			{probe.Up, probe.Down, 0, 10 * time.Second},
			{probe.Up, probe.Down, 1, 70 * time.Second},
			{probe.Down, probe.Up, 0, 130 * time.Second},
		}
		if len(got) != len(want) {
			t.Fatalf("got %d alerts, want %d: %+v", len(got), len(want), got)
		}
		for i, w := range want {
			if got[i].OldState != w.old || got[i].NewState != w.new || got[i].Suppressed != w.suppressed {
				t.Errorf("alert %d = %v->%v suppressed %d, want %v->%v suppressed %d",
					i, got[i].OldState, got[i].NewState, got[i].Suppressed, w.old, w.new, w.suppressed)
			}
			if at := rec.times[i].Sub(t0); at != w.at {
				t.Errorf("alert %d sent at %v, want %v", i, at, w.at)
			}
		}
		if st := p.Stats(); st.AlertsCoalesced != 1 || st.AlertsSent != 3 {
			t.Errorf("stats = %+v, want 1 coalesced and 3 sent", st)
		}
	})
}

// stuckAlerter never finishes an alert until the Prober stops.
type stuckAlerter struct{}

func (stuckAlerter) Alert(ctx context.Context, _ probe.Change) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestStuckAlerterDoesNotBlockProbing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pinger := newFakePinger(ok200)
		var targets []probe.Target
		for i := range 20 {
			uri := "sip:h" + string(rune('a'+i)) + ".example.com"
			pinger.set(uri, failTO)
			targets = append(targets, probe.Target{URI: uri})
		}
		p := start(t, probe.Options{Pinger: pinger, Alerters: []probe.Alerter{stuckAlerter{}},
			Interval: 10 * time.Second, Timeout: time.Second, DownAfter: 1, AlertQueue: 2}, targets...)
		advance(20 * time.Second)
		st := p.Stats()
		// 20 changes: one alert being sent, two queued, the rest dropped.
		if st.Changes != 20 || st.AlertsDropped != 17 || st.Probes < 40 {
			t.Errorf("stats = %+v, want 20 changes, 17 alerts dropped, probing going on", st)
		}
	})
}

func TestSetTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pinger := newFakePinger(ok200)
		a := probe.Target{URI: "sip:a.example.com"}
		b := probe.Target{URI: "sip:b.example.com", Interval: 20 * time.Second}
		p := start(t, probe.Options{Pinger: pinger, Interval: 10 * time.Second, Timeout: time.Second}, a)
		advance(time.Second)
		since := status(t, p, a.URI).Since

		// Invalid input changes nothing.
		bad := [][]probe.Target{
			{a, {URI: "http://b.example.com"}},
			{a, {URI: "sip:"}},
			{a, {URI: "sip:b.example.com", Transport: "sctp"}},
			{a, {URI: "sips:b.example.com", Transport: "udp"}},
			{a, {URI: "sip:b.example.com", Timeout: 30 * time.Second}},
			{a, {URI: "sip:b example.com"}},
		}
		for _, list := range bad {
			err := p.SetTargets(list)
			if err == nil || !strings.Contains(err.Error(), list[1].URI) {
				t.Errorf("SetTargets(%+v) = %v, want an error naming %q", list[1], err, list[1].URI)
			}
		}
		if n := len(p.Targets()); n != 1 {
			t.Fatalf("after bad input %d targets, want 1", n)
		}

		// Adding keeps the existing state; duplicates merge.
		if err := p.SetTargets([]probe.Target{a, b, a}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if s := status(t, p, a.URI); s.State != probe.Up || !s.Since.Equal(since) {
			t.Errorf("kept target: %+v, want still up since %v", s, since)
		}
		if s := status(t, p, b.URI); s.State != probe.Up {
			t.Errorf("new target: %+v, want probed at once", s)
		}

		// Removing forgets.
		if err := p.SetTargets([]probe.Target{b}); err != nil {
			t.Fatal(err)
		}
		n := len(pinger.callTimes(a.URI))
		advance(30 * time.Second)
		if got := p.Targets(); len(got) != 1 || got[0].Target != b.URI {
			t.Errorf("Targets() = %+v, want only b", got)
		}
		if m := len(pinger.callTimes(a.URI)); m != n {
			t.Errorf("removed target probed %d more times", m-n)
		}
		if m := len(pinger.callTimes(b.URI)); m != 2 {
			t.Errorf("b probed %d times in 31 s at a 20 s interval, want 2", m)
		}
	})
}

func TestNewProberRejectsBadOptions(t *testing.T) {
	pinger := newFakePinger(ok200)
	cases := []struct {
		opt  probe.Options
		want string
	}{
		{probe.Options{}, "Pinger"},
		{probe.Options{Pinger: pinger, Interval: time.Second}, "Timeout"},
		{probe.Options{Pinger: pinger, DownAfter: -1}, "DownAfter"},
		{probe.Options{Pinger: pinger, MinAlertInterval: -time.Second}, "MinAlertInterval"},
		{probe.Options{Pinger: pinger, Alerters: []probe.Alerter{nil}}, "Alerters[0]"},
	}
	for _, c := range cases {
		if _, err := probe.NewProber(c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewProber(%+v) = %v, want an error naming %s", c.opt, err, c.want)
		}
	}
}

func TestStartTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := start(t, probe.Options{Pinger: newFakePinger(ok200)})
		if err := p.Start(t.Context()); !errors.Is(err, probe.ErrStarted) {
			t.Errorf("second Start = %v, want ErrStarted", err)
		}
		p.Stop()
		p.Stop()
	})
}

func TestStateText(t *testing.T) {
	for _, s := range []probe.State{probe.Unknown, probe.Up, probe.Down} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back probe.State
		if err := back.UnmarshalText([]byte(strings.ToUpper(string(b)))); err != nil || back != s {
			t.Errorf("round trip of %v gave %v, %v", s, back, err)
		}
	}
	var s probe.State
	if err := s.UnmarshalText([]byte("sideways")); err == nil {
		t.Error("UnmarshalText accepted sideways")
	}
}
