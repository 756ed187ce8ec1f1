// Package trend keeps per-minute samples of the server's series (instances per state, REGISTER
// cycles and failures, calls per outcome, pushes per platform and answer, probes up and down)
// for the charts on /stats: 24 hours in memory, the last hour also in the store so that the
// charts survive a restart. It marks changes of state on the way: a level that rises or falls
// (a probe going down) and a burst of failures (a count per minute well above its recent mean).
//
// It owns the series and their marks. It uses only internal/store's sample types, through its
// own Store interface; it must not read the instances, calls or probes itself (internal/app
// feeds it readings) and must keep its memory bounded to 24 hours of minutes.
package trend

import (
	"context"
	"math"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/store"
)

// Defaults of a Recorder.
const (
	Step     = time.Minute
	Keep     = 24 * time.Hour
	Persist  = time.Hour // how much the store holds
	MaxNames = 64        // series at most; readings of further names are dropped
	MaxMarks = 500
	// A burst is a count per minute of at least BurstMin and BurstFactor times the mean of
	// the hour before.
	BurstMin    = 5
	BurstFactor = 3
)

// Kind says how a series is read.
type Kind int

// The kinds of series.
const (
	// Gauge is a level: the value read is the value drawn.
	Gauge Kind = iota
	// Counter is a count since start: the value drawn is its increase over the minute.
	Counter
)

// Watch says which changes of a series are marked.
type Watch int

// The watches.
const (
	WatchNone   Watch = iota
	WatchChange       // a Gauge that rises or falls (probes down)
	WatchBurst        // a Counter whose count per minute bursts (failures)
)

// Reading is one series' value at a sampling.
type Reading struct {
	Name  string // e.g. "register.failures"; the part before the first dot groups the charts
	Label string // what the marks call it, e.g. "REGISTER failures"; default Name
	Kind  Kind
	Watch Watch
	Value float64
}

// Mark is a change of state at a time.
type Mark struct {
	At   time.Time
	Text string
}

// Point is one value of a series; Value is NaN where the series had no reading.
type Point struct {
	At    time.Time
	Value float64
}

// Series is a copy of one series.
type Series struct {
	Name   string
	Kind   Kind
	Points []Point
}

type series struct {
	name string
	kind Kind
	vals []float64 // ring aligned with Recorder.times
	prev float64   // the last reading of a Counter
	read bool      // prev is set
}

// Recorder holds the samples. It is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	n      int // slots in the ring
	times  []time.Time
	head   int // next slot to write
	count  int // slots written, at most n
	series []*series
	index  map[string]*series
	marks  []Mark
	unsent []Mark // marks not yet in the store
}

// New returns a Recorder keeping Keep of Step samples.
func New() *Recorder {
	n := int(Keep / Step)
	return &Recorder{n: n, times: make([]time.Time, n), index: make(map[string]*series)}
}

func (r *Recorder) seriesFor(name string, kind Kind) *series {
	s := r.index[name]
	if s == nil {
		if len(r.series) >= MaxNames {
			return nil
		}
		s = &series{name: name, kind: kind, vals: make([]float64, r.n)}
		for i := range s.vals {
			s.vals[i] = math.NaN()
		}
		r.series = append(r.series, s)
		r.index[name] = s
	}
	return s
}

// slot returns the ring slot of the minute at, opening a new one when at is after the newest;
// -1 when at is older than the newest slot (out of order).
func (r *Recorder) slot(at time.Time) int {
	at = at.Truncate(Step)
	if r.count > 0 {
		last := (r.head - 1 + r.n) % r.n
		switch {
		case r.times[last].Equal(at):
			return last
		case at.Before(r.times[last]):
			return -1
		}
	}
	i := r.head
	r.times[i] = at
	for _, s := range r.series {
		s.vals[i] = math.NaN()
	}
	r.head = (r.head + 1) % r.n
	if r.count < r.n {
		r.count++
	}
	return i
}

// Add records the readings of the minute at; marks for the watched series are added.
func (r *Recorder) Add(at time.Time, readings []Reading) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.slot(at)
	if i < 0 {
		return
	}
	at = r.times[i]
	for _, rd := range readings {
		s := r.seriesFor(rd.Name, rd.Kind)
		if s == nil {
			continue
		}
		v := rd.Value
		if rd.Kind == Counter {
			d := v - s.prev
			if d < 0 { // restarted below the last reading
				d = v
			}
			s.prev, s.read = v, true
			v = d
		}
		before := r.lastValue(s, i)
		if !math.IsNaN(s.vals[i]) && rd.Kind == Counter {
			v += s.vals[i] // two readings in one minute
		}
		s.vals[i] = v
		label := rd.Label
		if label == "" {
			label = rd.Name
		}
		switch rd.Watch {
		case WatchChange:
			if !math.IsNaN(before) && v != before {
				r.markLocked(at, label+": "+ftoa(before)+" → "+ftoa(v))
			}
		case WatchBurst:
			if mean := r.mean(s, i, 60); v >= BurstMin && v >= BurstFactor*mean {
				r.markLocked(at, "burst of "+label+": "+ftoa(v)+" a minute")
			}
		}
	}
}

