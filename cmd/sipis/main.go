// Command sipis is the SIP registration proxy: it runs the server and offers the small tools
// that go with it (key generation, building and posting a registration).
//
//	sipis [-settings FILE]            run the server (same as "sipis serve")
//	sipis serve [-settings FILE]      run the server
//	sipis check [-settings FILE]      read the settings and open every file they name
//	sipis keygen -private F -public F write a new server key pair
//	sipis register [flags]            seal a registration and post it (or print it)
//	sipis status -selector S          show one instance as /stats/instances/json has it
//	sipis migrate-store -from S -to S copy a store (SQLite <-> PostgreSQL)
//	sipis version                     print the version
//
// It owns the flags, the signals and the sub-commands' output. It must not hold server logic:
// serving is config.Load, app.New, Start, a signal, Stop; check is app.Check; register and
// status use pkg/registration and HTTP like any outside program would. docs/operators.md
// documents the sub-commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/version"
	"github.com/sipis/sipis/pkg/registration"
)

const usage = `usage:
  sipis [-settings FILE]              run the server (default settings: Settings.xml)
  sipis serve [-settings FILE]        run the server
  sipis check [-settings FILE]        check a settings file and exit
  sipis keygen -private FILE -public FILE
                                      write a new server key pair (never overwrites)
  sipis register [flags]              seal a registration to the server's public key and
                                      POST it; "sipis register -h" lists the flags
  sipis status -selector S [-url U]   show one instance (from /stats/instances/json)
  sipis migrate-store -from OPENSTRING -to OPENSTRING [-force] [-data-key-file F]
                                      copy every table of a store into another (SQLite
                                      <-> PostgreSQL), secrets still sealed with the same
                                      data key; stop the server first
  sipis drain [-url U] [-password-file F]
                                      hand a cluster node's instances to the other nodes
                                      and leave the cluster (then stop it)
  sipis version                       print the version
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "sipis:", err)
		}
		os.Exit(2)
	}
}

var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "check":
		return check(args, stdout, stderr)
	case "keygen":
		return keygen(args, stdout, stderr)
	case "register":
		return register(args, stdout, stderr)
	case "status":
		return status(args, stdout, stderr)
	case "migrate-store":
		return migrateStore(args, stdout, stderr)
	case "drain":
		return drain(args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "sipis %s (build %s %s)\n", version.Version, version.Build, version.Date)
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "sipis: unknown command %q\n%s", cmd, usage)
		return errUsage
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags and refuses stray arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "sipis %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func serve(args []string, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	path := fs.String("settings", "Settings.xml", "the settings file")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := config.Load(*path)
	if err != nil {
		return err
	}
	a, err := app.New(s)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "sipis %s: %s is up; web pages at %s (Ctrl-C stops)\n", version.Version, s.Server.Name, a.HTTPURL())
	<-ctx.Done()
	a.Logger().Info("stopping")
	a.Stop()
	return nil
}

func check(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", stderr)
	path := fs.String("settings", "Settings.xml", "the settings file")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := config.Load(*path)
	if err != nil {
		return err
	}
	// The files the settings name are read as serve would read them.
	notes, err := app.Check(s)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "%s: note: %s\n", *path, n)
	}
	warnings := s.Warnings()
	for _, w := range warnings {
		fmt.Fprintf(stderr, "%s: warning: %s\n", *path, w)
	}
	switch len(warnings) {
	case 0:
		fmt.Fprintf(stdout, "%s: OK\n", *path)
	case 1:
		fmt.Fprintf(stdout, "%s: OK, with 1 warning\n", *path)
	default:
		fmt.Fprintf(stdout, "%s: OK, with %d warnings\n", *path, len(warnings))
	}
	return nil
}

func keygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keygen", stderr)
	priv := fs.String("private", "server.key", "where to write the private key (mode 0600)")
	pub := fs.String("public", "server.pub", "where to write the public key")
	if err := parse(fs, args); err != nil {
		return err
	}
	key, err := registration.WriteKeyFiles(*priv, *pub)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s and %s; public key %s", *priv, *pub, registration.EncodeKey(key))
	return nil
}
