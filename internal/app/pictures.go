package app

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/ladder"
	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/trend"
	"github.com/sipis/sipis/internal/web"
)

// pictures feeds the trend charts of /stats and the SIP ladders of /debug: it samples the
// server's counters every minute into a trend.Recorder (the last hour also in the store), and
// records REGISTER cycles, calls, MESSAGEs and pushes into a ladder.Book, through wrappers
// around the Registrar and the Pusher and the call manager's Recorder hook.
type pictures struct {
	app    *App
	trends atomic.Pointer[trend.Recorder] // a pointer so that tests can put in a day of history
	book   *ladder.Book
	now    func() time.Time

	mu     sync.Mutex
	pushes map[string]int // "APNs sent", "FCM refused BadDeviceToken" ... since start
	probes map[string]probe.State
	// callBase is the call outcomes (accepted, missed, rejected) at the first sample: they are
	// counted from the stored records and so hold the calls before this start, which the trend
	// (a counter since start, restored for the last hour from its own samples) already has.
	callBase *[3]int
}

func (a *App) newPictures() *pictures {
	p := &pictures{app: a, book: ladder.New(nil), now: time.Now, pushes: map[string]int{}, probes: map[string]probe.State{}}
	p.trends.Store(trend.New())
	return p
}

// start loads the last hour of trends from the store and samples once a minute until ctx ends.
func (p *pictures) start(ctx context.Context) {
	a := p.app
	if err := p.trends.Load().Load(ctx, a.db, p.now()); err != nil {
		a.log.WithField("err", err).Warn("loading the trend samples failed")
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		p.sample(ctx)
		for {
			now := p.now()
			wait := now.Truncate(time.Minute).Add(time.Minute).Sub(now) + time.Second
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
				p.sample(ctx)
			}
		}
	}()
}

// readings are the values of every series now.
func (p *pictures) readings(ctx context.Context) []trend.Reading {
	a := p.app
	var rs []trend.Reading
	g := func(name string, v int) {
		rs = append(rs, trend.Reading{Name: name, Kind: trend.Gauge, Value: float64(v)})
	}
	c := func(name string, v int64, w trend.Watch, label string) {
		rs = append(rs, trend.Reading{Name: name, Label: label, Kind: trend.Counter, Watch: w, Value: float64(v)})
	}
	if counts, err := (&backend{app: a}).InstanceCounts(ctx); err == nil {
		g("instances.idle", counts.Idle)
		g("instances.registering", counts.Registering)
		g("instances.registered", counts.Registered)
		g("instances.unauthorized", counts.Unauthorized)
		g("instances.error", counts.Error)
	}
	st := a.mgr.Stats()
	c("register.cycles", st.Registers.Load(), trend.WatchNone, "")
	c("register.failures", st.RegisterFailures.Load(), trend.WatchBurst, "REGISTER failures")
	if a.calls != nil {
		_, acc, missed, rej, _ := a.calls.Outcomes()
		p.mu.Lock()
		if p.callBase == nil {
			p.callBase = &[3]int{acc, missed, rej}
		}
		base := *p.callBase
		p.mu.Unlock()
		c("calls.accepted", int64(acc-base[0]), trend.WatchNone, "")
		c("calls.missed", int64(missed-base[1]), trend.WatchNone, "")
		c("calls.rejected", int64(rej-base[2]), trend.WatchBurst, "rejected calls")
	}
	p.mu.Lock()
	names := make([]string, 0, len(p.pushes))
	for k := range p.pushes {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		w := trend.WatchNone
		if strings.Contains(k, " refused") {
			w = trend.WatchBurst
		}
		c("push."+k, int64(p.pushes[k]), w, "pushes "+k)
	}
	p.mu.Unlock()
	if a.prober != nil {
		up, down := 0, 0
		for _, s := range a.prober.Targets() {
			switch s.State {
			case probe.Up:
				up++
			case probe.Down:
				down++
			}
		}
		g("probes.up", up)
		rs = append(rs, trend.Reading{Name: "probes.down", Label: "probes down", Kind: trend.Gauge, Watch: trend.WatchChange, Value: float64(down)})
	}
	return rs
}

// sample adds this minute's readings, marks the probe targets that changed state, and saves.
func (p *pictures) sample(ctx context.Context) {
	now := p.now()
	p.trends.Load().Add(now, p.readings(ctx))
	if a := p.app; a.prober != nil {
		for _, s := range a.prober.Targets() {
			p.mu.Lock()
			old, seen := p.probes[s.Target]
			p.probes[s.Target] = s.State
			p.mu.Unlock()
			if seen && old != s.State && (s.State == probe.Down || old == probe.Down) {
				p.trends.Load().Mark(now, "probe "+s.Target+" "+strings.ToLower(s.State.String()))
			}
		}
	}
	if err := p.trends.Load().Save(ctx, p.app.db); err != nil && ctx.Err() == nil {
		p.app.log.WithField("err", err).Warn("saving the trend samples failed")
	}
}

