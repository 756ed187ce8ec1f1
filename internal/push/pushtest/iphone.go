package pushtest

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"testing"
)

// IPhone is a fake iOS device in front of an APNs fake: it owns a PushKit
// (VoIP) token and a remote-notification (alert) token, bound to their
// topics at the fake as the real service binds them, records every push it
// receives, and enforces Apple's CallKit rule: since iOS 13 every VoIP push
// must be reported to CallKit as an incoming call, or iOS kills the app and
// stops delivering VoIP pushes. The test calls ReportCall when the app got
// the call the push announced (the INVITE on its connection); when the test
// ends, a VoIP push whose call was never reported fails it, as does a VoIP
// push without the pairing id, SIP Call-ID and send time an app needs to drop
// duplicates, or with an alert in it.
type IPhone struct {
	// VoIPToken and AlertToken are the device's two tokens; Topic is the
	// app id (bundle) they belong to.
	VoIPToken, AlertToken, Topic string

	apns *APNs
	t    testing.TB

	mu       sync.Mutex
	reported map[string]bool
}

// NewIPhone returns a fake iPhone whose tokens are bound at apns; its
// CallKit check runs when the test ends.
func NewIPhone(t testing.TB, apns *APNs) *IPhone {
	t.Helper()
	p := &IPhone{
		VoIPToken: randomToken(), AlertToken: randomToken(), Topic: apns.Topic,
		apns: apns, t: t, reported: map[string]bool{},
	}
	apns.BindVoIPToken(p.VoIPToken)
	apns.BindAlertToken(p.AlertToken)
	t.Cleanup(p.check)
	return p
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Pushes returns the pushes APNs delivered to this phone (accepted ones, to
// either token), in order.
func (p *IPhone) Pushes() []APNsPush {
	var out []APNsPush
	for _, x := range p.apns.Pushes() {
		if x.Status == http.StatusOK && (x.Token == p.VoIPToken || x.Token == p.AlertToken) {
			out = append(out, x)
		}
	}
	return out
}

// Refused returns the pushes to this phone's tokens that APNs refused.
func (p *IPhone) Refused() []APNsPush {
	var out []APNsPush
	for _, x := range p.apns.Pushes() {
		if x.Status != http.StatusOK && (x.Token == p.VoIPToken || x.Token == p.AlertToken) {
			out = append(out, x)
		}
	}
	return out
}

// VoIPPushes returns the delivered VoIP pushes.
func (p *IPhone) VoIPPushes() []APNsPush { return p.filter(true) }

// Alerts returns the delivered pushes to the alert token (alerts and
// background pushes).
func (p *IPhone) Alerts() []APNsPush { return p.filter(false) }

func (p *IPhone) filter(voip bool) []APNsPush {
	var out []APNsPush
	for _, x := range p.Pushes() {
		if (x.Token == p.VoIPToken) == voip {
			out = append(out, x)
		}
	}
	return out
}

// ReportCall records that the app reported the call with this pairing id to
// CallKit: it received the call's INVITE (and may then have ended it).
func (p *IPhone) ReportCall(pairingID string) {
	p.mu.Lock()
	p.reported[pairingID] = true
	p.mu.Unlock()
}

// check fails the test for every VoIP push the app could not report as a
// call.
func (p *IPhone) check() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.VoIPPushes() {
		pairing, _ := x.Payload["pairing_id"].(string)
		callID, _ := x.Payload["call_id"].(string)
		sent, _ := x.Payload["sent_at"].(string)
		if aps, _ := x.Payload["aps"].(map[string]any); len(aps) != 0 {
			p.t.Errorf("fake iPhone: VoIP push with aps %v: a call's push carries no alert", aps)
		}
		if x.Payload["kind"] != "call" || pairing == "" || callID == "" || sent == "" {
			p.t.Errorf("fake iPhone: VoIP push that is not a call with pairing_id, call_id and sent_at: %s", x.Body)
			continue
		}
		if !p.reported[pairing] {
			p.t.Errorf("fake iPhone: VoIP push for call %s was never followed by a call the app could report to CallKit; iOS would kill the app", pairing)
		}
	}
}
