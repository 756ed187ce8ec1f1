package config

import (
	"crypto/tls"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const examplePath = "../../Settings.example.xml"

// exampleHash is the bcrypt hash of "change-me" in Settings.example.xml.
const exampleHash = "$2a$10$QCjrcAI65hpMQlPB6q7.jeCGgTKChpAvWY1vbSLmwn9yTniSQgySG"

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
}

// TestExample loads the shipped Settings.example.xml and checks that it
// holds the defaults, except the paths under var/ and the admin password it
// sets on purpose.
func TestExample(t *testing.T) {
	got, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	root := abs(t, "../..")
	want := Default()
	want.Database.OpenString = filepath.Join(root, "var/sipis.db")
	want.Lock.FileName = filepath.Join(root, "var/sipis.lock")
	want.Keys.PrivateKeyFile = filepath.Join(root, "var/keys/server.key")
	want.Keys.PublicKeyFile = filepath.Join(root, "var/keys/server.pub")
	want.Keys.DataKeyFile = filepath.Join(root, "var/keys/data.key")
	want.Log.InstanceFileName = filepath.Join(root, "var/logs/instance-{selector}.log")
	want.Administrator.Password = NewSecret(exampleHash)
	// Empty containers in the example clear the (already empty) lists.
	normalizeEmpty(got)
	normalizeEmpty(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("example differs from the defaults:\n got %+v\nwant %+v", got, want)
	}
	if !got.Administrator.CheckPassword("admin", "change-me") {
		t.Error("example admin password is not change-me")
	}
	if got.HTTPServer.Port != 5000 || got.Sip.Listeners[0].Port != 5060 || got.Sip.Listeners[0].Transport != TransportUDP {
		t.Errorf("example ports: http %d, sip %+v", got.HTTPServer.Port, got.Sip.Listeners)
	}
	if got.NotificationServers.Apns.Enabled || got.NotificationServers.Fcm.Enabled || got.NotificationServers.Webhook.Enabled ||
		len(got.Probe.Alerts.EmailTo) > 0 || len(got.Probe.Alerts.Webhooks) > 0 {
		t.Error("example enables push providers or alerts")
	}
}

// normalizeEmpty turns empty lists into nil so DeepEqual does not tell
// them apart.
func normalizeEmpty(s *Settings) {
	if len(s.TLSClientCertificates) == 0 {
		s.TLSClientCertificates = nil
	}
	if len(s.TrustedCertificates) == 0 {
		s.TrustedCertificates = nil
	}
	if len(s.IncomingCall.AllowedSources) == 0 {
		s.IncomingCall.AllowedSources = nil
	}
	if len(s.Probe.Targets) == 0 {
		s.Probe.Targets = nil
	}
	if len(s.Probe.Alerts.EmailTo) == 0 {
		s.Probe.Alerts.EmailTo = nil
	}
	if len(s.Probe.Alerts.Webhooks) == 0 {
		s.Probe.Alerts.Webhooks = nil
	}
}

// schemaNames returns every "Element@Attribute" and "Parent/Element" the
// schema accepted while loading good.xml and the example together.
func schemaNames(t *testing.T, files ...string) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		l := newLoader(filepath.Dir(f))
		l.known = known
		if _, err := l.run(&source{name: f, dir: filepath.Dir(f), data: data}); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return known
}

// TestExampleDocumentsEverything checks that every attribute the parser
// accepts appears in Settings.example.xml (in an element or in a commented
// out example element), and that the example's comments mention it.
func TestExampleDocumentsEverything(t *testing.T) {
	known := schemaNames(t, "testdata/good.xml", examplePath)
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	present := map[string]bool{}
	tag := regexp.MustCompile(`<([A-Za-z]+)((?:\s+[A-Za-z]+="[^"]*")*)\s*/?>`)
	attr := regexp.MustCompile(`([A-Za-z]+)="`)
	for _, m := range tag.FindAllStringSubmatch(text, -1) {
		for _, a := range attr.FindAllStringSubmatch(m[2], -1) {
			present[m[1]+"@"+a[1]] = true
		}
	}
	var missing []string
	for k := range known {
		el, at, ok := strings.Cut(k, "@")
		if !ok {
			continue
		}
		if at == "Defaults" {
			if !strings.Contains(text, `Defaults="`) {
				missing = append(missing, k)
			}
			continue
		}
		if durationUnits[at] && documentedDuration(present, el) {
			continue // the header comment explains the four units
		}
		if !present[el+"@"+at] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("Settings.example.xml does not show: %s", strings.Join(missing, ", "))
	}
	if len(known) < 100 {
		t.Errorf("only %d schema names recorded; good.xml or the example lost elements", len(known))
	}
}

