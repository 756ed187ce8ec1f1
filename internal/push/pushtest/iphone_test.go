package pushtest

import "testing"

// The fake iPhone fails its test for a VoIP push with no call to report.
func TestIPhoneCallKitRule(t *testing.T) {
	fake := NewAPNs(t)
	ft := &fakeT{TB: t}
	phone := NewIPhone(ft, fake)
	fake.pushes.add(APNsPush{Token: phone.VoIPToken, Status: 200,
		Payload: map[string]any{"kind": "call", "pairing_id": "p1", "call_id": "c1", "sent_at": "now", "aps": map[string]any{}}})
	fake.pushes.add(APNsPush{Token: phone.AlertToken, Status: 200, Payload: map[string]any{"kind": "missed-call"}})
	phone.check()
	if ft.errors != 1 {
		t.Fatalf("unreported VoIP push: %d errors, want 1", ft.errors)
	}
	ft.errors = 0
	phone.ReportCall("p1")
	phone.check()
	if ft.errors != 0 || len(phone.Alerts()) != 1 || len(phone.VoIPPushes()) != 1 {
		t.Errorf("reported call: %d errors, %d alerts", ft.errors, len(phone.Alerts()))
	}
	fake.pushes.add(APNsPush{Token: phone.VoIPToken, Status: 200, Payload: map[string]any{"kind": "cancel", "aps": map[string]any{}}})
	phone.check()
	if ft.errors != 1 {
		t.Errorf("a cancel VoIP push: %d errors, want 1", ft.errors)
	}
	ft.errors = 0
}

// fakeT counts Errorf calls instead of failing.
type fakeT struct {
	testing.TB
	errors int
}

func (f *fakeT) Errorf(string, ...any) { f.errors++ }
