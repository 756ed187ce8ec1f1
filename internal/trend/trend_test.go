package trend

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/store"
)

var t0 = time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)

// TestCountersAndGauges: a Counter is drawn as its increase per minute, a Gauge as read; a
// minute without a reading is NaN; the ring keeps 24 hours.
func TestCountersAndGauges(t *testing.T) {
	r := New()
	for m := 0; m < 3; m++ {
		r.Add(t0.Add(time.Duration(m)*time.Minute), []Reading{
			{Name: "register.cycles", Kind: Counter, Value: float64(10 * (m + 1))},
			{Name: "instances.registered", Kind: Gauge, Value: float64(100 + m)},
		})
	}
	r.Add(t0.Add(3*time.Minute), []Reading{{Name: "register.cycles", Kind: Counter, Value: 45}})
	ss, _ := r.Since(time.Time{})
	if len(ss) != 2 || ss[0].Name != "register.cycles" || ss[1].Name != "instances.registered" {
		t.Fatalf("series %+v", ss)
	}
	var got []float64
	for _, p := range ss[0].Points {
		got = append(got, p.Value)
	}
	if want := []float64{10, 10, 10, 15}; !equal(got, want) {
		t.Errorf("cycles per minute %v, want %v", got, want)
	}
	if p := ss[1].Points; p[2].Value != 102 || !math.IsNaN(p[3].Value) || !p[3].At.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("gauge %+v", p)
	}
	for m := 0; m < 25*60; m++ {
		r.Add(t0.Add(time.Duration(4+m)*time.Minute), []Reading{{Name: "register.cycles", Kind: Counter, Value: float64(45 + m)}})
	}
	ss, _ = r.Since(time.Time{})
	if n := len(ss[0].Points); n != 24*60 {
		t.Errorf("%d points kept, want %d", n, 24*60)
	}
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMarks: a watched gauge's rise and fall and a burst of a watched counter are marked;
// steady values are not.
func TestMarks(t *testing.T) {
	r := New()
	fails := 0.0
	for m := 0; m < 30; m++ {
		down := 0.0
		if m >= 10 && m < 20 {
			down = 1
		}
		fails += 1
		if m == 25 {
			fails += 40
		}
		r.Add(t0.Add(time.Duration(m)*time.Minute), []Reading{
			{Name: "probes.down", Label: "probes down", Kind: Gauge, Watch: WatchChange, Value: down},
			{Name: "register.failures", Label: "REGISTER failures", Kind: Counter, Watch: WatchBurst, Value: fails},
		})
	}
	_, marks := r.Since(time.Time{})
	var texts []string
	for _, m := range marks {
		texts = append(texts, m.At.Format("15:04")+" "+m.Text)
	}
	want := "10:10 probes down: 0 → 1|10:20 probes down: 1 → 0|10:25 burst of REGISTER failures: 41 a minute"
	if strings.Join(texts, "|") != want {
		t.Errorf("marks\n%s\nwant\n%s", strings.Join(texts, "|"), want)
	}
}

// TestAcrossRestart: the last hour comes back from the store after a restart, marks included;
// what is older than an hour does not.
func TestAcrossRestart(t *testing.T) {
	db, err := store.Open(context.Background(), store.Options{Path: filepath.Join(t.TempDir(), "t.db"), Node: "n1", DataKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	r := New()
	for m := 0; m < 90; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		r.Add(at, []Reading{{Name: "calls.missed", Kind: Counter, Value: float64(2 * m)},
			{Name: "instances.error", Kind: Gauge, Value: float64(m)}})
		if m == 80 {
			r.Mark(at, "probe sip.example.com down")
		}
		if err := r.Save(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(90 * time.Minute)
	r2 := New()
	if err := r2.Load(ctx, db, now); err != nil {
		t.Fatal(err)
	}
	ss, marks := r2.Since(time.Time{})
	if len(ss) != 2 {
		t.Fatalf("series %+v", ss)
	}
	for _, s := range ss {
		if len(s.Points) != 60 || !s.Points[0].At.Equal(now.Add(-time.Hour)) {
			t.Errorf("%s: %d points from %v", s.Name, len(s.Points), s.Points[0].At)
		}
	}
	if ss[0].Name != "calls.missed" || ss[0].Points[59].Value != 2 || ss[1].Points[59].Value != 89 || ss[1].Kind != Gauge {
		t.Errorf("restored values %+v %+v", ss[0].Points[59], ss[1].Points[59])
	}
	if len(marks) != 1 || marks[0].Text != "probe sip.example.com down" {
		t.Errorf("marks %+v", marks)
	}
	// After the restart the counters count from 0 again.
	r2.Add(now, []Reading{{Name: "calls.missed", Kind: Counter, Value: 3}})
	ss, _ = r2.Since(now)
	if ss[0].Points[0].Value != 3 {
		t.Errorf("first minute after restart %v", ss[0].Points)
	}
}