var durationUnits = map[string]bool{"Days": true, "Hours": true, "Minutes": true, "Seconds": true}

func documentedDuration(present map[string]bool, el string) bool {
	for u := range durationUnits {
		if present[el+"@"+u] {
			return true
		}
	}
	return false
}

func TestGood(t *testing.T) {
	yes := true
	got, err := Load("testdata/good.xml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	dir := abs(t, "testdata")
	p := func(rel string) string { return filepath.Join(dir, rel) }
	want := &Settings{
		Server: Server{Name: "node-7", Address: "192.0.2.10", Port: 6070, PublicAddress: "sip.example.net", PrivateAddress: "10.1.2.3"},
		Sip: Sip{
			Listeners: []Listener{
				{Transport: TransportUDP, Address: "127.0.0.1", Port: 0},
				{Transport: TransportTCP, Address: "::1", Port: 5080},
				{Transport: TransportTLS, Address: "0.0.0.0", Port: 5061},
			},
			UserAgent: "sipis-test/1",
			Register: Register{
				RefreshFraction:     0.8,
				Jitter:              0.25,
				DefaultExpires:      10 * time.Minute,
				MinExpires:          30 * time.Second,
				MaxExpires:          2 * time.Hour,
				BackoffMin:          2 * time.Second,
				BackoffMax:          10*time.Minute + 30*time.Second,
				UnauthorizedRetry:   time.Hour,
				MaxInFlightPerProxy: 8,
				ResumeWindow:        0,
				TransactionTimeout:  16 * time.Second,
				Workers:             16,
			},
		},
		HTTPServer: HTTPServer{Address: "127.0.0.1", Port: 8080, MaxRegistrationBytes: 4096, TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.8.0.0/16"), netip.MustParsePrefix("::1/128")}},
		Administrator: Administrator{UserName: "root", Password: NewSecret("admin-secret"), PasswordFile: p("secrets/admin.txt")},
		Database:      Database{OpenString: p("data/sipis.sqlite")},
		Lock:          Lock{FileName: "/run/sipis.lock"},
		Keys:          Keys{PrivateKeyFile: p("k/a.key"), PublicKeyFile: p("k/a.pub"), DataKeyFile: p("k/d.key"), DataKey: NewSecret("inline-data-key")},
		Log: Log{
			FileName:         p("log/sipis.log"),
			InstanceFileName: p("log/{selector}.log"),
			Level:            LevelDebug,
			Stdio:            StdioStderr,
			Format:           FormatJSON,
			Email: LogEmail{To: "ops@example.com, dev@example.com", From: "sipis@example.com", Level: LevelWarning,
				Summary: LogSummary{Enabled: true, Period: 12 * time.Hour, StartingAt: 6*time.Hour + 30*time.Minute + 15*time.Second},
				Excerpt: LogExcerpt{Enabled: false, MinPeriod: 30 * time.Minute, MaxSize: 1<<20 + 2<<10 + 3, Filter: []LogFilterRule{
					{Include: false, Severity: LevelTrace, Enabled: true},
					{Include: true, Severity: LevelError, Enabled: true},
					{Include: false, Severity: LevelFatal, Enabled: false},
				}}},
			HTTP:                              HTTPLog{Enabled: true, RequestBody: true, Exclude: []HTTPLogExclude{{200, true}, {304, false}}},
			ProblematicInstancesAutomatically: &yes,
		},
		NotificationServers: NotificationServers{
			Apns: Apns{
				Enabled: true, Endpoint: "https://apns.test", SandboxEndpoint: "http://127.0.0.1:9999",
				KeyFile: p("secrets/apns.p8"), Key: NewSecret("-----BEGIN PRIVATE KEY-----\nTESTKEY\n-----END PRIVATE KEY-----"),
				KeyID: "ABC123DEFG", TeamID: "TEAM123456", Topic: "com.example.phone",
			},
			Fcm: Fcm{
				Enabled: true, Endpoint: "https://fcm.test", TokenEndpoint: "https://token.test/token",
				ServiceAccountFile: p("secrets/fcm.json"), ServiceAccount: NewSecret(`{"type":"service_account","project_id":"demo"}`),
				ProjectID: "demo-project",
			},
			Webhook:            Webhook{Enabled: true, URL: "https://push.example.com/hook", Secret: NewSecret("push-hook-secret")},
			IncludeMessageText: true,
			Relays:             []NotificationRelay{{Name: "*", Host: "pnm.example.com", Port: 6552, Premium: true, RequiresTLS: true}},
		},
		TLSClientCertificates: []ClientCertificate{{File: p("tls/client.pem"), KeyFile: p("tls/client.key")},
			{Host: "*.example.org", File: p("tls/org.pem"), KeyFile: p("tls/org.key")}},
		TrustedCertificates: []Certificate{{File: p("tls/ca0.pem")}, {File: p("tls/ca1.pem")}, {File: "/etc/ssl/ca2.pem"}},
		TLSServerOptions:    TLSServerOptions{CertificateFile: p("tls/server.pem"), KeyFile: p("tls/server.key"), MinVersion: tls.VersionTLS13},
		Instance: Instance{
			UserAgent: "Phone/2.0", MaxAge: 30*24*time.Hour + time.Hour, NotRegisteredMaxAge: time.Hour,
			KeepAlive: false, KeepAlivePeriod: 15 * time.Second, MaxCalls: 2,
			ExpiryReminders: ExpiryReminders{
				PremiumMaxAge: 60 * 24 * time.Hour, PremiumApps: []string{"com.example.phone.pro"},
				AboutToExpireIn:     SilentIntrusive{Silent: 48 * time.Hour, Intrusive: 6 * time.Hour},
				AboutToExpirePeriod: SilentIntrusive{Silent: 2 * time.Hour, Intrusive: 5 * time.Hour},
			},
		},
		IncomingCall: IncomingCall{
			NotAnsweredMaxAge:      45 * time.Second,
			DeviceProgressMaxAge:   90 * time.Second,
			DialogMaxAge:           2 * time.Hour,
			OnNoResponseFromDevice: Reject408,
			AllowedSources: []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/8"),
				netip.MustParsePrefix("192.0.2.77/32"),
				netip.MustParsePrefix("2001:db8::/32"),
			},
		},
		IncomingTextMessage: IncomingTextMessage{
			MaxBytes: 1024,
			Filters: []Filter{
				{ContentType: "application/im-iscomposing+xml", Action: FilterDrop, elem: 0},
				{ContentType: "text/*", Action: FilterAccept, elem: 1},
				{ContentType: "application/octet-stream", Action: FilterReject, elem: 2},
				{Action: FilterDrop, Disabled: true, elem: -1, Headers: []HeaderMatch{{"Content-Type", HeaderEqual, "application/imdn+xml"}}},
				{Action: FilterReject, elem: -1, RejectCode: 413, RejectPhrase: "Too Big", Headers: []HeaderMatch{
					{"Content-Length", HeaderUintGt, "1000"}, {"From", HeaderContains, "spam.example"}}},
				{Action: FilterAccept, elem: -1, Headers: []HeaderMatch{{"X-Size", HeaderUintLt, "10"}}},
			},
		},
		PushTest: PushTest{MinAge: 0},
		PushTexts: PushTexts{Apps: []PushTextApp{
			{ID: "*", Kinds: map[string]PushText{"answered-elsewhere": {Enabled: false}}},
			{ID: "com.example.phone", Kinds: map[string]PushText{"missed-call": {Enabled: true, Title: "Anruf verpasst",
				Body: "{caller} hat angerufen", Sound: "ring.caf", Badge: "{missed_calls}", TitleLocKey: "MISSED_TITLE",
				LocKey: "MISSED", LocArgs: []string{"{caller}", "{missed_calls}"}}}},
		}},
		Probe: Probe{
			Enabled: false, Interval: time.Minute, Timeout: 10 * time.Second, DownAfter: 5, UpAfter: 1,
			MaxInFlight: 10, ProbeInstanceProxies: false,
			Targets: []Target{
				{URI: "sip:proxy.example.com", Transport: TransportUDP},
				{URI: "sips:alice@[2001:db8::1]:5061;transport=tls"},
				{URI: "sip:192.0.2.5:5070", Transport: TransportTCP},
			},
			Alerts: Alerts{
				MinInterval: 15 * time.Minute,
				Smtp: Smtp{Host: "smtp.example.com", Port: 25, UserName: "mailer", Password: NewSecret("smtp-secret"),
					StartTLS: false, From: "sipis@example.com"},
				EmailTo: []string{"ops@example.com", "Dev Team <dev@example.com>"},
				Webhooks: []AlertWebhook{
					{URL: "https://alerts.example.com/a", Secret: NewSecret("hook-secret"), SecretFile: p("secrets/alert-hook.txt")},
					{URL: "http://127.0.0.1:9000/b", Secret: NewSecret("alert-b")},
				},
			},
		},
		PbxHook: PbxHook{
			Enabled: true, Prefix: "/vialer/", Wait: 3 * time.Second, ResendInterval: 750 * time.Millisecond,
			Secret: NewSecret("pbx-hook-secret"), SecretFile: p("secrets/pbxhook.txt"),
			PbxNetworks: []netip.Prefix{netip.MustParsePrefix("192.0.2.20/32")},
			VerifierURL: "https://pbx.example.com/verify", VerifierCache: time.Minute, PushWorkers: 4, MaxWaits: 100,
			Retention: 3 * 24 * time.Hour,
		},
		Cluster: Cluster{Enabled: true, Address: "192.0.2.5:5060", Lease: 20 * time.Second, Renew: 4 * time.Second,
			Margin: 6 * time.Second, Scan: 3 * time.Second},
	}
	compareFields(t, reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem(), "Settings")
	if !reflect.DeepEqual(got, want) {
		t.Error("Settings differ (see field errors above)")
	}
	// Every value in good.xml differs from its default, so the file really
	// exercises each setter.
	def := Default()
	resolvePaths(def, dir)
	sameAsDefault(t, reflect.ValueOf(got).Elem(), reflect.ValueOf(def).Elem(), "Settings")
}

// compareFields reports each differing leaf field by name.
func compareFields(t *testing.T, got, want reflect.Value, name string) {
	t.Helper()
	if got.Kind() == reflect.Struct && got.Type() != reflect.TypeOf(Secret{}) && got.Type() != reflect.TypeOf(netip.Prefix{}) {
		for i := 0; i < got.NumField(); i++ {
			compareFields(t, got.Field(i), want.Field(i), name+"."+got.Type().Field(i).Name)
		}
		return
	}
	if !reflect.DeepEqual(got.Interface(), want.Interface()) {
		if got.Type() == reflect.TypeOf(Secret{}) {
			t.Errorf("%s: secret differs", name)
			return
		}
		t.Errorf("%s = %#v, want %#v", name, got.Interface(), want.Interface())
	}
}

// sameAsDefault reports leaf fields of got equal to the default, except a
// few that good.xml cannot set differently for a reason.
func sameAsDefault(t *testing.T, got, def reflect.Value, name string) {
	t.Helper()
	switch name {
	case "Settings.Sip.Register.ResumeWindow", "Settings.PushTest.MinAge", // set to 0 on purpose
		"Settings.IncomingTextMessage.Filters",                                                       // first filter equals the default
		"Settings.NotificationServers.Webhook.SecretFile", "Settings.Probe.Alerts.Smtp.PasswordFile": // inline instead
		return
	}
	if got.Kind() == reflect.Struct && got.Type() != reflect.TypeOf(Secret{}) && got.Type() != reflect.TypeOf(netip.Prefix{}) {
		for i := 0; i < got.NumField(); i++ {
			sameAsDefault(t, got.Field(i), def.Field(i), name+"."+got.Type().Field(i).Name)
		}
		return
	}
	if reflect.DeepEqual(got.Interface(), def.Interface()) {
		t.Errorf("good.xml leaves %s at its default; give it another value", name)
	}
}

func TestChain(t *testing.T) {
	s, err := Load("testdata/chain/sub/top.xml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	chain := abs(t, "testdata/chain")
	if s.Server.Name != "node-2" {
		t.Errorf("Server.Name = %q, want node-2 (node.xml overrides base.xml)", s.Server.Name)
	}
	if s.Server.Port != 6000 {
		t.Errorf("Server.Port = %d, want 6000 from base.xml", s.Server.Port)
	}
	if s.HTTPServer.Port != 7001 {
		t.Errorf("HTTPServer.Port = %d, want 7001 from top.xml", s.HTTPServer.Port)
	}
	if want := filepath.Join(chain, "shared.db"); s.Database.OpenString != want {
		t.Errorf("Database = %q, want %q (relative to base.xml)", s.Database.OpenString, want)
	}
	if want := filepath.Join(chain, "sub/top.lock"); s.Lock.FileName != want {
		t.Errorf("Lock = %q, want %q (relative to top.xml)", s.Lock.FileName, want)
	}
	if want := filepath.Join(chain, "sub/keys/server.key"); s.Keys.PrivateKeyFile != want {
		t.Errorf("default key path = %q, want %q (relative to the loaded file)", s.Keys.PrivateKeyFile, want)
	}
	if len(s.Probe.Targets) != 1 || s.Probe.Targets[0].URI != "sip:c.example.com" {
		t.Errorf("Targets = %+v, want only node.xml's (a list replaces the one below)", s.Probe.Targets)
	}
	if s.Probe.Interval != 30*time.Second {
		t.Errorf("Probe.Interval = %v, want the default", s.Probe.Interval)
	}
}

func TestChainFromParse(t *testing.T) {
	s, err := Parse([]byte(`<Sipis Defaults="base.xml"><HttpServer Port="0"/></Sipis>`), "testdata/chain")
	if err != nil {
		t.Fatal(err)
	}
	if s.Server.Name != "base" || s.HTTPServer.Port != 0 {
		t.Errorf("got Name %q Port %d, want base and 0", s.Server.Name, s.HTTPServer.Port)
	}
	if want := filepath.Join(abs(t, "testdata/chain"), "shared.db"); s.Database.OpenString != want {
		t.Errorf("Database = %q, want %q", s.Database.OpenString, want)
	}
}

func TestEmptyDefaultsIsNone(t *testing.T) {
	s, err := Parse([]byte(`<Sipis Defaults=""><Server Name="x"/></Sipis>`), "")
	if err != nil || s.Server.Name != "x" {
		t.Errorf("Parse = %+v, %v", s, err)
	}
}

func TestChainErrors(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"testdata/chain/cycle-a.xml", "Defaults cycle"},
		{"testdata/chain/self.xml", "Defaults cycle"},
	} {
		_, err := Load(tc.file)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Defaults") {
			t.Errorf("Load(%s) = %v, want an error with %q", tc.file, err, tc.want)
		}
	}
	// An error inside a Defaults file names that file.
	dir := t.TempDir()
	write(t, dir, "base.xml", "<Sipis>\n  <HttpServer Port=\"x\"/>\n</Sipis>\n")
	write(t, dir, "top.xml", `<Sipis Defaults="base.xml"/>`)
	_, err := Load(filepath.Join(dir, "top.xml"))
	if want := filepath.Join(dir, "base.xml") + ":2:"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v does not name %s", err, want)
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBad loads each file under testdata/bad and checks that the error
// names the file, line, element or attribute, and what is wrong.
func TestBad(t *testing.T) {
	cases := []struct {
		file string
		line int
		want []string
	}{
		{"unknown-element.xml", 3, []string{"<HttpServers>", "unknown element"}},
		{"unknown-attribute.xml", 4, []string{"<HttpServer port=", "unknown attribute", "did you mean Port"}},
		{"unknown-nested-element.xml", 4, []string{"<Backof>", "unknown element in <Register>"}},
		{"bad-port.xml", 2, []string{`<HttpServer Port="70000">`, "Port: out of range 0..65535"}},
		{"bad-port-text.xml", 3, []string{`<HttpServer Port="abc">`, "Port: not a number"}},
		{"bad-duration.xml", 3, []string{`<MaxAge Days="-1">`, "negative"}},
		{"bad-duration-text.xml", 3, []string{`<Interval Seconds="ten">`, "not a whole number"}},
		{"empty-duration.xml", 3, []string{"<Timeout>", "Days, Hours, Minutes or Seconds"}},
		{"bad-level.xml", 2, []string{`<Log Level="Loud">`, "Level: must be one of"}},
		{"bad-transport.xml", 4, []string{`<Listener Transport="sctp">`, "udp, tcp, tls"}},
		{"bad-cidr.xml", 5, []string{`<Source Address="10.0.0.0/33">`, "not a CIDR"}},
		{"instance-filename.xml", 3, []string{`<Log InstanceFileName="logs/instance.log">`, "must contain {selector}"}},
		{"postgres.xml", 2, []string{"<Database OpenString=(hidden)>", "PostgreSQL OpenString cannot be parsed"}},
		{"missing-passwordfile.xml", 2, []string{`<Administrator PasswordFile="no-such-password.txt">`, "cannot read"}},
		{"malformed.xml", 3, []string{"malformed XML"}},
		{"wrong-root.xml", 2, []string{"<Settings>", "root element must be <Sipis>"}},
		{"bad-uri.xml", 3, []string{`<Target Uri="proxy.example.com">`, "sip: or sips:"}},
		{"bad-url.xml", 3, []string{`<Webhook Url="ftp://push.example.com">`, "not an http:// or https:// URL"}},
		{"alert-webhook-no-secret.xml", 4, []string{`<Webhook SecretFile="">`, "needs Secret or SecretFile"}},
		{"bad-bool.xml", 2, []string{`<Probe Enabled="maybe">`, "Yes or No"}},
		{"duplicate-element.xml", 3, []string{"<HttpServer>", "given twice", "line 2"}},
		{"both-secret.xml", 2, []string{"<Administrator PasswordFile=", "not both"}},
		{"text-content.xml", 3, []string{"<HttpServer>", "unexpected text"}},
		{"sips-udp.xml", 3, []string{`<Target Transport="udp">`, "sips: URI needs tls"}},
		{"timeout-over-interval.xml", 4, []string{"<Timeout>", "not shorter than Interval"}},
		{"tls-without-certificate.xml", 3, []string{`<Listener Transport="tls">`, "TlsServerOptions"}},
		{"bad-bcrypt.xml", 2, []string{"<Administrator Password=(hidden)>", "bcrypt"}},
		{"memory-database.xml", 2, []string{`<Database OpenString=":memory:">`, "in-memory"}},
		{"missing-defaults.xml", 1, []string{`<Sipis Defaults="no-such-base.xml">`, "cannot read the file"}},
		{"bad-filter.xml", 3, []string{`<Filter Action="Bounce">`, "Drop, Reject, Accept"}},
		{"postgres-keyvalue.xml", 2, []string{"<Database OpenString=(hidden)>", "unterminated quoted string"}},
		{"bad-entry-action.xml", 4, []string{`<Entry Action="Bounce">`, "Accept, AcceptAndDrop, Reject"}},
		{"bad-entry-uint.xml", 5, []string{`<Header UintGt="big">`, "not a whole number"}},
		{"bad-reject-with.xml", 5, []string{`<RejectWith Code="200">`, "400 to 699"}},
		{"both-certificate-names.xml", 3, []string{`<Certificate FileName="b.pem">`, "give File or FileName, not both"}},
		{"bad-maxsize.xml", 4, []string{`<MaxSize Gigabytes="1">`, "unknown attribute"}},
		{"http-exclude-no-response.xml", 3, []string{"<Exclude>", "needs a Response status"}},
		{"cluster-lease-too-short.xml", 4, []string{"<Lease>", "longer than Renew"}},
	}
	files, err := filepath.Glob("testdata/bad/*.xml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(cases) {
		t.Errorf("%d files in testdata/bad, %d cases: keep them in step", len(files), len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata/bad", tc.file)
			s, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded: %+v", path, s)
			}
			if s != nil {
				t.Error("Load returned settings with an error")
			}
			msg := err.Error()
			t.Log(msg)
			prefix := path + ":" + strconv.Itoa(tc.line) + ": "
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("error %q does not start with %q", msg, prefix)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Line != tc.line || ce.File != path {
				t.Errorf("errors.As: %+v, want *Error at %s:%d", ce, path, tc.line)
			}
			// Parse of the same bytes gives the same error under the name "settings".
			data, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if _, perr := Parse(data, "testdata/bad"); perr == nil || !strings.HasPrefix(perr.Error(), "settings:"+strconv.Itoa(tc.line)+": ") {
				t.Errorf("Parse: %v, want settings:%d:", perr, tc.line)
			}
		})
	}
}

