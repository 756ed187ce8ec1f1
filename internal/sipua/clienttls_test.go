package sipua_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/testutil"
)

func clientCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	c := testutil.SelfSigned(t, "sipis client", x509.ExtKeyUsageClientAuth)
	return c.TLS, c.Pool
}

// TestClientCertificateByHost: a proxy that demands a client certificate gets the one
// configured for its host name, and a UA with certificates only for other hosts is refused.
func TestClientCertificateByHost(t *testing.T) {
	cert, pool := selfSigned(t)
	ccert, cpool := clientCert(t)
	server := newUA(t, func(c *sipua.Config) {
		c.Listeners = []sipua.Listener{{Transport: "tls", Address: "127.0.0.1:0"}}
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cpool}
	})
	for _, tc := range []struct {
		hosts []string
		ok    bool
	}{
		{nil, false},
		{[]string{"sip.other.test", "*.sipis.test"}, false},
		{[]string{"sip.other.test", "127.0.0.1"}, true},
		{[]string{"*"}, true},
	} {
		client := newUA(t, func(c *sipua.Config) {
			c.ClientTLS = &tls.Config{RootCAs: pool}
			for _, h := range tc.hosts {
				c.ClientCertificates = append(c.ClientCertificates, sipua.ClientCertificate{Host: h, Certificate: ccert})
			}
		})
		res, err := client.Options(context.Background(), "sips:"+server.Addr("tls"), "")
		if tc.ok && (err != nil || res.Status != 200) {
			t.Errorf("hosts %q: %+v %v", tc.hosts, res, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("hosts %q: the proxy took a connection without a client certificate", tc.hosts)
		}
	}
}

// TestClientCertificateWildcard checks the host patterns on a name.
func TestClientCertificateWildcard(t *testing.T) {
	for _, tc := range []struct {
		pattern, host string
		want          bool
	}{
		{"sip.example.com", "SIP.example.com", true},
		{"sip.example.com", "sip.example.org", false},
		{"*.example.com", "sip.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "sipexample.com", false},
		{"", "anything", true},
		{"*", "anything", true},
	} {
		if got := (sipua.ClientCertificate{Host: tc.pattern}).Matches(tc.host); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}
