package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// originalFile is a settings file in the original product's layout, with
// every element sipis takes over from its public deployment files.
const originalFile = "testdata/acrobits/Settings.xml"

// TestOriginalFile loads the original product's layout and checks that each
// of its elements is read as documented, and that exactly the documented
// warnings come with it.
func TestOriginalFile(t *testing.T) {
	s, err := Load(originalFile)
	if err != nil {
		t.Fatalf("Load(%s): %v", originalFile, err)
	}
	dir := abs(t, "testdata/acrobits")
	if s.Log.InstanceFileName != NoInstanceLog {
		t.Errorf("InstanceFileName = %q, want %q", s.Log.InstanceFileName, NoInstanceLog)
	}
	if p := s.Log.ProblematicInstancesAutomatically; p == nil || *p {
		t.Errorf("ProblematicInstancesAutomatically = %v, want No", p)
	}
	wantMail := LogEmail{To: "ops@example.com", From: "sipis@example.com", Level: logrus.ErrorLevel,
		Summary: LogSummary{Enabled: true, Period: 24 * time.Hour, StartingAt: 6*time.Hour + 30*time.Minute},
		Excerpt: LogExcerpt{Enabled: true, MinPeriod: time.Hour, MaxSize: 512 << 10, Filter: []LogFilterRule{
			{Include: false, Severity: logrus.TraceLevel, Enabled: true},
			{Include: true, Severity: logrus.WarnLevel, Enabled: true},
		}}}
	if !reflect.DeepEqual(s.Log.Email, wantMail) {
		t.Errorf("Log.Email = %+v\nwant %+v", s.Log.Email, wantMail)
	}
	if want := (HTTPLog{Enabled: true, Exclude: []HTTPLogExclude{{Response: 200, Enabled: true}}}); !reflect.DeepEqual(s.Log.HTTP, want) {
		t.Errorf("Log.HTTP = %+v, want %+v", s.Log.HTTP, want)
	}
	if want := []NotificationRelay{{Name: "*", Host: "pnm.example.com", Port: 6552, RequiresTLS: true}}; !reflect.DeepEqual(s.NotificationServers.Relays, want) {
		t.Errorf("Relays = %+v, want %+v", s.NotificationServers.Relays, want)
	}
	wantCert := []ClientCertificate{{Host: "sip.example.com", File: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client.key")}}
	if !reflect.DeepEqual(s.TLSClientCertificates, wantCert) {
		t.Errorf("TlsClientCertificates = %+v, want %+v", s.TLSClientCertificates, wantCert)
	}
	if want := []Certificate{{File: filepath.Join(dir, "ca.pem")}}; !reflect.DeepEqual(s.TrustedCertificates, want) {
		t.Errorf("TrustedCertificates = %+v, want %+v", s.TrustedCertificates, want)
	}
	wantFilters := []Filter{
		{Action: FilterDrop, elem: -1, Headers: []HeaderMatch{{"Content-Type", HeaderEqual, "application/im-iscomposing+xml"}}},
		{Action: FilterReject, elem: -1, RejectCode: 413, RejectPhrase: "Request Entity Too Large",
			Headers: []HeaderMatch{{"Content-Length", HeaderUintGt, "4194304"}}},
		{Action: FilterAccept, Disabled: true, elem: -1, Headers: []HeaderMatch{{"From", HeaderContains, "example.org"}}},
	}
	if !reflect.DeepEqual(s.IncomingTextMessage.Filters, wantFilters) {
		t.Errorf("Filters = %+v\nwant %+v", s.IncomingTextMessage.Filters, wantFilters)
	}
	if s.PushTest.MinAge != 7*24*time.Hour {
		t.Errorf("PushTest MinAge = %v, want 7 days", s.PushTest.MinAge)
	}
	if s.Instance.MaxAge != 3*24*time.Hour || s.Server.Port != 4998 {
		t.Errorf("MaxAge %v, Server Port %d", s.Instance.MaxAge, s.Server.Port)
	}

	var got []string
	for _, w := range s.Warnings() {
		got = append(got, w.Setting)
		if !strings.Contains(w.Why, "no effect") && !strings.Contains(w.Why, "no push provider") {
			t.Errorf("warning %q does not say why", w)
		}
	}
	want := []string{"<Log ProblematicInstancesAutomatically>", `<NotificationServer Name="*" Host="pnm.example.com">`, "<NotificationServers>"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
	for _, w := range s.Warnings() {
		if w.Setting == `<NotificationServer Name="*" Host="pnm.example.com">` && !strings.Contains(w.Why, "<Apns>, <Fcm> or <Webhook>") {
			t.Errorf("relay warning does not point at the push settings: %s", w)
		}
	}
}

// TestWarnings checks each warning on its own, and that a plain file with a
// push provider has none.
func TestWarnings(t *testing.T) {
	const hook = `<NotificationServers><Webhook Enabled="Yes" Url="https://h.example.com/" Secret="x"/></NotificationServers>`
	cases := []struct {
		xml  string
		want []string
	}{
		{`<Sipis>` + hook + `</Sipis>`, nil},
		{`<Sipis/>`, []string{"<NotificationServers>"}},
		{`<Sipis><Log ProblematicInstancesAutomatically="Yes"/>` + hook + `</Sipis>`, []string{"<Log ProblematicInstancesAutomatically>"}},
		{`<Sipis><Server PrivateAddress="10.0.0.1"/>` + hook + `</Sipis>`, []string{"<Server PrivateAddress>"}},
		{`<Sipis><NotificationServers><Apns Enabled="Yes" Key="k" KeyId="A" TeamId="B" Topic="com.example"/></NotificationServers></Sipis>`,
			[]string{"<Apns Topic>"}},
	}
	for _, tc := range cases {
		s, err := Parse([]byte(tc.xml), "")
		if err != nil {
			t.Fatalf("%s: %v", tc.xml, err)
		}
		var got []string
		for _, w := range s.Warnings() {
			got = append(got, w.Setting)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: warnings %q, want %q", tc.xml, got, tc.want)
		}
	}
}

// TestApnsTopicOptional: an enabled <Apns> needs no Topic, as documented.
func TestApnsTopicOptional(t *testing.T) {
	_, err := Parse([]byte(`<Sipis><NotificationServers><Apns Enabled="Yes" Key="k" KeyId="A" TeamId="B"/></NotificationServers></Sipis>`), "")
	if err != nil {
		t.Fatalf("enabled Apns without Topic: %v", err)
	}
	_, err = Parse([]byte(`<Sipis><NotificationServers><Apns Enabled="Yes" Key="k" TeamId="B"/></NotificationServers></Sipis>`), "")
	if err == nil || !strings.Contains(err.Error(), "KeyId") {
		t.Fatalf("enabled Apns without KeyId: %v", err)
	}
}

// TestPostgresKeyValue: the original's key=value connection string and a
// postgres:// URL are accepted as they are (not resolved as a file path); a
// malformed one is one clear error that does not show the password.
func TestPostgresKeyValue(t *testing.T) {
	for _, open := range []string{
		"host=dbsipis port=5432 dbname=sipis user=sipis password='hunter2'",
		"host=dbsipis port=5432 dbname=sipis user=sipis password=hunter2",
		"postgres://sipis:hunter2@db.example.com:5432/sipis?sslmode=require",
		"postgresql://sipis@db.example.com/sipis",
	} {
		s, err := Parse([]byte(`<Sipis><Database OpenString="`+open+`"/></Sipis>`), "/etc/sipis/Settings.xml")
		if err != nil {
			t.Errorf("PostgreSQL OpenString %q refused: %v", open, err)
			continue
		}
		if s.Database.OpenString != open {
			t.Errorf("OpenString %q became %q", open, s.Database.OpenString)
		}
	}
	_, err := Load("testdata/bad/postgres-keyvalue.xml")
	if err == nil {
		t.Fatal("malformed PostgreSQL OpenString accepted")
	}
	msg := err.Error()
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "PostgreSQL OpenString cannot be parsed") {
		t.Errorf("want one clear error, got %q", msg)
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error shows the password: %q", msg)
	}
}

// TestLogEmailFromSmtp: <Email> without From takes <Smtp From>; without
// either it is an error.
func TestLogEmailFromSmtp(t *testing.T) {
	ok := `<Sipis><Log><Email To="a@example.com"/></Log><Probe><Alerts><Smtp Host="m.example.com" From="s@example.com"/></Alerts></Probe></Sipis>`
	if _, err := Parse([]byte(ok), ""); err != nil {
		t.Fatalf("From from Smtp: %v", err)
	}
	bad := `<Sipis><Log><Email To="a@example.com"/></Log><Probe><Alerts><Smtp Host="m.example.com"/></Alerts></Probe></Sipis>`
	if _, err := Parse([]byte(bad), ""); err == nil || !strings.Contains(err.Error(), "From") {
		t.Fatalf("no From at all: %v", err)
	}
}

// TestSelectorPlaceholder: the original product's $SELECTOR$ works as {selector}.
func TestSelectorPlaceholder(t *testing.T) {
	s, err := Parse([]byte(`<Sipis><Log InstanceFileName="/var/log/sipis/$SELECTOR$.log"/></Sipis>`), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "/var/log/sipis/{selector}.log"; s.Log.InstanceFileName != want {
		t.Errorf("InstanceFileName = %q, want %q", s.Log.InstanceFileName, want)
	}
}
