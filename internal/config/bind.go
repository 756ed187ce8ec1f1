package config

import (
	"crypto/tls"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/sipis/sipis/internal/store"
)

// binder decodes one document's element tree over a Settings.
type binder struct {
	src  *source
	errs []*Error
	// pos maps a value's key (element path with list indexes, "@", and
	// attribute name; see elem.key) to the element that last set it, so
	// that later errors (secret files, validation) can name file and line.
	pos map[string]*node
	// known, when non-nil, collects "Element@Attribute" and
	// "Parent/Element" for every name the schema accepts.
	known map[string]bool
}

// elem is one element being bound.
type elem struct {
	b     *binder
	n     *node
	path  []string        // element names from the root, for messages
	key   string          // element path with list indexes, for pos
	attrs map[string]bool // attributes the schema accepts
	kids  map[string]bool // child elements the schema accepts
}

func (b *binder) elem(n *node, path []string, key string) *elem {
	b.pos[key+"@"] = n
	return &elem{b: b, n: n, path: path, key: key, attrs: map[string]bool{}, kids: map[string]bool{}}
}

// fail records an error about attribute attr (or the element when attr is
// empty).
func (e *elem) fail(attr, msg string) {
	v, _ := e.n.attrValue(attr)
	e.b.errs = append(e.b.errs, &Error{
		File: e.b.src.name, Line: e.n.attrLine(attr), Path: e.path, Attr: attr, Value: v, Msg: msg,
		order: e.b.src.order, secret: isSecretAttr(attr),
	})
}

// isSecretAttr reports whether an attribute holds a secret inline.
func isSecretAttr(attr string) bool {
	switch attr {
	case "Password", "Secret", "Key", "ServiceAccount", "DataKey":
		return true
	}
	return false
}

// looksSecret reports whether an unknown attribute may be a misspelt secret
// whose value must not be echoed.
func looksSecret(attr string) bool {
	l := strings.ToLower(attr)
	for _, w := range []string{"pas", "pw", "secret", "key", "token", "account", "cred"} {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

// attr returns the value of attribute name and marks it accepted.
func (e *elem) attr(name string) (string, bool) {
	e.attrs[name] = true
	if e.b.known != nil {
		e.b.known[e.n.name+"@"+name] = true
	}
	v, ok := e.n.attrValue(name)
	if ok {
		e.b.pos[e.key+"@"+name] = e.n
	}
	return v, ok
}

func (e *elem) str(name string, dst *string) {
	if v, ok := e.attr(name); ok {
		*dst = v
	}
}

// file binds a path, resolved against the document's folder.
func (e *elem) file(name string, dst *string) {
	if v, ok := e.attr(name); ok {
		*dst = resolve(e.b.src.dir, v)
	}
}

func (e *elem) integer(name string, dst *int) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		e.fail(name, "not a number")
		return
	}
	*dst = n
}

func (e *elem) float(name string, dst *float64) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		e.fail(name, "not a number")
		return
	}
	*dst = f
}

func (e *elem) boolean(name string, dst *bool) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "true":
		*dst = true
	case "no", "false":
		*dst = false
	default:
		e.fail(name, "must be Yes or No")
	}
}

func (e *elem) level(name string, dst *Level) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	l, err := ParseLevel(v)
	if err != nil {
		e.fail(name, err.Error())
		return
	}
	*dst = l
}

type errorString string

func (e errorString) Error() string { return string(e) }

// enum binds one of allowed, compared without case, stored as written in
// allowed.
func enum[T ~string](e *elem, name string, dst *T, allowed ...T) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	for _, a := range allowed {
		if strings.EqualFold(strings.TrimSpace(v), string(a)) {
			*dst = a
			return
		}
	}
	e.fail(name, "must be one of "+joinT(allowed))
}

