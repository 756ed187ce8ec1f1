package app

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
)

// TestDeviceClosesAfterByeThroughKamailio: through a real Kamailio, the caller hangs up and
// the device answers the BYE and closes its connection in the same write, 200 calls in a row.
// The caller always gets the device's 200 (not the 500 Kamailio makes of a 503 from sipis),
// and sipis never sends a BYE of its own for the ended dialog: the record has no "device
// connection lost" reason (issue 10 point 1).
func TestDeviceClosesAfterByeThroughKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	a := startApp(t, apnsSettings(t, t.TempDir(), apns, ""))
	t.Cleanup(a.Stop)
	const sel, user, secret = "ca11ca11ca11ca14", "user0045", "device-secret-45"
	holdAtKamailio(t, a, k, apns, sel, user, secret)
	caller := siptest.NewCaller(t)
	for i := range 200 {
		c := callAndAnswer(t, a, k, apns, caller, sel, user, secret)
		c.inv.InDialog(c.ok, "BYE", 2)
		bye, err := c.d.Next("BYE", false, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.d.RespondAndClose(bye, 200, "OK")
		if res := c.next("BYE"); res.Status != 200 {
			t.Fatalf("call %d: the caller's BYE got %d %s, want the device's 200", i, res.Status, res.Reason)
		}
		var rec store.Call
		waitAll(t, "the call's record ends", 5*time.Second, func() (bool, string) {
			cs, err := a.Store().Calls(context.Background(), sel, 1)
			if err != nil || len(cs) == 0 {
				return false, fmt.Sprint(err)
			}
			rec = cs[0]
			return rec.CallID == c.inv.CallID && rec.DialogState == store.DialogTerminated, fmt.Sprintf("%+v", rec)
		})
		if rec.Outcome != store.OutcomeAccepted || rec.Reason != "" {
			t.Fatalf("call %d: record %s/%q, want accepted, ended by the caller's BYE", i, rec.Outcome, rec.Reason)
		}
		waitActive(t, c, 0)
		if r, err := caller.NextRequest(c.inv.CallID, "BYE", 0); err == nil {
			t.Fatalf("call %d: sipis sent its own BYE:\n%s", i, r.Raw)
		}
	}
}

// childSettingsEnv names the settings file of the sipis that TestKilledWhileRingingChild runs.
const childSettingsEnv = "SIPIS_TEST_CHILD_SETTINGS"

// TestKilledWhileRingingChild is the sipis process that TestKilledWhileRingingThroughKamailio
// kills: it runs the server on the settings file it is given, prints its addresses, and waits
// to be killed.
func TestKilledWhileRingingChild(t *testing.T) {
	path := os.Getenv(childSettingsEnv)
	if path == "" {
		t.Skip("only run by TestKilledWhileRingingThroughKamailio")
	}
	s, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := startApp(t, s)
	fmt.Printf("READY %s %s %s\n", a.HTTPURL(), a.SIPAddr("udp"), a.devUA.Addr("tcp"))
	select {}
}

