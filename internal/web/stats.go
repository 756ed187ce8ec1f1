package web

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/sipis/sipis/internal/mad"
)

// StatsSource is what /stats, the instance and summary documents (JSON, XML) and
// the Prometheus collector read: the server, its instances and the outcomes
// counted since start.
type StatsSource interface {
	// Server describes the running server.
	Server() ServerInfo
	// InstanceCounts counts the instances, in total and by state.
	InstanceCounts(ctx context.Context) (InstanceCounts, error)
	// Instances calls fn for each instance matching q, in ascending
	// selector order, and stops with fn's error if fn fails. fn may block
	// on a slow HTTP client (the JSON/XML documents stream), so do not hold
	// locks the rest of sipis needs while calling it: iterate a snapshot
	// or a read transaction.
	Instances(ctx context.Context, q InstanceQuery, fn func(InstanceRow) error) error
	// TrafficRates returns the average SIP traffic in bit/s of every
	// instance (in any order), each computed as BitRate of the instance's
	// byte counters, for the median/MAD colouring.
	TrafficRates(ctx context.Context) ([]float64, error)
	// CallOutcomes counts incoming calls from the stored call records (they survive restarts).
	CallOutcomes() CallOutcomes
	// PushTestOutcomes counts test pushes since start: platform (e.g.
	// "APNs", "FCM", "Webhook") -> outcome -> count.
	PushTestOutcomes() map[string]Counts
}

func (s *Server) registerStatsRoutes(r *mux.Router) {
	r.HandleFunc("/stats", s.handleStats).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/instances/json", s.handleInstancesJSON).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/instances/xml", s.handleInstancesXML).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/summary/json", s.handleSummaryJSON).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/summary/xml", s.handleSummaryXML).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/stats/trends/json", s.handleTrendsJSON).Methods(http.MethodGet, http.MethodHead)
}

func classify(rate, median, spread float64) string {
	return mad.Classify(rate, median, spread).String()
}

// traffic is the median/MAD of every instance's bit rate.
type traffic struct {
	Median, MAD, Spread float64
	// Fallback is true when the MAD is 0 and the mean absolute deviation
	// is used to colour instead (see package mad).
	Fallback bool
}

func (s *Server) traffic(ctx context.Context) (traffic, error) {
	rates, err := s.stats.TrafficRates(ctx)
	if err != nil {
		return traffic{}, err
	}
	med, m := mad.MedianMAD(rates)
	sp := mad.Spread(rates, med, m)
	return traffic{Median: med, MAD: m, Spread: sp, Fallback: m == 0 && sp > 0}, nil
}

// serverView is the Server section of /about and /stats.
type serverView struct {
	ServerInfo
	Uptime string
}

func (s *Server) serverView() serverView {
	info := s.stats.Server()
	return serverView{ServerInfo: info, Uptime: formatUptime(s.uptime(info))}
}

// uptime is the time since info.Started; 0 when that is unknown.
func (s *Server) uptime(info ServerInfo) time.Duration {
	if info.Started.IsZero() {
		return 0
	}
	return max(0, s.now().Sub(info.Started))
}

type rowView struct {
	InstanceRow
	StateText    string
	Age          int64
	TrafficBytes int64
	Rate         float64
	Class        string
}

type statsPage struct {
	pageBase
	Info     serverView
	Calls    CallOutcomes
	Reasons  []namedCount
	Push     pushTestOutcomes
	Problems []namedCount // push configuration errors, when the backend counts them
	Counts   InstanceCounts
	Traffic  traffic
	Selector string
	Rows     []rowView
	Pager    pager
	Probes   []ProbeRow
	ProbesOn bool
	// Extra are Options.StatsSections.
	Extra  []DebugSection
	Trends *trendsView // nil: no trend source
}