// trendSource shows the Recorder on /stats.
type trendSource struct{ p *pictures }

func (t trendSource) Trends(since time.Time) ([]web.TrendSeries, []web.TrendMark) {
	ss, ms := t.p.trends.Load().Since(since)
	out := make([]web.TrendSeries, len(ss))
	for i, s := range ss {
		ts := web.TrendSeries{Name: s.Name, Counter: s.Kind == trend.Counter, Points: make([]web.TrendPoint, len(s.Points))}
		for j, pt := range s.Points {
			ts.Points[j] = web.TrendPoint{At: pt.At, Value: pt.Value}
		}
		out[i] = ts
	}
	marks := make([]web.TrendMark, len(ms))
	for i, m := range ms {
		marks[i] = web.TrendMark{At: m.At, Text: m.Text}
	}
	return out, marks
}

// registrar records every REGISTER cycle in the ladder.
type registrar struct {
	next interface {
		Register(ctx context.Context, b sipua.Binding) (sipua.Result, error)
	}
	p *pictures
}

func (r registrar) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	start := r.p.now()
	res, err := r.next.Register(ctx, b)
	end := r.p.now()
	req := fmt.Sprintf("REGISTER expires %d", b.Expires)
	if b.Expires == 0 {
		req = "REGISTER expires 0 (unREGISTER)"
	}
	msgs := []ladder.Msg{{At: start, Timed: true, From: ladder.Sipis, To: ladder.Proxy, Label: "REGISTER", Note: strings.TrimPrefix(req, "REGISTER ")}}
	if res.Challenged {
		// The challenge and the second request happen in between; sipua does not time them.
		msgs = append(msgs,
			ladder.Msg{At: start, From: ladder.Proxy, To: ladder.Sipis, Label: "401 Unauthorized", Note: "digest challenge"},
			ladder.Msg{At: start, From: ladder.Sipis, To: ladder.Proxy, Label: "REGISTER", Note: "Authorization: Not Empty"})
	}
	msgs[len(msgs)-1].Body = res.Request
	outcome := ""
	switch {
	case err != nil:
		outcome = "no answer: " + oneLine(err.Error())
		msgs = append(msgs, ladder.Msg{At: end, Timed: true, From: ladder.Sipis, To: ladder.Proxy, Label: "(no final response)",
			Note: oneLine(err.Error())})
	default:
		note := ""
		if res.Status >= 200 && res.Status < 300 {
			note = "expires " + strconv.Itoa(res.Expires)
			outcome = "registered, binding expires in " + strconv.Itoa(res.Expires) + " s"
		} else {
			outcome = "refused: " + strconv.Itoa(res.Status) + " " + res.Reason
			if res.MinExpires > 0 {
				note = "Min-Expires " + strconv.Itoa(res.MinExpires)
			}
			if res.RetryAfter > 0 {
				note = "Retry-After " + res.RetryAfter.String()
			}
		}
		msgs = append(msgs, ladder.Msg{At: end, Timed: true, From: ladder.Proxy, To: ladder.Sipis,
			Label: strconv.Itoa(res.Status) + " " + res.Reason, Note: note, Body: res.Response})
	}
	failed := err != nil || res.Status < 200 || res.Status >= 300
	if b.Expires == 0 { // an unREGISTER's answer says nothing about the instance's health
		failed = false
	}
	r.p.book.Register(b.Selector, start, msgs, outcome, failed)
	return res, err
}

// callRecorder puts the requests to an instance and sipis's responses in the ladder.
type callRecorder struct{ p *pictures }

func (c callRecorder) Request(sel, callID, method, source string, text func() string) {
	m := ladder.Msg{At: c.p.now(), Timed: true, From: ladder.Proxy, To: ladder.Sipis, Label: method, Note: "from " + source}
	if c.p.book.Logging(sel) {
		m.Body = text()
	}
	c.p.book.Message(sel, callID, method, m)
}

func (c callRecorder) Response(sel, callID, method string, code int, reason string, hs []sipua.Header) {
	m := ladder.Msg{At: c.p.now(), Timed: true, From: ladder.Sipis, To: ladder.Proxy, Label: strconv.Itoa(code) + " " + reason}
	for _, h := range hs {
		if strings.EqualFold(h.Name, "X-Sipis-Push-Status") || strings.EqualFold(h.Name, "X-Sipis-Reason") {
			m.Note = h.Value
		}
	}
	if method != "INVITE" && method != "MESSAGE" {
		m.Label += " (" + method + ")"
	}
	c.p.book.Message(sel, callID, "", m)
	if code >= 200 && (method == "INVITE" || method == "MESSAGE") {
		c.p.book.End(sel, callID, strconv.Itoa(code)+" "+reason)
	}
}