func TestErrorsAreCollected(t *testing.T) {
	_, err := Parse([]byte(`<Sipis>
  <HttpServer Port="abc" Adress="x"/>
  <Foo/>
</Sipis>`), "")
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, w := range []string{"settings:2: <HttpServer Port=\"abc\">", "Adress: unknown attribute", "settings:3: <Foo>"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q lacks %q", msg, w)
		}
	}
	if strings.Index(msg, "Port") > strings.Index(msg, "<Foo>") {
		t.Errorf("errors not in line order: %q", msg)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	s := Default()
	s.HTTPServer.Port = -1
	s.Sip.Register.BackoffMin = time.Hour
	err := s.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`<Sipis><HttpServer Port="-1">: Port: out of range`, "<Sipis><Sip><Register><Backoff><Max>: is 30m0s, less than Min (1h0m0s)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}

func TestValidationErrorPointsAtDefaultsFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "base.xml", "<Sipis>\n\n  <Probe>\n    <Timeout Seconds=\"50\"/>\n  </Probe>\n</Sipis>\n")
	write(t, dir, "top.xml", "<Sipis Defaults=\"base.xml\">\n  <Probe Enabled=\"Yes\"/>\n</Sipis>\n")
	_, err := Load(filepath.Join(dir, "top.xml"))
	if want := filepath.Join(dir, "base.xml") + ":4: <Timeout>"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

