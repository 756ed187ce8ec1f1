package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/version"
	"github.com/sipis/sipis/internal/web"
)

// backend adapts the instance manager and the store to what the web server needs.
type backend struct{ app *App }

func (b *backend) Server() web.ServerInfo {
	a := b.app
	return web.ServerInfo{
		Name: a.settings.Server.Name, VersionString: "sipis " + version.Version, VersionNumber: version.Number(),
		Build: version.Build + " " + version.Date, Started: a.started, MessageLoopQueueSize: a.mgr.QueueLen(),
	}
}

func (b *backend) InstanceCounts(ctx context.Context) (web.InstanceCounts, error) {
	byPhase, _ := b.app.mgr.Counts()
	var c web.InstanceCounts
	for p, n := range byPhase {
		c.Count += n
		switch {
		case p.State == instance.Idle:
			c.Idle += n
		case p.State == instance.Registering:
			c.Registering += n
		case p.Status == instance.Registered:
			c.Registered += n
		case p.Status == instance.Unauthorized:
			c.Unauthorized += n
		default:
			c.Error += n
		}
	}
	return c, nil
}

func (b *backend) row(s instance.Snapshot, down map[string]bool) web.InstanceRow {
	r := row(s)
	r.Calls = b.app.calls.ActiveCalls(s.Selector)
	r.Messages = b.app.waitingMessages(s.Selector)
	r.Devices += b.app.hookDevices(s.User)
	if len(down) > 0 && s.Phase.State != instance.Idle {
		r.ProxyDown = down[proxyTarget(s).Key()]
	}
	return r
}

func row(s instance.Snapshot) web.InstanceRow {
	return web.InstanceRow{
		Selector: s.Selector, UserName: s.User, Domain: s.Domain, Proxy: s.Proxy, Port: s.Port,
		State: s.Phase.State.String(), Status: s.Phase.Status.String(), Created: s.Created,
		Devices: s.Devices, Calls: s.Calls, Messages: s.Messages, BytesIn: s.BytesIn, BytesOut: s.BytesOut,
		FirstTraffic: s.FirstTraffic, LastTraffic: s.LastTraffic, Off: s.Off, LastError: s.LastError,
		AsOf: time.Now(),
	}
}

func (b *backend) Instances(ctx context.Context, q web.InstanceQuery, fn func(web.InstanceRow) error) error {
	m := b.app.mgr
	down := b.app.downProxies()
	if q.Selector != "" {
		s, ok := m.Snapshot(q.Selector)
		if !ok || q.Offset > 0 {
			return nil
		}
		return fn(b.row(s, down))
	}
	var err error
	m.Range(q.Offset, q.Limit, func(s instance.Snapshot) bool {
		if err = ctx.Err(); err != nil {
			return false
		}
		err = fn(b.row(s, down))
		return err == nil
	})
	return err
}

func (b *backend) TrafficRates(ctx context.Context) ([]float64, error) {
	m := b.app.mgr
	rates := make([]float64, 0, m.Len())
	m.Range(0, 0, func(s instance.Snapshot) bool {
		rates = append(rates, row(s).BitRate())
		return true
	})
	return rates, ctx.Err()
}

func notFound(sel string) error { return fmt.Errorf("selector %s: %w", sel, web.ErrNotFound) }

// Debug implements web.DebugSource: the instance's data, with the password masked and
// the push tokens shortened; web titles and formats it.
func (b *backend) Debug(ctx context.Context, sel string) (web.InstanceDebug, error) {
	s, ok := b.app.mgr.Debug(sel)
	if !ok {
		return web.InstanceDebug{}, notFound(sel)
	}
	pw := "Empty"
	if s.PasswordSet {
		pw = "Not Empty"
	}
	info := web.InstanceDebug{
		Selector: sel, Phase: s.Phase.String(), Off: s.Off, LastError: s.LastError, Failures: s.Failures,
		Created: s.Created, LastActivity: s.LastActivity, Logging: s.Logging,
		User: s.User, AuthUser: s.AuthUser, Password: pw, Domain: s.Domain, Proxy: s.Proxy, Port: s.Port,
		Transport: s.Transport, DisplayName: s.DisplayName, Expires: s.Expires,
		ContactUser: s.ContactUser, CallID: s.CallID, CSeq: s.CSeq,
		ExpiresAt: s.ExpiresAt, NextAt: s.NextAt, LastRegisterAt: s.LastRegisterAt,
		BytesIn: s.BytesIn, BytesOut: s.BytesOut, FirstTraffic: s.FirstTraffic, LastTraffic: s.LastTraffic,
		Calls: s.Calls, Messages: s.Messages, LastRequest: s.LastRequest, LastResponse: s.LastResponse,
	}
	devs, err := b.app.db.Devices(ctx, sel)
	if err != nil {
		return info, err
	}
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
		info.Devices = append(info.Devices, web.DebugDevice{
			ID: d.ID, Platform: d.Platform, PushToken: push.ShortToken(d.PushToken), TokenInvalid: d.TokenInvalid,
			AlertToken: push.ShortToken(d.AlertToken), AlertTokenInvalid: d.AlertTokenInvalid, AppID: d.AppID,
			Sandbox: d.Sandbox, AppVersion: d.AppVersion, Locale: d.Locale, LastSeen: d.LastSeen,
		})
	}
	info.Ladder = b.app.pics.ladderOf(sel, ids)
	for _, p := range b.app.push.problems.For(sel) {
		info.PushProblems = append(info.PushProblems, web.DebugPushProblem{Platform: p.Platform, Reason: p.Reason, Count: p.Count})
	}
	for _, r := range s.Recent {
		info.Recent = append(info.Recent, web.DebugEvent{At: r.At, Event: r.Event, From: r.From.String(), To: r.To.String(),
			Action: r.Action, Note: r.Note})
	}
	return info, nil
}

