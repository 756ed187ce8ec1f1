package app

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/config"
)

// sentMail is one e-mail a fake sender took.
type sentMail struct {
	at            time.Time
	subject, body string
}

// fakeSender records e-mails; it fails while fail is set, like an unreachable server.
type fakeSender struct {
	mu   sync.Mutex
	sent []sentMail
	fail bool
}

func (f *fakeSender) send(ctx context.Context, subject, body string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("connection refused")
	}
	f.sent = append(f.sent, sentMail{time.Now(), subject, body})
	return nil
}

func (f *fakeSender) all() []sentMail {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sentMail(nil), f.sent...)
}

func logMailConfig() config.LogEmail {
	c := config.Default().Log.Email
	c.To, c.From = "ops@example.com", "sipis@example.com"
	c.Excerpt.MinPeriod = time.Hour
	c.Excerpt.Filter = []config.LogFilterRule{
		{Include: false, Severity: config.LevelTrace, Enabled: true},
		{Include: true, Severity: config.LevelWarning, Enabled: true},
		{Include: false, Severity: config.LevelFatal, Enabled: false}, // disabled: no effect
	}
	c.Summary = config.LogSummary{Enabled: true, Period: 24 * time.Hour, StartingAt: 6*time.Hour + 30*time.Minute}
	return c
}

// TestLogMailExcerpts: the first warning goes out at once, later ones wait for MinPeriod and
// go together; info lines never; the mailer's own failures are not mailed; what is pending
// at stop is sent.
func TestLogMailExcerpts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeSender{}
		l := logrus.New()
		l.SetOutput(io.Discard)
		m := newLogMailer(logMailConfig(), "node-1", f.send, l)
		l.AddHook(m)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.run(ctx); close(done) }()
		start := time.Now()

		l.Info("just info")
		l.WithField("selector", "0a0b").Warn("first warning")
		synctest.Wait()
		if s := f.all(); len(s) != 1 || !s[0].at.Equal(start) || !strings.Contains(s[0].body, "first warning selector=0a0b") ||
			strings.Contains(s[0].body, "just info") || !strings.Contains(s[0].subject, "node-1: 1 log entries") {
			t.Fatalf("first excerpt: %+v", s)
		}
		l.Error("an error")
		l.Warn("second warning")
		time.Sleep(59 * time.Minute)
		synctest.Wait()
		if n := len(f.all()); n != 1 {
			t.Fatalf("%d e-mails before MinPeriod, want 1", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		s := f.all()
		if len(s) != 2 || !s[1].at.Equal(start.Add(time.Hour)) || !strings.Contains(s[1].body, "an error") || !strings.Contains(s[1].body, "second warning") {
			t.Fatalf("second excerpt: %+v", s)
		}

		// A failing server: the failure is logged, and that line is never mailed.
		f.mu.Lock()
		f.fail = true
		f.mu.Unlock()
		time.Sleep(time.Hour)
		l.Warn("lost warning")
		synctest.Wait()
		f.mu.Lock()
		f.fail = false
		f.mu.Unlock()
		time.Sleep(2 * time.Hour)
		l.Warn("after the outage")
		synctest.Wait()
		s = f.all()
		if len(s) != 3 || strings.Contains(s[2].body, "not sent") || !strings.Contains(s[2].body, "after the outage") {
			t.Fatalf("after a failure: %+v", s)
		}

		// Pending at stop: sent on the way out.
		l.Error("last words")
		cancel()
		<-done
		s = f.all()
		if len(s) != 4 || !strings.Contains(s[3].body, "last words") {
			t.Fatalf("at stop: %+v", s)
		}
	})
}

// TestLogMailFilterAndMaxSize: without rules only entries at Level go; an Exclude rule drops
// warnings; MaxSize caps the text and counts the rest.
func TestLogMailFilterAndMaxSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := logMailConfig()
		c.Summary.Enabled = false
		c.Excerpt.Filter = nil // Level Error
		c.Excerpt.MaxSize = 1024
		f := &fakeSender{}
		l := logrus.New()
		l.SetOutput(io.Discard)
		m := newLogMailer(c, "n", f.send, l)
		l.AddHook(m)
		// All logged before the loop runs, so they go in one excerpt.
		l.Warn("a warning")
		for i := range 50 {
			l.WithField("i", i).Error(strings.Repeat("x", 60))
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go m.run(ctx)
		synctest.Wait()
		s := f.all()
		if len(s) != 1 {
			t.Fatalf("%d e-mails, want 1", len(s))
		}
		if strings.Contains(s[0].body, "a warning") {
			t.Error("a warning was mailed with Level Error and no rule")
		}
		if n := strings.Count(s[0].body, "ERROR"); n == 0 || n >= 50 || len(s[0].body) > 1024+200 {
			t.Errorf("excerpt with %d entries, %d bytes: not capped at MaxSize", n, len(s[0].body))
		}
		if !strings.Contains(s[0].body, "more entries were left out") || !strings.Contains(s[0].subject, "50 log entries") {
			t.Errorf("left-out entries not counted: %q\n%s", s[0].subject, s[0].body)
		}
	})
}

