package app

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/sipis/sipis/internal/config"
)

// TestStartWarnsOnce: a server with no push provider says so once at start, naming the
// setting, and a relay of the original product gets its own warning.
func TestStartWarnsOnce(t *testing.T) {
	s := testSettings(t, t.TempDir(), `<NotificationServers><NotificationServer Name="*" Host="pnm.example.com" Port="6552"/></NotificationServers>`)
	l, hook := test.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	a, err := New(s, WithLogger(l))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	count := map[string]int{}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Data["setting"] != nil {
			count[e.Data["setting"].(string)]++
			if e.Data["setting"] == "<NotificationServers>" && !strings.Contains(e.Message, "no push provider is enabled") {
				t.Errorf("unclear warning: %s", e.Message)
			}
		}
	}
	want := map[string]int{"<NotificationServers>": 1, `<NotificationServer Name="*" Host="pnm.example.com">`: 1}
	if len(count) != len(want) {
		t.Errorf("warnings %v, want %v", count, want)
	}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("warning %s logged %d times, want %d", k, count[k], n)
		}
	}
}

// TestClientTLSFromSettings: <TlsClientCertificates> and <TrustedCertificates FileName> of the
// original layout become the proxy dialer's certificate (by host) and roots.
func TestClientTLSFromSettings(t *testing.T) {
	s, err := config.Load("../config/testdata/acrobits/Settings.xml")
	if err != nil {
		t.Fatal(err)
	}
	a := &App{settings: s, log: logrus.New()}
	conf, certs, err := a.clientTLS()
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || certs[0].Host != "sip.example.com" || !certs[0].Matches("SIP.example.com") || certs[0].Matches("other.example.com") {
		t.Fatalf("client certificates %+v", certs)
	}
	if conf == nil || conf.RootCAs == nil {
		t.Fatal("no roots from <TrustedCertificates>")
	}
	// The client certificate is signed by the trusted CA: it verifies against the roots.
	leaf := certs[0].Certificate.Leaf
	if leaf == nil {
		t.Fatal("no parsed leaf")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: conf.RootCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the trusted CA is not in the roots: %v", err)
	}
}
