package siptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// KamailioOptions configures StartKamailio; zero values pick defaults.
type KamailioOptions struct {
	// Domain is the registrar domain and digest realm (default
	// "sipis.test").
	Domain string
	// MinExpires and MaxExpires bound registrations (defaults 10, 3600);
	// shorter requests get 423 (RFC 3261 §10.3 step 7).
	MinExpires, MaxExpires int
	// Debug is Kamailio's log level (default 2, warnings and notices).
	Debug int
	// Children is the number of UDP (and TCP) worker processes of kamailio.cfg.tmpl (default
	// 2). Each worker reads the one UDP socket on its own, so two datagrams arriving close
	// together may be relayed out of order; 1 keeps their order.
	Children int
	// Template is the configuration template's file name under testdata/kamailio (default
	// "kamailio.cfg.tmpl", the registrar); "pbxhook.cfg.tmpl" is a PBX that asks sipis's
	// PBX-hook API before relaying a call.
	Template string
	// Vars are further fields for Template (e.g. HookURL).
	Vars map[string]any
	// SharedMB and PrivateMB size Kamailio's shared and per-process memory (-m and -M;
	// defaults 64 and 64). Loading ten thousand uacreg rows needs more shared memory.
	SharedMB, PrivateMB int
}

// User is a test account on the Kamailio registrar.
type User struct {
	Name, Password string
}