func stateText(r InstanceRow) string {
	t := r.State + " / " + r.Status
	if r.Off {
		t += " (off)"
	}
	return t
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	sel, err := querySelector(r, false)
	if err != nil {
		s.error(w, r, err)
		return
	}
	pp, err := s.queryPage(r)
	if err != nil {
		s.error(w, r, err)
		return
	}
	window, span, err := trendWindow(r, "1h")
	if err != nil {
		s.error(w, r, err)
		return
	}
	ctx := r.Context()
	admin := s.optionalAdmin(r)
	counts, err := s.stats.InstanceCounts(ctx)
	if err != nil {
		s.error(w, r, err)
		return
	}
	tr, err := s.traffic(ctx)
	if err != nil {
		s.error(w, r, err)
		return
	}
	q := InstanceQuery{Selector: sel}
	if sel == "" {
		q.Offset, q.Limit = pp.offset(), pp.N
	}
	now := s.now()
	rows := make([]rowView, 0, min(pp.N, 1024))
	err = s.stats.Instances(ctx, q, func(row InstanceRow) error {
		rate := row.BitRate()
		rows = append(rows, rowView{
			InstanceRow:  row,
			StateText:    stateText(row),
			Age:          ageIntervals(row.Created, now),
			TrafficBytes: row.BytesIn + row.BytesOut,
			Rate:         rate,
			Class:        classify(rate, tr.Median, tr.Spread),
		})
		return nil
	})
	if err != nil {
		s.error(w, r, err)
		return
	}
	if sel != "" && len(rows) == 0 {
		s.error(w, r, notFoundSelector(sel))
		return
	}
	calls := s.stats.CallOutcomes()
	p := &statsPage{
		pageBase: s.base(r, "Statistics"),
		Info:     s.serverView(),
		Calls:    calls,
		Reasons:  calls.RejectedByReason.sorted(),
		Push:     newPushTestOutcomes(s.stats.PushTestOutcomes()),
		Counts:   counts,
		Traffic:  tr,
		Selector: sel,
		Rows:     rows,
		Pager:    newPager("/stats", pp, counts.Count),
	}
	if pr, ok := s.stats.(PushProblemReporter); ok {
		p.Problems = pr.PushConfigErrors().sorted()
	}
	p.Probes, p.ProbesOn = s.probeRows()
	if s.opts.StatsSections != nil {
		p.Extra = s.opts.StatsSections(ctx)
	}
	p.Trends = buildTrends(s.opts.Trends, window, span, now)
	p.setAdmin(s, admin)
	s.render(w, r, http.StatusOK, "stats.html", p)
}

func (s *Server) summary(ctx context.Context) (*summaryDoc, error) {
	counts, err := s.stats.InstanceCounts(ctx)
	if err != nil {
		return nil, err
	}
	info := s.stats.Server()
	calls := s.stats.CallOutcomes()
	if calls.RejectedByReason == nil {
		calls.RejectedByReason = Counts{}
	}
	return &summaryDoc{
		Server: summaryServer{
			Name:                 info.Name,
			VersionString:        info.VersionString,
			VersionNumber:        info.VersionNumber,
			Build:                info.Build,
			UptimeInSeconds:      int64(s.uptime(info) / time.Second),
			MessageLoopQueueSize: info.MessageLoopQueueSize,
			Started:              formatTime(info.Started),
		},
		Instance: summaryInstance{
			Count: counts.Count,
			CountInState: countInState{
				Idle:         counts.Idle,
				Registered:   counts.Registered,
				Registering:  counts.Registering,
				Unauthorized: counts.Unauthorized,
				Error:        counts.Error,
			},
		},
		CallOutcomes:     calls,
		PushTestOutcomes: newPushTestOutcomes(s.stats.PushTestOutcomes()),
		Cluster:          s.clusterInfo(ctx),
	}, nil
}

func (s *Server) handleSummaryJSON(w http.ResponseWriter, r *http.Request) {
	doc, err := s.summary(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		s.error(w, r, err)
		return
	}
	writeDoc(w, "application/json", append(b, '\n'))
}

func (s *Server) handleSummaryXML(w http.ResponseWriter, r *http.Request) {
	doc, err := s.summary(r.Context())
	if err != nil {
		s.error(w, r, err)
		return
	}
	b, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		s.error(w, r, err)
		return
	}
	writeDoc(w, "application/xml", append(append([]byte(xml.Header), b...), '\n'))
}

func writeDoc(w http.ResponseWriter, ctype string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", ctype+"; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}

