package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and a client certificate, all PEM,
// into dir.
func testPKI(t *testing.T, dir string) (server tls.Certificate, cas *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ip bool) ([]byte, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if ip {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	cDER, cKey := leaf(2, "sipis client", x509.ExtKeyUsageClientAuth, false)
	write("client.pem", "CERTIFICATE", cDER)
	ck, _ := x509.MarshalPKCS8PrivateKey(cKey)
	write("client.key", "PRIVATE KEY", ck)
	sDER, sKey := leaf(3, "proxy", x509.ExtKeyUsageServerAuth, true)
	cas = x509.NewCertPool()
	cas.AddCert(ca)
	return tls.Certificate{Certificate: [][]byte{sDER}, PrivateKey: sKey}, cas
}

// tlsFront is a TLS proxy in front of a registrar's TCP port that demands a client
// certificate signed by the test CA, as a provider's TLS edge does.
type tlsFront struct {
	ln       net.Listener
	mu       sync.Mutex
	clients  []string // common names of the client certificates presented
	refusals int
}

func newTLSFront(t *testing.T, cert tls.Certificate, cas *x509.CertPool, backend string) *tlsFront {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: cas, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFront{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					f.mu.Lock()
					f.refusals++
					f.mu.Unlock()
					return
				}
				f.mu.Lock()
				f.clients = append(f.clients, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
				f.mu.Unlock()
				b, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer b.Close()
				go func() { io.Copy(b, c); b.Close() }()
				io.Copy(c, b)
			}()
		}
	}()
	return f
}

func (f *tlsFront) seen() ([]string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.clients...), f.refusals
}

// TestRegisterOverTLSWithClientCertificate: an account whose proxy demands a client
// certificate registers over TLS with the certificate of <TlsClientCertificates> for that
// host, trusting the proxy through <TrustedCertificates FileName>; with a certificate only for
// another host the proxy refuses the connection.
func TestRegisterOverTLSWithClientCertificate(t *testing.T) {
	for _, tc := range []struct {
		host string
		ok   bool
	}{{"127.0.0.1", true}, {"sip.other.test", false}} {
		t.Run(tc.host, func(t *testing.T) {
			dir := t.TempDir()
			cert, cas := testPKI(t, dir)
			reg := siptest.NewRegistrar(t)
			front := newTLSFront(t, cert, cas, net.JoinHostPort(reg.Host(), strconv.Itoa(reg.Port())))
			s := testSettings(t, dir, `<TlsClientCertificates><Certificate Host="`+tc.host+`" FileName="client.pem" RsaPrivateKeyFileName="client.key"/></TlsClientCertificates>
  <TrustedCertificates FileName="ca.pem"/>`)
			a := startApp(t, s)
			defer a.Stop()
			r := newReg("30ab30ab30ab30ab", "tlsuser", reg, registration.ModeBackground)
			r.Account.Transport = "tls"
			r.Account.Port = front.ln.Addr().(*net.TCPAddr).Port
			sealed, _ := registration.Seal(r, a.PublicKey())
			if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
				t.Fatalf("register: %d %s", code, body)
			}
			if tc.ok {
				waitPhase(t, a, r.Selector, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})
				if clients, _ := front.seen(); len(clients) == 0 || clients[0] != "sipis client" {
					t.Errorf("client certificates presented: %q", clients)
				}
				if len(reg.Bindings("tlsuser")) != 1 {
					t.Errorf("bindings %q", reg.Bindings("tlsuser"))
				}
				return
			}
			waitPhase(t, a, r.Selector, instance.Phase{State: instance.RegisterLoop, Status: instance.Error})
			if clients, refusals := front.seen(); len(clients) != 0 || refusals == 0 {
				t.Errorf("without a certificate for the host: clients %q, refusals %d", clients, refusals)
			}
		})
	}
}