func joinT[T ~string](v []T) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// secret binds an inline secret attribute and its file alternative. The one
// given replaces the other; the file is read after all documents are bound
// (see readSecrets).
func (e *elem) secret(name, fileName string, dst *Secret, file *string) {
	v, inline := e.attr(name)
	f, fromFile := e.attr(fileName)
	f = strings.TrimSpace(f)
	switch {
	case v != "" && f != "":
		e.fail(fileName, "give "+name+" or "+fileName+", not both")
	case v != "":
		*dst, *file = NewSecret(v), ""
	case f != "":
		*dst, *file = Secret{}, resolve(e.b.src.dir, f)
	case inline || fromFile:
		// Given empty: no secret.
		*dst, *file = Secret{}, ""
	}
}

// maxDuration bounds every duration: a hundred years.
const maxDuration = 100 * 365 * 24 * time.Hour

// duration binds child element name as a duration: the sum of its Days,
// Hours, Minutes and Seconds attributes, whole non-negative numbers.
func (e *elem) duration(name string, dst *time.Duration) {
	e.child(name, func(c *elem) {
		total, any, bad := c.sumUnits(durationAttrs, int64(maxDuration), 64, "longer than 100 years")
		if !any {
			c.fail("", "a duration needs Days, Hours, Minutes or Seconds")
			return
		}
		if !bad {
			*dst = time.Duration(total)
		}
	})
}

// durationAttrs are the attributes of a duration element.
var durationAttrs = []unitAttr{{"Days", int64(24 * time.Hour)}, {"Hours", int64(time.Hour)}, {"Minutes", int64(time.Minute)}, {"Seconds", int64(time.Second)}}

// children returns the child elements called name and marks name accepted.
func (e *elem) children(name string) []*node {
	e.kids[name] = true
	if e.b.known != nil {
		e.b.known[e.n.name+"/"+name] = true
	}
	var out []*node
	for _, k := range e.n.kids {
		if k.name == name {
			out = append(out, k)
		}
	}
	return out
}

// child binds the single child element called name with fn, if present.
func (e *elem) child(name string, fn func(c *elem)) {
	kids := e.children(name)
	if len(kids) == 0 {
		return
	}
	for _, k := range kids[1:] {
		c := e.b.elem(k, append(e.path[:len(e.path):len(e.path)], name), e.key+"/"+name)
		c.fail("", "given twice in <"+e.n.name+"> (first at line "+strconv.Itoa(kids[0].line)+")")
	}
	c := e.b.elem(kids[0], append(e.path[:len(e.path):len(e.path)], name), e.key+"/"+name)
	fn(c)
	c.done()
}

// list binds every child element called name, each into a fresh item from
// newItem. If a document has any, they replace the list from the defaults
// or an earlier document.
func list[T any](e *elem, name string, dst *[]T, newItem func() T, fn func(c *elem, item *T)) {
	kids := e.children(name)
	if len(kids) == 0 {
		return
	}
	prefix := e.key + "/" + name + "["
	for k := range e.b.pos {
		if strings.HasPrefix(k, prefix) {
			delete(e.b.pos, k)
		}
	}
	out := make([]T, 0, len(kids))
	for i, k := range kids {
		c := e.b.elem(k, append(e.path[:len(e.path):len(e.path)], name), prefix+strconv.Itoa(i)+"]")
		item := newItem()
		fn(c, &item)
		c.done()
		out = append(out, item)
	}
	*dst = out
}

// ignoredSpaces are attribute namespaces that carry no settings.
var ignoredSpaces = map[string]bool{"xmlns": true, "http://www.w3.org/2001/XMLSchema-instance": true}

