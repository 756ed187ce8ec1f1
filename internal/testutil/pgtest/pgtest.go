// Package pgtest starts a real PostgreSQL server, from the machine's own packages (Debian's
// postgresql), for the tests of the PostgreSQL store backend: initdb into a temporary folder,
// pg_ctl start on a unix socket in that folder and a free TCP port on 127.0.0.1, trust
// authentication, stopped and removed at the end. A fresh database per test comes from
// CREATE DATABASE, so one server serves a whole test binary.
//
// When PostgreSQL is not installed the tests that ask for it are skipped, unless the
// environment has SIPIS_REQUIRE_POSTGRES=1 (CI): then they fail.
//
// PostgreSQL refuses to run as root. When the tests run as root, the server runs as the
// "postgres" user (created by Debian's postgresql-common package) and its folder is given to
// that user; without such a user the tests are skipped (or fail, as above).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv is the environment variable that turns a missing PostgreSQL into a failure.
const RequireEnv = "SIPIS_REQUIRE_POSTGRES"

// Superuser is the server's superuser; trust authentication lets it in without a password.
const Superuser = "postgres"

// Server is a running PostgreSQL server.
type Server struct {
	dir  string // the temporary folder: data/, the socket, the log
	bin  string // the folder of initdb, pg_ctl and postgres
	port int
	cred *syscall.Credential // who runs the server; nil: this process's user

	mu sync.Mutex
	n  int // databases created
}

// Options tune the server started by Start.
type Options struct {
	// Durable keeps fsync on. By default it is off: a test server's data need not survive a
	// crash of the machine, and creating databases is much faster.
	Durable bool
	// Settings are more postgres -c settings, e.g. "shared_buffers=128MB".
	Settings []string
}

var errMissing = errors.New("PostgreSQL is not installed (Debian: apt-get install postgresql)")