// Kamailio is a Kamailio process serving 127.0.0.1 on one UDP+TCP port.
type Kamailio struct {
	t      testing.TB
	bin    string
	kamcmd string
	dir    string
	cfg    string
	ctl    string
	port   int
	// rpcPort is the TCP port of JSON-RPC over HTTP (kamailio.cfg.tmpl only).
	rpcPort int
	opts    KamailioOptions

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the process's writes and our
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4<<20 {
		s.b.Reset() // keep memory bounded in long runs
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// KamailioPassword is the password of every test user: "pw-" + user, as
// computed by the Kamailio configuration.
func KamailioPassword(user string) string { return "pw-" + user }

// findTool looks a Kamailio binary up in $PATH, then in the usual sbin
// folders (often not in a test's $PATH).
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// StartKamailio writes a configuration from opts.Template (default
// testdata/kamailio/kamailio.cfg.tmpl, found from the repository root)
// into a temporary folder, starts Kamailio on a free 127.0.0.1 port (UDP
// and TCP) with its own control socket, waits until it answers OPTIONS and
// stops it in t.Cleanup. Its log is shown only if the test fails.
//
// Without a kamailio binary the test is skipped, unless the environment
// has SIPIS_REQUIRE_KAMAILIO=1: then it fails.
func StartKamailio(t testing.TB, opts KamailioOptions) *Kamailio {
	t.Helper()
	k := &Kamailio{t: t, opts: opts, bin: findTool("kamailio"), kamcmd: findTool("kamcmd"), log: &syncBuffer{}}
	if k.bin == "" || k.kamcmd == "" {
		msg := "siptest: kamailio or kamcmd not installed (apt-get install kamailio); skipping Kamailio test"
		if os.Getenv("SIPIS_REQUIRE_KAMAILIO") == "1" {
			t.Fatal(msg + " but SIPIS_REQUIRE_KAMAILIO=1")
		}
		t.Skip(msg)
	}
	if k.opts.Domain == "" {
		k.opts.Domain = "sipis.test"
	}
	if k.opts.MinExpires == 0 {
		k.opts.MinExpires = 10
	}
	if k.opts.MaxExpires == 0 {
		k.opts.MaxExpires = 3600
	}
	if k.opts.Debug == 0 {
		k.opts.Debug = 2
	}
	if k.opts.Children == 0 {
		k.opts.Children = 2
	}
	if k.opts.SharedMB == 0 {
		k.opts.SharedMB = 64
	}
	if k.opts.PrivateMB == 0 {
		// A JSON-RPC ul.dump of 10,000 contacts (Bindings) needs more than 8 MB of private
		// memory per process.
		k.opts.PrivateMB = 64
	}
	if k.opts.Template == "" {
		k.opts.Template = "kamailio.cfg.tmpl"
	}
	tmpl, err := os.ReadFile(templatePath(t, k.opts.Template))
	if err != nil {
		t.Fatalf("siptest: read Kamailio template: %v", err)
	}
	// A unix socket path must fit in 108 bytes; t.TempDir can be long.
	k.dir, err = os.MkdirTemp("", "kam")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(k.dir) })
	k.ctl = filepath.Join(k.dir, "ctl.sock")
	k.port = freeUDPTCPPort(t)
	for k.rpcPort == 0 || k.rpcPort == k.port {
		if k.rpcPort, err = freeTCPPort(); err != nil {
			t.Fatal(err)
		}
	}
	var cfg bytes.Buffer
	vars := map[string]any{
		"Port": k.port, "Domain": k.opts.Domain, "CtlSocket": k.ctl,
		"MinExpires": k.opts.MinExpires, "MaxExpires": k.opts.MaxExpires, "Debug": k.opts.Debug,
		"Children": k.opts.Children, "RPCPort": k.rpcPort,
	}
	for name, v := range k.opts.Vars {
		vars[name] = v
	}
	err = template.Must(template.New("kamailio.cfg").Option("missingkey=error").Parse(string(tmpl))).Execute(&cfg, vars)
	if err != nil {
		t.Fatalf("siptest: Kamailio template: %v", err)
	}
	k.cfg = filepath.Join(k.dir, "kamailio.cfg")
	if err := os.WriteFile(k.cfg, cfg.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			t.Logf("kamailio log:\n%s", tail(k.log.String(), 200))
		}
	})
	k.Start()
	return k
}

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// templatePath finds testdata/kamailio/<name> by walking up from this
// source file's folder (tests run in their package's folder).
func templatePath(t testing.TB, name string) string {
	_, file, _, ok := runtime.Caller(0)
	dirs := []string{}
	if ok {
		dirs = append(dirs, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	for _, d := range dirs {
		for range 6 {
			p := filepath.Join(d, "testdata", "kamailio", name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
			d = filepath.Dir(d)
		}
	}
	t.Fatalf("siptest: testdata/kamailio/%s not found above the test's folder", name)
	return ""
}

// freeUDPTCPPort finds a port free for both UDP and TCP on 127.0.0.1:
// Kamailio cannot bind port 0 and report it, so bind, read and close.
func freeUDPTCPPort(t testing.TB) int {
	for range 50 {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("siptest: no free UDP+TCP port")
	return 0
}

// Addr returns "127.0.0.1:port".
func (k *Kamailio) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }

// Host returns "127.0.0.1".
func (k *Kamailio) Host() string { return "127.0.0.1" }

// Port returns the UDP and TCP port.
func (k *Kamailio) Port() int { return k.port }

// Domain returns the registrar domain (the digest realm).
func (k *Kamailio) Domain() string { return k.opts.Domain }

// Users returns n users user0000... with their passwords.
func (k *Kamailio) Users(n int) []User {
	out := make([]User, n)
	for i := range out {
		name := fmt.Sprintf("user%04d", i)
		out[i] = User{Name: name, Password: KamailioPassword(name)}
	}
	return out
}

// Start starts Kamailio (again, on the same port, after Stop) and waits
// until it answers OPTIONS.
func (k *Kamailio) Start() {
	k.t.Helper()
	k.mu.Lock()
	if k.cmd != nil {
		k.mu.Unlock()
		return
	}
	os.Remove(k.ctl)
	cmd := exec.Command(k.bin, "-DD", "-E", "-f", k.cfg, "-Y", k.dir, "-w", k.dir,
		"-m", strconv.Itoa(k.opts.SharedMB), "-M", strconv.Itoa(k.opts.PrivateMB))
	cmd.Stdout, cmd.Stderr = k.log, k.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		k.mu.Unlock()
		k.t.Fatalf("siptest: start kamailio: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	k.cmd, k.done = cmd, done
	k.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			k.t.Fatalf("siptest: kamailio exited at start:\n%s", tail(k.log.String(), 50))
		default:
		}
		if optionsPing(k.Addr(), 200*time.Millisecond) == nil {
			if _, err := os.Stat(k.ctl); err == nil {
				return
			}
		}
	}
	k.Stop()
	k.t.Fatalf("siptest: kamailio did not answer OPTIONS within 15 s:\n%s", tail(k.log.String(), 50))
}

// Stop stops Kamailio (SIGTERM, then SIGKILL of its process group after 5
// s) and waits for it.
func (k *Kamailio) Stop() {
	k.mu.Lock()
	cmd, done := k.cmd, k.done
	k.cmd = nil
	k.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Contacts returns the contacts registered for aor (the user part; the
// configuration does not use domains in usrloc) as Kamailio's usrloc sees
// them, via `kamcmd ul.lookup`. No registration gives nil.
func (k *Kamailio) Contacts(t testing.TB, aor string) []Contact {
	t.Helper()
	out, err := k.RPC("ul.lookup", "location", aor)
	if err != nil {
		if strings.Contains(out, "AOR not found") || strings.Contains(out, "404") {
			return nil
		}
		t.Fatalf("siptest: kamcmd ul.lookup %s: %v\n%s", aor, err, out)
	}
	return parseULContacts(out)
}

// RPC runs one kamcmd command on the instance's control socket and
// returns its output.
func (k *Kamailio) RPC(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.kamcmd, append([]string{"-s", "unix:" + k.ctl}, args...)...)
	b, err := cmd.CombinedOutput()
	return string(b), err
}

// Bindings returns every binding of usrloc's location table, AoR (the user part: the
// configuration does not use domains) -> Contact URIs, from ul.dump over JSON-RPC (jsonrpcs
// over HTTP on its own port). Unlike kamcmd's ul.dump, whose reply stops fitting kamcmd's
// buffer from a few hundred contacts on, it reads 10,000 contacts (about 9 MB of JSON) in
// about a second. Only kamailio.cfg.tmpl serves JSON-RPC; with another template, or while
// Kamailio stops, it returns an error.
func (k *Kamailio) Bindings() (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := strings.NewReader(`{"jsonrpc":"2.0","method":"ul.dump","id":1}`)
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(k.rpcPort)) + "/RPC"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("siptest: JSON-RPC ul.dump: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("siptest: JSON-RPC ul.dump: HTTP %s", res.Status)
	}
	return parseJSONDump(res.Body)
}

// parseJSONDump reads jsonrpcs's ul.dump reply: result.Domains[].Domain.AoRs[].Info{AoR,
// Contacts[].Contact.Address}. A JSON-RPC error, or a reply without the location table,
// is an error.
func parseJSONDump(r io.Reader) (map[string][]string, error) {
	var reply struct {
		Result *struct {
			Domains []struct {
				Domain struct {
					Domain string
					AoRs   []struct {
						Info struct {
							AoR      string
							Contacts []struct {
								Contact struct{ Address string }
							}
						}
					}
				}
			}
		} `json:"result"`
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(r).Decode(&reply); err != nil {
		return nil, fmt.Errorf("siptest: JSON-RPC ul.dump reply: %w", err)
	}
	if reply.Error != nil {
		return nil, fmt.Errorf("siptest: JSON-RPC ul.dump: %d %s", reply.Error.Code, reply.Error.Message)
	}
	if reply.Result == nil {
		return nil, errors.New("siptest: JSON-RPC ul.dump: no result")
	}
	out := map[string][]string{}
	found := false
	for _, d := range reply.Result.Domains {
		if d.Domain.Domain != "location" {
			continue
		}
		found = true
		for _, a := range d.Domain.AoRs {
			aor, _, _ := strings.Cut(strings.TrimPrefix(a.Info.AoR, "sip:"), "@")
			for _, c := range a.Info.Contacts {
				out[aor] = append(out[aor], c.Contact.Address)
			}
		}
	}
	if !found {
		return nil, errors.New("siptest: JSON-RPC ul.dump: no location table")
	}
	return out, nil
}

// parseULContacts reads "Address: <uri>" and "Expires: N" pairs from
// kamcmd's ul.lookup/ul.dump output.
func parseULContacts(out string) []Contact {
	var cs []Contact
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "Address: "); ok {
			cs = append(cs, Contact{URI: strings.TrimSpace(v), Expires: -1})
			continue
		}
		if v, ok := strings.CutPrefix(line, "Expires: "); ok && len(cs) > 0 && cs[len(cs)-1].Expires == -1 {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				n = 0 // "permanent" or "deleted"
			}
			cs[len(cs)-1].Expires = n
		}
	}
	return cs
}

