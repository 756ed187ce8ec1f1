package siptest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/testutil"
)

// StunnelOptions configure StartStunnel.
type StunnelOptions struct {
	// Connect is the plain TCP service behind stunnel, host:port.
	Connect string
	// ProxyProtocol makes stunnel open each connection to Connect with a
	// PROXY protocol v1 line naming the client ("protocol = proxy"), the
	// only way stunnel 5 passes the client's address on.
	ProxyProtocol bool
}

// Stunnel is a running stunnel4 that terminates TLS on Addr and forwards
// the plain bytes to StunnelOptions.Connect, as operators put it in front
// of sipis's HTTP port.
type Stunnel struct {
	// Addr is the TLS side, 127.0.0.1:port.
	Addr string
	// Roots holds the self-signed certificate stunnel presents.
	Roots *x509.CertPool
	log   *syncBuffer
}

// StartStunnel writes a self-signed certificate and a configuration into a
// temporary folder, starts stunnel4 in the foreground on a free 127.0.0.1
// port, waits until it listens and stops it in t.Cleanup. Its log is shown
// only if the test fails.
//
// Without a stunnel4 (or stunnel) binary the test is skipped, unless the
// environment has SIPIS_REQUIRE_STUNNEL=1: then it fails.
func StartStunnel(t testing.TB, opts StunnelOptions) *Stunnel {
	t.Helper()
	bin := findTool("stunnel4")
	if bin == "" {
		bin = findTool("stunnel")
	}
	if bin == "" {
		msg := "siptest: stunnel4 not installed (apt-get install stunnel4); skipping stunnel test"
		if os.Getenv("SIPIS_REQUIRE_STUNNEL") == "1" {
			t.Fatal(msg + " but SIPIS_REQUIRE_STUNNEL=1")
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	roots := writeStunnelCert(t, dir)
	st := &Stunnel{Roots: roots, log: &syncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stunnel log:\n%s", st.log.String())
		}
	})
	// stunnel needs a port number in its configuration: take a free one and
	// try again if another process took it in between.
	var lastErr error
	for range 5 {
		port, err := freeTCPPort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if lastErr = st.run(t, bin, dir, addr, opts); lastErr == nil {
			st.Addr = addr
			return st
		}
	}
	t.Fatalf("siptest: stunnel did not start: %v", lastErr)
	return nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// run starts stunnel accepting on addr and waits for its "Listening" line
// or its exit.
func (st *Stunnel) run(t testing.TB, bin, dir, addr string, opts StunnelOptions) error {
	conf := fmt.Sprintf(`foreground = yes
pid =
syslog = no
debug = 7

[sipis-http]
accept = %s
connect = %s
cert = %s
key = %s
`, addr, opts.Connect, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if opts.ProxyProtocol {
		conf += "protocol = proxy\n"
	}
	confPath := filepath.Join(dir, "stunnel.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, confPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = st.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	listening := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		said := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(st.log, line)
			if !said && strings.Contains(line, "Listening file descriptor created") {
				said = true
				close(listening)
			}
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		exited <- cmd.Wait()
	}()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	select {
	case <-listening:
		t.Cleanup(stop)
		return nil
	case err := <-exited:
		return fmt.Errorf("stunnel exited before listening on %s: %v", addr, err)
	case <-time.After(30 * time.Second):
		stop()
		return fmt.Errorf("stunnel did not listen on %s within 30 s", addr)
	}
}

// Client returns an HTTPS client that reaches stunnel from the loopback
// address local (e.g. "127.0.0.2", so that two clients have two addresses)
// and trusts its certificate.
func (st *Stunnel) Client(local string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig:     &tls.Config{RootCAs: st.Roots, ServerName: "127.0.0.1"},
			MaxIdleConnsPerHost: 64,
		},
	}
}

// URL is the https:// base URL of the TLS side.
func (st *Stunnel) URL() string { return "https://" + st.Addr }

// writeStunnelCert writes a self-signed ECDSA certificate for 127.0.0.1 as
// cert.pem and key.pem into dir and returns a pool holding it.
func writeStunnelCert(t testing.TB, dir string) *x509.CertPool {
	t.Helper()
	c := testutil.SelfSigned(t, "127.0.0.1", x509.ExtKeyUsageServerAuth, "127.0.0.1")
	c.WritePEM(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	return c.Pool
}