// lastValue is the series' value in the slot before i (NaN if none).
func (r *Recorder) lastValue(s *series, i int) float64 {
	if r.count < 2 {
		return math.NaN()
	}
	return s.vals[(i-1+r.n)%r.n]
}

// mean is the mean of the series over the k slots before i, NaNs left out (0 if none).
func (r *Recorder) mean(s *series, i, k int) float64 {
	sum, n := 0.0, 0
	for j := 1; j <= k && j < r.count; j++ {
		if v := s.vals[(i-j+r.n)%r.n]; !math.IsNaN(v) {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func ftoa(v float64) string { return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64) }

// Mark adds a change of state at a time, e.g. a probe alert.
func (r *Recorder) Mark(at time.Time, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.markLocked(at, text)
}

func (r *Recorder) markLocked(at time.Time, text string) {
	m := Mark{At: at, Text: text}
	r.marks = append(r.marks, m)
	if len(r.marks) > MaxMarks {
		r.marks = append(r.marks[:0], r.marks[len(r.marks)-MaxMarks:]...)
	}
	if len(r.unsent) < MaxMarks {
		r.unsent = append(r.unsent, m)
	}
}

// Since returns every series from since on (oldest point first, in the order the series were
// first read) and the marks in that time.
func (r *Recorder) Since(since time.Time) ([]Series, []Mark) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var idx []int
	for k := r.count; k >= 1; k-- {
		i := (r.head - k + r.n) % r.n
		if !r.times[i].Before(since) {
			idx = append(idx, i)
		}
	}
	out := make([]Series, len(r.series))
	for j, s := range r.series {
		pts := make([]Point, len(idx))
		for k, i := range idx {
			pts[k] = Point{At: r.times[i], Value: s.vals[i]}
		}
		out[j] = Series{Name: s.name, Kind: s.kind, Points: pts}
	}
	var marks []Mark
	for _, m := range r.marks {
		if !m.At.Before(since) {
			marks = append(marks, m)
		}
	}
	return out, marks
}

// Store is where the last hour of samples lives across a restart; *store.DB implements it.
type Store interface {
	PutTrend(ctx context.Context, samples []store.TrendSample, marks []store.TrendMark, before time.Time) error
	TrendSince(ctx context.Context, since time.Time) ([]store.TrendSample, []store.TrendMark, error)
}

// Load puts the samples and marks of the last Persist before now from db into the Recorder;
// call it once, before the first Add.
func (r *Recorder) Load(ctx context.Context, db Store, now time.Time) error {
	samples, marks, err := db.TrendSince(ctx, now.Add(-Persist))
	if err != nil {
		return err
	}
	sort.SliceStable(samples, func(i, j int) bool { return samples[i].At.Before(samples[j].At) })
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range samples {
		i := r.slot(s.At)
		if i < 0 {
			continue
		}
		kind := Counter
		if s.Gauge {
			kind = Gauge
		}
		if ser := r.seriesFor(s.Name, kind); ser != nil {
			ser.vals[i] = s.Value
		}
	}
	for _, m := range marks {
		r.marks = append(r.marks, Mark{At: m.At, Text: m.Text})
	}
	if len(r.marks) > MaxMarks {
		r.marks = r.marks[len(r.marks)-MaxMarks:]
	}
	return nil
}

// Save writes the newest minute and the marks not yet written to db, and prunes what is older
// than Persist.
func (r *Recorder) Save(ctx context.Context, db Store) error {
	r.mu.Lock()
	if r.count == 0 {
		r.mu.Unlock()
		return nil
	}
	i := (r.head - 1 + r.n) % r.n
	at := r.times[i]
	var samples []store.TrendSample
	for _, s := range r.series {
		if v := s.vals[i]; !math.IsNaN(v) {
			samples = append(samples, store.TrendSample{At: at, Name: s.name, Gauge: s.kind == Gauge, Value: v})
		}
	}
	var marks []store.TrendMark
	for _, m := range r.unsent {
		marks = append(marks, store.TrendMark{At: m.At, Text: m.Text})
	}
	r.unsent = nil
	r.mu.Unlock()
	return db.PutTrend(ctx, samples, marks, at.Add(-Persist))
}