// optionsPing sends one OPTIONS over UDP and waits for any response.
func optionsPing(addr string, timeout time.Duration) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	l := c.LocalAddr().String()
	branch := "z9hG4bK" + strconv.FormatInt(time.Now().UnixNano(), 36)
	req := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + l + ";branch=" + branch + ";rport\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:siptest@" + l + ">;tag=1\r\nTo: <sip:" + addr + ">\r\n" +
		"Call-ID: " + branch + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("SIP/2.0 ")) {
		return errors.New("siptest: not a SIP response")
	}
	return nil
}

// SIPp returns the path of the sipp binary (Debian package sip-tester), or skips t when it is
// not installed, unless the environment has SIPIS_REQUIRE_SIPP=1 (as CI does): then it fails,
// so that the SIPp suites cannot pass by skipping.
func SIPp(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("sipp")
	if err != nil {
		if os.Getenv("SIPIS_REQUIRE_SIPP") == "1" {
			t.Fatal("sipp not installed (Debian package sip-tester) but SIPIS_REQUIRE_SIPP=1")
		}
		t.Skip("sipp not installed (Debian package sip-tester)")
	}
	return path
}

// Usage returns the CPU time and memory used so far by Kamailio: its main process and every
// worker it forked (they share its process group).
func (k *Kamailio) Usage() (Usage, error) {
	k.mu.Lock()
	cmd := k.cmd
	k.mu.Unlock()
	if cmd == nil {
		return Usage{}, errors.New("siptest: kamailio is not running")
	}
	return GroupUsage(cmd.Process.Pid)
}