// streamInstances writes the instance document: head, one record per
// instance, tail. Rows are streamed from the backend, never held all at
// once. A backend failure before the first byte is a clean error; after it
// the connection is aborted, so a client never takes a cut document for a
// whole one.
func (s *Server) streamInstances(w http.ResponseWriter, r *http.Request, ctype string,
	head func([]byte, traffic) []byte, rec func(rowEncoder, []byte, InstanceRow, bool) []byte,
	tail func([]byte, int) []byte) {
	sel, err := querySelector(r, false)
	if err != nil {
		s.error(w, r, err)
		return
	}
	ctx := r.Context()
	tr, err := s.traffic(ctx)
	if err != nil {
		s.error(w, r, err)
		return
	}
	enc := rowEncoder{now: s.now(), median: tr.Median, spread: tr.Spread}
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	buf := make([]byte, 0, 1024)
	n := 0
	started, clientGone := false, false
	start := func() {
		started = true
		h := w.Header()
		h.Set("Content-Type", ctype+"; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = bw.Write(head(buf[:0], tr))
	}
	if sel == "" {
		start() // an empty document is still a document
	}
	err = s.stats.Instances(ctx, InstanceQuery{Selector: sel}, func(row InstanceRow) error {
		if !started {
			start()
		}
		buf = rec(enc, buf[:0], row, n == 0)
		n++
		if _, err := bw.Write(buf); err != nil {
			clientGone = true
			return err
		}
		return nil
	})
	if err == nil && !started {
		err = notFoundSelector(sel)
	}
	if err != nil {
		if cw.n == 0 {
			// Nothing went out yet: drop the buffer, answer cleanly.
			for _, k := range []string{"Content-Type", "Cache-Control"} {
				w.Header().Del(k)
			}
			s.error(w, r, err)
			return
		}
		if clientGone || ctx.Err() != nil {
			s.log.WithError(err).Debug("instance stream: client went away")
			return
		}
		s.log.WithError(err).WithField("path", r.URL.Path).Error("instance stream broken off")
		panic(http.ErrAbortHandler)
	}
	_, _ = bw.Write(tail(buf[:0], n))
	if err := bw.Flush(); err != nil {
		s.log.WithError(err).Debug("instance stream: client went away")
	}
}

func (s *Server) handleInstancesJSON(w http.ResponseWriter, r *http.Request) {
	s.streamInstances(w, r, "application/json",
		func(b []byte, tr traffic) []byte {
			b = append(b, `{"Traffic":{"Median":`...)
			b = appendFloat(b, tr.Median)
			b = append(b, `,"MAD":`...)
			b = appendFloat(b, tr.MAD)
			return append(b, "},\n\"Instances\":["...)
		},
		func(e rowEncoder, b []byte, row InstanceRow, first bool) []byte {
			if !first {
				b = append(b, ',')
			}
			b = append(b, '\n')
			return e.appendJSON(b, row)
		},
		func(b []byte, n int) []byte {
			b = append(b, "\n],\n\"Count\":"...)
			b = appendInt(b, n)
			return append(b, "}\n"...)
		})
}

func (s *Server) handleInstancesXML(w http.ResponseWriter, r *http.Request) {
	s.streamInstances(w, r, "application/xml",
		func(b []byte, tr traffic) []byte {
			b = append(b, xml.Header...)
			b = append(b, "<InstanceStats><Traffic><Median>"...)
			b = appendFloat(b, tr.Median)
			b = append(b, "</Median><MAD>"...)
			b = appendFloat(b, tr.MAD)
			return append(b, "</MAD></Traffic>\n<Instances>"...)
		},
		func(e rowEncoder, b []byte, row InstanceRow, _ bool) []byte {
			b = append(b, '\n')
			return e.appendXML(b, row)
		},
		func(b []byte, n int) []byte {
			b = append(b, "\n</Instances>\n<Count>"...)
			b = appendInt(b, n)
			return append(b, "</Count></InstanceStats>\n"...)
		})
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func appendInt(b []byte, n int) []byte {
	return strconv.AppendInt(b, int64(n), 10)
}

func (s *Server) clusterInfo(ctx context.Context) *ClusterInfo {
	if s.opts.Cluster == nil {
		return nil
	}
	return s.opts.Cluster(ctx)
}
