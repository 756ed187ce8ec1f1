package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/web"
)

// pushes holds the configured notifiers and the state of test pushes.
type pushes struct {
	dispatcher *push.Dispatcher
	problems   push.Problems // configuration errors, per reason and selector
	closers    []interface{ Close() error }

	mu       sync.Mutex
	lastTest map[string]time.Time // selector -> last test push, for <PushTest><MinAge>
}

// rootCAs is the system pool plus <TrustedCertificates>, for the push services' TLS.
func (a *App) rootCAs() (*x509.CertPool, error) {
	if len(a.settings.TrustedCertificates) == 0 {
		return nil, nil // the system's
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range a.settings.TrustedCertificates {
		pem, err := os.ReadFile(c.File)
		if err != nil {
			return nil, fmt.Errorf("trusted certificate: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("trusted certificate %s: no PEM certificate in it", c.File)
		}
	}
	return pool, nil
}

// startPush builds a notifier for every enabled provider of <NotificationServers>.
func (a *App) startPush() error {
	ns := a.settings.NotificationServers
	roots, err := a.rootCAs()
	if err != nil {
		return err
	}
	var client *http.Client
	if roots != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig.RootCAs = roots
		client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	p := &pushes{lastTest: make(map[string]time.Time)}
	var notifiers []push.Notifier
	if ns.Apns.Enabled {
		n, err := push.NewAPNs(push.APNsOptions{
			Endpoint: ns.Apns.Endpoint, SandboxEndpoint: ns.Apns.SandboxEndpoint, Key: []byte(ns.Apns.Key.Value()),
			KeyID: ns.Apns.KeyID, TeamID: ns.Apns.TeamID, RootCAs: roots, Logger: a.log.WithField("part", "apns"),
		})
		if err != nil {
			return fmt.Errorf("apns: %w", err)
		}
		notifiers = append(notifiers, n)
		p.closers = append(p.closers, n)
	}
	if ns.Fcm.Enabled {
		if err := checkServiceAccount([]byte(ns.Fcm.ServiceAccount.Value())); err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		n, err := push.NewFCM(push.FCMOptions{
			Endpoint: ns.Fcm.Endpoint, ServiceAccountJSON: []byte(ns.Fcm.ServiceAccount.Value()),
			ProjectID: ns.Fcm.ProjectID, TokenURL: ns.Fcm.TokenEndpoint, HTTPClient: client,
			Logger: a.log.WithField("part", "fcm"),
		})
		if err != nil {
			return fmt.Errorf("fcm: %w", err)
		}
		notifiers = append(notifiers, n)
		p.closers = append(p.closers, n)
	}
	if ns.Webhook.Enabled {
		n, err := push.NewWebhook(push.WebhookOptions{
			URL: ns.Webhook.URL, Secret: ns.Webhook.Secret.Value(), HTTPClient: client,
			Logger: a.log.WithField("part", "webhook"),
		})
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		notifiers = append(notifiers, n)
		p.closers = append(p.closers, n)
	}
	p.dispatcher = push.NewDispatcher(notifiers...)
	p.dispatcher.Logger = a.log.WithField("part", "push")
	p.dispatcher.Problems = &p.problems
	texts := pushTexts(a.settings.PushTexts)
	if err := texts.Validate(); err != nil {
		return fmt.Errorf("PushTexts: %w", err)
	}
	p.dispatcher.Texts = texts
	a.push = p
	return nil
}

func (p *pushes) close() {
	for _, c := range p.closers {
		c.Close()
	}
}

// platformNames are the platforms as the stats page shows them.
var platformNames = map[string]string{
	push.PlatformAPNs: "APNs", push.PlatformFCM: "FCM", push.PlatformWebhook: "Webhook", "none": "None",
}

func platformName(p string) string {
	if n, ok := platformNames[p]; ok {
		return n
	}
	return p
}

// tooSoon is a test push refused because the last one to the instance was too recent.
type tooSoon struct{ wait time.Duration }

func (e tooSoon) Error() string {
	return fmt.Sprintf("a test push was sent to this instance less than %s ago", e.wait)
}
func (e tooSoon) StatusCode() int { return http.StatusTooManyRequests }

// Push test outcomes, as counted and shown.
const (
	outcomeDelivered    = "Delivered"
	outcomeTokenInvalid = "TokenInvalid"
	outcomeFailed       = "Failed"
	outcomeNoToken      = "NoToken"
)

// testPush sends a test push to every device of an instance, records each outcome for the
// stats page and marks dead tokens.
func (a *App) testPush(ctx context.Context, sel string) ([]web.PushResult, error) {
	return a.testPushIn(ctx, a.db, sel)
}

// testPushIn is testPush of an instance whose rows db reads: this node's, or in a cluster the
// owner's (a test push from any node; it sends no SIP).
func (a *App) testPushIn(ctx context.Context, db *store.DB, sel string) ([]web.PushResult, error) {
	minAge := a.settings.PushTest.MinAge
	a.push.mu.Lock()
	if last, ok := a.push.lastTest[sel]; ok && time.Since(last) < minAge {
		a.push.mu.Unlock()
		return nil, tooSoon{minAge}
	}
	a.push.lastTest[sel] = time.Now()
	a.push.mu.Unlock()

	devs, err := db.Devices(ctx, sel)
	if err != nil {
		return nil, err
	}
	var out []web.PushResult
	for _, d := range devs {
		r := web.PushResult{Device: d.ID, Platform: platformName(d.Platform)}
		// A test push is an alert: on iOS it goes to the alert token, never the VoIP one.
		n := push.Notification{Kind: push.KindTest, Selector: sel, Device: call.PushDevice(d)}
		if inst, err := db.Instance(ctx, sel); err == nil {
			n.User, n.Domain = inst.Account.User, inst.Account.Domain
		}
		switch {
		case d.Platform == "none" || n.DeviceToken() == "":
			r.Outcome, r.Error = outcomeNoToken, "the device has no live push token for alerts"
			if d.Platform == push.PlatformAPNs {
				r.Error = "the iOS device sent no alert token (alertToken), or it is dead; calls use the VoIP token only"
			}
		default:
			sendCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err := pusher{a.push.dispatcher, a.pics}.Send(sendCtx, n) // counted and drawn on /debug
			cancel()
			r.Topic, r.Answer = pushTopic(n), pushAnswer(res, err)
			switch {
			case err == nil && res.Accepted:
				r.Outcome = outcomeDelivered
			case res.TokenInvalid || errors.Is(err, push.ErrTokenInvalid):
				r.Outcome, r.Error = outcomeTokenInvalid, res.Reason
				if err := call.MarkDeadToken(ctx, db, n); err != nil {
					a.log.WithField("err", err).Warn("marking a push token invalid failed")
				}
			default:
				r.Outcome = outcomeFailed
				if err != nil {
					r.Error = oneLine(err.Error())
				} else {
					r.Error = res.Reason
				}
			}
		}
		if err := db.AddPushTest(ctx, store.PushTest{Selector: sel, DeviceID: d.ID, Platform: r.Platform,
			Outcome: r.Outcome, Reason: r.Error, At: time.Now()}); err != nil {
			a.log.WithField("err", err).Warn("recording a test push failed")
		}
		out = append(out, r)
	}
	return out, nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// pushTexts converts <PushTexts> into the dispatcher's texts.
func pushTexts(pt config.PushTexts) *push.Texts {
	t := &push.Texts{PerApp: map[string]push.TextSet{}}
	for _, app := range pt.Apps {
		set := push.TextSet{}
		for kind, x := range app.Kinds {
			set[push.Kind(kind)] = push.Text{
				Title: x.Title, Body: x.Body, Sound: x.Sound, Badge: x.Badge,
				TitleLocKey: x.TitleLocKey, LocKey: x.LocKey, LocArgs: x.LocArgs, Off: !x.Enabled,
			}
		}
		if app.ID == "*" {
			t.Default = set
		} else {
			t.PerApp[app.ID] = set
		}
	}
	return t
}

// reminders are the instance manager's expiry reminder options from <Instance>.
func (a *App) reminders() instance.Reminders {
	r := a.settings.Instance.ExpiryReminders
	apps := make(map[string]bool, len(r.PremiumApps))
	for _, id := range r.PremiumApps {
		apps[id] = true
	}
	return instance.Reminders{
		Push: a.push.dispatcher, OffNotice: true,
		SilentIn: r.AboutToExpireIn.Silent, IntrusiveIn: r.AboutToExpireIn.Intrusive,
		SilentPeriod: r.AboutToExpirePeriod.Silent, IntrusivePeriod: r.AboutToExpirePeriod.Intrusive,
		PremiumMaxAge: r.PremiumMaxAge, PremiumApps: apps,
	}
}