// done reports the attributes and child elements the schema did not accept.
func (e *elem) done() {
	for _, a := range e.n.attrs {
		if ignoredSpaces[a.Name.Space] || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		if a.Name.Space == "" && e.attrs[a.Name.Local] {
			continue
		}
		e.b.errs = append(e.b.errs, &Error{
			File: e.b.src.name, Line: e.n.attrLine(a.Name.Local), Path: e.path, Attr: a.Name.Local,
			Value: a.Value, Msg: "unknown attribute" + suggest(a.Name.Local, e.attrs),
			order: e.b.src.order, secret: looksSecret(a.Name.Local),
		})
	}
	for _, k := range e.n.kids {
		if e.kids[k.name] {
			continue
		}
		e.b.errs = append(e.b.errs, &Error{
			File: e.b.src.name, Line: k.line, Path: append(e.path[:len(e.path):len(e.path)], k.name),
			Msg: "unknown element in <" + e.n.name + ">" + suggest(k.name, e.kids), order: e.b.src.order,
		})
	}
}

// suggest names a known name differing from name only in case.
func suggest(name string, known map[string]bool) string {
	for k := range known {
		if strings.EqualFold(k, name) {
			return " (did you mean " + k + "?)"
		}
	}
	return ""
}

// resolve joins a relative path to dir; empty paths stay empty.
func resolve(dir, p string) string {
	if p == "" || dir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// resolveDB resolves a SQLite path or file: URI against dir; other strings
// (":memory:", PostgreSQL) are left for validate to judge.
func resolveDB(dir, v string) string {
	switch {
	case v == ":memory:" || isPostgres(v):
		return v
	case strings.HasPrefix(v, "file:"):
		rest := strings.TrimPrefix(v, "file:")
		p, query, hasQuery := strings.Cut(rest, "?")
		if p == "" || p == ":memory:" || strings.HasPrefix(p, "//") {
			return v
		}
		out := "file:" + resolve(dir, p)
		if hasQuery {
			out += "?" + query
		}
		return out
	default:
		return resolve(dir, v)
	}
}

// isPostgres reports whether v is a PostgreSQL OpenString (the store decides, so that both
// read it the same way).
func isPostgres(v string) bool { return store.BackendOf(v) == store.PostgreSQL }

// resolvePaths resolves the relative default paths of s against dir.
func resolvePaths(s *Settings, dir string) {
	s.Database.OpenString = resolveDB(dir, s.Database.OpenString)
	for _, p := range []*string{
		&s.Lock.FileName, &s.Keys.PrivateKeyFile, &s.Keys.PublicKeyFile, &s.Keys.DataKeyFile,
		&s.Log.FileName, &s.Log.InstanceFileName,
	} {
		*p = resolve(dir, *p)
	}
}

// bindRoot binds <Sipis> and everything below it over s.
func bindRoot(e *elem, s *Settings) {
	e.attr("Defaults") // applied by the loader
	e.child("Server", func(c *elem) {
		c.str("Name", &s.Server.Name)
		c.str("Address", &s.Server.Address)
		c.integer("Port", &s.Server.Port)
		c.str("PublicAddress", &s.Server.PublicAddress)
		c.str("PrivateAddress", &s.Server.PrivateAddress)
	})
	e.child("Sip", func(c *elem) { bindSip(c, &s.Sip) })
	e.child("HttpServer", func(c *elem) {
		c.str("Address", &s.HTTPServer.Address)
		c.integer("Port", &s.HTTPServer.Port)
		c.integer("MaxRegistrationBytes", &s.HTTPServer.MaxRegistrationBytes)
		if v, ok := c.attr("TrustedProxies"); ok {
			s.HTTPServer.TrustedProxies = parseTrustedProxies(c, v)
		}
	})
	e.child("Administrator", func(c *elem) {
		c.str("UserName", &s.Administrator.UserName)
		c.secret("Password", "PasswordFile", &s.Administrator.Password, &s.Administrator.PasswordFile)
	})
	e.child("Database", func(c *elem) {
		if v, ok := c.attr("OpenString"); ok {
			s.Database.OpenString = resolveDB(c.b.src.dir, v)
		}
	})
	e.child("Lock", func(c *elem) { c.file("FileName", &s.Lock.FileName) })
	e.child("Keys", func(c *elem) {
		c.file("PrivateKeyFile", &s.Keys.PrivateKeyFile)
		c.file("PublicKeyFile", &s.Keys.PublicKeyFile)
		c.file("DataKeyFile", &s.Keys.DataKeyFile)
		if v, ok := c.attr("DataKey"); ok {
			s.Keys.DataKey = NewSecret(v)
		}
	})
	e.child("Log", func(c *elem) { bindLog(c, &s.Log) })
	e.child("NotificationServers", func(c *elem) { bindNotificationServers(c, &s.NotificationServers) })
	e.child("TlsClientCertificates", func(c *elem) {
		s.TLSClientCertificates = nil
		list(c, "Certificate", &s.TLSClientCertificates, func() ClientCertificate { return ClientCertificate{} },
			func(c *elem, cc *ClientCertificate) {
				c.str("Host", &cc.Host)
				cc.Host = strings.ToLower(strings.TrimSpace(cc.Host))
				c.fileAlias("File", "FileName", &cc.File)
				c.fileAlias("KeyFile", "RsaPrivateKeyFileName", &cc.KeyFile)
			})
	})
	e.child("TrustedCertificates", func(c *elem) {
		s.TrustedCertificates = nil
		// The original product names one file on the element itself.
		var one string
		c.file("FileName", &one)
		list(c, "Certificate", &s.TrustedCertificates, func() Certificate { return Certificate{} },
			func(c *elem, tc *Certificate) { c.fileAlias("File", "FileName", &tc.File) })
		if one != "" {
			s.TrustedCertificates = append([]Certificate{{File: one}}, s.TrustedCertificates...)
		}
	})
	e.child("TlsServerOptions", func(c *elem) {
		o := &s.TLSServerOptions
		c.file("CertificateFile", &o.CertificateFile)
		c.file("KeyFile", &o.KeyFile)
		if v, ok := c.attr("MinVersion"); ok {
			switch strings.TrimSpace(v) {
			case "1.2":
				o.MinVersion = tls.VersionTLS12
			case "1.3":
				o.MinVersion = tls.VersionTLS13
			default:
				c.fail("MinVersion", "must be 1.2 or 1.3")
			}
		}
	})
	e.child("Instance", func(c *elem) {
		in := &s.Instance
		c.str("UserAgent", &in.UserAgent)
		c.integer("MaxCalls", &in.MaxCalls)
		c.duration("MaxAge", &in.MaxAge)
		c.duration("NotRegisteredMaxAge", &in.NotRegisteredMaxAge)
		c.child("KeepAlivePackets", func(c *elem) {
			c.boolean("Enabled", &in.KeepAlive)
			c.duration("Period", &in.KeepAlivePeriod)
		})
		bindExpiryReminders(c, &in.ExpiryReminders)
	})
	e.child("PushTexts", func(c *elem) { bindPushTexts(c, &s.PushTexts) })
	e.child("IncomingCall", func(c *elem) {
		ic := &s.IncomingCall
		c.duration("NotAnsweredMaxAge", &ic.NotAnsweredMaxAge)
		c.duration("DeviceProgressMaxAge", &ic.DeviceProgressMaxAge)
		c.duration("DialogMaxAge", &ic.DialogMaxAge)
		enum(c, "OnNoResponseFromDevice", &ic.OnNoResponseFromDevice, Reject480, Reject408)
		c.child("AllowedSources", func(c *elem) { prefixes(c, "Source", &ic.AllowedSources) })
	})
	e.child("IncomingTextMessage", func(c *elem) {
		tm := &s.IncomingTextMessage
		c.integer("MaxBytes", &tm.MaxBytes)
		bindFilters(c, &tm.Filters)
	})
	e.child("PushTest", func(c *elem) { c.duration("MinAge", &s.PushTest.MinAge) })
	e.child("Cluster", func(c *elem) {
		c.boolean("Enabled", &s.Cluster.Enabled)
		c.str("Address", &s.Cluster.Address)
		c.duration("Lease", &s.Cluster.Lease)
		c.duration("Renew", &s.Cluster.Renew)
		c.duration("Margin", &s.Cluster.Margin)
		c.duration("Scan", &s.Cluster.Scan)
	})
	e.child("Probe", func(c *elem) { bindProbe(c, &s.Probe) })
	e.child("PbxHook", func(c *elem) { bindPbxHook(c, &s.PbxHook) })
}

// bindPbxHook binds <PbxHook>.
func bindPbxHook(c *elem, ph *PbxHook) {
	c.boolean("Enabled", &ph.Enabled)
	c.str("Prefix", &ph.Prefix)
	c.units("WaitMilliseconds", time.Millisecond, "milliseconds", &ph.Wait)
	c.units("ResendIntervalMilliseconds", time.Millisecond, "milliseconds", &ph.ResendInterval)
	c.secret("Secret", "SecretFile", &ph.Secret, &ph.SecretFile)
	c.integer("PushWorkers", &ph.PushWorkers)
	c.integer("MaxWaits", &ph.MaxWaits)
	c.duration("Retention", &ph.Retention)
	c.child("PbxNetworks", func(c *elem) { prefixes(c, "Network", &ph.PbxNetworks) })
	c.child("DeviceVerifier", func(c *elem) {
		c.str("Url", &ph.VerifierURL)
		c.units("CacheSeconds", time.Second, "seconds", &ph.VerifierCache)
	})
}

// prefixes binds a list of <item Address="CIDR or IP"/> children, replacing the default list.
func prefixes(c *elem, item string, dst *[]netip.Prefix) {
	*dst = nil
	list(c, item, dst, func() netip.Prefix { return netip.Prefix{} }, func(c *elem, p *netip.Prefix) {
		v, ok := c.attr("Address")
		if !ok {
			c.fail("", "needs an Address")
			return
		}
		pr, err := parsePrefix(v)
		if err != nil {
			c.fail("Address", "not a CIDR network or IP address")
			return
		}
		*p = pr
	})
}

// units binds attribute name, a whole number of unit (the original's "...Milliseconds" and
// "...Seconds" attributes), to dst; unitName words the error.
func (e *elem) units(name string, unit time.Duration, unitName string, dst *time.Duration) {
	v, ok := e.attr(name)
	if !ok {
		return
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 31)
	if err != nil {
		e.fail(name, "not a whole number of "+unitName)
		return
	}
	*dst = time.Duration(n) * unit
}

// parseTrustedProxies parses <HttpServer TrustedProxies>: addresses and
// CIDR networks separated by spaces or commas. A bad entry fails the
// attribute and leaves the list empty.
func parseTrustedProxies(c *elem, v string) []netip.Prefix {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		p, err := parsePrefix(f)
		switch {
		case err != nil || !p.IsValid():
			c.fail("TrustedProxies", fmt.Sprintf("%q is not an IP address or CIDR network", f))
			return nil
		case p.Bits() == 0:
			c.fail("TrustedProxies", fmt.Sprintf("%q trusts every address: any client could name its own", f))
			return nil
		}
		out = append(out, p)
	}
	return out
}

