package store

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCallRecords(t *testing.T) { forEachBackend(t, testCallRecords) }

func testCallRecords(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx := context.Background()
	mustPut(t, db, sampleInstance("ca11"), sampleDevice("ca11"), "n1")

	c := &Call{Selector: "ca11", PairingID: "p1", CallID: "cid@x", CallerName: "Bob", CallerURI: "sip:bob@x",
		Devices: []string{"dev-1", "dev-2"}, DialogState: DialogEarly, ReceivedAt: t0, PushedAt: t0.Add(time.Second)}
	if err := db.PutCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Outcome, c.Reason, c.DialogState, c.EndedAt = OutcomeMissed, "cancelled by caller", DialogTerminated, t0.Add(5*time.Second)
	if err := db.PutCall(ctx, c); err != nil {
		t.Fatal(err)
	}
	c2 := &Call{Selector: "ca11", PairingID: "p2", DialogState: DialogPending, ReceivedAt: t0.Add(time.Minute)}
	if err := db.PutCall(ctx, c2); err != nil {
		t.Fatal(err)
	}
	got, err := db.Calls(ctx, "ca11", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].PairingID != "p2" {
		t.Fatalf("Calls = %+v, want p2 then p1", got)
	}
	if !reflect.DeepEqual(got[1], *c) {
		t.Errorf("stored call\n got %+v\nwant %+v", got[1], *c)
	}

	// Bad input changes nothing.
	for _, bad := range []*Call{
		nil,
		{Selector: "XY", PairingID: "p3", DialogState: DialogEarly},
		{Selector: "ca11", PairingID: "", DialogState: DialogEarly},
		{Selector: "ca11", PairingID: "p3", DialogState: "ringing"},
		{Selector: "ca11", PairingID: "p3", DialogState: DialogEarly, Outcome: "maybe"},
		{Selector: "ca11", PairingID: "p3", DialogState: DialogEarly, Devices: []string{"a,b"}},
		{Selector: "ca11", PairingID: "p3", DialogState: DialogEarly, Reason: strings.Repeat("x", 2000)},
	} {
		if err := db.PutCall(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutCall(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := db.PutCall(ctx, &Call{Selector: "beef", PairingID: "p4", DialogState: DialogEarly}); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutCall for unknown selector = %v, want ErrNotFound", err)
	}
	if got, _ := db.Calls(ctx, "ca11", 10); len(got) != 2 {
		t.Errorf("after bad input %d calls, want 2", len(got))
	}
	if _, err := db.Calls(ctx, "ca11", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("Calls limit 0 = %v, want ErrInvalid", err)
	}

	n, err := db.PruneCalls(ctx, t0.Add(30*time.Second))
	if err != nil || n != 1 {
		t.Errorf("PruneCalls = %d, %v, want 1", n, err)
	}
	if err := db.DeleteInstance(ctx, "ca11"); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Calls(ctx, "ca11", 10); len(got) != 0 {
		t.Errorf("calls outlived their instance: %+v", got)
	}
}

func TestMessagesSurviveReopenAndAck(t *testing.T) {
	forEachBackend(t, testMessagesSurviveReopenAndAck)
}

func testMessagesSurviveReopenAndAck(t *testing.T, b testBackend) {
	db, path := b.openTest(t)
	ctx := context.Background()
	mustPut(t, db, sampleInstance("3e55"), sampleDevice("3e55"), "n1")
	body := []byte("Secret-Hello-Wombat")
	m := &Message{Selector: "3e55", From: `"Bob" <sip:bob@x>`, ContentType: "text/plain", Body: body, CallID: "c1", ReceivedAt: t0}
	if err := db.AddMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	m2 := &Message{Selector: "3e55", ContentType: "text/plain", Body: []byte("two")}
	if err := db.AddMessage(ctx, m2); err != nil {
		t.Fatal(err)
	}
	if m.ID == 0 || m2.ID <= m.ID {
		t.Fatalf("ids %d, %d not increasing", m.ID, m2.ID)
	}
	if err := db.AddMessage(ctx, &Message{Selector: "beef"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddMessage to unknown selector = %v, want ErrNotFound", err)
	}
	checkpoint(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if found := scanFiles(t, b, path, map[string][]byte{"message body": body}); len(found) > 0 {
		t.Errorf("message body found in plain text in the database files: %v", found)
	}

	db = b.openAt(t, path, testKey(1))
	got, err := db.Messages(ctx, "3e55", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !bytes.Equal(got[0].Body, body) || got[0].From != m.From || !got[0].ReceivedAt.Equal(t0) {
		t.Fatalf("Messages after reopen = %+v", got)
	}
	if counts, err := db.MessageCounts(ctx); err != nil || counts["3e55"] != 2 {
		t.Errorf("MessageCounts = %v, %v", counts, err)
	}
	n, err := db.AckMessages(ctx, "3e55", []int64{m.ID, 9999})
	if err != nil || n != 1 {
		t.Errorf("AckMessages = %d, %v, want 1", n, err)
	}
	n, err = db.AckMessages(ctx, "3e55", []int64{m.ID})
	if err != nil || n != 0 {
		t.Errorf("second AckMessages = %d, %v, want 0", n, err)
	}
	if got, _ := db.Messages(ctx, "3e55", 100); len(got) != 1 || got[0].ID != m2.ID {
		t.Errorf("after ack: %+v", got)
	}
}

func TestCheckDeviceSecret(t *testing.T) { forEachBackend(t, testCheckDeviceSecret) }

func testCheckDeviceSecret(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx := context.Background()
	dev := sampleDevice("5ec1")
	mustPut(t, db, sampleInstance("5ec1"), dev, "n1")
	if err := db.CheckDeviceSecret(ctx, "5ec1", dev.ID, dev.Secret); err != nil {
		t.Errorf("right secret: %v", err)
	}
	if err := db.CheckDeviceSecret(ctx, "5ec1", dev.ID, dev.Secret+"x"); !errors.Is(err, ErrSecret) {
		t.Errorf("wrong secret: %v, want ErrSecret", err)
	}
	if err := db.CheckDeviceSecret(ctx, "5ec1", dev.ID, ""); !errors.Is(err, ErrSecret) {
		t.Errorf("empty secret: %v, want ErrSecret", err)
	}
	if err := db.CheckDeviceSecret(ctx, "5ec1", "nobody", dev.Secret); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown device: %v, want ErrNotFound", err)
	}
	if err := db.CheckDeviceSecret(ctx, "5ec1", "", dev.Secret); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty device id: %v, want ErrInvalid", err)
	}
	if err := db.CheckDeviceSecret(ctx, "5ec1", dev.ID, dev.Secret); err != nil {
		t.Errorf("right secret again: %v", err)
	}
}

// TestCloseOpenCallsAndOutcomes: the records a killed run left open are ended at start (a
// ringing call missed, an answered one kept accepted, both terminated with the reason), the
// ended ones are untouched, and CallOutcomes counts them all by outcome and reason.
func TestCloseOpenCallsAndOutcomes(t *testing.T) { forEachBackend(t, testCloseOpenCallsAndOutcomes) }

func testCloseOpenCallsAndOutcomes(t *testing.T, b testBackend) {
	db, _ := b.openTest(t)
	ctx := context.Background()
	mustPut(t, db, sampleInstance("ca12"), sampleDevice("ca12"), "n1")
	for _, c := range []*Call{
		{Selector: "ca12", PairingID: "ringing", CallID: "c1", DialogState: DialogEarly, ReceivedAt: t0},
		{Selector: "ca12", PairingID: "talking", CallID: "c2", DialogState: DialogStable, Outcome: OutcomeAccepted, ReceivedAt: t0},
		{Selector: "ca12", PairingID: "done", CallID: "c3", DialogState: DialogTerminated, Outcome: OutcomeRejected,
			Reason: "busy", ReceivedAt: t0, EndedAt: t0.Add(time.Second)},
	} {
		if err := db.PutCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.CloseOpenCalls(ctx, "", t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty reason: %v", err)
	}
	at := t0.Add(time.Hour)
	open, err := db.CloseOpenCalls(ctx, "server restarted", at)
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 2 {
		t.Fatalf("closed %+v, want the ringing and the answered call", open)
	}
	got, _ := db.Calls(ctx, "ca12", 10)
	by := map[string]Call{}
	for _, c := range got {
		by[c.PairingID] = c
	}
	if c := by["ringing"]; c.Outcome != OutcomeMissed || c.Reason != "server restarted" || c.DialogState != DialogTerminated || !c.EndedAt.Equal(at) {
		t.Errorf("ringing call after close: %+v", c)
	}
	if c := by["talking"]; c.Outcome != OutcomeAccepted || c.Reason != "server restarted" || c.DialogState != DialogTerminated {
		t.Errorf("answered call after close: %+v", c)
	}
	if c := by["done"]; c.Reason != "busy" || !c.EndedAt.Equal(t0.Add(time.Second)) {
		t.Errorf("ended call changed: %+v", c)
	}
	if again, err := db.CloseOpenCalls(ctx, "server restarted", at); err != nil || len(again) != 0 {
		t.Errorf("second close: %v %v", again, err)
	}
	counts, err := db.CallOutcomes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []OutcomeCount{{OutcomeAccepted, "server restarted", 1}, {OutcomeMissed, "server restarted", 1}, {OutcomeRejected, "busy", 1}}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("CallOutcomes = %+v, want %+v", counts, want)
	}
}
