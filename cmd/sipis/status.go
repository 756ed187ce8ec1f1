package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sipis/sipis/pkg/registration"
)

// status shows one instance, as /stats/instances/json has it, one "Column: value" line each,
// for support staff on the phone with a user.
func status(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	base := fs.String("url", "http://127.0.0.1:5000", "the server's HTTP address")
	sel := fs.String("selector", "", "the account's selector (hex)")
	caFile := fs.String("ca", "", "PEM file of the CA(s) that signed the server's certificate (an https -url with a private CA)")
	timeout := fs.Duration("timeout", 10*time.Second, "HTTP timeout")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := registration.ValidateSelector(*sel); err != nil {
		return fmt.Errorf("-selector: %w", err)
	}
	client, err := httpClient(*caFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	u := strings.TrimRight(*base, "/") + "/stats/instances/json?s=" + url.QueryEscape(*sel)
	resp, body, err := httpDo(ctx, client, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var doc struct {
		Instances []json.RawMessage
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("the server's answer is not the instances document: %w", err)
	}
	for _, raw := range doc.Instances {
		lines, s, err := fields(raw)
		if err != nil {
			return err
		}
		if !strings.EqualFold(s, *sel) {
			continue
		}
		fmt.Fprint(stdout, lines)
		return nil
	}
	return fmt.Errorf("no instance with selector %s", *sel)
}

// fields prints a JSON object's members in their order, one "Name: value" line each, and
// returns its Selector.
func fields(raw json.RawMessage) (string, string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", "", errors.New("an instance is not a JSON object")
	}
	var b strings.Builder
	sel := ""
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", "", err
		}
		name, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", "", err
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			if name == "Selector" {
				sel = s
			}
		} else {
			s = string(v)
		}
		fmt.Fprintf(&b, "%s: %s\n", name, s)
	}
	return b.String(), sel, nil
}

// httpDo sends one request (auth, when set, adds its credentials) and returns the response with
// its body, read up to 1 MiB and closed.
func httpDo(ctx context.Context, client *http.Client, method, u string, auth func(*http.Request)) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, nil, err
	}
	if auth != nil {
		auth(req)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

// httpClient is an HTTP client that also trusts the CAs in caFile (none: the system's only).
func httpClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return http.DefaultClient, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-ca %s: no PEM certificate in it", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}