func (c callRecorder) DeviceMessage(sel, callID, device string, toDevice bool, label, note string) {
	if device == "" {
		device = "?"
	}
	m := ladder.Msg{At: c.p.now(), Timed: true, From: ladder.Device(device), To: ladder.Sipis, Label: label, Note: note}
	if toDevice {
		m.From, m.To = m.To, m.From
	}
	c.p.book.Message(sel, callID, "", m)
}

func (c callRecorder) Relayed(sel, callID string, code int, reason string) {
	c.p.book.Message(sel, callID, "", ladder.Msg{At: c.p.now(), Timed: true, From: ladder.Sipis, To: ladder.Proxy,
		Label: strconv.Itoa(code) + " " + reason, Note: "relayed"})
	if code >= 200 {
		c.p.book.End(sel, callID, strconv.Itoa(code)+" "+reason+" (from a device)")
	}
}

var (
	_ call.Recorder       = callRecorder{}
	_ call.DeviceRecorder = callRecorder{}
)

// pusher counts every push for the trends and records it in the ladder.
type pusher struct {
	next call.Pusher
	p    *pictures
}

func (w pusher) Send(ctx context.Context, n push.Notification) (push.Result, error) {
	start := w.p.now()
	res, err := w.next.Send(ctx, n)
	w.p.recordPush(n, start, res, err)
	return res, err
}

// recordPush counts a push by platform and answer and draws it in the ladder.
func (p *pictures) recordPush(n push.Notification, start time.Time, res push.Result, err error) {
	platform := platformName(n.Device.Platform)
	key := platform + " sent"
	if err != nil {
		why := res.Reason
		if why == "" && res.Status != 0 {
			why = strconv.Itoa(res.Status)
		}
		if why == "" {
			why = "no answer"
		}
		key = platform + " refused " + why
	}
	p.mu.Lock()
	if _, ok := p.pushes[key]; ok || len(p.pushes) < 24 { // bounded: reasons are the providers' words
		p.pushes[key]++
	}
	p.mu.Unlock()
	kind := ladder.PushAlone
	switch n.Kind {
	case push.KindCall, push.KindMissedCall, push.KindAnsweredElsewhere:
		kind = ladder.PushForCall
	case push.KindMessage:
		kind = ladder.PushForMessage
	}
	label := fmt.Sprintf("%s push to %s (%s", n.Kind, n.Device.ID, platform)
	if t := pushTopic(n); t != "" {
		label += ", topic " + t
	}
	p.book.Push(n.Selector, n.PairingID, kind, start, p.now(), label+")", pushAnswer(res, err))
}

// pushTopic is where the push goes at its provider: the APNs topic (the app id, with ".voip"
// for call pushes, see docs/app-protocol.md "Push kinds and payloads"), or the app id of an FCM device.
func pushTopic(n push.Notification) string {
	switch n.Device.Platform {
	case push.PlatformAPNs:
		return push.APNsTopic(n)
	case push.PlatformFCM:
		return n.Device.AppID
	}
	return ""
}

// pushAnswer is the push service's answer in a few words: status, id or reason.
func pushAnswer(res push.Result, err error) string {
	var parts []string
	if res.Status != 0 {
		parts = append(parts, strconv.Itoa(res.Status))
	}
	switch {
	case err == nil:
		parts = append(parts, "accepted")
		if res.ID != "" {
			parts = append(parts, "id "+res.ID)
		}
	case res.Reason != "":
		parts = append(parts, res.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		parts = append(parts, "no answer in time")
	default:
		parts = append(parts, oneLine(err.Error()))
	}
	if res.Attempts > 1 {
		parts = append(parts, "after "+strconv.Itoa(res.Attempts)+" attempts")
	}
	return strings.Join(parts, " ")
}

// ladderOf returns the ladder of sel for /debug and keeps recording it for a while.
func (p *pictures) ladderOf(sel string, devices []string) *web.Ladder {
	p.book.Watch(sel)
	l := p.book.Get(sel)
	out := &web.Ladder{Devices: devices, Bodies: l.Logging}
	conv := func(in []ladder.Exchange) []web.LadderExchange {
		res := make([]web.LadderExchange, len(in))
		for i, e := range in {
			we := web.LadderExchange{Kind: e.Kind, Key: e.Key, Start: e.Start, Outcome: e.Outcome, Msgs: make([]web.LadderMsg, len(e.Msgs))}
			for j, m := range e.Msgs {
				we.Msgs[j] = web.LadderMsg{At: m.At, Timed: m.Timed, From: m.From, To: m.To, Label: m.Label, Note: m.Note, Body: m.Body}
			}
			res[i] = we
		}
		return res
	}
	out.Transactions, out.Calls = conv(l.Transactions), conv(l.Calls)
	return out
}
