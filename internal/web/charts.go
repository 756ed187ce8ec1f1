package web

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Charts on /stats are drawn here, on the server, as inline SVG through html/template: no
// script and no chart library, so they work under the pages' CSP (which allows no inline style
// attribute: colours are SVG presentation attributes) and cost the browser nothing. A chart
// library would need a script, its upkeep, and the data in the page anyway.

// TrendSource gives the per-minute trend series for /stats and /stats/trends/json; the
// application adapts internal/trend to it.
type TrendSource interface {
	// Trends returns every series from since on, oldest point first, and the marked changes
	// of state in that time.
	Trends(since time.Time) ([]TrendSeries, []TrendMark)
}

// TrendSeries is one series. The part of Name before the first dot is its chart
// ("instances", "register", "calls", "push", "probes"), the rest its label.
type TrendSeries struct {
	Name string
	// Counter is true for counts per minute, false for levels (instances per state).
	Counter bool
	Points  []TrendPoint
}

// TrendPoint is one minute of a series; Value is NaN when there was no reading.
type TrendPoint struct {
	At    time.Time
	Value float64
}

// TrendMark is a change of state (a probe going down, a burst of failures).
type TrendMark struct {
	At   time.Time
	Text string
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH       = 560, 150
	chartLeft, chartTop  = 44, 8
	chartRight, chartBot = 8, 20
	plotW                = chartW - chartLeft - chartRight
	plotH                = chartH - chartTop - chartBot
)

// chartPalette are the series colours, told apart also by the legend's order.
var chartPalette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
	"#7f7f7f", "#bcbd22"}

// chartTitles name the charts, in the order they are drawn.
var chartTitles = []struct{ group, title string }{
	{"instances", "Instances by state"},
	{"register", "REGISTER cycles per minute"},
	{"calls", "Incoming calls per minute, by outcome"},
	{"push", "Pushes per minute, by platform and answer"},
	{"probes", "Probe targets up and down"},
}

type chartView struct {
	ID, Title          string
	W, H               int
	Left, Top, Right   int
	Bottom             int
	PlotW, PlotH       int
	YMax, YMid         string
	YMidY              int
	FromLabel, ToLabel string
	MidLabel           string
	MidX               int
	Lines              []chartLine
	Marks              []chartMark
}

type chartLine struct {
	Name     string
	Color    string
	Segments []string // the points= of each polyline (a gap in the data breaks the line)
	Last     string   // the newest value
}

type chartMark struct {
	X    string
	N    int
	At   string
	Text string
}

type trendsView struct {
	Window string // "1h" or "24h"
	Charts []chartView
	Marks  []chartMark
}

// trendWindow reads ?window= (1h or 24h; def when absent).
func trendWindow(r *http.Request, def string) (string, time.Duration, error) {
	w := r.URL.Query().Get("window")
	if w == "" {
		w = def
	}
	switch w {
	case "1h":
		return w, time.Hour, nil
	case "24h":
		return w, 24 * time.Hour, nil
	}
	return "", 0, badRequest("window must be 1h or 24h")
}

// buildTrends lays out the charts of the last d before now.
func buildTrends(src TrendSource, window string, d time.Duration, now time.Time) *trendsView {
	if src == nil {
		return nil
	}
	to := now.Truncate(time.Minute)
	from := to.Add(-d)
	series, marks := src.Trends(from)
	bucket := 1
	if d > 2*time.Hour {
		bucket = 5 // 24 h: one point per 5 minutes, the mean, still per minute
	}
	groups := make(map[string][]TrendSeries)
	for _, s := range series {
		g, _, _ := strings.Cut(s.Name, ".")
		groups[g] = append(groups[g], s)
	}
	v := &trendsView{Window: window}
	for i, m := range marks {
		v.Marks = append(v.Marks, chartMark{X: xOf(m.At, from, to), N: i + 1, At: m.At.UTC().Format("15:04"), Text: m.Text})
	}
	for _, ct := range chartTitles {
		ss := groups[ct.group]
		if len(ss) == 0 {
			continue
		}
		v.Charts = append(v.Charts, buildChart(ct.group, ct.title, ss, from, to, bucket, v.Marks))
	}
	return v
}

func xOf(t, from, to time.Time) string {
	f := float64(t.Sub(from)) / float64(to.Sub(from))
	return fmt1(chartLeft + math.Max(0, math.Min(1, f))*plotW)
}

func fmt1(f float64) string { return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64) }

