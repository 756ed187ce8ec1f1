package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/wneessen/go-mail"
)

// TLSPolicy says whether the Mailer insists on STARTTLS (RFC 3207).
type TLSPolicy string

// The TLS policies of a Mailer.
const (
	// TLSMandatory fails the alert when the server does not offer STARTTLS
	// or the handshake fails.
	TLSMandatory TLSPolicy = "mandatory"
	// TLSOpportunistic uses STARTTLS when offered, plain text otherwise.
	TLSOpportunistic TLSPolicy = "opportunistic"
	// TLSNone never uses STARTTLS.
	TLSNone TLSPolicy = "none"
)

// DefaultMailTimeout bounds connecting to and talking with the SMTP server.
const DefaultMailTimeout = 30 * time.Second

// MailOptions configure a Mailer.
type MailOptions struct {
	// Host is the SMTP server name (no port). Required.
	Host string
	// Port defaults to 587 (submission) with STARTTLS, 25 with TLSNone.
	Port int
	// TLS defaults to TLSMandatory.
	TLS TLSPolicy
	// TLSConfig overrides the TLS settings (a private CA, say); ServerName
	// defaults to Host.
	TLSConfig *tls.Config
	// Username and Password, when Username is set, authenticate with the
	// best mechanism the server offers (RFC 4954).
	Username string
	Password string
	// From is the sender address; To the recipients. Required.
	From string
	To   []string
	// Node names this sipis node in the message.
	Node string
	// Timeout defaults to DefaultMailTimeout.
	Timeout time.Duration
}

// Mailer is an Alerter that sends one e-mail per alert over SMTP.
type Mailer struct {
	opt    MailOptions
	policy mail.TLSPolicy
}

// NewMailer checks opt and returns a Mailer. It does not connect.
func NewMailer(opt MailOptions) (*Mailer, error) {
	if opt.Host == "" {
		return nil, errors.New("probe: mail: Host is required")
	}
	if net.ParseIP(opt.Host) == nil && strings.ContainsAny(opt.Host, " /:@[]") {
		return nil, fmt.Errorf("probe: mail: Host %q must be a bare host name, with the port in Port", opt.Host)
	}
	var policy mail.TLSPolicy
	switch opt.TLS {
	case TLSMandatory, "":
		opt.TLS, policy = TLSMandatory, mail.TLSMandatory
	case TLSOpportunistic:
		policy = mail.TLSOpportunistic
	case TLSNone:
		policy = mail.NoTLS
	default:
		return nil, fmt.Errorf("probe: mail: unknown TLS policy %q (want mandatory, opportunistic or none)", opt.TLS)
	}
	if opt.Port == 0 {
		opt.Port = 587
		if opt.TLS == TLSNone {
			opt.Port = 25
		}
	}
	if opt.Port < 1 || opt.Port > 65535 {
		return nil, fmt.Errorf("probe: mail: Port %d out of range", opt.Port)
	}
	if _, err := netmail.ParseAddress(opt.From); err != nil {
		return nil, fmt.Errorf("probe: mail: bad From address %q: %v", opt.From, err)
	}
	if len(opt.To) == 0 {
		return nil, errors.New("probe: mail: no To address")
	}
	for _, to := range opt.To {
		if _, err := netmail.ParseAddress(to); err != nil {
			return nil, fmt.Errorf("probe: mail: bad To address %q: %v", to, err)
		}
	}
	if opt.Password != "" && opt.Username == "" {
		return nil, errors.New("probe: mail: Password given without Username")
	}
	if opt.Timeout < 0 {
		return nil, fmt.Errorf("probe: mail: negative Timeout %v", opt.Timeout)
	}
	if opt.Timeout == 0 {
		opt.Timeout = DefaultMailTimeout
	}
	opt.To = append([]string(nil), opt.To...)
	return &Mailer{opt: opt, policy: policy}, nil
}

// Alert sends one message about ch to every recipient.
func (m *Mailer) Alert(ctx context.Context, ch Change) error {
	msg := mail.NewMsg()
	if err := msg.From(m.opt.From); err != nil {
		return fmt.Errorf("mail: from: %w", err)
	}
	if err := msg.To(m.opt.To...); err != nil {
		return fmt.Errorf("mail: to: %w", err)
	}
	subject, body := mailText(ch, m.opt.Node)
	msg.Subject(subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(mail.TypeTextPlain, body)

	opts := []mail.Option{
		mail.WithPort(m.opt.Port),
		mail.WithTLSPolicy(m.policy),
		mail.WithTimeout(m.opt.Timeout),
	}
	tc := &tls.Config{ServerName: m.opt.Host, MinVersion: tls.VersionTLS12}
	if m.opt.TLSConfig != nil {
		tc = m.opt.TLSConfig.Clone()
		if tc.ServerName == "" {
			tc.ServerName = m.opt.Host
		}
	}
	opts = append(opts, mail.WithTLSConfig(tc))
	if m.opt.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(m.opt.Username), mail.WithPassword(m.opt.Password))
	}
	c, err := mail.NewClient(m.opt.Host, opts...)
	if err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("mail to %s:%d: %w", m.opt.Host, m.opt.Port, err)
	}
	return nil
}

// displayName is how a target appears in subjects: its host, and the
// transport when one was set.
func displayName(target, transport string) string {
	name := hostOf(target)
	if name == "" {
		name = target
	}
	if transport != "" {
		name += " (" + transport + ")"
	}
	return name
}

// mailText returns the subject and plain-text body of the alert about ch.
func mailText(ch Change, node string) (subject, body string) {
	subject = fmt.Sprintf("[sipis] %s is %s", displayName(ch.Target, ch.Transport), strings.ToUpper(ch.NewState.String()))
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%-12s %s\n", k+":", v) }
	line("Target", ch.Target)
	if ch.Transport != "" {
		line("Transport", ch.Transport)
	}
	line("State", fmt.Sprintf("%s -> %s", strings.ToUpper(ch.OldState.String()), strings.ToUpper(ch.NewState.String())))
	line("Time", ch.At.UTC().Format(time.RFC3339))
	lastErr := ch.LastError
	if lastErr == "" {
		lastErr = "none"
	}
	line("Last error", lastErr)
	if ch.Code == 0 {
		line("Last code", "none (no answer)")
		line("RTT", "n/a")
	} else {
		line("Last code", fmt.Sprint(ch.Code))
		line("RTT", ch.RTT.Round(time.Microsecond).String())
	}
	if node != "" {
		line("Node", node)
	}
	if ch.Suppressed > 0 {
		fmt.Fprintf(&b, "\n%d earlier change(s) of this target were not sent on their own (alert rate limit); this is the latest.\n", ch.Suppressed)
	}
	return subject, b.String()
}
