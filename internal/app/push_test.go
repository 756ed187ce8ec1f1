package app

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/pkg/registration"
)

func TestTestPushThroughAPNsAndMetrics(t *testing.T) {
	apns := pushtest.NewAPNs(t)
	s := apnsSettings(t, t.TempDir(), apns, `
  <PushTest><MinAge Seconds="30"/></PushTest>`)
	a := startApp(t, s)
	defer a.Stop()
	reg := siptest.NewRegistrar(t, siptest.WithPassword("bob", "pw-bob"))

	send := func(sel, token string) {
		r := newReg(sel, "bob", reg, registration.ModeForeground)
		// A test push is an alert: it goes to the alert token (the VoIP token is for calls).
		r.Device = registration.Device{ID: "iphone", Platform: "apns", PushToken: pushtest.TokenOK + "01", AlertToken: token, AppID: apns.Topic}
		sealed, _ := registration.Seal(r, a.PublicKey())
		if code, body := post(t, a.HTTPURL(), sealed); code != 200 {
			t.Fatalf("register: %d %s", code, body)
		}
	}
	send("00aa00aa00aa00aa", pushtest.TokenOK)
	send("00bb00bb00bb00bb", pushtest.TokenUnregistered)

	b := &backend{app: a}
	ctx := context.Background()
	res, err := b.TestPush(ctx, "00aa00aa00aa00aa")
	if err != nil || len(res) != 1 || res[0].Outcome != outcomeDelivered || res[0].Platform != "APNs" {
		t.Fatalf("test push: %+v %v", res, err)
	}
	pushes := apns.Pushes()
	if len(pushes) != 1 {
		t.Fatalf("the fake APNs got %d pushes", len(pushes))
	}
	if _, err := b.TestPush(ctx, "00aa00aa00aa00aa"); err == nil || !strings.Contains(err.Error(), "less than") {
		t.Errorf("second test push within MinAge: %v", err)
	}
	res, err = b.TestPush(ctx, "00bb00bb00bb00bb")
	if err != nil || len(res) != 1 || res[0].Outcome != outcomeTokenInvalid {
		t.Fatalf("dead token: %+v %v", res, err)
	}
	devs, _ := a.Store().Devices(ctx, "00bb00bb00bb00bb")
	if len(devs) != 1 || !devs[0].AlertTokenInvalid || devs[0].TokenInvalid {
		t.Errorf("dead alert token not marked, or the VoIP token marked with it: %+v", devs)
	}
	if p := pushes[0]; p.Token != pushtest.TokenOK || p.Header.Get("apns-topic") != apns.Topic || p.Header.Get("apns-push-type") != "alert" {
		t.Errorf("test push to %s on %s (%s), want the alert token on the bundle topic", p.Token, p.Header.Get("apns-topic"), p.Header.Get("apns-push-type"))
	}
	counts := b.PushTestOutcomes()
	if counts["APNs"][outcomeDelivered] != 1 || counts["APNs"][outcomeTokenInvalid] != 1 {
		t.Errorf("push test outcomes %v", counts)
	}

	resp, err := http.Get(a.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`sipis_push_tests_total{outcome="Delivered",platform="APNs"} 1`, `sipis_instances{state="Idle"} 2`, "sipis_sip_bytes_sent_total", "sipis_registrations_accepted_total 2"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("status %d\n%s", resp.StatusCode, body[:min(len(body), 600)])
	}
}
