package web

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeBackend is an in-memory Backend recording every action.
type fakeBackend struct {
	mu          sync.Mutex
	info        ServerInfo
	rows        []InstanceRow // sorted by selector
	calls       CallOutcomes
	push        map[string]Counts
	settings    map[string][]Field
	logPath     string
	user, pass  string
	registerErr error
	instErr     error // returned by Instances after instErrAfter rows
	instErrAt   int

	turnedOff   []string
	turnOffAll  int
	testPushes  []string
	logsEnabled []string
	registered  [][]byte
	adminChecks int
	// adminGate, when set, runs inside every CheckAdmin before the answer
	// (outside the lock): tests hold checks there to see how many run.
	adminGate func()

	ladder *Ladder // every instance's SIP ladder on /debug
}

func newFake() *fakeBackend {
	return &fakeBackend{
		info: ServerInfo{Name: "node-1", VersionString: "sipis 0.1.0", VersionNumber: "0.1.0",
			Build: "test", Started: testNow.Add(-90 * time.Minute), MessageLoopQueueSize: 3},
		calls: CallOutcomes{Total: 6, Accepted: 3, Missed: 1, Rejected: 2,
			RejectedByReason: Counts{"Busy": 1, "No Push Token": 1}},
		push:     map[string]Counts{"APNs": {"Accepted": 2, "Failed": 1}, "FCM": {"Accepted": 1}},
		settings: map[string][]Field{},
		user:     "admin",
		pass:     "s3cret",
	}
}

// row returns a row whose traffic is bytes over 1000 seconds.
func row(sel string, bytes int64) InstanceRow {
	return InstanceRow{
		Selector: sel, UserName: "user" + sel, Domain: "example.com", Proxy: "sip.example.com",
		Port: 5060, State: StateRegisterLoop, Status: StatusRegistered,
		Created: testNow.Add(-time.Hour), Devices: 1, Calls: 0, Messages: 2,
		BytesIn: bytes / 2, BytesOut: bytes - bytes/2,
		FirstTraffic: testNow.Add(-1000 * time.Second), LastTraffic: testNow,
	}
}

func (f *fakeBackend) add(rows ...InstanceRow) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows = append(f.rows, rows...)
	sort.Slice(f.rows, func(i, j int) bool { return f.rows[i].Selector < f.rows[j].Selector })
}

// seedN adds n instances with selectors %08x and varied traffic.
func (f *fakeBackend) seedN(n int) {
	rows := make([]InstanceRow, n)
	for i := range rows {
		rows[i] = row(fmt.Sprintf("%08x", i), int64(10000+(i*7919)%5000))
	}
	f.add(rows...)
}

func (f *fakeBackend) Server() ServerInfo { return f.info }

func (f *fakeBackend) InstanceCounts(ctx context.Context) (InstanceCounts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := InstanceCounts{Count: len(f.rows)}
	for _, r := range f.rows {
		switch r.Status {
		case StatusNotRegistered:
			c.Idle++
		case StatusRegistering:
			c.Registering++
		case StatusRegistered:
			c.Registered++
		case StatusUnauthorized:
			c.Unauthorized++
		case StatusError:
			c.Error++
		}
	}
	return c, nil
}

func (f *fakeBackend) Instances(ctx context.Context, q InstanceQuery, fn func(InstanceRow) error) error {
	f.mu.Lock()
	rows := f.rows
	instErr, at := f.instErr, f.instErrAt
	f.mu.Unlock()
	if q.Selector != "" {
		i := sort.Search(len(rows), func(i int) bool { return rows[i].Selector >= q.Selector })
		if i < len(rows) && rows[i].Selector == q.Selector {
			return fn(rows[i])
		}
		return nil
	}
	rows = rows[min(q.Offset, len(rows)):]
	if q.Limit > 0 {
		rows = rows[:min(q.Limit, len(rows))]
	}
	for i, r := range rows {
		if instErr != nil && i == at {
			return instErr
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeBackend) TrafficRates(ctx context.Context) ([]float64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]float64, len(f.rows))
	for i, r := range f.rows {
		out[i] = r.BitRate()
	}
	return out, nil
}

func (f *fakeBackend) find(sel string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rows {
		if r.Selector == sel {
			return true
		}
	}
	return false
}

func (f *fakeBackend) Debug(ctx context.Context, sel string) (InstanceDebug, error) {
	if !f.find(sel) {
		return InstanceDebug{}, fmt.Errorf("debug %s: %w", sel, ErrNotFound)
	}
	// The password is left unmasked on purpose: /debug masks it again.
	return InstanceDebug{Selector: sel, Phase: "Register Loop", Password: "hunter2",
		LastRequest: "REGISTER sip:example.com SIP/2.0\r\nVia: <x>\r\n", Ladder: f.ladder}, nil
}

func (f *fakeBackend) AppSettings(ctx context.Context, sel string) ([]Field, error) {
	if !f.find(sel) {
		return nil, ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.settings[sel], nil
}

func (f *fakeBackend) Selectors(ctx context.Context, fn func(string, time.Time) error) error {
	f.mu.Lock()
	rows := f.rows
	f.mu.Unlock()
	for _, r := range rows {
		if err := fn(r.Selector, r.LastTraffic); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeBackend) CallOutcomes() CallOutcomes { return f.calls }

func (f *fakeBackend) PushTestOutcomes() map[string]Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Counts, len(f.push))
	for k, v := range f.push {
		c := Counts{}
		for o, n := range v {
			c[o] = n
		}
		out[k] = c
	}
	return out
}

func (f *fakeBackend) TestPush(ctx context.Context, sel string) ([]PushResult, error) {
	if !f.find(sel) {
		return nil, ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.testPushes = append(f.testPushes, sel)
	f.push["APNs"]["Accepted"]++
	return []PushResult{{Device: "dev-1", Platform: "APNs", Outcome: "Accepted", Topic: "com.example.phone",
		Answer: "200 apns-id 5E1A"}}, nil
}

func (f *fakeBackend) TurnOff(ctx context.Context, sel string) error {
	if !f.find(sel) {
		return ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.turnedOff = append(f.turnedOff, sel)
	return nil
}

func (f *fakeBackend) TurnOffAll(ctx context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.turnOffAll++
	return len(f.rows), nil
}

func (f *fakeBackend) EnableInstanceLog(ctx context.Context, sel string) (string, error) {
	if !f.find(sel) {
		return "", ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logsEnabled = append(f.logsEnabled, sel)
	return f.logPath, nil
}

type statusErr struct {
	code int
	msg  string
}

func (e statusErr) Error() string   { return e.msg }
func (e statusErr) StatusCode() int { return e.code }

func (f *fakeBackend) Register(ctx context.Context, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.registerErr != nil {
		return f.registerErr
	}
	f.registered = append(f.registered, body)
	return nil
}

func (f *fakeBackend) CheckAdmin(user, pass string) bool {
	if f.adminGate != nil {
		f.adminGate()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adminChecks++
	return f.user != "" && user == f.user && pass == f.pass
}

// changes returns a summary of every recorded action, to assert that
// nothing changed.
func (f *fakeBackend) changes() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.turnedOff, f.turnOffAll, f.testPushes, f.logsEnabled, len(f.registered))
}

var errBoom = errors.New("boom: internal detail")

var _ Backend = (*fakeBackend)(nil)
