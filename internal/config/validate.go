package config

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sipis/sipis/internal/store"
)

// Validate checks every value of s and returns an *Error per problem
// (joined with errors.Join when there are several), or nil. Errors from
// Validate name the element path but no file or line; Load and Parse add
// them.
func (s *Settings) Validate() error {
	return joinErrors(validate(s))
}

// checker collects validation errors.
type checker struct{ errs []*Error }

// at is the place in the settings a check is about.
type at struct {
	c    *checker
	path []string
	key  string
}

func (c *checker) at(name string) at {
	return at{c: c, path: []string{"Sipis", name}, key: "Sipis/" + name}
}

func (a at) el(name string) at {
	return at{c: a.c, path: append(a.path[:len(a.path):len(a.path)], name), key: a.key + "/" + name}
}

func (a at) item(name string, i int) at {
	return at{c: a.c, path: append(a.path[:len(a.path):len(a.path)], name),
		key: a.key + "/" + name + "[" + strconv.Itoa(i) + "]"}
}

func (a at) fail(attr, value, msg string) {
	a.c.errs = append(a.c.errs, &Error{Path: a.path, Attr: attr, Value: value, Msg: msg,
		key: a.key + "@" + attr, secret: isSecretAttr(attr)})
}

func (a at) port(attr string, v int) {
	if v < 0 || v > 65535 {
		a.fail(attr, strconv.Itoa(v), "out of range 0..65535")
	}
}

func (a at) intRange(attr string, v, lo, hi int) {
	if v < lo || v > hi {
		a.fail(attr, strconv.Itoa(v), fmt.Sprintf("out of range %d..%d", lo, hi))
	}
}

func (a at) required(attr, v string) bool {
	if strings.TrimSpace(v) == "" {
		a.fail(attr, v, "must not be empty")
		return false
	}
	return true
}

var hostLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

// validHost reports whether h is an IP address or a DNS name.
func validHost(h string) bool {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		a, err := netip.ParseAddr(h[1 : len(h)-1])
		return err == nil && a.Is6()
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !hostLabel.MatchString(l) {
			return false
		}
	}
	return true
}

func (a at) host(attr, v string, required bool) {
	if v == "" {
		if required {
			a.fail(attr, v, "must not be empty")
		}
		return
	}
	if !validHost(v) {
		a.fail(attr, v, "not an IP address or host name")
	}
}

func (a at) url(attr, v string, required bool) {
	if v == "" {
		if required {
			a.fail(attr, v, "must not be empty")
		}
		return
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !validHost(u.Hostname()) {
		a.fail(attr, v, "not an http:// or https:// URL")
	}
}

func (a at) email(attr, v string) {
	if _, err := mail.ParseAddress(v); err != nil {
		a.fail(attr, v, "not an e-mail address")
	}
}

// text rejects control characters, which would corrupt a SIP header.
func (a at) text(attr, v string) {
	if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		a.fail(attr, v, "must not contain control characters")
	}
}

// positive checks the duration element name.
func (a at) positive(name string, d time.Duration) {
	if d <= 0 {
		a.el(name).fail("", "", fmt.Sprintf("is %v; must be more than 0", d))
	}
}

func (a at) nonNegative(name string, d time.Duration) {
	if d < 0 {
		a.el(name).fail("", "", fmt.Sprintf("is %v; must not be negative", d))
	}
}

func (a at) fraction(attr string, v, lo, hi float64) {
	if !(v >= lo && v <= hi) {
		a.fail(attr, strconv.FormatFloat(v, 'g', -1, 64), fmt.Sprintf("out of range %g..%g", lo, hi))
	}
}

func oneOf[T ~string](a at, attr string, v T, allowed ...T) {
	for _, x := range allowed {
		if v == x {
			return
		}
	}
	a.fail(attr, string(v), "must be one of "+joinT(allowed))
}

