package probe_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/testutil"
)

// sunk is one message received by the SMTP sink.
type sunk struct {
	from    string
	to      []string
	user    string
	tls     bool
	subject string
	body    string
}

// smtpSink is a local SMTP server that keeps what it receives.
type smtpSink struct {
	t          *testing.T
	user, pass string // required credentials when user is set
	mu         sync.Mutex
	msgs       []sunk
	received   chan struct{} // one value per message
	host       string
	port       int
}

// newSMTPSink starts a sink on 127.0.0.1:0, offering STARTTLS when tc is
// not nil and AUTH PLAIN when user is set.
func newSMTPSink(t *testing.T, tc *tls.Config, user, pass string) *smtpSink {
	t.Helper()
	s := &smtpSink{t: t, user: user, pass: pass, received: make(chan struct{}, 100)}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.TLSConfig = tc
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	addr := ln.Addr().(*net.TCPAddr)
	s.host, s.port = addr.IP.String(), addr.Port
	return s
}

func (s *smtpSink) messages() []sunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunk(nil), s.msgs...)
}

type sinkSession struct {
	sink *smtpSink
	conn *smtp.Conn
	user string
	from string
	to   []string
}

func (ss *sinkSession) AuthMechanisms() []string {
	if ss.sink.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.sink.user || pass != ss.sink.pass {
			return errors.New("bad credentials")
		}
		ss.user = user
		return nil
	}), nil
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.sink.user != "" && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	m, err := netmail.ReadMessage(r)
	if err != nil {
		return err
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		return err
	}
	body := m.Body
	if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		return err
	}
	_, isTLS := ss.conn.TLSConnectionState()
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	ss.sink.msgs = append(ss.sink.msgs, sunk{from: ss.from, to: ss.to, user: ss.user, tls: isTLS, subject: subject,
		body: strings.ReplaceAll(string(b), "\r\n", "\n")})
	ss.sink.received <- struct{}{}
	return nil
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

// selfSigned returns a server TLS config for 127.0.0.1 and a client config
// trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	c := testutil.SelfSigned(t, "sink", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}, &tls.Config{RootCAs: c.Pool}
}

