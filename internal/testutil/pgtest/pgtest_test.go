package pgtest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m.Run)) }

// TestServer: a fresh database is reachable over TCP by both OpenString forms and by the unix
// socket, is empty, and is dropped at the end; Stop removes the server's folder.
func TestServer(t *testing.T) {
	ctx := context.Background()
	s := Shared(t)
	var name string
	t.Run("database", func(t *testing.T) {
		dsn := s.NewDatabase(t)
		for _, cs := range []string{dsn, s.URL(dbnameOf(t, dsn)), "host=" + s.SocketDir() + " port=" + strconv.Itoa(s.Port()) + " dbname=" + dbnameOf(t, dsn) + " user=postgres"} {
			c, err := pgx.Connect(ctx, cs)
			if err != nil {
				t.Fatalf("connect %q: %v", cs, err)
			}
			var n int
			if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("new database has %d tables", n)
			}
			c.Close(ctx)
		}
		name = dbnameOf(t, dsn)
	})
	c, err := pgx.Connect(ctx, s.OpenString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test", name)
	}
}

// TestStop: a server of its own starts, and Stop removes its folder.
func TestStop(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		Skip(t, err)
	}
	dir := s.SocketDir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server folder left behind: %v", err)
	}
}

func dbnameOf(t *testing.T, openString string) string {
	cfg, err := pgx.ParseConfig(openString)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}
