package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/pkg/registration"
)

// The API hand-over mode (-api) measures the registration API as apps use it: a whole sipis
// server (internal/app, from a Settings.xml held in memory, SQLite in a temporary folder) takes
// N sealed registrations, one new selector each, POSTed by -concurrency clients at once. The
// clients run in a child process that seals every registration before the clock starts, so the
// figures (registrations/s, sipis's CPU per registration) are the server's alone; each client
// keeps one HTTP/1.1 connection alive and is kept cheap (apiConn), since it shares the machine's
// cores with the server. The client's own CPU per registration is printed too. A
// registration counts once its 200 came back, which the server sends only after the
// registration is committed to the database.
//
// -api-mode foreground hands accounts over without a SIP registration (the intake alone);
// background makes each registration REGISTER at the loopback registrar too.

// apiFigures are the results of one API run.
type apiFigures struct {
	Registrations   int     `json:"registrations"`
	Concurrency     int     `json:"concurrency"`
	Mode            string  `json:"mode"`
	Seconds         float64 `json:"seconds"`
	PerSecond       float64 `json:"registrationsPerSecond"`
	CPUusPerReg     float64 `json:"cpuMicrosecondsPerRegistration"`
	ClientCPUus     float64 `json:"clientCpuMicrosecondsPerRegistration"`
	Failures        int64   `json:"failures"`
	FirstFailure    string  `json:"firstFailure,omitempty"`
	StoredInstances int     `json:"storedInstances"`
}

// clientResult is what the client child prints when it is done.
type clientResult struct {
	OK, Failed int64
	First      string
	Seconds    float64
	CPUSeconds float64 // the client process's CPU while posting
}

// runAPI runs the API hand-over measurement: registrar child, server, client child, figures.
func runAPI(ctx context.Context, n, concurrency int, mode, cpuProfile string, asJSON bool) error {
	if mode != string(registration.ModeForeground) && mode != string(registration.ModeBackground) {
		return fmt.Errorf("-api-mode must be foreground or background, not %q", mode)
	}
	regAddr, killReg, err := startRegistrarChild(3600)
	if err != nil {
		return err
	}
	defer killReg()

	dir, err := os.MkdirTemp("", "sipis-load-api-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	a, err := startAPIServer(ctx, dir)
	if err != nil {
		return err
	}
	defer a.Stop()

	host, port, _ := net.SplitHostPort(regAddr)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	pub := base64.StdEncoding.EncodeToString(registration.EncodeKey(a.PublicKey()))
	cmd := exec.CommandContext(ctx, exe, "-api-client-child", "-n", strconv.Itoa(n), "-concurrency", strconv.Itoa(concurrency),
		"-api-mode", mode, "-api-url", a.HTTPURL()+"/sipis/register", "-api-pub", pub, "-api-proxy", net.JoinHostPort(host, port))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewReader(stdout)
	fmt.Fprintf(os.Stderr, "sealing %d registrations...\n", n)
	if line, err := out.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("the client child did not get ready: %q %v", line, err)
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
		// The block and mutex profiles show where handlers wait (the group-commit queue, the
		// selector locks), which the CPU profile cannot.
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		runtime.SetMutexProfileFraction(10)
		defer writeProfile("block", cpuProfile+".block")
		defer writeProfile("mutex", cpuProfile+".mutex")
	}
	fmt.Fprintf(os.Stderr, "posting with %d clients...\n", concurrency)
	c0 := cpuTime()
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return err
	}
	line, err := out.ReadString('\n')
	c1 := cpuTime()
	if err != nil {
		return fmt.Errorf("the client child gave no result: %v", err)
	}
	var res clientResult
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return fmt.Errorf("the client child's result %q: %v", line, err)
	}
	stored, err := a.Store().CountInstances(ctx)
	if err != nil {
		return err
	}
	f := apiFigures{Registrations: n, Concurrency: concurrency, Mode: mode, Seconds: res.Seconds,
		Failures: res.Failed, FirstFailure: res.First, StoredInstances: stored}
	if res.Seconds > 0 {
		f.PerSecond = float64(res.OK) / res.Seconds
	}
	if res.OK > 0 {
		f.CPUusPerReg = float64((c1 - c0).Microseconds()) / float64(res.OK)
		f.ClientCPUus = res.CPUSeconds * 1e6 / float64(res.OK)
	}
	if int64(stored) != res.OK {
		return fmt.Errorf("%d registrations acknowledged but %d instances stored", res.OK, stored)
	}
	return printAPI(f, asJSON)
}

// printAPI prints one run's figures, as JSON or as text.
func printAPI(f apiFigures, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(os.Stdout).Encode(f)
	}
	fmt.Printf("registrations (%s)            %d by %d concurrent clients, %d failed\n", f.Mode, f.Registrations, f.Concurrency, f.Failures)
	fmt.Printf("registrations/s                   %.0f  (%.2f s)\n", f.PerSecond, f.Seconds)
	fmt.Printf("sipis CPU per registration        %.0f µs\n", f.CPUusPerReg)
	fmt.Printf("client CPU per registration       %.0f µs\n", f.ClientCPUus)
	if f.FirstFailure != "" {
		fmt.Printf("first failure                     %s\n", f.FirstFailure)
	}
	return nil
}