// TestLogMailSummary: the first summary comes at StartingAt, then every Period, with the
// counts since the previous one.
func TestLogMailSummary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := logMailConfig()
		c.Excerpt.Enabled = false
		f := &fakeSender{}
		l := logrus.New()
		l.SetOutput(io.Discard)
		m := newLogMailer(c, "n", f.send, l)
		l.AddHook(m)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go m.run(ctx)
		now := time.Now()
		y, mo, d := now.Date()
		first := time.Date(y, mo, d, 6, 30, 0, 0, now.Location())
		if !first.After(now) {
			first = first.Add(24 * time.Hour)
		}
		l.Warn("w")
		l.Warn("w")
		l.Error("e")
		time.Sleep(first.Sub(now) - time.Second)
		synctest.Wait()
		if n := len(f.all()); n != 0 {
			t.Fatalf("%d e-mails before StartingAt", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		s := f.all()
		if len(s) != 1 || !s[0].at.Equal(first) || !strings.Contains(s[0].subject, "1 errors, 2 warnings") ||
			!strings.Contains(s[0].body, "     2  w") {
			t.Fatalf("first summary: %+v", s)
		}
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		s = f.all()
		if len(s) != 2 || !s[1].at.Equal(first.Add(24*time.Hour)) || !strings.Contains(s[1].subject, "0 errors, 0 warnings") {
			t.Fatalf("second summary: %+v", s)
		}
	})
}

func TestNextSummary(t *testing.T) {
	at := 6*time.Hour + 30*time.Minute
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now    time.Time
		period time.Duration
		want   time.Time
	}{
		{day.Add(time.Hour), 24 * time.Hour, day.Add(at)},
		{day.Add(at), 24 * time.Hour, day.Add(at + 24*time.Hour)},
		{day.Add(10 * time.Hour), 24 * time.Hour, day.Add(at + 24*time.Hour)},
		{day.Add(10 * time.Hour), time.Hour, day.Add(10*time.Hour + 30*time.Minute)},
	} {
		if got := nextSummary(tc.now, at, tc.period); !got.Equal(tc.want) {
			t.Errorf("nextSummary(%v, every %v) = %v, want %v", tc.now, tc.period, got, tc.want)
		}
	}
}

// TestLogMailThroughSMTP: an error of the running server reaches the recipients through the
// alert SMTP settings (the body is quoted-printable: "=" is "=3D").
func TestLogMailThroughSMTP(t *testing.T) {
	sink := newMailSink(t)
	s := testSettings(t, t.TempDir(), "")
	s.Log.Email = config.Default().Log.Email
	s.Log.Email.To, s.Log.Email.From = "ops@example.com", "sipis-log@example.com"
	s.Probe.Alerts.Smtp = config.Smtp{Host: "127.0.0.1", Port: sink.addr.Port, StartTLS: false, From: "alerts@example.com"}
	a := startApp(t, s)
	defer a.Stop()
	a.Logger().WithField("selector", "0abc").Error("database is on fire")
	waitAll(t, "the log e-mail", 10*time.Second, func() (bool, string) {
		got := sink.about("database is on fire")
		return len(got) == 1, strings.Join(got, "\n---\n")
	})
	msg := sink.about("database is on fire")[0]
	for _, want := range []string{"From: <sipis-log@example.com>", "To: <ops@example.com>", "Subject: [sipis] test-node: 1 log entries", "selector=3D0abc"} {
		if !strings.Contains(msg, want) {
			t.Errorf("e-mail lacks %q:\n%s", want, msg)
		}
	}
}

// TestLogrusLevel checks that every Settings.xml level maps to logrus's level of that name.
func TestLogrusLevel(t *testing.T) {
	want := map[config.Level]logrus.Level{
		config.LevelFatal: logrus.FatalLevel, config.LevelError: logrus.ErrorLevel,
		config.LevelWarning: logrus.WarnLevel, config.LevelInfo: logrus.InfoLevel,
		config.LevelDebug: logrus.DebugLevel, config.LevelTrace: logrus.TraceLevel,
	}
	for l, w := range want {
		if got := logrusLevel(l); got != w {
			t.Errorf("logrusLevel(%v) = %v, want %v", l, got, w)
		}
	}
}
