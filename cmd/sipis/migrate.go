package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/store"
)

// migrateStore copies a whole store into another (SQLite to PostgreSQL or back): see
// store.Copy. The data key comes from -data-key-file, else from the settings file's <Keys>;
// it must be the key the source was sealed with. The server must not be running on the source.
func migrateStore(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate-store", stderr)
	from := fs.String("from", "", "OpenString of the store to copy (a SQLite file, or a PostgreSQL key=value string or postgres:// URL)")
	to := fs.String("to", "", "OpenString of the store to copy into (created if missing; must be empty unless -force)")
	force := fs.Bool("force", false, "empty a target that holds rows before copying")
	keyFile := fs.String("data-key-file", "", "the data key file (default: the one the settings file names)")
	settings := fs.String("settings", "Settings.xml", "the settings file whose <Keys> name the data key (when -data-key-file is not given)")
	batch := fs.Int("batch", 500, "rows per INSERT")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		fmt.Fprintln(stderr, "sipis migrate-store: give -from and -to")
		return errUsage
	}
	for _, s := range []struct{ flag, v string }{{"-from", *from}, {"-to", *to}} {
		if err := store.CheckOpenString(s.v); err != nil {
			return fmt.Errorf("%s: %w", s.flag, err)
		}
	}
	var key []byte
	var err error
	if *keyFile != "" {
		s := &config.Settings{}
		s.Keys.DataKeyFile = *keyFile
		key, err = app.ReadDataKey(s)
	} else {
		var s *config.Settings
		if s, err = config.Load(*settings); err != nil {
			return fmt.Errorf("the data key: %w (or give -data-key-file)", err)
		}
		key, err = app.ReadDataKey(s)
	}
	if err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	counts, err := store.Copy(ctx, store.CopyOptions{From: *from, To: *to, DataKey: key, Force: *force,
		BatchSize: *batch, Logger: log})
	if err != nil {
		return err
	}
	var total int64
	for _, c := range counts {
		fmt.Fprintf(stdout, "%-14s %8d rows\n", c.Table, c.Target)
		total += c.Target
	}
	fmt.Fprintf(stdout, "copied %d rows from %s to %s; every table's count matches\n", total,
		store.Describe(*from), store.Describe(*to))
	return nil
}