func buildChart(id, title string, ss []TrendSeries, from, to time.Time, bucket int, marks []chartMark) chartView {
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name })
	ymax := 0.0
	type pt struct {
		at time.Time
		v  float64
	}
	pts := make([][]pt, len(ss))
	for i, s := range ss {
		for j := 0; j < len(s.Points); j += bucket {
			sum, n := 0.0, 0
			for k := j; k < j+bucket && k < len(s.Points); k++ {
				if v := s.Points[k].Value; !math.IsNaN(v) {
					sum += v
					n++
				}
			}
			p := pt{at: s.Points[j].At, v: math.NaN()}
			if n > 0 {
				p.v = sum / float64(n)
				ymax = math.Max(ymax, p.v)
			}
			pts[i] = append(pts[i], p)
		}
	}
	ymax = niceCeil(ymax)
	c := chartView{ID: id, Title: title, W: chartW, H: chartH, Left: chartLeft, Top: chartTop,
		Right: chartW - chartRight, Bottom: chartH - chartBot, PlotW: plotW, PlotH: plotH,
		YMax: fmt1(ymax), YMid: fmt1(ymax / 2), YMidY: chartTop + plotH/2,
		FromLabel: from.UTC().Format("15:04"), ToLabel: to.UTC().Format("15:04") + " UTC",
		MidLabel: from.Add(to.Sub(from) / 2).UTC().Format("15:04"), MidX: chartLeft + plotW/2}
	gap := time.Duration(bucket)*time.Minute + time.Minute/2
	for i, s := range ss {
		_, name, _ := strings.Cut(s.Name, ".")
		l := chartLine{Name: name, Color: chartPalette[i%len(chartPalette)], Last: "–"}
		var seg []string
		var prev time.Time
		flush := func() {
			if len(seg) == 1 { // a lone point: draw it as a short flat line
				seg = append(seg, seg[0])
			}
			if len(seg) > 0 {
				l.Segments = append(l.Segments, strings.Join(seg, " "))
			}
			seg = nil
		}
		for _, p := range pts[i] {
			if p.at.Before(from) {
				continue
			}
			if math.IsNaN(p.v) || (!prev.IsZero() && p.at.Sub(prev) > gap) {
				flush()
			}
			if math.IsNaN(p.v) {
				continue
			}
			y := float64(chartTop) + plotH - p.v/ymax*plotH
			seg = append(seg, xOf(p.at, from, to)+","+fmt1(y))
			prev = p.at
			l.Last = fmt1(p.v)
		}
		flush()
		c.Lines = append(c.Lines, l)
	}
	c.Marks = marks
	return c
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// trendsDoc is /stats/trends/json.
type trendsDoc struct {
	From, To    string
	StepSeconds int
	Series      []trendSeriesDoc
	Marks       []trendMarkDoc
}

type trendSeriesDoc struct {
	Name   string
	Kind   string // "gauge" or "counter" (a count per minute)
	Points []trendPointDoc
}

type trendPointDoc struct {
	At    string
	Value *float64 // null: no reading that minute
}

type trendMarkDoc struct{ At, Text string }

// handleTrendsJSON serves the trend series of the last 24 hours (?window=1h for the last
// hour), one point a minute.
func (s *Server) handleTrendsJSON(w http.ResponseWriter, r *http.Request) {
	_, d, err := trendWindow(r, "24h")
	if err != nil {
		s.error(w, r, err)
		return
	}
	to := s.now().Truncate(time.Minute)
	from := to.Add(-d)
	doc := trendsDoc{From: formatTime(from), To: formatTime(to), StepSeconds: 60, Series: []trendSeriesDoc{}, Marks: []trendMarkDoc{}}
	if src := s.opts.Trends; src != nil {
		series, marks := src.Trends(from)
		for _, ts := range series {
			sd := trendSeriesDoc{Name: ts.Name, Kind: "gauge", Points: make([]trendPointDoc, 0, len(ts.Points))}
			if ts.Counter {
				sd.Kind = "counter"
			}
			for _, p := range ts.Points {
				pd := trendPointDoc{At: formatTime(p.At)}
				if !math.IsNaN(p.Value) {
					v := p.Value
					pd.Value = &v
				}
				sd.Points = append(sd.Points, pd)
			}
			doc.Series = append(doc.Series, sd)
		}
		for _, m := range marks {
			doc.Marks = append(doc.Marks, trendMarkDoc{At: formatTime(m.At), Text: m.Text})
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		s.error(w, r, err)
		return
	}
	writeDoc(w, "application/json", append(b, '\n'))
}