// parsePrefix accepts a CIDR network or a single address.
func parsePrefix(v string) (netip.Prefix, error) {
	v = strings.TrimSpace(v)
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func bindSip(c *elem, sp *Sip) {
	c.str("UserAgent", &sp.UserAgent)
	list(c, "Listener", &sp.Listeners, defaultListener, func(c *elem, l *Listener) {
		enum(c, "Transport", &l.Transport, TransportUDP, TransportTCP, TransportTLS)
		c.str("Address", &l.Address)
		c.integer("Port", &l.Port)
	})
	c.child("Register", func(c *elem) {
		r := &sp.Register
		c.float("RefreshFraction", &r.RefreshFraction)
		c.float("Jitter", &r.Jitter)
		c.integer("MaxInFlightPerProxy", &r.MaxInFlightPerProxy)
		c.integer("Workers", &r.Workers)
		c.duration("DefaultExpires", &r.DefaultExpires)
		c.duration("MinExpires", &r.MinExpires)
		c.duration("MaxExpires", &r.MaxExpires)
		c.child("Backoff", func(c *elem) {
			c.duration("Min", &r.BackoffMin)
			c.duration("Max", &r.BackoffMax)
		})
		c.duration("UnauthorizedRetry", &r.UnauthorizedRetry)
		c.duration("ResumeWindow", &r.ResumeWindow)
		c.duration("TransactionTimeout", &r.TransactionTimeout)
	})
}

func bindLog(c *elem, l *Log) {
	c.file("FileName", &l.FileName)
	c.file("InstanceFileName", &l.InstanceFileName)
	// The original product writes the selector placeholder $SELECTOR$.
	l.InstanceFileName = strings.ReplaceAll(l.InstanceFileName, "$SELECTOR$", "{selector}")
	c.level("Level", &l.Level)
	enum(c, "Stdio", &l.Stdio, StdioStdout, StdioStderr, StdioNone)
	enum(c, "Format", &l.Format, FormatText, FormatJSON)
	if _, ok := c.n.attrValue("ProblematicInstancesAutomatically"); ok {
		var v bool
		c.boolean("ProblematicInstancesAutomatically", &v)
		l.ProblematicInstancesAutomatically = &v
	} else {
		c.attr("ProblematicInstancesAutomatically")
	}
	c.child("Email", func(c *elem) { bindLogEmail(c, &l.Email) })
	c.child("Http", func(c *elem) {
		h := &l.HTTP
		h.Enabled = true
		c.boolean("Enabled", &h.Enabled)
		c.boolean("RequestBody", &h.RequestBody)
		c.child("Filter", func(c *elem) {
			h.Exclude = nil
			list(c, "Exclude", &h.Exclude, func() HTTPLogExclude { return HTTPLogExclude{Enabled: true} },
				func(c *elem, x *HTTPLogExclude) {
					if _, ok := c.attr("Response"); !ok {
						c.fail("", "needs a Response status")
					}
					c.integer("Response", &x.Response)
					c.boolean("Enabled", &x.Enabled)
				})
		})
	})
}

func bindNotificationServers(c *elem, ns *NotificationServers) {
	c.child("Apns", func(c *elem) {
		a := &ns.Apns
		c.boolean("Enabled", &a.Enabled)
		c.str("Endpoint", &a.Endpoint)
		c.str("SandboxEndpoint", &a.SandboxEndpoint)
		c.secret("Key", "KeyFile", &a.Key, &a.KeyFile)
		c.str("KeyId", &a.KeyID)
		c.str("TeamId", &a.TeamID)
		c.str("Topic", &a.Topic)
	})
	c.child("Fcm", func(c *elem) {
		f := &ns.Fcm
		c.boolean("Enabled", &f.Enabled)
		c.str("Endpoint", &f.Endpoint)
		c.str("TokenEndpoint", &f.TokenEndpoint)
		c.secret("ServiceAccount", "ServiceAccountFile", &f.ServiceAccount, &f.ServiceAccountFile)
		c.str("ProjectId", &f.ProjectID)
	})
	c.child("Webhook", func(c *elem) {
		w := &ns.Webhook
		c.boolean("Enabled", &w.Enabled)
		c.str("Url", &w.URL)
		c.secret("Secret", "SecretFile", &w.Secret, &w.SecretFile)
	})
	c.child("IncludeMessageText", func(c *elem) { c.boolean("Enabled", &ns.IncludeMessageText) })
	list(c, "NotificationServer", &ns.Relays, func() NotificationRelay { return NotificationRelay{} },
		func(c *elem, r *NotificationRelay) {
			c.str("Name", &r.Name)
			c.str("Host", &r.Host)
			c.integer("Port", &r.Port)
			c.boolean("Premium", &r.Premium)
			c.boolean("RequiresTls", &r.RequiresTLS)
		})
}

func bindProbe(c *elem, p *Probe) {
	c.boolean("Enabled", &p.Enabled)
	c.integer("DownAfter", &p.DownAfter)
	c.integer("UpAfter", &p.UpAfter)
	c.integer("MaxInFlight", &p.MaxInFlight)
	c.boolean("ProbeInstanceProxies", &p.ProbeInstanceProxies)
	c.duration("Interval", &p.Interval)
	c.duration("Timeout", &p.Timeout)
	list(c, "Target", &p.Targets, func() Target { return Target{} }, func(c *elem, t *Target) {
		c.str("Uri", &t.URI)
		enum(c, "Transport", &t.Transport, TransportUDP, TransportTCP, TransportTLS)
	})
	c.child("Alerts", func(c *elem) {
		a := &p.Alerts
		c.duration("MinInterval", &a.MinInterval)
		c.child("Smtp", func(c *elem) {
			m := &a.Smtp
			c.str("Host", &m.Host)
			c.integer("Port", &m.Port)
			c.str("UserName", &m.UserName)
			c.secret("Password", "PasswordFile", &m.Password, &m.PasswordFile)
			c.boolean("StartTls", &m.StartTLS)
			c.str("From", &m.From)
		})
		list(c, "EmailTo", &a.EmailTo, func() string { return "" }, func(c *elem, to *string) {
			c.str("Address", to)
		})
		list(c, "Webhook", &a.Webhooks, func() AlertWebhook { return AlertWebhook{} }, func(c *elem, w *AlertWebhook) {
			c.str("Url", &w.URL)
			c.secret("Secret", "SecretFile", &w.Secret, &w.SecretFile)
		})
	})
}

// bindExpiryReminders binds the reminder elements of <Instance>.
func bindExpiryReminders(c *elem, r *ExpiryReminders) {
	c.duration("PremiumMaxAge", &r.PremiumMaxAge)
	list(c, "PremiumApp", &r.PremiumApps, func() string { return "" }, func(c *elem, id *string) {
		if v, ok := c.attr("Id"); ok && strings.TrimSpace(v) != "" {
			*id = strings.TrimSpace(v)
		} else {
			c.fail("Id", "needs the app id (bundle id or package name)")
		}
	})
	c.child("AboutToExpireIn", func(c *elem) {
		c.duration("Silent", &r.AboutToExpireIn.Silent)
		c.duration("Intrusive", &r.AboutToExpireIn.Intrusive)
	})
	c.child("AboutToExpirePeriod", func(c *elem) {
		c.duration("Silent", &r.AboutToExpirePeriod.Silent)
		c.duration("Intrusive", &r.AboutToExpirePeriod.Intrusive)
	})
}

// bindPushTexts binds <PushTexts><App Id><Kind …/></App>.
func bindPushTexts(c *elem, pt *PushTexts) {
	list(c, "App", &pt.Apps, func() PushTextApp { return PushTextApp{Kinds: map[string]PushText{}} }, func(c *elem, app *PushTextApp) {
		if v, ok := c.attr("Id"); ok && strings.TrimSpace(v) != "" {
			app.ID = strings.TrimSpace(v)
		} else {
			c.fail("Id", `needs the app id, or "*" for every app`)
		}
		for name, kind := range PushTextKinds {
			c.child(name, func(c *elem) {
				t := PushText{Enabled: true}
				c.boolean("Enabled", &t.Enabled)
				c.str("Title", &t.Title)
				c.str("Body", &t.Body)
				c.str("Sound", &t.Sound)
				c.str("Badge", &t.Badge)
				c.str("TitleLocKey", &t.TitleLocKey)
				c.str("LocKey", &t.LocKey)
				var args string
				c.str("LocArgs", &args)
				for _, a := range strings.Split(args, ",") {
					if a = strings.TrimSpace(a); a != "" {
						t.LocArgs = append(t.LocArgs, a)
					}
				}
				app.Kinds[kind] = t
			})
		}
	})
}