var serverName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// validate checks s; see Validate.
//
// It reads as Settings.xml does, element by element in document order, each element's checks
// flat under its c.at(...); its cyclomatic complexity (37) is the number of independent checks,
// not nesting, and the larger groups already have their own functions (validateSip, validateLog,
// ...). Split further, the order of the error list would no longer follow the file.
func validate(s *Settings) []*Error {
	c := &checker{}

	a := c.at("Server")
	if !serverName.MatchString(s.Server.Name) {
		a.fail("Name", s.Server.Name, "must be 1 to 63 letters, digits, '.', '_' or '-'")
	}
	a.host("Address", s.Server.Address, true)
	a.port("Port", s.Server.Port)
	a.host("PublicAddress", s.Server.PublicAddress, false)
	if ip, err := netip.ParseAddr(strings.Trim(s.Server.PublicAddress, "[]")); err == nil && ip.IsUnspecified() {
		a.fail("PublicAddress", s.Server.PublicAddress, "is an unspecified address: devices and peers cannot reach it (leave it empty for the default)")
	}
	a.host("PrivateAddress", s.Server.PrivateAddress, false)

	validateSip(c, s)
	validateTCPPorts(c, s)

	a = c.at("HttpServer")
	a.host("Address", s.HTTPServer.Address, true)
	a.port("Port", s.HTTPServer.Port)
	a.intRange("MaxRegistrationBytes", s.HTTPServer.MaxRegistrationBytes, 1024, 16<<20)

	a = c.at("Administrator")
	if ad := s.Administrator; ad.Enabled() {
		// RFC 7617 §2: the user-id of Basic auth cannot contain a colon.
		if a.required("UserName", ad.UserName) && strings.Contains(ad.UserName, ":") {
			a.fail("UserName", ad.UserName, "must not contain ':' (RFC 7617 §2)")
		}
		if p := ad.Password.Value(); isBcrypt(p) {
			if _, err := bcrypt.Cost([]byte(p)); err != nil {
				attr := "Password"
				if ad.PasswordFile != "" {
					attr = "PasswordFile"
				}
				a.fail(attr, "", "not a valid bcrypt hash")
			}
		}
	}

	a = c.at("Database")
	switch db := s.Database.OpenString; {
	case strings.TrimSpace(db) == "":
		a.fail("OpenString", db, "must not be empty")
	case isPostgres(db):
		// The connection string may hold a password: do not echo it (nor does the error).
		if err := store.CheckOpenString(db); err != nil {
			a.fail("OpenString", "", err.Error())
			a.c.errs[len(a.c.errs)-1].secret = true
		}
	case db == ":memory:" || strings.HasPrefix(db, "file::memory:"):
		a.fail("OpenString", db, "an in-memory database loses every instance on restart; give a file path")
	}
	c.at("Lock").required("FileName", s.Lock.FileName)
	a = c.at("Keys")
	a.required("PrivateKeyFile", s.Keys.PrivateKeyFile)
	a.required("PublicKeyFile", s.Keys.PublicKeyFile)
	a.required("DataKeyFile", s.Keys.DataKeyFile)

	validateLog(c, s)
	validateNotificationServers(c, &s.NotificationServers)

	a = c.at("TlsClientCertificates")
	for i, cc := range s.TLSClientCertificates {
		it := a.item("Certificate", i)
		if h := strings.TrimPrefix(cc.Host, "*."); cc.Host != "" && cc.Host != "*" && !validHost(h) {
			it.fail("Host", cc.Host, "not a host name, *.domain or *")
		}
		it.required("File", cc.File)
		it.required("KeyFile", cc.KeyFile)
	}
	a = c.at("TrustedCertificates")
	for i, tc := range s.TrustedCertificates {
		a.item("Certificate", i).required("File", tc.File)
	}
	a = c.at("TlsServerOptions")
	o := s.TLSServerOptions
	if (o.CertificateFile == "") != (o.KeyFile == "") {
		a.fail("KeyFile", o.KeyFile, "CertificateFile and KeyFile go together")
	}
	if o.MinVersion != tls.VersionTLS12 && o.MinVersion != tls.VersionTLS13 {
		a.fail("MinVersion", tls.VersionName(o.MinVersion), "must be 1.2 or 1.3")
	}

	a = c.at("Instance")
	in := s.Instance
	a.text("UserAgent", in.UserAgent)
	a.positive("MaxAge", in.MaxAge)
	a.positive("NotRegisteredMaxAge", in.NotRegisteredMaxAge)
	if in.KeepAlive {
		a.el("KeepAlivePackets").positive("Period", in.KeepAlivePeriod)
	}
	a.intRange("MaxCalls", in.MaxCalls, 1, 1000)
	validateExpiryReminders(a, in)

	a = c.at("IncomingCall")
	ic := s.IncomingCall
	a.positive("NotAnsweredMaxAge", ic.NotAnsweredMaxAge)
	a.positive("DeviceProgressMaxAge", ic.DeviceProgressMaxAge)
	a.positive("DialogMaxAge", ic.DialogMaxAge)
	oneOf(a, "OnNoResponseFromDevice", ic.OnNoResponseFromDevice, Reject480, Reject408)
	for i, p := range ic.AllowedSources {
		if !p.IsValid() {
			a.el("AllowedSources").item("Source", i).fail("Address", p.String(), "not a CIDR network or IP address")
		}
	}

	a = c.at("IncomingTextMessage")
	a.intRange("MaxBytes", s.IncomingTextMessage.MaxBytes, 1, 64<<20)
	for _, f := range s.IncomingTextMessage.Filters {
		if f.Headers != nil || f.elem < 0 {
			continue // an <Entry>, checked as it was read
		}
		it := a.item("Filter", f.elem)
		mt, params, err := mime.ParseMediaType(f.ContentType)
		if err != nil || len(params) > 0 || !strings.Contains(mt, "/") || mt != f.ContentType {
			it.fail("ContentType", f.ContentType, "not a media type such as text/plain or text/* (lower case, no parameters)")
		}
		oneOf(it, "Action", f.Action, FilterDrop, FilterReject, FilterAccept)
	}

	c.at("PushTest").nonNegative("MinAge", s.PushTest.MinAge)

	cl := c.at("Cluster")
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"Lease", s.Cluster.Lease}, {"Renew", s.Cluster.Renew}, {"Margin", s.Cluster.Margin}, {"Scan", s.Cluster.Scan}} {
		cl.nonNegative(d.name, d.v)
	}
	if lease, renew, margin := orDefault(s.Cluster.Lease, 9*time.Second), orDefault(s.Cluster.Renew, 2*time.Second),
		orDefault(s.Cluster.Margin, 3*time.Second); lease-margin <= renew {
		cl.el("Lease").fail("", "", fmt.Sprintf("is %v: less the margin (%v) it must be longer than Renew (%v)", lease, margin, renew))
	}
	if s.Cluster.Address != "" {
		if _, _, err := net.SplitHostPort(s.Cluster.Address); err != nil {
			cl.fail("Address", s.Cluster.Address, "not host:port")
		}
	}

	validateProbe(c, s)
	validatePbxHook(c, &s.PbxHook)
	return c.errs
}

