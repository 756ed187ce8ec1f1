package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sipis/sipis/pkg/registration"
)

// register builds a registration from flags, seals it to the server's public key and posts
// it, as an app would. Support staff and tests use it. The device secret (which lets the
// device fetch its messages, take calls and prove it owns the selector) comes from a file or
// SIPIS_DEVICE_SECRET, like the password never from a flag value. For foreground and off the
// selector, the device and its secret are enough: no account is sent.
func register(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("register", stderr)
	var r registration.Registration
	url := fs.String("url", "http://127.0.0.1:5000/sipis/register", "where to POST the registration")
	pubFile := fs.String("pubkey", "var/keys/server.pub", "the server's public key file")
	print := fs.Bool("print", false, "print the sealed registration in base64 instead of posting it")
	mode := fs.String("mode", "background", "background, foreground or off")
	pwFile := fs.String("password-file", "", "read the SIP password from this file (or set SIPIS_PASSWORD); never a flag, so it stays out of shell history")
	secretFile := fs.String("secret-file", "", "read the device secret from this file (or set SIPIS_DEVICE_SECRET); with it the device fetches its messages and proves it owns the selector, so foreground and off need no password")
	caFile := fs.String("ca", "", "PEM file of the CA(s) that signed the server's certificate (an https -url behind a TLS proxy with a private CA)")
	timeout := fs.Duration("timeout", 10*time.Second, "HTTP timeout")
	fs.StringVar(&r.Selector, "selector", "", "the account's selector (hex)")
	fs.StringVar(&r.Account.User, "user", "", "SIP user")
	fs.StringVar(&r.Account.AuthUser, "auth-user", "", "SIP authentication user (default: -user)")
	fs.StringVar(&r.Account.Domain, "domain", "", "SIP domain")
	fs.StringVar(&r.Account.Proxy, "proxy", "", "SIP proxy host (default: -domain)")
	fs.IntVar(&r.Account.Port, "port", 0, "proxy port (0: DNS SRV or the transport's default)")
	fs.StringVar(&r.Account.Transport, "transport", "udp", "udp, tcp or tls")
	fs.IntVar(&r.Account.Expires, "expires", 0, "registration expiry in seconds (0: server default)")
	fs.StringVar(&r.Account.DisplayName, "display-name", "", "display name")
	fs.StringVar(&r.Device.ID, "device", "cli", "device id")
	fs.StringVar(&r.Device.Platform, "platform", "none", "push platform: apns, fcm, webhook or none")
	fs.StringVar(&r.Device.PushToken, "token", "", "push token (APNs: the PushKit/VoIP token, for calls)")
	fs.StringVar(&r.Device.AlertToken, "alert-token", "", "APNs only: the alert (remote-notification) token, for everything but calls")
	fs.StringVar(&r.Device.AppID, "app-id", "", "app id (APNs topic / Android package)")
	fs.BoolVar(&r.Device.Sandbox, "sandbox", false, "use the APNs sandbox")
	fs.StringVar(&r.Device.AppVersion, "app-version", "", "app version")
	fs.StringVar(&r.Device.Locale, "locale", "", "locale")
	if err := parse(fs, args); err != nil {
		return err
	}
	r.Version, r.Mode, r.Timestamp, r.Nonce = registration.Version, registration.Mode(*mode), time.Now().UTC(), registration.NewNonce()
	r.Account.Password = os.Getenv("SIPIS_PASSWORD")
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		r.Account.Password = strings.TrimRight(string(b), "\r\n")
	}
	r.Device.Secret = os.Getenv("SIPIS_DEVICE_SECRET")
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("-secret-file: %w", err)
		}
		r.Device.Secret = strings.TrimRight(string(b), "\r\n")
	}
	client, err := httpClient(*caFile)
	if err != nil {
		return err
	}
	pub, err := registration.ReadKeyFile(*pubFile)
	if err != nil {
		return err
	}
	sealed, err := registration.Seal(&r, pub)
	if err != nil {
		return err
	}
	if *print {
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(sealed))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, *url, bytes.NewReader(sealed))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s: %s\n", resp.Status, strings.TrimSpace(string(body)))
	return nil
}
