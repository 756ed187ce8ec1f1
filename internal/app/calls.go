package app

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
)

// callInstances lets the call manager find instances.
type callInstances struct{ mgr *instance.Manager }

func (c callInstances) ByContact(user string) (string, bool) { return c.mgr.ByContact(user) }

func (c callInstances) Account(sel string) (call.Account, bool) {
	s, ok := c.mgr.Snapshot(sel)
	if !ok {
		return call.Account{}, false
	}
	return call.Account{Proxy: s.Proxy, Port: s.Port, Transport: s.Transport, Domain: s.Domain,
		Active: !s.Off && s.Phase.State != instance.Idle}, true
}

// startCalls builds the call manager and hands it the SIP requests to our contacts.
func (a *App) startCalls() error {
	s := a.settings
	var allowed []string
	for _, p := range s.IncomingCall.AllowedSources {
		allowed = append(allowed, p.String())
	}
	var filters []call.Filter
	for _, f := range s.IncomingTextMessage.Filters {
		act := call.Accept
		switch f.Action {
		case config.FilterDrop:
			act = call.Drop
		case config.FilterReject:
			act = call.Reject
		}
		filters = append(filters, call.Filter{ContentType: f.ContentType, Action: act})
	}
	relay := s.Server.PublicAddress
	if relay == "" {
		relay = s.Server.Address
	}
	m, err := call.New(call.Options{
		Instances: callInstances{a.mgr}, Store: a.db, Push: a.push.dispatcher,
		RelayAddress:      net.JoinHostPort(relay, strconv.Itoa(s.Server.Port)),
		AllowedSources:    allowed,
		NoResponseTimeout: s.IncomingCall.NotAnsweredMaxAge, ProgressTimeout: s.IncomingCall.DeviceProgressMaxAge,
		MaxCalls: s.Instance.MaxCalls, MaxMessageSize: s.IncomingTextMessage.MaxBytes, Filters: filters,
		PushMessageText: s.NotificationServers.IncludeMessageText, Logger: a.log.WithField("part", "calls"),
	})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	a.calls = m
	a.ua.SetHandler(m)
	return nil
}

// messageCounts caches the number of waiting messages per selector for a second, for the
// Notes column of big tables.
type messageCounts struct {
	mu     sync.Mutex
	counts map[string]int
	at     time.Time
}

func (a *App) waitingMessages(sel string) int {
	a.msgCounts.mu.Lock()
	defer a.msgCounts.mu.Unlock()
	if time.Since(a.msgCounts.at) > time.Second {
		counts, err := a.db.MessageCounts(context.Background())
		if err != nil {
			a.log.WithField("err", err).Warn("counting waiting messages failed")
			return 0
		}
		a.msgCounts.counts, a.msgCounts.at = counts, time.Now()
	}
	return a.msgCounts.counts[sel]
}