// validatePbxHook checks <PbxHook>; an enabled hook needs its PBX networks and its verifier.
func validatePbxHook(c *checker, ph *PbxHook) {
	a := c.at("PbxHook")
	if !strings.HasPrefix(ph.Prefix, "/") || !strings.HasSuffix(ph.Prefix, "/") || ph.Prefix == "/" ||
		strings.ContainsAny(ph.Prefix, "{}?#% ") || strings.HasPrefix(ph.Prefix, "/sipis/") || strings.HasPrefix(ph.Prefix, "/stats/") {
		a.fail("Prefix", ph.Prefix, "must be a path such as /api/ (starting and ending with /, not / itself, /sipis/ or /stats/)")
	}
	if ph.Wait < 100*time.Millisecond || ph.Wait > time.Minute {
		a.fail("WaitMilliseconds", strconv.FormatInt(ph.Wait.Milliseconds(), 10), "out of range 100..60000")
	}
	if ph.ResendInterval < 100*time.Millisecond || ph.ResendInterval > ph.Wait {
		a.fail("ResendIntervalMilliseconds", strconv.FormatInt(ph.ResendInterval.Milliseconds(), 10), "out of range 100..WaitMilliseconds")
	}
	a.intRange("PushWorkers", ph.PushWorkers, 1, 1024)
	a.intRange("MaxWaits", ph.MaxWaits, 1, 1000000)
	a.positive("Retention", ph.Retention)
	for i, p := range ph.PbxNetworks {
		if !p.IsValid() {
			a.el("PbxNetworks").item("Network", i).fail("Address", p.String(), "not a CIDR network or IP address")
		}
	}
	if !ph.Enabled {
		return
	}
	if len(ph.PbxNetworks) == 0 {
		a.el("PbxNetworks").fail("", "", "an enabled <PbxHook> needs at least one <Network Address=\"…\"/> its PBX calls from")
	}
	a.el("DeviceVerifier").url("Url", ph.VerifierURL, true)
}

