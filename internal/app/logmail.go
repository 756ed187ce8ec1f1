package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	gomail "github.com/wneessen/go-mail"

	"github.com/sipis/sipis/internal/config"
)

// This file is <Log><Email>: warnings and errors of the server log by e-mail, through the
// SMTP server of <Probe><Alerts><Smtp>. Excerpts carry the entries themselves, at most one
// e-mail per MinPeriod and MaxSize bytes of text; a summary counts them every Period from
// StartingAt.

// logMailPart marks the log mailer's own log lines, which it never e-mails (a failing mail
// server would otherwise feed itself).
const logMailPart = "log-mail"

// maxSummaryMessages is how many distinct messages a summary lists.
const maxSummaryMessages = 20

// mailSender sends one plain-text e-mail.
type mailSender func(ctx context.Context, subject, body string) error

// logMailer is a logrus hook collecting warnings and errors, and the loop that mails them.
type logMailer struct {
	cfg  config.LogEmail
	node string
	send mailSender
	log  logrus.FieldLogger // its own failures; marked with logMailPart

	wake chan struct{}

	mu       sync.Mutex
	pending  []string // excerpt lines not sent yet
	size     int      // bytes in pending
	leftOut  int      // entries beyond MaxSize since the last excerpt
	counts   map[logrus.Level]int
	messages map[string]int // message -> count, since the last summary
}

func newLogMailer(cfg config.LogEmail, node string, send mailSender, log logrus.FieldLogger) *logMailer {
	return &logMailer{cfg: cfg, node: node, send: send, log: log.WithField("part", logMailPart),
		wake: make(chan struct{}, 1), counts: map[logrus.Level]int{}, messages: map[string]int{}}
}

// Levels are the ones the mailer sees: warnings and worse.
func (m *logMailer) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

// Fire records an entry; it never blocks on the mail server.
func (m *logMailer) Fire(e *logrus.Entry) error {
	if e.Data["part"] == logMailPart {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[e.Level]++
	if _, ok := m.messages[e.Message]; ok || len(m.messages) < 1000 {
		m.messages[e.Message]++
	}
	if !m.cfg.Excerpt.Enabled || !m.included(e.Level) {
		return nil
	}
	line := formatEntry(e)
	if m.size+len(line) > m.cfg.Excerpt.MaxSize {
		m.leftOut++
	} else {
		m.pending = append(m.pending, line)
		m.size += len(line)
	}
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return nil
}

// included applies <Excerpt><Filter>: entries at Level or more severe, then each enabled rule
// matching the entry's level in order, the last one deciding.
func (m *logMailer) included(l logrus.Level) bool {
	in := l <= logrusLevel(m.cfg.Level)
	for _, r := range m.cfg.Excerpt.Filter {
		if r.Enabled && l <= logrusLevel(r.Severity) {
			in = r.Include
		}
	}
	return in
}

// formatEntry is one excerpt line: time, level, message and the fields in name order.
func formatEntry(e *logrus.Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-7s %s", e.Time.Format(time.RFC3339), strings.ToUpper(e.Level.String()), e.Message)
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	b.WriteString("\n")
	return b.String()
}

// run mails excerpts and summaries until ctx ends, then sends what is still pending.
func (m *logMailer) run(ctx context.Context) {
	var last time.Time // of the last excerpt
	excerpt := time.NewTimer(time.Hour)
	excerpt.Stop()
	defer excerpt.Stop()
	armed := false
	var summary <-chan time.Time // nil: no summaries
	var st *time.Timer
	if m.cfg.Summary.Enabled {
		st = time.NewTimer(time.Until(nextSummary(time.Now(), m.cfg.Summary.StartingAt, m.cfg.Summary.Period)))
		defer st.Stop()
		summary = st.C
	}
	for {
		select {
		case <-ctx.Done():
			m.flushOnStop()
			return
		case <-m.wake:
			if !armed {
				// The first excerpt goes at once, later ones MinPeriod after the last.
				wait := time.Duration(0)
				if !last.IsZero() {
					wait = max(0, m.cfg.Excerpt.MinPeriod-time.Since(last))
				}
				excerpt.Reset(wait)
				armed = true
			}
		case <-excerpt.C:
			armed = false
			last = time.Now()
			m.sendExcerpt(ctx)
		case <-summary:
			m.sendSummary(ctx)
			st.Reset(time.Until(nextSummary(time.Now(), m.cfg.Summary.StartingAt, m.cfg.Summary.Period)))
		}
	}
}

// nextSummary is the first time after now that is StartingAt (a time of day, local time) plus
// a whole number of periods.
func nextSummary(now time.Time, at, period time.Duration) time.Time {
	y, mo, d := now.Date()
	first := time.Date(y, mo, d, 0, 0, 0, 0, now.Location()).Add(at)
	if first.After(now) {
		return first
	}
	k := now.Sub(first)/period + 1
	return first.Add(k * period)
}

// flushOnStop sends the pending excerpt, if any, with a short deadline of its own.
func (m *logMailer) flushOnStop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m.sendExcerpt(ctx)
}

