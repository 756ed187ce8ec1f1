package sipua_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sip.sipis.test"},
		DNSNames:     []string{"sip.sipis.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
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