var (
	downChange = probe.Change{
		Event: probe.Event{Target: "sip:proxy.example.com", OldState: probe.Up, NewState: probe.Down,
			LastError: "timeout after 5s", At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
	}
	upChange = probe.Change{
		Event: probe.Event{Target: "sip:proxy.example.com;transport=tcp", OldState: probe.Down, NewState: probe.Up,
			Code: 200, RTT: 15 * time.Millisecond, At: time.Date(2026, 3, 1, 12, 5, 0, 0, time.UTC)},
		Transport: "tcp", Suppressed: 2,
	}
)

func TestMailerOneMailPerChange(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	sink := newSMTPSink(t, serverTLS, "alerts", "s3cret")
	m, err := probe.NewMailer(probe.MailOptions{
		Host: sink.host, Port: sink.port, TLS: probe.TLSMandatory, TLSConfig: clientTLS,
		Username: "alerts", Password: "s3cret",
		From: "sipis@example.com", To: []string{"ops@example.com", "oncall@example.com"}, Node: "node-1",
		Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []probe.Change{downChange, upChange} {
		if err := m.Alert(t.Context(), ch); err != nil {
			t.Fatalf("Alert(%v): %v", ch.NewState, err)
		}
	}
	msgs := sink.messages()
	if len(msgs) != 2 {
		t.Fatalf("sink got %d messages, want 2", len(msgs))
	}
	for _, msg := range msgs {
		if !msg.tls || msg.user != "alerts" || msg.from != "sipis@example.com" ||
			strings.Join(msg.to, ",") != "ops@example.com,oncall@example.com" {
			t.Errorf("envelope %+v, want STARTTLS, user alerts, from sipis@, to both", msg)
		}
	}

	down := msgs[0]
	if down.subject != "[sipis] proxy.example.com is DOWN" {
		t.Errorf("subject %q", down.subject)
	}
	for _, want := range []string{"Target:      sip:proxy.example.com\n", "State:       UP -> DOWN", "Last error:  timeout after 5s",
		"Last code:   none (no answer)", "RTT:         n/a", "Time:        2026-03-01T12:00:00Z", "Node:        node-1"} {
		if !strings.Contains(down.body, want) {
			t.Errorf("down body lacks %q:\n%s", want, down.body)
		}
	}

	up := msgs[1]
	if up.subject != "[sipis] proxy.example.com (tcp) is UP" {
		t.Errorf("subject %q", up.subject)
	}
	for _, want := range []string{"Target:      sip:proxy.example.com;transport=tcp", "State:       DOWN -> UP", "Last error:  none",
		"Last code:   200", "RTT:         15ms", "Time:        2026-03-01T12:05:00Z", "2 earlier change(s)"} {
		if !strings.Contains(up.body, want) {
			t.Errorf("up body lacks %q:\n%s", want, up.body)
		}
	}
	if strings.Contains(down.body+up.body, "s3cret") {
		t.Error("a message contains the SMTP password")
	}
}

func TestMailerWithoutTLS(t *testing.T) {
	sink := newSMTPSink(t, nil, "", "")
	m, err := probe.NewMailer(probe.MailOptions{Host: sink.host, Port: sink.port, TLS: probe.TLSNone,
		From: "sipis@example.com", To: []string{"ops@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Alert(t.Context(), downChange); err != nil {
		t.Fatal(err)
	}
	if msgs := sink.messages(); len(msgs) != 1 || msgs[0].tls || msgs[0].subject != "[sipis] proxy.example.com is DOWN" {
		t.Errorf("messages = %+v, want one plain-text DOWN mail", msgs)
	}
}

func TestMailerMandatoryTLSRefusesPlainServer(t *testing.T) {
	sink := newSMTPSink(t, nil, "", "")
	m, err := probe.NewMailer(probe.MailOptions{Host: sink.host, Port: sink.port,
		From: "sipis@example.com", To: []string{"ops@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Alert(t.Context(), downChange); err == nil {
		t.Error("Alert succeeded without STARTTLS under the mandatory policy")
	}
	if n := len(sink.messages()); n != 0 {
		t.Errorf("sink got %d messages in plain text, want 0", n)
	}
}

func TestNewMailerRejectsBadOptions(t *testing.T) {
	good := probe.MailOptions{Host: "smtp.example.com", From: "sipis@example.com", To: []string{"ops@example.com"}}
	cases := []struct {
		edit func(*probe.MailOptions)
		want string
	}{
		{func(o *probe.MailOptions) { o.Host = "" }, "Host"},
		{func(o *probe.MailOptions) { o.Host = "smtp.example.com:25" }, "smtp.example.com:25"},
		{func(o *probe.MailOptions) { o.TLS = "sometimes" }, "sometimes"},
		{func(o *probe.MailOptions) { o.Port = 70000 }, "70000"},
		{func(o *probe.MailOptions) { o.From = "not an address" }, "not an address"},
		{func(o *probe.MailOptions) { o.To = nil }, "To"},
		{func(o *probe.MailOptions) { o.To = []string{"ops@example.com", "bad@"} }, "bad@"},
		{func(o *probe.MailOptions) { o.Password = "x" }, "Username"},
	}
	for i, c := range cases {
		o := good
		c.edit(&o)
		if _, err := probe.NewMailer(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: NewMailer = %v, want an error naming %s", i, err, c.want)
		}
	}
	if _, err := probe.NewMailer(good); err != nil {
		t.Errorf("good options: %v", err)
	}
	for _, h := range []string{"::1", "192.0.2.1"} {
		o := good
		o.Host = h
		if _, err := probe.NewMailer(o); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
}