func TestSecretFromFileAndOverride(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "pw.txt", "s3cret\n")
	s, err := Parse([]byte(`<Sipis><Administrator UserName="op" PasswordFile="pw.txt"/></Sipis>`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Administrator.Password.Value() != "s3cret" || s.Administrator.PasswordFile != filepath.Join(dir, "pw.txt") {
		t.Errorf("password %q from %q", s.Administrator.Password.Value(), s.Administrator.PasswordFile)
	}
	if !s.Administrator.CheckPassword("op", "s3cret") || s.Administrator.CheckPassword("op", "s3cret\n") ||
		s.Administrator.CheckPassword("admin", "s3cret") {
		t.Error("CheckPassword with a plain password")
	}
	// An inline password in the overriding file replaces the base file's PasswordFile.
	write(t, dir, "base.xml", `<Sipis><Administrator PasswordFile="pw.txt"/></Sipis>`)
	s, err = Parse([]byte(`<Sipis Defaults="base.xml"><Administrator Password="inline"/></Sipis>`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Administrator.Password.Value() != "inline" || s.Administrator.PasswordFile != "" {
		t.Errorf("override: password %q file %q", s.Administrator.Password.Value(), s.Administrator.PasswordFile)
	}
	// An empty secret file is an error.
	write(t, dir, "empty.txt", "\n")
	_, err = Parse([]byte(`<Sipis><Administrator PasswordFile="empty.txt"/></Sipis>`), dir)
	if err == nil || !strings.Contains(err.Error(), "PasswordFile: secret file is empty") {
		t.Errorf("empty secret file: %v", err)
	}
}

func TestNoPasswordDisablesAdmin(t *testing.T) {
	s, err := Parse([]byte(`<Sipis><Administrator UserName="admin" Password=""/></Sipis>`), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Administrator.Enabled() || s.Administrator.CheckPassword("admin", "") {
		t.Error("an empty password must disable the admin pages")
	}
}

func TestParseEdgeCases(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"empty", "", "no <Sipis> root element"},
		{"two roots", "<Sipis/><Sipis/>", "second root"},
		{"duplicate attribute", `<Sipis><Server Name="a" Name="b"/></Sipis>`, "Name"},
		{"deep", "<Sipis>" + strings.Repeat("<A>", 40) + strings.Repeat("</A>", 40) + "</Sipis>", "nested more than"},
		{"huge duration", `<Sipis><Instance><MaxAge Days="99999999999999"/></Instance></Sipis>`, "longer than 100 years"},
		{"duration overflow sum", `<Sipis><Instance><MaxAge Days="36500" Hours="876000"/></Instance></Sipis>`, "longer than 100 years"},
		{"nan", `<Sipis><Sip><Register RefreshFraction="NaN"/></Sip></Sipis>`, "not a number"},
		{"fraction range", `<Sipis><Sip><Register RefreshFraction="1.5"/></Sip></Sipis>`, "out of range 0.1..0.95"},
		{"secret not echoed", `<Sipis><Administrator Pasword="hunter2"/></Sipis>`, "Pasword=(hidden)"},
		{"user with colon", `<Sipis><Administrator UserName="a:b" Password="x"/></Sipis>`, "RFC 7617"},
		{"unauthorized tight loop", `<Sipis><Sip><Register><UnauthorizedRetry Seconds="1"/></Register></Sip></Sipis>`, "at least 1 minute"},
		{"header injection", "<Sipis><Sip UserAgent=\"a&#13;&#10;Via: x\"/></Sipis>", "control characters"},
		{"apns without key", `<Sipis><NotificationServers><Apns Enabled="Yes" KeyId="k" TeamId="t" Topic="x"/></NotificationServers></Sipis>`, "needs KeyFile or Key"},
		{"alerts without smtp", `<Sipis><Probe><Alerts><EmailTo Address="a@example.com"/></Alerts></Probe></Sipis>`, "<Smtp Host=\"\">: Host: must not be empty"},
		{"bad email", `<Sipis><Probe><Alerts><Smtp Host="h" From="a@b.c"/><EmailTo Address="nobody"/></Alerts></Probe></Sipis>`, "not an e-mail address"},
		{"expires order", `<Sipis><Sip><Register><MinExpires Hours="2"/></Register></Sip></Sipis>`, "between MinExpires"},
		{"duplicate listener", `<Sipis><Sip><Listener Port="5060"/><Listener Port="5060"/></Sip></Sipis>`, "same Transport, Address and Port"},
		{"bad host", `<Sipis><HttpServer Address="not a host"/></Sipis>`, "not an IP address or host name"},
		{"bad trusted proxy", `<Sipis><HttpServer TrustedProxies="127.0.0.1 proxy.example"/></Sipis>`, `TrustedProxies: "proxy.example" is not an IP address or CIDR network`},
		{"trust everyone", `<Sipis><HttpServer TrustedProxies="10.0.0.1,0.0.0.0/0"/></Sipis>`, `"0.0.0.0/0" trusts every address`},
		{"tls min version", `<Sipis><TlsServerOptions MinVersion="1.0"/></Sipis>`, "must be 1.2 or 1.3"},
		{"tcp port clash", `<Sipis><HttpServer Port="5070"/></Sipis>`, "TCP port already used by <Server>"},
		{"tcp listener clash", `<Sipis><Sip><Listener Transport="tcp" Address="127.0.0.1" Port="5000"/></Sip></Sipis>`, "already used by <HttpServer>"},
		{"cert without key", `<Sipis><TlsServerOptions CertificateFile="c.pem"/></Sipis>`, "go together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error echoes a secret: %v", err)
			}
		})
	}
}

