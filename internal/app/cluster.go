package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sipis/sipis/internal/cluster"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/web"
)

// startCluster joins the cluster when <Cluster Enabled="Yes">, before the instance manager
// loads anything, so that a second node of the same name is refused before it sends. It
// returns the store and registrar the manager must use: fenced by the node's lease.
func (a *App) startCluster(ctx context.Context, st instance.Store, reg instance.Registrar) (instance.Store, instance.Registrar, error) {
	s := a.settings.Cluster
	if !s.Enabled {
		return st, reg, nil
	}
	if a.db.Backend() != store.PostgreSQL {
		// Allowed, so that the lease logic can be tested with processes on one machine, but
		// the nodes of a real cluster are on several machines: they need a database server.
		a.log.Warn("cluster: several nodes on one SQLite file are for tests only; run a cluster on PostgreSQL")
	}
	addr := s.Address
	if addr == "" {
		addr = a.ua.Addr("udp")
		if addr == "" {
			addr = a.ua.Addr("tcp")
		}
		if h := a.settings.Server.PublicAddress; h != "" && addr != "" {
			_, port, _ := net.SplitHostPort(addr)
			addr = net.JoinHostPort(h, port)
		}
	}
	cl, err := cluster.New(cluster.Options{
		Store: a.db, Address: addr, Lease: s.Lease, Renew: s.Renew, Margin: s.Margin, Scan: s.Scan,
		Handle: a.handleInbox, Logger: a.log.WithField("part", "cluster"),
	})
	if err != nil {
		return nil, nil, err
	}
	if err := cl.Join(ctx); err != nil {
		return nil, nil, fmt.Errorf("node %s: %w", a.settings.Server.Name, err)
	}
	a.cl = cl
	return cl.FencedStore(st), instance.FencedRegistrar(reg, cl), nil
}

// Cluster returns the node's cluster membership, nil when <Cluster> is off.
func (a *App) Cluster() *cluster.Cluster { return a.cl }

// drainTimeout bounds one drain: hand-overs are database writes, the REGISTERs are the
// receivers'.
const drainTimeout = 10 * time.Minute

// handleDrain is POST /sipis/cluster/drain (admin): hand this node's instances to the other live
// nodes and leave the cluster. It answers when the drain is done, with how many moved; the node
// then sends nothing and can be stopped.
func (a *App) handleDrain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if a.cl == nil {
		w.WriteHeader(http.StatusConflict)
		json.NewEncoder(w).Encode(map[string]string{"error": "this node is not in a cluster (<Cluster Enabled=\"No\">)"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), drainTimeout)
	defer cancel()
	moved, err := a.cl.Drain(ctx)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, cluster.ErrNoSurvivor) {
			code = http.StatusServiceUnavailable
		}
		a.log.WithField("err", err).WithField("moved", moved).Error("cluster: drain failed")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"error": err.Error(), "moved": moved})
		return
	}
	a.log.WithField("moved", moved).Warn("cluster: node drained; it can be stopped")
	json.NewEncoder(w).Encode(map[string]any{"node": a.settings.Server.Name, "moved": moved, "state": "drained"})
}

// forwardedHeader marks a registration one node forwarded to the node it placed it on; that node
// stores a new instance itself instead of placing it again (no ping-pong between nodes whose
// views of the load differ). A client that sets it only makes the node it talks to take a new
// instance: an existing instance still goes to its owner.
const forwardedHeader = "X-Sipis-Forwarded-By"

type forwardedKey struct{}

// forwardedMark wraps next (the access log middleware, or nil) so that the context of a request
// carrying forwardedHeader says so.
func forwardedMark(next func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		if next != nil {
			h = next(h)
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(forwardedHeader) != "" {
				r = r.WithContext(context.WithValue(r.Context(), forwardedKey{}, true))
			}
			h.ServeHTTP(w, r)
		})
	}
}

// forwardError is the answer of the node a registration was forwarded to, when it refused it
// (web.StatusCoder: the status is passed on, the message of a 4xx too).
type forwardError struct {
	code int
	msg  string
}

func (e *forwardError) Error() string   { return e.msg }
func (e *forwardError) StatusCode() int { return e.code }

// forwardTimeout bounds the forwarding of one registration.
const forwardTimeout = 15 * time.Second

