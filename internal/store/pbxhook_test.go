package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHookDevices(t *testing.T) { forEachBackend(t, testHookDevices) }

func testHookDevices(t *testing.T, b testBackend) {
	db, path := b.openTest(t)
	ctx := context.Background()
	d := &HookDevice{SipUserID: "150010001", Platform: "apns", App: "com.example", Token: "tok-1", Sandbox: true, Name: "Phone"}
	if created, err := db.PutHookDevice(ctx, d); err != nil || !created || d.ID == 0 {
		t.Fatalf("first put: %v %v %+v", created, err, d)
	}
	d2 := *d
	d2.Name, d2.OSVersion = "Renamed", "17.1"
	if created, err := db.PutHookDevice(ctx, &d2); err != nil || created || d2.ID != d.ID {
		t.Fatalf("second put: %v %v", created, err)
	}
	if _, err := db.PutHookDevice(ctx, &HookDevice{SipUserID: "150010001", Platform: "fcm", App: "com.example", Token: "tok-2"}); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]*HookDevice{
		"nil":        nil,
		"no token":   {SipUserID: "1", Platform: "apns", App: "a"},
		"long name":  {SipUserID: "1", Platform: "apns", App: "a", Token: "t", Name: strings.Repeat("x", 256)},
		"long token": {SipUserID: "1", Platform: "apns", App: "a", Token: strings.Repeat("x", 4097)},
	} {
		if _, err := db.PutHookDevice(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	devs, err := db.HookDevices(ctx, "150010001")
	if err != nil || len(devs) != 2 || devs[0].Name != "Renamed" || devs[0].OSVersion != "17.1" || !devs[0].Sandbox {
		t.Fatalf("devices = %+v, %v", devs, err)
	}
	if err := db.MarkHookTokenInvalid(ctx, devs[1].ID); err != nil {
		t.Fatal(err)
	}
	if counts, err := db.HookDeviceCounts(ctx); err != nil || counts["150010001"] != 2 || len(counts) != 1 {
		t.Fatalf("counts = %v, %v", counts, err)
	}
	if n, err := db.CheckInHookDevices(ctx, "150010001", "tok-2"); err != nil || n != 1 {
		t.Fatalf("check-in = %d, %v", n, err)
	}
	if _, err := db.CheckInHookDevices(ctx, "150010009", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("check-in of nobody: %v", err)
	}
	// Another node on the same file sees none of it.
	other, err := Open(ctx, Options{OpenString: path, DataKey: testKey(2), Node: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if devs, _ := other.HookDevices(ctx, "150010001"); len(devs) != 0 {
		t.Fatal("node2 sees node1's hook devices")
	}
	if err := other.DeleteHookDevice(ctx, "150010001", "com.example", "tok-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("node2 deleted node1's device: %v", err)
	}
	if err := db.DeleteHookDevice(ctx, "150010001", "com.example", "tok-1"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteHookDevice(ctx, "150010001", "com.example", "tok-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestHookCallsAndMetrics(t *testing.T) { forEachBackend(t, testHookCallsAndMetrics) }

func testHookCallsAndMetrics(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx := context.Background()
	hash := strings.Repeat("ab", 32)
	old := time.Now().Add(-48 * time.Hour)
	c := &HookCall{KeyHash: hash, SipUserID: "150010001", CallID: "c1", Outcome: OutcomeRejected, Reason: "device not available",
		Devices: 2, Pushes: 3, ReceivedAt: old, RespondedAt: old.Add(time.Second), EndedAt: old.Add(time.Second)}
	if err := db.PutHookCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]*HookCall{
		"short hash":  {KeyHash: "ab", SipUserID: "1", Outcome: OutcomeMissed},
		"bad outcome": {KeyHash: hash, SipUserID: "1", Outcome: "maybe"},
		"long reason": {KeyHash: hash, SipUserID: "1", Outcome: OutcomeMissed, Reason: strings.Repeat("r", 300)},
	} {
		if err := db.PutHookCall(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := db.SetHookHangupReason(ctx, "150010001", hash, "busy"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetHookHangupReason(ctx, "150010002", hash, "busy"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hangup reason for another account's call: %v", err)
	}
	calls, err := db.HookCalls(ctx, "150010001", 10)
	if err != nil || len(calls) != 1 || calls[0].HangupReason != "busy" || calls[0].Pushes != 3 || !calls[0].ReceivedAt.Equal(old) {
		t.Fatalf("calls = %+v, %v", calls, err)
	}
	if _, err := db.HookCalls(ctx, "", 0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("limit 0: %v", err)
	}
	if err := db.AddHookMetric(ctx, &HookMetric{SipUserID: "1", SetupResult: "perhaps"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad result: %v", err)
	}
	for _, ms := range []time.Duration{0, 300, 100, 200} {
		if err := db.AddHookMetric(ctx, &HookMetric{SipUserID: "1", SetupResult: "true", Network: "WiFi",
			FirstResponse: ms * time.Millisecond, ReceivedAt: old}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := db.HookMetricSummary(ctx)
	if err != nil || s.Count != 4 || s.BySetupResult["true"] != 4 || s.ByNetwork["WiFi"] != 4 || s.FirstResponseMedian != 200*time.Millisecond {
		t.Fatalf("summary = %+v, %v", s, err)
	}
	if n, err := db.PruneHook(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 5 {
		t.Fatalf("pruned %d, %v; want 5", n, err)
	}
}
