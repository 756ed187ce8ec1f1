package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// drain asks a cluster node to hand its instances to the other nodes and leave the cluster
// (POST /sipis/cluster/drain), and waits until it has. The administrator's password comes from
// a file or the environment, never from the command line (where ps would show it).
func drain(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("drain", stderr)
	base := fs.String("url", "http://127.0.0.1:5000", "the node's HTTP address")
	user := fs.String("user", "admin", "the administrator's user name")
	pwFile := fs.String("password-file", "", "file holding the administrator's password (else $SIPIS_ADMIN_PASSWORD)")
	caFile := fs.String("ca", "", "PEM file of the CA(s) that signed the server's certificate (an https -url with a private CA)")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long to wait for the drain")
	if err := parse(fs, args); err != nil {
		return err
	}
	password := os.Getenv("SIPIS_ADMIN_PASSWORD")
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return fmt.Errorf("-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if password == "" {
		return errors.New("no administrator password: give -password-file or set SIPIS_ADMIN_PASSWORD")
	}
	client, err := httpClient(*caFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, body, err := httpDo(ctx, client, http.MethodPost, strings.TrimRight(*base, "/")+"/sipis/cluster/drain",
		func(req *http.Request) { req.SetBasicAuth(*user, password) })
	if err != nil {
		return err
	}
	var doc struct {
		Node  string
		Moved int
		Error string
	}
	_ = json.Unmarshal(body, &doc)
	if resp.StatusCode/100 != 2 {
		if doc.Error != "" {
			return fmt.Errorf("%s: %s (%d instances were handed over)", resp.Status, doc.Error, doc.Moved)
		}
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "node %s drained: %d instances handed over; it can be stopped now\n", doc.Node, doc.Moved)
	return nil
}
