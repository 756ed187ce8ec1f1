// Package testutil holds what the tests of several packages share: a self-signed certificate
// and the goroutine-leak check of their TestMain. Only _test.go files and the test harness in
// internal/siptest may import it; it must
// not import any sipis package, so that every package's tests can use it.
package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Cert is a self-signed certificate with its key.
type Cert struct {
	TLS  tls.Certificate // the certificate (Leaf set) and its private key
	Pool *x509.CertPool  // a pool that trusts exactly this certificate
}

// SelfSigned returns a certificate for common name cn, valid from an hour ago to an hour from
// now, for usage (x509.ExtKeyUsageServerAuth or ClientAuth) and for hosts (IP addresses or
// DNS names). It signs itself, so it is its own CA.
func SelfSigned(t testing.TB, cn string, usage x509.ExtKeyUsage, hosts ...string) Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, Pool: pool}
}

// WritePEM writes the certificate to certFile and its key (PKCS #8) to keyFile.
func (c Cert) WritePEM(t testing.TB, certFile, keyFile string) {
	t.Helper()
	kder, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.TLS.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// LeakGrace is how long CheckLeaks waits for goroutines that are still on their way out
// (a closed server's accept loop, database/sql's connection opener).
const LeakGrace = 5 * time.Second

// CheckLeaks runs the tests and returns their exit code, for os.Exit in TestMain. When they
// passed, it waits up to LeakGrace until no goroutine is left whose stack counts as a leak,
// and otherwise prints those stacks and returns 1. The goroutine running TestMain is never
// counted.
func CheckLeaks(m *testing.M, counts func(stack string) bool) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(LeakGrace)
	for {
		left := leftGoroutines(counts)
		if len(left) == 0 {
			return code
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the tests:\n%s\n", strings.Join(left, "\n\n"))
			return 1
		}
		time.Sleep(20 * time.Millisecond) // polls other goroutines' exit; there is no event to wait on
	}
}

// leftGoroutines returns the stacks of the goroutines but the caller's that counts reports.
func leftGoroutines(counts func(string) bool) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	// runtime.Stack lists the calling goroutine first.
	stacks := strings.Split(string(buf), "\n\n")[1:]
	var left []string
	for _, g := range stacks {
		if g = strings.TrimSpace(g); g != "" && counts(g) {
			left = append(left, g)
		}
	}
	return left
}

// Every counts every goroutine.
func Every(string) bool { return true }

// Matching counts the goroutines whose stack mentions one of the substrings (package
// prefixes such as "internal/sipua.").
func Matching(substrings ...string) func(string) bool {
	return func(stack string) bool {
		for _, s := range substrings {
			if strings.Contains(stack, s) {
				return true
			}
		}
		return false
	}
}

// Except counts the goroutines whose stack mentions none of the substrings.
func Except(substrings ...string) func(string) bool {
	m := Matching(substrings...)
	return func(stack string) bool { return !m(stack) }
}