// Stat returns one of Kamailio's statistics (`kamcmd stats.get_statistics name`), such as
// "accepted_regs" (registrar) or "rcv_requests_register" (core).
func (k *Kamailio) Stat(name string) (int64, error) {
	out, err := k.RPC("stats.get_statistics", name)
	if err != nil {
		return 0, fmt.Errorf("siptest: kamcmd stats.get_statistics %s: %v: %s", name, err, out)
	}
	for line := range strings.SplitSeq(out, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
		if !ok || !strings.HasSuffix(k, ":"+name) && k != name {
			continue
		}
		return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	return 0, fmt.Errorf("siptest: no statistic %s in %q", name, out)
}

// SampleBindings reads k's bindings (Bindings) again and again in a goroutine, every period,
// and calls check with each reading taken; a failed read (Kamailio stopping) is skipped. The
// returned stop ends the sampling, waits for the goroutine and says how many readings check
// saw, so that a test can fail when it sampled nothing. The multi-node tests use it to show
// that no account is ever bound at two Contacts at once.
func (k *Kamailio) SampleBindings(period time.Duration, check func(bindings map[string][]string)) (stop func() (samples int)) {
	done := make(chan struct{})
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if b, err := k.Bindings(); err == nil {
				n.Add(1)
				check(b)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() int {
		once.Do(func() { close(done); wg.Wait() })
		return int(n.Load())
	}
}
