package app

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/store"
)

// TestProbeHistoryIsBounded: recording a state change deletes the changes older than
// probeEventRetention and keeps the recent ones.
func TestProbeHistoryIsBounded(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{Path: filepath.Join(t.TempDir(), "sipis.db"),
		DataKey: make([]byte, store.DataKeySize), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := probeHistory{db: db}
	now := time.Now().UTC().Truncate(time.Second)
	for _, at := range []time.Time{now.Add(-probeEventRetention - time.Hour), now.Add(-probeEventRetention + time.Hour), now} {
		if err := h.AddProbeEvent(ctx, probe.Event{Target: "sip:proxy.example.com", OldState: probe.Up,
			NewState: probe.Down, At: at}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := db.ProbeEvents(ctx, "sip:proxy.example.com", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d events kept, want 2 (the one older than %v pruned): %+v", len(evs), probeEventRetention, evs)
	}
	for _, ev := range evs {
		if ev.At.Before(now.Add(-probeEventRetention)) {
			t.Errorf("event of %v kept", ev.At)
		}
	}
}