// registerInCluster stores a registration posted to this node at the instance's owner: here, or
// forwarded to the owner's HTTP server (which checks and stores it like any registration, so
// the owner's state machine gets it at once); a new instance goes to the least-loaded live node.
// A registration that cannot be opened is refused here, with the usual reasons. When the owner
// is dead and not yet taken over, the app gets 503 and tries again.
func (a *App) registerInCluster(ctx context.Context, body []byte) error {
	reg, err := a.mgr.Open(body) // opened once, here: applied here or forwarded as it came
	if err != nil {
		return err // refused, with its messages
	}
	if ctx.Value(forwardedKey{}) != nil && !a.heldElsewhere(ctx, reg.Selector) {
		// Placed here by the forwarding node (and counted here): not placed again.
		return a.mgr.Apply(ctx, reg)
	}
	node, url, err := a.cl.Place(ctx, reg.Selector)
	if err != nil {
		return &forwardError{code: http.StatusServiceUnavailable, msg: err.Error()}
	}
	if node == a.settings.Server.Name || url == "" {
		return a.mgr.Apply(ctx, reg)
	}
	fctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(fctx, http.MethodPost, strings.TrimRight(url, "/")+"/sipis/register", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(forwardedHeader, a.settings.Server.Name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.log.WithField("node", node).WithField("err", err).Warn("cluster: forwarding a registration failed")
		return &forwardError{code: http.StatusServiceUnavailable, msg: "the node holding this account is not reachable"}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return &forwardError{code: resp.StatusCode, msg: strings.TrimSpace(string(msg))}
}

// heldElsewhere reports whether another node owns selector.
func (a *App) heldElsewhere(ctx context.Context, selector string) bool {
	owner, _, err := a.db.OwnerOf(ctx, selector)
	return err == nil && owner != a.settings.Server.Name
}

// clusterInfo is the cluster block of /stats/summary; nil when the node is not in a cluster.
func (a *App) clusterInfo(ctx context.Context) *web.ClusterInfo {
	if a.cl == nil {
		return nil
	}
	st, err := a.cl.Status(ctx)
	if err != nil {
		a.log.WithField("err", err).Warn("cluster: reading the nodes failed")
	}
	info := &web.ClusterInfo{Node: st.Node, LeaseValidForSeconds: st.SendFor.Round(time.Millisecond).Seconds(),
		Nodes: []web.ClusterNode{}}
	now := time.Now()
	for _, n := range st.Nodes {
		state := n.State
		if state != store.NodeDead && n.Expired(now) {
			state = "expired"
		}
		info.Nodes = append(info.Nodes, web.ClusterNode{Name: n.Name, State: state, Instances: n.Instances,
			LeaseLeftSeconds: n.LeaseUntil.Sub(now).Round(time.Millisecond).Seconds(),
			Heartbeat:        n.HeartbeatAt.UTC().Format(time.RFC3339), Address: n.Address})
	}
	return info
}

// statsSections are the further sections of /stats: the PBX-hook's, and the cluster's.
func (a *App) statsSections(ctx context.Context) []web.DebugSection {
	out := a.hookStats(ctx)
	info := a.clusterInfo(ctx)
	if info == nil {
		return out
	}
	lease := "not proven: sending nothing"
	if info.LeaseValidForSeconds > 0 {
		lease = "valid for " + strconv.FormatFloat(info.LeaseValidForSeconds, 'f', 1, 64) + " s"
	}
	sec := web.DebugSection{Title: "Cluster", Fields: []web.Field{{Name: "This node", Value: info.Node},
		{Name: "Lease", Value: lease}}}
	for _, n := range info.Nodes {
		sec.Fields = append(sec.Fields, web.Field{Name: "Node " + n.Name, Value: fmt.Sprintf(
			"%s, %d instances, lease %+.1f s, heartbeat %s, SIP %s", n.State, n.Instances, n.LeaseLeftSeconds, n.Heartbeat, n.Address)})
	}
	return append(out, sec)
}

// ownerView returns a view of the database as the node that owns sel, when this node is in a
// cluster and another node owns it; nil otherwise.
func (a *App) ownerView(ctx context.Context, sel string) *store.DB {
	if a.cl == nil {
		return nil
	}
	owner, _, err := a.db.OwnerOf(ctx, sel)
	if err != nil || owner == a.settings.Server.Name {
		return nil
	}
	return a.db.As(owner)
}

// turnOffElsewhere passes an administrator's "turn off" for an instance another node owns to
// that node's inbox (it unregisters it within a second). ok is false when no other node owns it.
func (a *App) turnOffElsewhere(ctx context.Context, sel string) (ok bool, err error) {
	db := a.ownerView(ctx, sel)
	if db == nil {
		return false, nil
	}
	if err := a.db.Post(ctx, db.Node(), store.InboxItem{Selector: sel, Kind: store.InboxTurnOff}); err != nil {
		return true, err
	}
	a.log.WithField("selector", sel).WithField("node", db.Node()).Info("cluster: turn-off passed to the instance's node")
	return true, nil
}

// handleInbox applies what another node passed to this one.
func (a *App) handleInbox(ctx context.Context, it store.InboxItem) error {
	switch it.Kind {
	case store.InboxTurnOff:
		if err := a.mgr.TurnOff(ctx, it.Selector); err != nil && !errors.Is(err, instance.ErrUnknownSelector) {
			return err
		}
		return nil
	}
	return fmt.Errorf("inbox item of kind %q not handled", it.Kind)
}
