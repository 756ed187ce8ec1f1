package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipis/sipis/internal/hook"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/web"
)

// startHook builds the PBX-hook mode (<PbxHook Enabled="Yes">): same store, same push
// dispatcher, same counters as the relay.
func (a *App) startHook() error {
	s := a.settings.PbxHook
	if !s.Enabled {
		return nil
	}
	roots, err := a.rootCAs()
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if roots != nil {
		tr.TLSClientConfig.RootCAs = roots
	}
	h, err := hook.New(hook.Options{
		Store: a.db, Push: a.push.dispatcher,
		Verifier: &hook.URLVerifier{URL: s.VerifierURL, CacheFor: s.VerifierCache,
			Client: &http.Client{Transport: tr, Timeout: 10 * time.Second}},
		Prefix: s.Prefix, Wait: s.Wait, ResendInterval: s.ResendInterval, PBXNetworks: s.PbxNetworks,
		Secret: s.Secret.Value(), PushWorkers: s.PushWorkers, MaxWaits: s.MaxWaits, Retention: s.Retention,
		Logger: a.log.WithField("part", "pbxhook"),
	})
	if err != nil {
		return fmt.Errorf("pbx hook: %w", err)
	}
	a.hook = h
	a.reg.MustRegister(hookCollector{h})
	return nil
}

// hookRoutes mounts the PBX-hook API, or nothing when it is off.
func (a *App) hookRoutes() func(*mux.Router) {
	if a.hook == nil {
		return nil
	}
	return a.hook.Routes
}

// addHookOutcomes counts the PBX-hook calls in the same outcomes as relayed calls.
func (a *App) addHookOutcomes(c *web.CallOutcomes) {
	if a.hook == nil {
		return
	}
	o := a.hook.Outcomes()
	c.Total += o.Total
	c.Accepted += o.Accepted
	c.Missed += o.Missed
	c.Rejected += o.Rejected
	if len(o.ByReason) > 0 && c.RejectedByReason == nil {
		c.RejectedByReason = web.Counts{}
	}
	for k, v := range o.ByReason {
		c.RejectedByReason[k] += v
	}
}

// hookDevices is the number of PBX-hook devices of an account, from counts refreshed at most
// once a second. An instance's PBX-hook devices are those of the sip_user_id equal to its
// account's user name.
func (a *App) hookDevices(user string) int {
	if a.hook == nil || user == "" {
		return 0
	}
	counts := a.hookCounts.get(func() (map[string]int, error) {
		counts, err := a.db.HookDeviceCounts(context.Background())
		if err != nil {
			a.log.WithField("err", err).Warn("counting PBX-hook devices failed")
		}
		return counts, err
	})
	return counts[user]
}

// hookSettings lists what the apps registered in PBX-hook mode for account user, for
// /settings?s= (tokens shortened, as everywhere on the pages).
func (a *App) hookSettings(ctx context.Context, user string) ([]web.Field, error) {
	if a.hook == nil || user == "" {
		return nil, nil
	}
	devs, err := a.db.HookDevices(ctx, user)
	if err != nil {
		return nil, err
	}
	var out []web.Field
	for i, d := range devs {
		p := "pbxhook.device." + strconv.Itoa(i+1) + "."
		f := func(n, v string) { out = append(out, web.Field{Name: p + n, Value: v}) }
		f("sip_user_id", d.SipUserID)
		f("platform", d.Platform)
		f("app", d.App)
		f("token", push.ShortToken(d.Token))
		f("sandbox", strconv.FormatBool(d.Sandbox))
		f("name", d.Name)
		f("os_version", d.OSVersion)
		f("client_version", d.ClientVersion)
		f("remote_logging_id", d.RemoteLoggingID)
		f("token_invalid", strconv.FormatBool(d.TokenInvalid))
		f("created", t3339(d.Created))
		f("last_seen", t3339(d.LastSeen))
	}
	return out, nil
}