func validateSip(c *checker, s *Settings) {
	a := c.at("Sip")
	a.text("UserAgent", s.Sip.UserAgent)
	type lkey struct {
		t    Transport
		addr string
		port int
	}
	seen := map[lkey]int{}
	if len(s.Sip.Listeners) == 0 {
		a.fail("", "", "needs at least one <Listener>")
	}
	for i, l := range s.Sip.Listeners {
		it := a.item("Listener", i)
		oneOf(it, "Transport", l.Transport, TransportUDP, TransportTCP, TransportTLS)
		it.host("Address", l.Address, true)
		it.port("Port", l.Port)
		if l.Transport == TransportTLS && s.TLSServerOptions.CertificateFile == "" {
			it.fail("Transport", string(l.Transport), "a tls listener needs <TlsServerOptions CertificateFile KeyFile>")
		}
		k := lkey{l.Transport, l.Address, l.Port}
		if j, dup := seen[k]; dup && l.Port != 0 {
			it.fail("Port", strconv.Itoa(l.Port), fmt.Sprintf("same Transport, Address and Port as listener %d", j+1))
		}
		seen[k] = i
	}
	a = a.el("Register")
	r := s.Sip.Register
	a.fraction("RefreshFraction", r.RefreshFraction, 0.1, 0.95)
	a.fraction("Jitter", r.Jitter, 0, 0.5)
	a.positive("DefaultExpires", r.DefaultExpires)
	a.positive("MinExpires", r.MinExpires)
	a.positive("MaxExpires", r.MaxExpires)
	if r.MinExpires > r.DefaultExpires || r.DefaultExpires > r.MaxExpires {
		a.el("DefaultExpires").fail("", "", fmt.Sprintf("must lie between MinExpires (%v) and MaxExpires (%v)", r.MinExpires, r.MaxExpires))
	}
	b := a.el("Backoff")
	b.positive("Min", r.BackoffMin)
	b.positive("Max", r.BackoffMax)
	if r.BackoffMin > r.BackoffMax {
		b.el("Max").fail("", "", fmt.Sprintf("is %v, less than Min (%v)", r.BackoffMax, r.BackoffMin))
	}
	// Refused credentials are retried slowly, never in a tight loop.
	if r.UnauthorizedRetry < time.Minute {
		a.el("UnauthorizedRetry").fail("", "", fmt.Sprintf("is %v; must be at least 1 minute", r.UnauthorizedRetry))
	}
	a.intRange("MaxInFlightPerProxy", r.MaxInFlightPerProxy, 1, 100000)
	a.nonNegative("ResumeWindow", r.ResumeWindow)
	a.positive("TransactionTimeout", r.TransactionTimeout)
	a.intRange("Workers", r.Workers, 1, 65536)
}

// validateTCPPorts rejects two TCP listeners (HTTP, the device-facing SIP
// listener, SIP tcp/tls listeners) on one port and overlapping addresses,
// which would only fail later at start.
func validateTCPPorts(c *checker, s *Settings) {
	type bind struct {
		at         at
		attr, what string
		addr       string
		port       int
	}
	binds := []bind{
		{c.at("Server"), "Port", "<Server>", s.Server.Address, s.Server.Port},
		{c.at("HttpServer"), "Port", "<HttpServer>", s.HTTPServer.Address, s.HTTPServer.Port},
	}
	for i, l := range s.Sip.Listeners {
		if l.Transport == TransportTCP || l.Transport == TransportTLS {
			binds = append(binds, bind{c.at("Sip").item("Listener", i), "Port", "<Listener " + string(l.Transport) + ">", l.Address, l.Port})
		}
	}
	unspecified := func(a string) bool {
		ip, err := netip.ParseAddr(a)
		return a == "" || (err == nil && ip.IsUnspecified())
	}
	for i, b := range binds {
		for _, o := range binds[:i] {
			if b.port != 0 && b.port == o.port && (b.addr == o.addr || unspecified(b.addr) || unspecified(o.addr)) {
				b.at.fail(b.attr, strconv.Itoa(b.port), "TCP port already used by "+o.what)
				break
			}
		}
	}
}