func (b *backend) AppSettings(ctx context.Context, sel string) ([]web.Field, error) {
	fields, err := b.appSettings(ctx, sel)
	return b.appSettingsWithHook(ctx, sel, fields, err)
}

func (b *backend) appSettings(ctx context.Context, sel string) ([]web.Field, error) {
	si, err := b.app.db.Instance(ctx, sel)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound(sel)
	}
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if len(si.Settings) > 0 {
		if err := json.Unmarshal(si.Settings, &doc); err != nil {
			return nil, err
		}
	}
	var fields []web.Field
	flatten("", doc, &fields)
	sort.SliceStable(fields, func(i, j int) bool { return fields[i].Name < fields[j].Name })
	return fields, nil
}

// flatten turns the stored settings document into dotted name/value pairs.
func flatten(prefix string, v any, out *[]web.Field) {
	switch v := v.(type) {
	case map[string]any:
		for k, vv := range v {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, vv, out)
		}
	default:
		*out = append(*out, web.Field{Name: prefix, Value: fmt.Sprint(v)})
	}
}

func (b *backend) Selectors(ctx context.Context, fn func(string, time.Time) error) error {
	for _, sel := range b.app.mgr.Selectors() {
		s, ok := b.app.mgr.Snapshot(sel)
		if !ok {
			continue
		}
		if err := fn(sel, s.LastActivity); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (b *backend) CallOutcomes() web.CallOutcomes {
	total, accepted, missed, rejected, byReason := b.app.calls.Outcomes()
	c := web.CallOutcomes{Total: total, Accepted: accepted, Missed: missed, Rejected: rejected,
		RejectedByReason: web.Counts(byReason)}
	b.app.addHookOutcomes(&c)
	return c
}

// PushConfigErrors implements web.PushProblemReporter.
func (b *backend) PushConfigErrors() web.Counts {
	out := web.Counts{}
	for _, p := range b.app.push.problems.Totals() {
		out[platformName(p.Platform)+" "+p.Reason] = p.Count
	}
	return out
}

func (b *backend) PushTestOutcomes() map[string]web.Counts {
	counts, err := b.app.db.PushTestCounts(context.Background())
	if err != nil {
		return nil
	}
	out := make(map[string]web.Counts, len(counts))
	for platform, c := range counts {
		out[platform] = web.Counts(c)
	}
	return out
}

func (b *backend) TestPush(ctx context.Context, sel string) ([]web.PushResult, error) {
	if _, ok := b.app.mgr.Snapshot(sel); !ok {
		if db := b.app.ownerView(ctx, sel); db != nil {
			return b.app.testPushIn(ctx, db, sel) // cluster.go: another node holds it
		}
		return nil, notFound(sel)
	}
	return b.app.testPush(ctx, sel)
}

func (b *backend) TurnOff(ctx context.Context, sel string) error {
	if err := b.app.mgr.TurnOff(ctx, sel); errors.Is(err, instance.ErrUnknownSelector) {
		if ok, err := b.app.turnOffElsewhere(ctx, sel); ok || err != nil {
			return err // cluster.go: passed to the node that holds it
		}
		return notFound(sel)
	} else {
		return err
	}
}

func (b *backend) TurnOffAll(ctx context.Context) (int, error) { return b.app.mgr.TurnOffAll(ctx) }

func (b *backend) EnableInstanceLog(ctx context.Context, sel string) (string, error) {
	if b.app.instanceLogsOff() {
		return "", errNoInstanceLog
	}
	if !b.app.mgr.SetLogging(sel, true) {
		return "", notFound(sel)
	}
	b.app.pics.book.SetLogging(sel, true) // the ladder keeps message texts too
	if l := b.app.instanceLogger(sel); l != nil {
		l.WithField("selector", sel).Info("detailed logging turned on")
	}
	return b.app.instanceLogPath(sel), nil
}

func (b *backend) Register(ctx context.Context, body []byte) error {
	if b.app.cl != nil {
		return b.app.registerInCluster(ctx, body) // cluster.go: to the instance's owner
	}
	return b.app.mgr.Register(ctx, body)
}

func (b *backend) CheckAdmin(user, pass string) bool {
	return b.app.settings.Administrator.CheckPassword(user, pass)
}
