package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/app"
	"github.com/sipis/sipis/internal/config"
)

// startClusterNode starts a node of a cluster whose nodes share the database and keys in shared.
func startClusterNode(t *testing.T, shared, name string) *app.App {
	t.Helper()
	s, err := config.Parse([]byte(`<Sipis><Server Name="`+name+`" Address="127.0.0.1" Port="0"/>
		<Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/></Sip>
		<HttpServer Address="127.0.0.1" Port="0"/><Administrator UserName="admin" Password="pw-admin-7"/>
		<Database OpenString="`+filepath.Join(shared, "sipis.db")+`"/>
		<Keys PrivateKeyFile="`+filepath.Join(shared, "server.key")+`" PublicKeyFile="`+filepath.Join(shared, "server.pub")+`"
			DataKeyFile="`+filepath.Join(shared, "data.key")+`"/>
		<Log Stdio="None"/><Probe Enabled="No"/><Cluster Enabled="Yes"/></Sipis>`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startSettings(t, s)
}

func TestDrainCommand(t *testing.T) {
	shared := t.TempDir()
	a := startClusterNode(t, shared, "node-a")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("pw-admin-7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	// No password at all: refused before anything is sent.
	t.Setenv("SIPIS_ADMIN_PASSWORD", "")
	if err := run([]string{"drain", "-url", a.HTTPURL()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no administrator password") {
		t.Fatalf("drain without a password: %v", err)
	}
	// Alone in the cluster: nowhere to hand the instances to, the node stays.
	err := run([]string{"drain", "-url", a.HTTPURL(), "-password-file", pw}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "no other live node") {
		t.Fatalf("drain of the only node: %v", err)
	}
	if a.Cluster().Draining() {
		t.Fatal("a failed drain left the node draining")
	}
	startClusterNode(t, shared, "node-b")
	t.Setenv("SIPIS_ADMIN_PASSWORD", "wrong")
	if err := run([]string{"drain", "-url", a.HTTPURL()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("drain with a wrong password: %v", err)
	}
	out.Reset()
	if err := run([]string{"drain", "-url", a.HTTPURL(), "-password-file", pw}, &out, &errOut); err != nil {
		t.Fatalf("drain: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "node node-a drained: 0 instances handed over") {
		t.Fatalf("drain said %q", out.String())
	}
	if _, ok := a.Cluster().SendUntil(""); ok {
		t.Fatal("drained node may still send")
	}
}
