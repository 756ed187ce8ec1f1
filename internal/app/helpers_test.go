package app

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/web"
	"github.com/sipis/sipis/pkg/registration"
)

// boxSeal seals arbitrary plaintext, to test what the server does with bad documents.
func boxSeal(msg []byte, pub *registration.Key) ([]byte, error) {
	return box.SealAnonymous(nil, msg, pub, rand.Reader)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type (
	webQuery = web.InstanceQuery
	webRow   = web.InstanceRow
)

// parseSettingsFragment parses a whole <Sipis> document, for tests that take one section.
func parseSettingsFragment(xml, dir string) (*config.Settings, error) {
	return config.Parse([]byte(xml), dir)
}

func configSecret(v string) config.Secret { return config.NewSecret(v) }

// apnsSettings is testSettings with the APNs fake as push provider, trusted through its
// certificate; extra is more XML inside <Sipis>.
func apnsSettings(t testing.TB, dir string, apns *pushtest.APNs, extra string) *config.Settings {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "apns.pem"), apns.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return testSettings(t, dir, fmt.Sprintf(`
  <NotificationServers>
    <Apns Enabled="Yes" Endpoint="%[1]s" SandboxEndpoint="%[1]s" KeyFile="%[2]s" KeyId="%[3]s" TeamId="%[4]s" Topic="%[5]s"/>
  </NotificationServers>
  <TrustedCertificates><Certificate File="apns.pem"/></TrustedCertificates>%[6]s`,
		apns.URL, apns.KeyFile, apns.KeyID, apns.TeamID, apns.Topic, extra))
}

// holdAtKamailio registers user's instance sel at Kamailio, with one APNs device ("iphone")
// whose secret is secret, and waits until sipis holds the registration.
func holdAtKamailio(t testing.TB, a *App, k *siptest.Kamailio, apns *pushtest.APNs, sel, user, secret string) {
	t.Helper()
	holdDeviceAtKamailio(t, a, k, sel, user, registration.Device{ID: "iphone", Platform: "apns",
		PushToken: pushtest.TokenOK, AppID: apns.Topic, Secret: secret})
}

// holdDeviceAtKamailio registers user's instance sel at Kamailio with dev and waits until
// sipis holds the registration.
func holdDeviceAtKamailio(t testing.TB, a *App, k *siptest.Kamailio, sel, user string, dev registration.Device) {
	t.Helper()
	r := &registration.Registration{Version: registration.Version, Selector: sel, Mode: registration.ModeBackground,
		Account: registration.Account{User: user, Password: siptest.KamailioPassword(user), Domain: k.Domain(),
			Proxy: k.Host(), Port: k.Port(), Transport: "udp"},
		Device:    dev,
		Timestamp: time.Now().UTC(), Nonce: registration.NewNonce()}
	sealed, err := registration.Seal(r, a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
		t.Fatalf("register: %d %s", code, body)
	}
	waitPhase(t, a, sel, instance.Phase{State: instance.RegisterLoop, Status: instance.Registered})
}
