package app

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/probe"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/web"
)

// pinger probes with the SIP user agent's OPTIONS client.
type pinger struct{ app *App }

func (p pinger) Options(ctx context.Context, uri, transport string) (int, string, time.Duration, error) {
	res, err := p.app.ua.Options(ctx, uri, transport)
	return res.Status, res.Reason, res.RTT, err
}

// probeEventRetention is how long a probe state change is kept. The /stats page shows the recent
// ones; a flapping upstream can write thousands a day, so older ones go.
const probeEventRetention = 90 * 24 * time.Hour

// probeHistory stores every change of a target's state, and with each one deletes the changes
// older than probeEventRetention, so the table stays bounded without a timer of its own (state
// changes are rare: the delete costs little beside the insert).
type probeHistory struct{ db *store.DB }

func (h probeHistory) AddProbeEvent(ctx context.Context, ev probe.Event) error {
	if err := h.db.AddProbeEvent(ctx, store.ProbeEvent{Target: ev.Target, OldState: ev.OldState.String(),
		NewState: ev.NewState.String(), LastError: ev.LastError, Code: ev.Code, RTT: ev.RTT, At: ev.At}); err != nil {
		return err
	}
	_, err := h.db.PruneProbeEvents(ctx, ev.At.Add(-probeEventRetention))
	return err
}

// startProbes starts the OPTIONS prober with the alerters of <Probe><Alerts>, and keeps its
// targets in step with the proxies the instances use.
func (a *App) startProbes(ctx context.Context) error {
	c := a.settings.Probe
	if !c.Enabled {
		return nil
	}
	var alerters []probe.Alerter
	if al := c.Alerts; al.Smtp.Host != "" && len(al.EmailTo) > 0 {
		policy := probe.TLSMandatory
		if !al.Smtp.StartTLS {
			policy = probe.TLSNone
		}
		m, err := probe.NewMailer(probe.MailOptions{Host: al.Smtp.Host, Port: al.Smtp.Port, TLS: policy,
			Username: al.Smtp.UserName, Password: al.Smtp.Password.Value(), From: al.Smtp.From, To: al.EmailTo,
			Node: a.settings.Server.Name})
		if err != nil {
			return fmt.Errorf("probe e-mail: %w", err)
		}
		alerters = append(alerters, m)
	}
	for _, w := range c.Alerts.Webhooks {
		h, err := probe.NewWebhook(probe.WebhookOptions{URL: w.URL, Secret: []byte(w.Secret.Value()), Node: a.settings.Server.Name})
		if err != nil {
			return fmt.Errorf("probe webhook: %w", err)
		}
		alerters = append(alerters, h)
	}
	p, err := probe.NewProber(probe.Options{
		Pinger: pinger{a}, History: probeHistory{a.db}, Alerters: alerters,
		Interval: c.Interval, Timeout: c.Timeout, DownAfter: c.DownAfter, UpAfter: c.UpAfter,
		MaxInFlight: c.MaxInFlight, MinAlertInterval: c.Alerts.MinInterval, Log: a.log.WithField("part", "probe"),
	})
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	a.prober = p
	if err := p.SetTargets(a.probeTargets()); err != nil {
		return fmt.Errorf("probe targets: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	if c.ProbeInstanceProxies {
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			t := time.NewTicker(max(c.Interval/2, time.Second))
			defer t.Stop()
			for {
				select {
				case <-a.bgCtx.Done():
					return
				case <-t.C:
					if err := p.SetTargets(a.probeTargets()); err != nil {
						a.log.WithField("err", err).Warn("updating probe targets failed")
					}
				}
			}
		}()
	}
	return nil
}

// probeTargets is the static targets of the settings plus every distinct proxy in use.
func (a *App) probeTargets() []probe.Target {
	c := a.settings.Probe
	var out []probe.Target
	for _, t := range c.Targets {
		out = append(out, probe.Target{URI: t.URI, Transport: string(t.Transport)})
	}
	if !c.ProbeInstanceProxies || a.mgr == nil {
		return out
	}
	// Apps name their proxies, so bound what they can make us probe: the maxProxyTargets
	// proxies used by the most instances.
	uses := map[string]int{}
	targets := map[string]probe.Target{}
	a.mgr.Range(0, 0, func(s instance.Snapshot) bool {
		if s.Phase.State == instance.Idle {
			return true
		}
		t := proxyTarget(s)
		k := t.Key()
		uses[k]++
		targets[k] = t
		return true
	})
	keys := make([]string, 0, len(uses))
	for k := range uses {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if uses[keys[i]] != uses[keys[j]] {
			return uses[keys[i]] > uses[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > maxProxyTargets {
		a.log.WithField("proxies", len(keys)).Debug("more distinct proxies in use than are probed; probing the most used")
		keys = keys[:maxProxyTargets]
	}
	for _, k := range keys {
		out = append(out, targets[k])
	}
	return out
}

// maxProxyTargets bounds the proxies of instances that are probed.
const maxProxyTargets = 2000

// proxyTarget is the OPTIONS target of an instance's proxy.
func proxyTarget(s instance.Snapshot) probe.Target {
	host := s.Proxy
	if host == "" {
		host = s.Domain
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	if s.Port != 0 {
		host += ":" + strconv.Itoa(s.Port)
	}
	scheme := "sip:"
	transport := s.Transport
	if transport == "" {
		transport = "udp"
	}
	return probe.Target{URI: scheme + host, Transport: transport}
}

// probeSource shows the prober's targets on the web pages.
type probeSource struct{ app *App }

func (p probeSource) Probes() []web.ProbeRow {
	sts := p.app.prober.Targets()
	rows := make([]web.ProbeRow, 0, len(sts))
	for _, st := range sts {
		r := web.ProbeRow{Target: st.Target, Transport: st.Transport, State: st.State.String(), Since: st.Since,
			LastCode: st.LastCode, LastReason: st.LastReason, LastRTT: float64(st.LastRTT) / float64(time.Millisecond),
			LastError: st.LastError, LastProbe: st.LastProbe, Failures: st.Failures, Successes: st.Successes}
		for i := len(st.Recent) - 1; i >= 0; i-- { // newest first
			ev := st.Recent[i]
			r.Recent = append(r.Recent, web.ProbeEvent{At: ev.At, OldState: ev.OldState.String(), NewState: ev.NewState.String(),
				Code: ev.Code, LastError: ev.LastError})
		}
		rows = append(rows, r)
	}
	return rows
}

// downProxies is the set of probe target keys that are down, refreshed at most once a second
// so that streaming 100,000 rows does not ask the prober 100,000 times.
func (a *App) downProxies() map[string]bool {
	if a.prober == nil {
		return nil
	}
	return a.down.get(func() (map[string]bool, error) {
		down := map[string]bool{}
		for _, st := range a.prober.Targets() {
			if st.State == probe.Down {
				down[st.Target] = true
			}
		}
		return down, nil
	})
}