// TestKilledWhileRingingThroughKamailio: sipis is killed (SIGKILL) while a call through
// Kamailio rings. The next start on the same database and ports closes the call's record
// (missed, "server restarted") and counts it in /stats/summary/json and /metrics, and the
// caller's CANCEL, relayed by Kamailio, still ends the call with 487 instead of 481 and a
// caller left ringing (issue 10 points 3 and 4).
func TestKilledWhileRingingThroughKamailio(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio suite skipped in -short mode")
	}
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	apns := pushtest.NewAPNs(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "apns.pem"), apns.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	xml := fmt.Sprintf(`<Sipis>
  <Server Name="test-node" Address="127.0.0.1" Port="0"/>
  <Sip><Listener Transport="udp" Address="127.0.0.1" Port="0"/></Sip>
  <HttpServer Address="127.0.0.1" Port="0"/>
  <Database OpenString="sipis.db"/>
  <Lock FileName="sipis.lock"/>
  <Log Stdio="None"/>
  <Probe Enabled="No"/>
  <NotificationServers>
    <Apns Enabled="Yes" Endpoint="%[1]s" SandboxEndpoint="%[1]s" KeyFile="%[2]s" KeyId="%[3]s" TeamId="%[4]s" Topic="%[5]s"/>
  </NotificationServers>
  <TrustedCertificates><Certificate File="apns.pem"/></TrustedCertificates>
</Sipis>`, apns.URL, apns.KeyFile, apns.KeyID, apns.TeamID, apns.Topic)
	path := filepath.Join(dir, "Settings.xml")
	if err := os.WriteFile(path, []byte(xml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestKilledWhileRingingChild$", "-test.count=1")
	child.Env = append(os.Environ(), childSettingsEnv+"="+path)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			child.Process.Kill()
			child.Wait()
		}
	}()
	var httpURL, sipAddr, devAddr string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "READY" {
			httpURL, sipAddr, devAddr = f[1], f[2], f[3]
			break
		}
	}
	if httpURL == "" {
		t.Fatal("the child sipis did not start")
	}
	go io.Copy(io.Discard, out)

	const sel, user = "ca11ca11ca11ca15", "user0046"
	r := &registration.Registration{Version: registration.Version, Selector: sel, Mode: registration.ModeBackground,
		Account: registration.Account{User: user, Password: siptest.KamailioPassword(user), Domain: k.Domain(),
			Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
		Device: registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK, AppID: apns.Topic,
			Secret: "device-secret-46"},
		Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
	first, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := registration.ReadKeyFile(first.Keys.PublicKeyFile) // written by the child
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := registration.Seal(r, pub)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, httpURL, sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	waitAll(t, "the child holds the registration", 10*time.Second, func() (bool, string) {
		body := httpGet(t, httpURL+"/stats/instances/json?s="+sel)
		return strings.Contains(body, `"Registered"`), body
	})

	caller := siptest.NewCaller(t)
	inv := caller.Invite(k.Addr(), user)
	ringing := 0
	for ringing < 2 {
		res, err := caller.Next(inv.CallID, "INVITE", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status == 180 {
			ringing++
		} else if res.Status != 100 {
			t.Fatalf("INVITE answered %d before the kill", res.Status)
		}
	}
	child.Process.Kill() // SIGKILL: no Stop, no final response, the record stays open
	child.Wait()
	killed = true

	s, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Sip.Listeners[0].Port = atoi(t, sipAddr[strings.LastIndex(sipAddr, ":")+1:])
	s.Server.Port = atoi(t, devAddr[strings.LastIndex(devAddr, ":")+1:])
	a := startApp(t, s)
	defer a.Stop()
	cs, err := a.Store().Calls(context.Background(), sel, 10)
	if err != nil || len(cs) != 1 || cs[0].Outcome != store.OutcomeMissed || cs[0].Reason != "server restarted" ||
		cs[0].DialogState != store.DialogTerminated || cs[0].EndedAt.IsZero() {
		t.Fatalf("record after the restart: %+v %v", cs, err)
	}
	var summary struct{ CallOutcomes struct{ Total, Missed int } }
	if err := json.Unmarshal([]byte(httpGet(t, a.HTTPURL()+"/stats/summary/json")), &summary); err != nil ||
		summary.CallOutcomes.Total != 1 || summary.CallOutcomes.Missed != 1 {
		t.Errorf("summary after the restart does not count the call: %+v %v", summary, err)
	}
	if m := httpGet(t, a.HTTPURL()+"/metrics"); !strings.Contains(m, `sipis_incoming_calls_total{outcome="missed"} 1`) {
		t.Errorf("metrics after the restart do not count the call")
	}

	inv.Cancel()
	for {
		res, err := caller.Next(inv.CallID, "INVITE", 5*time.Second)
		if err != nil {
			t.Fatalf("no final answer to the INVITE after the CANCEL: %v", err)
		}
		if res.Status >= 200 {
			if res.Status != 487 {
				t.Fatalf("INVITE ended with %d after the restart, want 487", res.Status)
			}
			break
		}
	}
}

// httpGet returns the body of a GET that must answer 200.
func httpGet(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}
