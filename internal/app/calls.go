package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/cluster"
	"github.com/sipis/sipis/internal/config"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/sipua"
)

// callInstances lets the call manager find instances, and tells it which Contacts the cluster
// handed to another node moments ago (call.MovedContacts).
type callInstances struct {
	mgr *instance.Manager
	cl  *cluster.Cluster // nil outside a cluster
}

func (c callInstances) Moved(user string) bool { return c.cl != nil && c.cl.Moved(user) }

func (c callInstances) ByContact(user string) (string, bool) { return c.mgr.ByContact(user) }

func (c callInstances) Account(sel string) (call.Account, bool) {
	s, ok := c.mgr.Snapshot(sel)
	if !ok {
		return call.Account{}, false
	}
	return call.Account{Proxy: s.Proxy, Port: s.Port, Transport: s.Transport, Domain: s.Domain,
		Active: !s.Off && s.Phase.State != instance.Idle, Devices: s.Devices}, true
}

// startCalls builds the call manager and hands it the SIP requests to our contacts.
func (a *App) startCalls() error {
	s := a.settings
	var allowed []string
	for _, p := range s.IncomingCall.AllowedSources {
		allowed = append(allowed, p.String())
	}
	filters := messageFilters(s.IncomingTextMessage.Filters)
	// Where woken devices connect: never an unspecified address (issue: 0.0.0.0 was pushed).
	relay, err := s.Server.RelayHost(nil)
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	// The device-facing listener (<Server Address Port>): TCP, and TLS on the next port when
	// <TlsServerOptions> has a certificate.
	listenAddr := deviceListenAddr(s.Server)
	lns := []sipua.Listener{{Transport: "tcp", Address: listenAddr}}
	var tlsConf *tls.Config
	if o := s.TLSServerOptions; o.CertificateFile != "" {
		var err error
		if tlsConf, err = serverTLS(o); err != nil {
			return fmt.Errorf("calls: %w", err)
		}
		host, _, _ := net.SplitHostPort(listenAddr)
		port := 0
		if s.Server.Port != 0 {
			port = s.Server.Port + 1
		}
		lns = append(lns, sipua.Listener{Transport: "tls", Address: net.JoinHostPort(host, strconv.Itoa(port))})
	}
	dev, err := sipua.New(sipua.Config{Listeners: lns, TLSConfig: tlsConf, PublicHost: s.Server.PublicAddress,
		UserAgent: userAgent(s), KeepAlive: keepAlive(s), Logger: a.log.WithField("part", "sip-devices")})
	if err != nil {
		return fmt.Errorf("calls: device listener: %w", err)
	}
	if err := dev.Start(context.Background()); err != nil {
		return fmt.Errorf("calls: device listener: %w", err)
	}
	a.devUA = dev
	_, port, _ := net.SplitHostPort(dev.Addr("tcp"))
	m, err := call.New(call.Options{
		Instances: callInstances{mgr: a.mgr, cl: a.cl}, Store: a.db, Push: pusher{a.push.dispatcher, a.pics}, SIP: a.ua,
		Recorder:          callRecorder{a.pics},
		RelayAddress:      net.JoinHostPort(relay, port),
		AllowedSources:    allowed,
		NoResponseTimeout: s.IncomingCall.NotAnsweredMaxAge, ProgressTimeout: s.IncomingCall.DeviceProgressMaxAge,
		MaxDialogAge: s.IncomingCall.DialogMaxAge, NoResponseAnswer: noResponseAnswer(s.IncomingCall.OnNoResponseFromDevice),
		MaxCalls: s.Instance.MaxCalls, MaxMessageSize: s.IncomingTextMessage.MaxBytes, Filters: filters,
		PushMessageText: s.NotificationServers.IncludeMessageText, Logger: a.log.WithField("part", "calls"),
	})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	// Close what a killed run left open before any request can find the call records.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = m.Recover(ctx)
	cancel()
	if err != nil {
		m.Close()
		return fmt.Errorf("calls: %w", err)
	}
	a.calls = m
	a.ua.SetHandler(m)
	dev.SetHandler(m)
	return nil
}

// deviceListenAddr is where the device-facing listener binds.
func deviceListenAddr(s config.Server) string {
	return net.JoinHostPort(s.Address, strconv.Itoa(s.Port))
}

// waitingMessages is the number of waiting messages of a selector, from counts refreshed at
// most once a second, for the Notes column of big tables.
func (a *App) waitingMessages(sel string) int {
	counts := a.msgCounts.get(func() (map[string]int, error) {
		counts, err := a.db.MessageCounts(context.Background())
		if err != nil {
			a.log.WithField("err", err).Warn("counting waiting messages failed")
		}
		return counts, err
	})
	return counts[sel]
}

// perSecond holds a value computed at most once a second, so that a page of 100,000 rows asks
// the store or the prober once rather than once a row.
type perSecond[T any] struct {
	mu sync.Mutex
	v  T
	at time.Time
}

// get returns the held value, computing it first with load when it is a second old. When
// load fails the old value is kept (and tried again on the next call).
func (c *perSecond[T]) get(load func() (T, error)) T {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) >= time.Second {
		if v, err := load(); err == nil {
			c.v, c.at = v, time.Now()
		}
	}
	return c.v
}

// noResponseAnswer is the SIP status of <IncomingCall OnNoResponseFromDevice>.
func noResponseAnswer(a config.NoResponseAction) int {
	if a == config.Reject408 {
		return 408
	}
	return 480
}