func validateLog(c *checker, s *Settings) {
	a := c.at("Log")
	l := s.Log
	if l.InstanceFileName != NoInstanceLog && !strings.Contains(l.InstanceFileName, "{selector}") {
		a.fail("InstanceFileName", l.InstanceFileName, "must contain {selector} (or be "+NoInstanceLog+": no instance logs)")
	}
	for i, x := range l.HTTP.Exclude {
		a.el("Http").el("Filter").item("Exclude", i).intRange("Response", x.Response, 100, 599)
	}
	if !l.Level.Valid() {
		a.fail("Level", l.Level.String(), "must be one of "+levelList())
	}
	oneOf(a, "Stdio", l.Stdio, StdioStdout, StdioStderr, StdioNone)
	oneOf(a, "Format", l.Format, FormatText, FormatJSON)
	e := a.el("Email")
	if !l.Email.Level.Valid() {
		e.fail("Level", l.Email.Level.String(), "must be one of "+levelList())
	}
	for i, r := range l.Email.Excerpt.Filter {
		if !r.Severity.Valid() {
			name := "Exclude"
			if r.Include {
				name = "Include"
			}
			e.el("Excerpt").el("Filter").item(name, i).fail("Severity", r.Severity.String(), "must be one of "+levelList())
		}
	}
	if l.Email.To == "" {
		return
	}
	if _, err := mail.ParseAddressList(l.Email.To); err != nil {
		e.fail("To", l.Email.To, "not a list of e-mail addresses")
	}
	switch {
	case l.Email.From != "":
		e.email("From", l.Email.From)
	case s.Probe.Alerts.Smtp.From == "":
		e.fail("From", "", "must not be empty (or set <Probe><Alerts><Smtp From>)")
	}
	if l.Email.Summary.Enabled {
		e.el("Summary").positive("Period", l.Email.Summary.Period)
	}
	x := e.el("Excerpt")
	x.nonNegative("MinPeriod", l.Email.Excerpt.MinPeriod)
	if l.Email.Excerpt.MaxSize < 1024 {
		x.el("MaxSize").fail("", "", fmt.Sprintf("is %d bytes; must be at least 1 KiB", l.Email.Excerpt.MaxSize))
	}
	if s.Probe.Alerts.Smtp.Host == "" {
		e.fail("To", l.Email.To, "log e-mail needs <Probe><Alerts><Smtp Host>")
	}
}

func validateNotificationServers(c *checker, ns *NotificationServers) {
	a := c.at("NotificationServers")
	ap := a.el("Apns")
	ap.url("Endpoint", ns.Apns.Endpoint, ns.Apns.Enabled)
	ap.url("SandboxEndpoint", ns.Apns.SandboxEndpoint, ns.Apns.Enabled)
	if ns.Apns.Enabled {
		if ns.Apns.Key.IsEmpty() {
			ap.fail("KeyFile", "", "an enabled <Apns> needs KeyFile or Key")
		}
		ap.required("KeyId", ns.Apns.KeyID)
		ap.required("TeamId", ns.Apns.TeamID)
	}
	ap.text("KeyId", ns.Apns.KeyID)
	ap.text("TeamId", ns.Apns.TeamID)
	ap.text("Topic", ns.Apns.Topic)

	f := a.el("Fcm")
	f.url("Endpoint", ns.Fcm.Endpoint, ns.Fcm.Enabled)
	f.url("TokenEndpoint", ns.Fcm.TokenEndpoint, ns.Fcm.Enabled)
	if ns.Fcm.Enabled {
		attr := "ServiceAccount"
		if ns.Fcm.ServiceAccountFile != "" {
			attr = "ServiceAccountFile"
		}
		switch {
		case ns.Fcm.ServiceAccount.IsEmpty():
			f.fail("ServiceAccountFile", "", "an enabled <Fcm> needs ServiceAccountFile or ServiceAccount")
		case !json.Valid([]byte(ns.Fcm.ServiceAccount.Value())):
			f.fail(attr, "", "the service account is not JSON")
		}
	}
	f.text("ProjectId", ns.Fcm.ProjectID)

	w := a.el("Webhook")
	w.url("Url", ns.Webhook.URL, ns.Webhook.Enabled)
	if ns.Webhook.Enabled && ns.Webhook.Secret.IsEmpty() {
		w.fail("SecretFile", "", "an enabled <Webhook> signs its POSTs: it needs Secret or SecretFile")
	}
}