// BinDir finds the folder of PostgreSQL's server programs: `pg_config --bindir` when it has
// initdb, else the newest /usr/lib/postgresql/*/bin (Debian keeps initdb off the PATH).
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isExec(filepath.Join(dir, "initdb")) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errMissing
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Start initialises and starts a server. The caller must Stop it. Its error wraps a "not
// installed" error when PostgreSQL is missing; Skip turns that into a skip.
func Start(opts Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("%w: running as root needs a %q user to run the server (initdb refuses root)", errMissing, "postgres")
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// A short path: a unix socket's path is limited to about 100 bytes.
	if s.dir, err = os.MkdirTemp("", "sipis-pg-"); err != nil {
		return nil, err
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			os.RemoveAll(s.dir)
			return nil, err
		}
	}
	if err := s.run("initdb", "-D", s.data(), "-U", Superuser, "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	settings := []string{"listen_addresses=127.0.0.1", "unix_socket_directories=" + s.dir, "max_connections=200"}
	if !opts.Durable {
		settings = append(settings, "fsync=off", "synchronous_commit=off", "full_page_writes=off")
	}
	settings = append(settings, opts.Settings...)
	// The port is found free, then handed to the server: another program may take it in
	// between, so a start that fails is tried again on another port.
	for try := 0; ; try++ {
		if s.port, err = freePort(); err != nil {
			break
		}
		o := "-c port=" + strconv.Itoa(s.port)
		for _, kv := range settings {
			o += " -c " + kv
		}
		if err = s.run("pg_ctl", "start", "-w", "-t", "60", "-D", s.data(), "-l", filepath.Join(s.dir, "log"), "-o", o); err == nil || try == 2 {
			break
		}
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("%w\nserver log:\n%s", err, log)
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// run runs one of the server's programs as the server's user.
func (s *Server) run(prog string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
		cmd.Env = append(cmd.Env, "HOME="+s.dir)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", prog, strings.Join(args, " "), err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Stop stops the server at once (pg_ctl stop -m immediate: test data need no clean shutdown)
// and removes its folder.
func (s *Server) Stop() error {
	err := s.run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", s.data())
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Port returns the server's TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

// DataDir returns the server's data folder (PGDATA), for tests that look at what reaches the
// disk.
func (s *Server) DataDir() string { return s.data() }

// Files returns the files that hold the database of openString on disk (its folder under
// base/) and the server's WAL segments, for tests that look for what must not reach the disk.
// Call CHECKPOINT first so that everything committed is written.
func (s *Server) Files(ctx context.Context, openString string) ([]string, error) {
	cfg, err := pgx.ParseConfig(openString)
	if err != nil {
		return nil, err
	}
	c, err := pgx.Connect(ctx, s.OpenString("postgres"))
	if err != nil {
		return nil, fmt.Errorf("pgtest: connect: %w", err)
	}
	defer c.Close(ctx)
	var oid uint32
	if err := c.QueryRow(ctx, "SELECT oid FROM pg_database WHERE datname = $1", cfg.Database).Scan(&oid); err != nil {
		return nil, fmt.Errorf("pgtest: database %s: %w", cfg.Database, err)
	}
	files, _ := filepath.Glob(filepath.Join(s.data(), "base", strconv.FormatUint(uint64(oid), 10), "*"))
	wal, _ := filepath.Glob(filepath.Join(s.data(), "pg_wal", "0*"))
	if len(files) == 0 || len(wal) == 0 {
		return nil, fmt.Errorf("pgtest: no files found for database %s", cfg.Database)
	}
	return append(files, wal...), nil
}

// SocketDir returns the folder of the server's unix socket.
func (s *Server) SocketDir() string { return s.dir }

// OpenString returns the libpq key/value string of database dbname over TCP, as the superuser.
func (s *Server) OpenString(dbname string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=disable", s.port, dbname, Superuser)
}

// URL returns the postgres:// URL of database dbname over TCP, as the superuser.
func (s *Server) URL(dbname string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, s.port, dbname)
}

// CreateDatabase creates a new, empty database and returns its name.
func (s *Server) CreateDatabase(ctx context.Context) (string, error) {
	s.mu.Lock()
	s.n++
	name := fmt.Sprintf("t%d", s.n)
	s.mu.Unlock()
	err := s.admin(ctx, "CREATE DATABASE "+name)
	return name, err
}

// DropDatabase drops a database, closing the connections still open to it.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	return s.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func (s *Server) admin(ctx context.Context, sql string) error {
	c, err := pgx.Connect(ctx, s.OpenString("postgres"))
	if err != nil {
		return fmt.Errorf("pgtest: connect: %w", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

// NewDatabase creates a fresh database for t, dropped when t ends, and returns its libpq
// key/value OpenString.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name, err := s.CreateDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.DropDatabase(ctx, name); err != nil {
			t.Error(err)
		}
	})
	return s.OpenString(name)
}

// Skip skips t when err says PostgreSQL is not installed, unless RequireEnv is set, and
// fails it for any other error.
func Skip(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errMissing) && os.Getenv(RequireEnv) != "1" {
		t.Skipf("%v; set %s=1 to make this a failure", err, RequireEnv)
	}
	t.Fatalf("PostgreSQL test server: %v", err)
}

var shared struct {
	mu  sync.Mutex
	srv *Server
	err error
}

// Shared returns the test binary's server, starting it on first use; StopShared (from
// TestMain, after m.Run) stops it. It skips t when PostgreSQL is missing (see Skip).
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = Start(Options{})
	}
	if shared.err != nil {
		Skip(t, shared.err)
	}
	return shared.srv
}

// NewDatabase is Shared(t).NewDatabase(t): a fresh database on the binary's server.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// StopShared stops the server Shared started, if any. Call it from TestMain after m.Run.
func StopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv == nil {
		return nil
	}
	err := shared.srv.Stop()
	shared.srv = nil
	return err
}

// Main runs the tests with m and stops the shared server, returning the exit code for os.Exit.
// A package without a TestMain of its own uses it as `func TestMain(m *testing.M) {
// os.Exit(pgtest.Main(m.Run)) }`; run is m.Run or a wrapper of it (testutil.CheckLeaks).
func Main(run func() int) int {
	code := run()
	if err := StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
