package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sipis/sipis/internal/cluster"
	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
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
		Logger: a.log.WithField("part", "cluster"),
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