func validateProbe(c *checker, s *Settings) {
	a := c.at("Probe")
	p := s.Probe
	a.positive("Interval", p.Interval)
	a.positive("Timeout", p.Timeout)
	if p.Timeout >= p.Interval {
		a.el("Timeout").fail("", "", fmt.Sprintf("is %v, not shorter than Interval (%v)", p.Timeout, p.Interval))
	}
	a.intRange("DownAfter", p.DownAfter, 1, 1000)
	a.intRange("UpAfter", p.UpAfter, 1, 1000)
	a.intRange("MaxInFlight", p.MaxInFlight, 1, 100000)
	for i, t := range p.Targets {
		it := a.item("Target", i)
		secure, msg := checkSipURI(t.URI)
		if msg != "" {
			it.fail("Uri", t.URI, msg)
			continue
		}
		if t.Transport != "" {
			oneOf(it, "Transport", t.Transport, TransportUDP, TransportTCP, TransportTLS)
		}
		if secure && t.Transport != "" && t.Transport != TransportTLS {
			// RFC 5630: a SIPS URI means TLS on every hop.
			it.fail("Transport", string(t.Transport), "a sips: URI needs tls")
		}
	}
	al := a.el("Alerts")
	al.nonNegative("MinInterval", p.Alerts.MinInterval)
	m := al.el("Smtp")
	m.host("Host", p.Alerts.Smtp.Host, false)
	m.port("Port", p.Alerts.Smtp.Port)
	if p.Alerts.Smtp.From != "" {
		m.email("From", p.Alerts.Smtp.From)
	}
	for i, to := range p.Alerts.EmailTo {
		al.item("EmailTo", i).email("Address", to)
	}
	if len(p.Alerts.EmailTo) > 0 {
		m.required("Host", p.Alerts.Smtp.Host)
		m.required("From", p.Alerts.Smtp.From)
	}
	for i, w := range p.Alerts.Webhooks {
		it := al.item("Webhook", i)
		it.url("Url", w.URL, true)
		if w.Secret.IsEmpty() {
			// internal/probe signs every alert (X-Sipis-Signature) so the receiver can tell
			// sipis's alerts from forged ones; an unsigned alert webhook is refused here, at
			// load time, rather than by app.Start.
			it.fail("SecretFile", "", "an alert <Webhook> signs its POSTs: it needs Secret or SecretFile")
		}
	}
}

// checkSipURI checks that u is a sip: or sips: URI with a valid host and
// port (RFC 3261 §19.1.1) and reports whether it is sips:.
func checkSipURI(u string) (secure bool, problem string) {
	lower := strings.ToLower(u)
	var rest string
	switch {
	case strings.HasPrefix(lower, "sip:"):
		rest = u[4:]
	case strings.HasPrefix(lower, "sips:"):
		rest, secure = u[5:], true
	default:
		return false, "must start with sip: or sips:"
	}
	if i := strings.IndexAny(rest, ";?"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = rest[i+1:]
	}
	host, port := rest, ""
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return secure, "bad IPv6 reference"
		}
		host = rest[:end+1]
		if tail := rest[end+1:]; tail != "" {
			if !strings.HasPrefix(tail, ":") {
				return secure, "bad host"
			}
			port = tail[1:]
		}
	} else if h, p, ok := strings.Cut(rest, ":"); ok {
		host, port = h, p
	}
	if !validHost(host) {
		return secure, "no valid host"
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return secure, "bad port"
		}
	}
	return secure, ""
}

// secretRef is a secret that may come from a file.
type secretRef struct {
	path []string
	key  string
	attr string // the file attribute
	file *string
	val  *Secret
}

