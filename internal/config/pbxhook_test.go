package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPbxHookSettings(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Parse([]byte(`<Sipis>
  <PbxHook Enabled="Yes" Prefix="/vialer/" WaitMilliseconds="2500" ResendIntervalMilliseconds="500"
           SecretFile="hook.secret" PushWorkers="8" MaxWaits="50">
    <Retention Days="7"/>
    <PbxNetworks><Network Address="10.1.0.0/16"/><Network Address="192.0.2.7"/></PbxNetworks>
    <DeviceVerifier Url="https://pbx.example.com/verify" CacheSeconds="0"/>
  </PbxHook>
</Sipis>`), dir)
	if err != nil {
		t.Fatal(err)
	}
	ph := s.PbxHook
	if !ph.Enabled || ph.Prefix != "/vialer/" || ph.Wait != 2500*time.Millisecond || ph.ResendInterval != 500*time.Millisecond ||
		ph.Secret.Value() != "from-file" || ph.PushWorkers != 8 || ph.MaxWaits != 50 || ph.Retention != 7*24*time.Hour ||
		len(ph.PbxNetworks) != 2 || ph.PbxNetworks[1] != netip.MustParsePrefix("192.0.2.7/32") ||
		ph.VerifierURL != "https://pbx.example.com/verify" || ph.VerifierCache != 0 {
		t.Fatalf("PbxHook = %+v", ph)
	}
	d := Default().PbxHook
	if d.Enabled || d.Prefix != "/api/" || d.Wait != 4*time.Second || d.ResendInterval != time.Second || d.VerifierCache != 5*time.Minute {
		t.Fatalf("defaults = %+v", d)
	}
}

func TestPbxHookBad(t *testing.T) {
	for name, tc := range map[string]struct{ xml, want string }{
		"no networks":   {`<PbxHook Enabled="Yes"><DeviceVerifier Url="https://v.example.com/"/></PbxHook>`, "needs at least one <Network"},
		"no verifier":   {`<PbxHook Enabled="Yes"><PbxNetworks><Network Address="127.0.0.1"/></PbxNetworks></PbxHook>`, "Url: must not be empty"},
		"bad verifier":  {`<PbxHook Enabled="Yes"><DeviceVerifier Url="ftp://v.example.com/"/></PbxHook>`, "not an http:// or https:// URL"},
		"bad prefix":    {`<PbxHook Prefix="api"/>`, "Prefix"},
		"sipis prefix":  {`<PbxHook Prefix="/sipis/"/>`, "Prefix"},
		"bad wait":      {`<PbxHook WaitMilliseconds="soon"/>`, "not a whole number of milliseconds"},
		"long wait":     {`<PbxHook WaitMilliseconds="600000"/>`, "out of range 100..60000"},
		"resend > wait": {`<PbxHook WaitMilliseconds="1000" ResendIntervalMilliseconds="2000"/>`, "ResendIntervalMilliseconds"},
		"bad network":   {`<PbxHook><PbxNetworks><Network Address="10.0.0.0/40"/></PbxNetworks></PbxHook>`, "not a CIDR"},
		"bad cache":     {`<PbxHook><DeviceVerifier CacheSeconds="-1"/></PbxHook>`, "not a whole number of seconds"},
		"unknown attr":  {`<PbxHook Wait="4"/>`, "unknown attribute"},
		"both secrets":  {`<PbxHook Secret="a" SecretFile="b"/>`, "not both"},
		"zero workers":  {`<PbxHook PushWorkers="0"/>`, "PushWorkers"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte("<Sipis>\n"+tc.xml+"\n</Sipis>"), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(tc.xml, `Secret="a"`) && strings.Contains(err.Error(), `"a"`) {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}