func (m *logMailer) sendExcerpt(ctx context.Context) {
	m.mu.Lock()
	lines, left := m.pending, m.leftOut
	m.pending, m.size, m.leftOut = nil, 0, 0
	m.mu.Unlock()
	if len(lines) == 0 && left == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Warnings and errors logged by sipis node %s:\n\n", m.node)
	for _, l := range lines {
		b.WriteString(l)
	}
	if left > 0 {
		fmt.Fprintf(&b, "\n%d more entries were left out (<Excerpt><MaxSize>).\n", left)
	}
	subject := fmt.Sprintf("[sipis] %s: %d log entries", m.node, len(lines)+left)
	if err := m.send(ctx, subject, b.String()); err != nil {
		m.log.WithField("err", err).Warn("log e-mail: excerpt not sent")
	}
}

func (m *logMailer) sendSummary(ctx context.Context) {
	m.mu.Lock()
	counts, messages := m.counts, m.messages
	m.counts, m.messages = map[logrus.Level]int{}, map[string]int{}
	m.mu.Unlock()
	errs := counts[logrus.ErrorLevel] + counts[logrus.FatalLevel] + counts[logrus.PanicLevel]
	warns := counts[logrus.WarnLevel]
	var b strings.Builder
	fmt.Fprintf(&b, "sipis node %s logged %d errors and %d warnings since the last summary.\n", m.node, errs, warns)
	type mc struct {
		msg string
		n   int
	}
	var list []mc
	for k, n := range messages {
		list = append(list, mc{k, n})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].n != list[j].n {
			return list[i].n > list[j].n
		}
		return list[i].msg < list[j].msg
	})
	if len(list) > 0 {
		b.WriteString("\nMost frequent:\n")
	}
	for i, x := range list {
		if i == maxSummaryMessages {
			fmt.Fprintf(&b, "… and %d more distinct messages\n", len(list)-i)
			break
		}
		fmt.Fprintf(&b, "%6d  %s\n", x.n, x.msg)
	}
	subject := fmt.Sprintf("[sipis] %s: log summary: %d errors, %d warnings", m.node, errs, warns)
	if err := m.send(ctx, subject, b.String()); err != nil {
		m.log.WithField("err", err).Warn("log e-mail: summary not sent")
	}
}

// smtpSender sends through <Probe><Alerts><Smtp> from <Email From> (else <Smtp From>) to the
// addresses of <Email To>.
func smtpSender(s config.Smtp, from, to string) (mailSender, error) {
	if from == "" {
		from = s.From
	}
	addrs, err := mail.ParseAddressList(to)
	if err != nil {
		return nil, fmt.Errorf("log e-mail: To: %w", err)
	}
	var rcpts []string
	for _, a := range addrs {
		rcpts = append(rcpts, a.String())
	}
	policy := gomail.TLSMandatory
	if !s.StartTLS {
		policy = gomail.NoTLS
	}
	opts := []gomail.Option{gomail.WithPort(s.Port), gomail.WithTLSPolicy(policy), gomail.WithTimeout(30 * time.Second),
		gomail.WithTLSConfig(&tls.Config{ServerName: s.Host, MinVersion: tls.VersionTLS12})}
	if s.UserName != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.UserName), gomail.WithPassword(s.Password.Value()))
	}
	return func(ctx context.Context, subject, body string) error {
		msg := gomail.NewMsg()
		if err := msg.From(from); err != nil {
			return fmt.Errorf("from: %w", err)
		}
		if err := msg.To(rcpts...); err != nil {
			return fmt.Errorf("to: %w", err)
		}
		msg.Subject(subject)
		msg.SetDate()
		msg.SetMessageID()
		msg.SetBodyString(gomail.TypeTextPlain, body)
		c, err := gomail.NewClient(s.Host, opts...)
		if err != nil {
			return err
		}
		if err := c.DialAndSendWithContext(ctx, msg); err != nil {
			return fmt.Errorf("mail to %s:%d: %w", s.Host, s.Port, err)
		}
		return nil
	}, nil
}

// startLogMail hooks the log mailer into the server log when <Log><Email To> is set.
func (a *App) startLogMail(ctx context.Context) error {
	c := a.settings.Log.Email
	if c.To == "" {
		return nil
	}
	send, err := smtpSender(a.settings.Probe.Alerts.Smtp, c.From, c.To)
	if err != nil {
		return err
	}
	m := newLogMailer(c, a.settings.Server.Name, send, a.log)
	a.log.AddHook(m)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		m.run(ctx)
	}()
	return nil
}