// appSettingsWithHook is AppSettings plus the PBX-hook devices of the instance's account. A
// selector that names no instance but is the sip_user_id of PBX-hook devices shows those.
func (b *backend) appSettingsWithHook(ctx context.Context, sel string, fields []web.Field, err error) ([]web.Field, error) {
	a := b.app
	if a.hook == nil {
		return fields, err
	}
	user := sel
	if err == nil {
		s, ok := a.mgr.Snapshot(sel)
		if !ok {
			return fields, nil
		}
		user = s.User
	} else if !errors.Is(err, web.ErrNotFound) {
		return nil, err
	}
	hf, herr := a.hookSettings(ctx, user)
	if herr != nil {
		return nil, herr
	}
	if err != nil && len(hf) == 0 {
		return nil, err
	}
	return append(fields, hf...), nil
}

// hookStats is the PBX-hook section of /stats: its own outcomes, the calls held now and the
// apps' call-setup metrics.
func (a *App) hookStats(ctx context.Context) []web.DebugSection {
	if a.hook == nil {
		return nil
	}
	o := a.hook.Outcomes()
	f := func(n string, v int) web.Field { return web.Field{Name: n, Value: strconv.Itoa(v)} }
	calls := web.DebugSection{Title: "PBX-Hook Calls", Fields: []web.Field{
		f("Waiting now", a.hook.Waiting()), f("Total", o.Total), f("Accepted (ACK)", o.Accepted),
		f("Missed (wait ran out)", o.Missed), f("Rejected (NAK)", o.Rejected),
	}}
	for _, k := range sortedKeys(o.ByReason) {
		calls.Fields = append(calls.Fields, f("  "+k, o.ByReason[k]))
	}
	out := []web.DebugSection{calls}
	m, err := a.db.HookMetricSummary(ctx)
	if err != nil {
		a.log.WithField("err", err).Warn("summarising PBX-hook metrics failed")
		return out
	}
	ms := web.DebugSection{Title: "App Call-Setup Metrics", Fields: []web.Field{f("Reports", m.Count),
		{Name: "Median time to first response", Value: m.FirstResponseMedian.String()}}}
	for _, g := range []struct {
		name string
		m    map[string]int
	}{{"Result", m.BySetupResult}, {"Failure reason", m.ByFailedReason}, {"Network", m.ByNetwork}} {
		for _, k := range sortedKeys(g.m) {
			ms.Fields = append(ms.Fields, f(g.name+": "+k, g.m[k]))
		}
	}
	return append(out, ms)
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hookCollector exports the PBX-hook mode's own series beside the shared call outcomes.
type hookCollector struct{ h *hook.Hook }

var (
	hookWaitingDesc = prometheus.NewDesc("sipis_pbxhook_waiting", "PBX incoming-call requests held right now.", nil, nil)
	hookCallsDesc   = prometheus.NewDesc("sipis_pbxhook_calls_total",
		"PBX-hook incoming calls since start by outcome (accepted = ACK, missed, rejected); also counted in sipis_incoming_calls_total.",
		[]string{"outcome"}, nil)
)

// Describe implements prometheus.Collector.
func (c hookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hookWaitingDesc
	ch <- hookCallsDesc
}

// Collect implements prometheus.Collector.
func (c hookCollector) Collect(ch chan<- prometheus.Metric) {
	o := c.h.Outcomes()
	ch <- prometheus.MustNewConstMetric(hookWaitingDesc, prometheus.GaugeValue, float64(c.h.Waiting()))
	for k, v := range map[string]int{store.OutcomeAccepted: o.Accepted, store.OutcomeMissed: o.Missed, store.OutcomeRejected: o.Rejected} {
		ch <- prometheus.MustNewConstMetric(hookCallsDesc, prometheus.CounterValue, float64(v), k)
	}
}

// t3339 formats a time for /settings: RFC 3339 in UTC, "-" when unset.
func t3339(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
