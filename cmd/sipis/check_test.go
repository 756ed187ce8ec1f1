package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipis/sipis/pkg/registration"
)

// TestCheckOriginalFile: the file in the original product's layout passes check with
// exactly the documented warnings, each on its own line naming the setting.
func TestCheckOriginalFile(t *testing.T) {
	out, errOut, err := runCmd("check", "-settings", "../../internal/config/testdata/acrobits/Settings.xml")
	if err != nil {
		t.Fatalf("check: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, "OK, with 3 warnings") {
		t.Errorf("stdout %q", out)
	}
	var warnings []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if _, w, ok := strings.Cut(l, ": warning: "); ok {
			warnings = append(warnings, w)
		}
	}
	want := []string{"<Log ProblematicInstancesAutomatically>: ", `<NotificationServer Name="*" Host="pnm.example.com">: `, "<NotificationServers>: no push provider"}
	if len(warnings) != len(want) {
		t.Fatalf("warnings %q, want %d", warnings, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(warnings[i], w) {
			t.Errorf("warning %d = %q, want it to start with %q", i, warnings[i], w)
		}
	}
	if strings.Contains(out+errOut, "not-the-real-one") {
		t.Error("check printed the admin password")
	}
}

// checkDir writes settings naming files in a fresh folder and returns the folder.
func checkDir(t *testing.T, body string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keys := `<Keys PrivateKeyFile="s.key" PublicKeyFile="s.pub" DataKeyFile="d.key"/>`
	if strings.Contains(body, "<Keys") {
		keys = ""
	}
	settings := `<Sipis>` + keys + body + `</Sipis>`
	if err := os.WriteFile(filepath.Join(dir, "Settings.xml"), []byte(settings), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../../internal/config/testdata/acrobits", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCheckOpensFiles: check reads every file the settings name as serve does, and fails on
// each bad one with a message naming it.
func TestCheckOpensFiles(t *testing.T) {
	key16 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	key32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cert, ckey, ca := readTestdata(t, "client.pem"), readTestdata(t, "client.key"), readTestdata(t, "ca.pem")
	otherKey := readTestdata(t, "client.key")
	// a key of another pair: the CA's certificate with the client's key does not match
	cases := []struct {
		name  string
		body  string
		files map[string]string
		want  string // "" means check passes
	}{
		{"fresh start", ``, nil, ""},
		{"log file that is a folder", `<Log FileName="."/>`, nil, "is a folder"},
		{"log file on /dev/stdout", `<Log FileName="/dev/stdout"/>`, nil, ""},
		{"16-byte data key file", ``, map[string]string{"d.key": key16}, "32 bytes"},
		{"32-byte data key file", ``, map[string]string{"d.key": key32}, ""},
		{"16-byte inline data key", `<Keys PrivateKeyFile="s.key" PublicKeyFile="s.pub" DataKey="` + key16 + `"/>`, nil, "32 bytes"},
		{"public key without private", ``, map[string]string{"s.pub": "x"}, "s.key does not"},
		{"garbled private key", ``, map[string]string{"s.key": "garbage", "s.pub": "garbage"}, "keys:"},
		{"client certificate", `<TlsClientCertificates><Certificate Host="sip.example.com" FileName="c.pem" RsaPrivateKeyFileName="c.key"/></TlsClientCertificates>`,
			map[string]string{"c.pem": cert, "c.key": ckey}, ""},
		{"client certificate with the wrong key", `<TlsClientCertificates><Certificate FileName="ca.pem" RsaPrivateKeyFileName="c.key"/></TlsClientCertificates>`,
			map[string]string{"ca.pem": ca, "c.key": otherKey}, "TLS client certificate"},
		{"missing client certificate", `<TlsClientCertificates><Certificate File="none.pem" KeyFile="none.key"/></TlsClientCertificates>`, nil, "none.pem"},
		{"trusted certificate", `<TrustedCertificates FileName="ca.pem"/>`, map[string]string{"ca.pem": ca}, ""},
		{"trusted certificate without PEM", `<TrustedCertificates FileName="ca.pem"/>`, map[string]string{"ca.pem": "not a certificate"}, "no PEM certificate"},
		{"missing server certificate", `<TlsServerOptions CertificateFile="srv.pem" KeyFile="srv.key"/>`, nil, "TLS server certificate"},
		{"APNs key that is not a .p8", `<NotificationServers><Apns Enabled="Yes" KeyFile="apns.p8" KeyId="ABC123DEFG" TeamId="TEAM123456"/></NotificationServers>`,
			map[string]string{"apns.p8": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, "apns"},
		{"FCM service account without a key", `<NotificationServers><Fcm Enabled="Yes" ServiceAccountFile="fcm.json"/></NotificationServers>`,
			map[string]string{"fcm.json": `{"type":"service_account","project_id":"p"}`}, "fcm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := checkDir(t, tc.body, tc.files)
			out, errOut, err := runCmd("check", "-settings", filepath.Join(dir, "Settings.xml"))
			if tc.want == "" {
				if err != nil || !strings.Contains(out, "OK") {
					t.Fatalf("check failed: %v\n%s%s", err, out, errOut)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: err %v, want it to say %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), key16) {
				t.Error("the error shows the data key")
			}
			// check changes nothing: it creates no key files.
			for _, f := range []string{"s.key", "s.pub", "d.key"} {
				_, statErr := os.Stat(filepath.Join(dir, f))
				if _, given := tc.files[f]; !given && statErr == nil {
					t.Errorf("check created %s", f)
				}
			}
		})
	}
}

// TestCheckNotesMissingKeys: a fresh folder passes, and check says the first start creates
// the keys; an existing pair is read.
func TestCheckNotesMissingKeys(t *testing.T) {
	dir := checkDir(t, ``, nil)
	_, errOut, err := runCmd("check", "-settings", filepath.Join(dir, "Settings.xml"))
	if err != nil || !strings.Contains(errOut, "note: the server key pair") || !strings.Contains(errOut, "note: the data key") {
		t.Fatalf("check: %v\n%s", err, errOut)
	}
	if _, err := registration.WriteKeyFiles(filepath.Join(dir, "s.key"), filepath.Join(dir, "s.pub")); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = runCmd("check", "-settings", filepath.Join(dir, "Settings.xml"))
	if err != nil || strings.Contains(errOut, "server key pair") {
		t.Fatalf("check with keys: %v\n%s", err, errOut)
	}
}