// readSecrets reads every secret whose file attribute is set.
func readSecrets(s *Settings, locate func(*Error)) []*Error {
	ref := func(path []string, attr string, file *string, val *Secret) secretRef {
		return secretRef{path: path, key: strings.Join(path, "/"), attr: attr, file: file, val: val}
	}
	ns := &s.NotificationServers
	refs := []secretRef{
		ref([]string{"Sipis", "Administrator"}, "PasswordFile", &s.Administrator.PasswordFile, &s.Administrator.Password),
		ref([]string{"Sipis", "NotificationServers", "Apns"}, "KeyFile", &ns.Apns.KeyFile, &ns.Apns.Key),
		ref([]string{"Sipis", "NotificationServers", "Fcm"}, "ServiceAccountFile", &ns.Fcm.ServiceAccountFile, &ns.Fcm.ServiceAccount),
		ref([]string{"Sipis", "NotificationServers", "Webhook"}, "SecretFile", &ns.Webhook.SecretFile, &ns.Webhook.Secret),
		ref([]string{"Sipis", "Probe", "Alerts", "Smtp"}, "PasswordFile", &s.Probe.Alerts.Smtp.PasswordFile, &s.Probe.Alerts.Smtp.Password),
		ref([]string{"Sipis", "PbxHook"}, "SecretFile", &s.PbxHook.SecretFile, &s.PbxHook.Secret),
	}
	for i := range s.Probe.Alerts.Webhooks {
		w := &s.Probe.Alerts.Webhooks[i]
		r := ref([]string{"Sipis", "Probe", "Alerts", "Webhook"}, "SecretFile", &w.SecretFile, &w.Secret)
		r.key = "Sipis/Probe/Alerts/Webhook[" + strconv.Itoa(i) + "]"
		refs = append(refs, r)
	}
	var errs []*Error
	for _, r := range refs {
		if *r.file == "" {
			continue
		}
		v, err := readSecretFile(*r.file)
		if err != nil {
			e := &Error{Path: r.path, Attr: r.attr, Msg: err.Error(), key: r.key + "@" + r.attr}
			locate(e)
			if e.Value == "" {
				e.Value = *r.file
			}
			errs = append(errs, e)
			continue
		}
		*r.val = NewSecret(v)
	}
	return errs
}

// maxSecretBytes caps a secret file (a service account JSON is ~2 KiB).
const maxSecretBytes = 1 << 20

// readSecretFile reads a secret, dropping trailing line ends.
func readSecretFile(path string) (string, error) {
	f, err := openRegular(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return "", fmt.Errorf("cannot read secret file: %v", pe.Err)
		}
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return "", fmt.Errorf("cannot read secret file: %v", err)
	}
	if len(data) > maxSecretBytes {
		return "", fmt.Errorf("secret file larger than %d bytes", maxSecretBytes)
	}
	v := strings.TrimRight(string(data), "\r\n")
	if v == "" {
		return "", errors.New("secret file is empty")
	}
	return v, nil
}

// validateExpiryReminders checks the reminder elements of <Instance>.
func validateExpiryReminders(a at, in Instance) {
	r := in.ExpiryReminders
	if r.PremiumMaxAge != 0 && r.PremiumMaxAge < in.MaxAge {
		a.fail("", r.PremiumMaxAge.String(), "PremiumMaxAge must not be shorter than MaxAge")
	}
	if r.PremiumMaxAge != 0 && len(r.PremiumApps) == 0 {
		a.el("PremiumMaxAge").fail("", r.PremiumMaxAge.String(), "has no effect without a <PremiumApp Id=\"…\"/>")
	}
	maxAge := max(in.MaxAge, r.PremiumMaxAge)
	for _, x := range []struct {
		name    string
		in, per time.Duration
	}{{"Silent", r.AboutToExpireIn.Silent, r.AboutToExpirePeriod.Silent}, {"Intrusive", r.AboutToExpireIn.Intrusive, r.AboutToExpirePeriod.Intrusive}} {
		if x.in >= maxAge && maxAge > 0 {
			a.el("AboutToExpireIn").el(x.name).fail("", x.in.String(), "must be shorter than MaxAge, or the reminders start at the first registration")
		}
		if x.in > 0 && x.per > 0 && x.per < time.Minute {
			a.el("AboutToExpirePeriod").el(x.name).fail("", x.per.String(), "must be at least a minute")
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
