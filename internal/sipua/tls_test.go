package sipua_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/testutil"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	c := testutil.SelfSigned(t, "sip.sipis.test", x509.ExtKeyUsageServerAuth, "sip.sipis.test", "127.0.0.1")
	return c.TLS, c.Pool
}

func TestOptionsOverTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	server := newUA(t, func(c *sipua.Config) {
		c.Listeners = []sipua.Listener{{Transport: "tls", Address: "127.0.0.1:0"}}
		c.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	client := newUA(t, func(c *sipua.Config) {
		c.ClientTLS = &tls.Config{RootCAs: pool}
	})
	res, err := client.Options(context.Background(), "sips:"+server.Addr("tls"), "")
	if err != nil || res.Status != 200 {
		t.Fatalf("%+v %v", res, err)
	}
	untrusting := newUA(t)
	if _, err := untrusting.Options(context.Background(), "sip:"+server.Addr("tls"), "tls"); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
	if server.Traffic().MessagesIn != 1 || client.Traffic().MessagesOut != 1 {
		t.Errorf("traffic server %+v client %+v", server.Traffic(), client.Traffic())
	}
}
