package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
)

// drainBatch is how many instances one hand-over moves.
const drainBatch = 200

// ErrNoSurvivor means a drain found no other live node to hand the instances to; the node
// keeps them and stays live.
var ErrNoSurvivor = errors.New("cluster: no other live node to hand the instances to")

// Drain hands every instance of this node to the other live nodes, the least loaded first, and
// then leaves the cluster (its lease ends at once): the node sends nothing more and can be
// stopped. For each batch it first stops sending (Release waits for the REGISTERs in flight),
// then moves the rows with epoch+1 and leaves the receiver an adoption item; the receiver
// removes this node's binding (Expires: 0 at this node's Contact, same Call-ID) and registers
// its own, so the registrar never holds an instance at both nodes. A call reaching this node
// for an instance in that short gap is answered 480 with Retry-After (Moved; internal/call):
// the Contact is no longer served here, but the account exists and its new binding is on the
// way. It returns how many instances it moved.
func (c *Cluster) Drain(ctx context.Context) (int, error) {
	c.mu.Lock()
	if c.m == nil {
		c.mu.Unlock()
		return 0, errors.New("cluster: drain before Run")
	}
	c.draining = true
	c.mu.Unlock()
	undrain := func() {
		c.mu.Lock()
		c.draining = false
		c.mu.Unlock()
		if err := c.db.SetNodeState(context.WithoutCancel(ctx), c.incarnation, store.NodeLive); err != nil {
			c.log.WithField("err", err).Warn("cluster: could not set the node live again after a failed drain")
		}
	}
	assigned := map[string]int{}
	if _, _, err := c.leastLoaded(ctx, assigned); err != nil {
		undrain()
		return 0, err // alone: refuse even with nothing held, the operator expects a hand-over
	}
	if err := c.db.SetNodeState(ctx, c.incarnation, store.NodeDraining); err != nil {
		undrain()
		return 0, fmt.Errorf("cluster: drain: %w", err)
	}
	moved := 0
	for {
		held := c.m.Held()
		if len(held) == 0 {
			break
		}
		sort.Strings(held)
		target, live, err := c.leastLoaded(ctx, assigned)
		if err != nil {
			undrain()
			return moved, err
		}
		// Each receiver gets its share in one batch or more.
		batch := held[:min(len(held), drainBatch, (len(held)+live-1)/live)]
		c.noteMoved(batch)
		c.m.Release(batch) // nothing is sent for them from here on
		got, err := c.db.HandOver(ctx, batch, target, time.Now())
		if err != nil {
			// Still ours in the database: take them on again.
			ads := make([]instance.Adoption, len(batch))
			for i, s := range batch {
				ads[i] = instance.Adoption{Selector: s}
			}
			if _, aerr := c.m.Adopt(context.WithoutCancel(ctx), ads, 0); aerr != nil {
				c.log.WithField("err", aerr).Error("cluster: instances of a failed hand-over not taken on again; the next resync does")
			}
			undrain()
			return moved, fmt.Errorf("cluster: drain: %w", err)
		}
		c.forget(batch)
		assigned[target] += len(got)
		moved += len(got)
		c.log.WithFields(map[string]any{"to": target, "instances": len(got)}).Info("cluster: instances handed over")
	}
	c.mu.Lock()
	c.left = true // the loops stop renewing, claiming and reading the inbox
	c.mu.Unlock()
	c.shut("drained: the node leaves the cluster")
	if err := c.db.SetNodeState(ctx, c.incarnation, store.NodeDead); err != nil {
		return moved, fmt.Errorf("cluster: drain: leave: %w", err)
	}
	return moved, nil
}

// leastLoaded names the live node (not this one) with the fewest instances, counting those
// this drain already gave it, and how many live other nodes there are.
func (c *Cluster) leastLoaded(ctx context.Context, assigned map[string]int) (string, int, error) {
	nodes, err := c.db.Nodes(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("cluster: drain: %w", err)
	}
	now := time.Now()
	best, load, live := "", 0, 0
	for _, n := range nodes {
		if n.Name == c.db.Node() || n.State != store.NodeLive || n.Expired(now) {
			continue
		}
		live++
		if l := n.Instances + assigned[n.Name]; best == "" || l < load {
			best, load = n.Name, l
		}
	}
	if best == "" {
		return "", 0, ErrNoSurvivor
	}
	return best, live, nil
}

// Draining reports whether a drain started (and did not fail).
func (c *Cluster) Draining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// movedHold is how long a drained instance's Contact is remembered (Moved): until the receiver's
// REGISTER has surely replaced it at the registrar, after which no proxy routes there.
const movedHold = 30 * time.Second

// contactReader is a Manager that can tell an instance's Contact user (*instance.Manager).
type contactReader interface {
	Snapshot(selector string) (instance.Snapshot, bool)
}

// noteMoved remembers the Contact users of selectors about to be handed over.
func (c *Cluster) noteMoved(selectors []string) {
	cr, ok := c.m.(contactReader)
	if !ok {
		return
	}
	until := time.Now().Add(movedHold)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moved == nil {
		c.moved = make(map[string]time.Time)
	}
	for u, t := range c.moved {
		if time.Now().After(t) {
			delete(c.moved, u)
		}
	}
	for _, sel := range selectors {
		if s, ok := cr.Snapshot(sel); ok && s.ContactUser != "" {
			c.moved[s.ContactUser] = until
		}
	}
}

// Moved reports whether contactUser is the Contact of an instance this node handed to another
// node by a drain in the last movedHold: a call to it arrived in the hand-over's gap, before
// the receiver's binding replaced this node's at the registrar, and is answered 480 with
// Retry-After (internal/call) rather than 404.
func (c *Cluster) Moved(contactUser string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.moved[contactUser]
	return ok && time.Now().Before(t)
}