func TestNoListener(t *testing.T) {
	s := Default()
	s.Sip.Listeners = nil
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "at least one <Listener>") {
		t.Errorf("Validate = %v", err)
	}
}

func TestEmptyContainerClearsList(t *testing.T) {
	s, err := Parse([]byte(`<Sipis><IncomingCall><AllowedSources><Source Address="10.0.0.0/8"/></AllowedSources></IncomingCall></Sipis>`), "")
	if err != nil || len(s.IncomingCall.AllowedSources) != 1 {
		t.Fatalf("%v %+v", err, s)
	}
	dir := t.TempDir()
	write(t, dir, "base.xml", `<Sipis><TrustedCertificates><Certificate File="a.pem"/></TrustedCertificates></Sipis>`)
	s, err = Parse([]byte(`<Sipis Defaults="base.xml"><TrustedCertificates/></Sipis>`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.TrustedCertificates) != 0 {
		t.Errorf("empty <TrustedCertificates/> kept %+v", s.TrustedCertificates)
	}
}

func TestDatabaseFileURI(t *testing.T) {
	s, err := Parse([]byte(`<Sipis><Database OpenString="file:db/x.db?_txlock=immediate"/></Sipis>`), "/srv/sipis")
	if err != nil {
		t.Fatal(err)
	}
	if want := "file:" + filepath.Join("/srv/sipis", "db/x.db") + "?_txlock=immediate"; s.Database.OpenString != want {
		t.Errorf("OpenString = %q, want %q", s.Database.OpenString, want)
	}
}

func TestNamespaceAttributesIgnored(t *testing.T) {
	doc := `<Sipis xmlns="urn:sipis" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="sipis.xsd"><HttpServer Port="1"/></Sipis>`
	s, err := Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPServer.Port != 1 {
		t.Errorf("Port = %d", s.HTTPServer.Port)
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.xml"))
	var ce *Error
	if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), "missing.xml") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func BenchmarkLoadExample(b *testing.B) {
	for b.Loop() {
		if _, err := Load(examplePath); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseError(b *testing.B) {
	data, err := os.ReadFile("testdata/bad/unknown-attribute.xml")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Parse(data, ""); err == nil {
			b.Fatal("no error")
		}
	}
}