// apiDatabaseEnv, when set, is the Database OpenString of the API server (a PostgreSQL
// connection string, to measure that backend; it should name an empty database); by default
// the server uses a fresh SQLite file.
const apiDatabaseEnv = "SIPIS_LOAD_API_DATABASE"

// xmlAttr escapes s for an XML attribute value.
func xmlAttr(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // quotes too
	return b.String()
}

// startAPIServer starts a whole sipis server with its data in dir (or in the database
// $SIPIS_LOAD_API_DATABASE names), listening on loopback, logging at the default level
// (Warning) to nowhere.
func startAPIServer(ctx context.Context, dir string) (*app.App, error) {
	database := "load.db"
	if v := os.Getenv(apiDatabaseEnv); v != "" {
		database = v
	}
	s, err := config.Parse([]byte(`<Sipis>
  <Server Name="load" Address="127.0.0.1" Port="0"/>
  <Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/></Sip>
  <HttpServer Address="127.0.0.1" Port="0"/>
  <Administrator UserName="admin" Password="load-admin"/>
  <Database OpenString="`+xmlAttr(database)+`"/>
  <Lock FileName="load.lock"/>
  <Log Stdio="None" Level="Warning" InstanceFileName="logs/{selector}.log"/>
  <Probe Enabled="No"/>
</Sipis>`), dir)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.WarnLevel)
	a, err := app.New(s, app.WithLogger(log))
	if err != nil {
		return nil, err
	}
	if err := a.Start(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// runAPIClient is the client child: it seals n registrations, says "ready", waits for "go" on
// stdin, posts them from concurrency goroutines and prints a clientResult.
func runAPIClient(n, concurrency int, mode, url, pubB64, proxy string) error {
	raw, err := base64.StdEncoding.DecodeString(pubB64)
	if err != nil {
		return err
	}
	pub, err := registration.DecodeKey(raw)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(proxy)
	if err != nil {
		return err
	}
	port, _ := strconv.Atoi(portStr)
	sealed := make([][]byte, n)
	now := time.Now().UTC()
	for i := range n {
		user := fmt.Sprintf("api%07d", i)
		r := &registration.Registration{
			Version: registration.Version, Selector: fmt.Sprintf("%016x", 0xa000000000000000+uint64(i)),
			Mode: registration.Mode(mode),
			Account: registration.Account{User: user, Password: "pw-" + user, Domain: "sipis.test", Proxy: host, Port: port,
				Transport: "udp", Expires: 3600},
			Device:    registration.Device{ID: "phone", Platform: "none", Secret: "secret-" + user},
			Timestamp: now, Nonce: registration.NewNonce(),
		}
		if sealed[i], err = registration.Seal(r, pub); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || strings.TrimSpace(line) != "go" {
		return errors.New("no go from the parent")
	}
	u, err := neturl.Parse(url)
	if err != nil {
		return err
	}
	var next, ok, failed atomic.Int64
	var first sync.Once
	var firstErr string
	fail := func(err error) {
		failed.Add(1)
		first.Do(func() { firstErr = err.Error() })
	}
	var wg sync.WaitGroup
	start, c0 := time.Now(), cpuTime()
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *apiConn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if c == nil {
					var err error
					if c, err = dialAPI(u); err != nil {
						fail(err)
						continue
					}
				}
				keep, err := c.post(sealed[i])
				if err != nil {
					fail(err)
				} else {
					ok.Add(1)
				}
				if !keep {
					c.close()
					c = nil // a new connection for the next one
				}
			}
		}()
	}
	wg.Wait()
	res := clientResult{OK: ok.Load(), Failed: failed.Load(), First: firstErr, Seconds: time.Since(start).Seconds(),
		CPUSeconds: (cpuTime() - c0).Seconds()}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// writeProfile writes the runtime profile name (block, mutex) to path; a failure is reported
// and does not fail the run.
func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s profile: %v\n", name, err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		fmt.Fprintf(os.Stderr, "%s profile: %v\n", name, err)
	}
}

// apiConn is one client's keep-alive HTTP/1.1 connection to the server. The clients write
// their requests themselves and read the answers with http.ReadResponse rather than through an
// http.Client (its transport's connection pool, goroutines per connection and header maps):
// they run on the server's two cores, and every microsecond of theirs is one the server does
// not get. What reaches the server is an ordinary HTTP/1.1 POST.
type apiConn struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	head []byte // the request line and headers up to Content-Length's value
}

func dialAPI(u *neturl.URL) (*apiConn, error) {
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		return nil, err
	}
	head := "POST " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nContent-Type: application/octet-stream\r\nContent-Length: "
	return &apiConn{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn), head: []byte(head)}, nil
}

// post sends one registration and reads the answer: nil for a 200. keep says whether the
// connection can carry the next one.
func (c *apiConn) post(body []byte) (keep bool, err error) {
	if err := c.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return false, err
	}
	c.w.Write(c.head)
	c.w.WriteString(strconv.Itoa(len(body)))
	c.w.WriteString("\r\n\r\n")
	c.w.Write(body)
	if err := c.w.Flush(); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return !resp.Close, fmt.Errorf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return !resp.Close, nil
}

func (c *apiConn) close() { c.conn.Close() }
