// Package cluster runs several sipis nodes on one database with one owner per instance.
//
// A Cluster owns this node's membership (the nodes table), renews its lease, takes over the
// instances of nodes whose lease passed, hands its own over when draining, and tells the
// instance manager (through instance.Fence) whether it may send at all. It never sends SIP
// itself: the manager does, through a fenced Registrar.
//
// # Timing
//
// A node writes lease_until = now + Lease at every renewal (every Renew). It may send only until
// its last successful renewal's start + Lease − Margin by the monotonic clock, so a node that was
// paused (SIGSTOP, a long GC, a VM stall) or cut off from the database stops sending Margin before
// any survivor may consider its lease passed, even with clocks that disagree by less than Margin.
// The survivors look for passed leases every Scan, and at the moment a lease they have seen
// ends. With the defaults (Lease 9 s, Renew 2 s, Margin 3 s, Scan 2 s) a node's death is noticed
// 7–9 s after it died (Lease less the time since its last renewal) and its instances are
// claimed and re-registered at once, at the rate the registrar answers: inside 30 s for 10,000
// instances. A node keeps sending through a stall (a pause, a slow database) of up to
// Lease − Margin − Renew = 4 s, two missed renewals; a renewal is one UPDATE of one row, so
// renewing every 2 s costs the database nothing that matters (half a write a second a node).
//
// # After a gap
//
// When a renewal ends after the local lease had already lapsed, the instances may have been
// claimed meanwhile: the fence stays shut until the node has read which instances it still owns
// and released (instance.Manager.Release) the others without sending anything for them. A
// renewal refused because the node was declared dead (store.ErrLeaseLost) is followed by joining
// again and the same resynchronisation.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
)

// Store is what the cluster needs of the database; *store.DB implements it.
type Store interface {
	Node() string
	JoinCluster(ctx context.Context, n store.Node, now, leaseUntil time.Time) error
	RenewLease(ctx context.Context, incarnation string, now, leaseUntil time.Time, instances int) error
	SetNodeState(ctx context.Context, incarnation, state string) error
	SetNodeHTTPURL(ctx context.Context, incarnation, url string) error
	Nodes(ctx context.Context) ([]store.Node, error)
	Owned(ctx context.Context) (map[string]uint64, error)
	OwnerOf(ctx context.Context, selector string) (string, uint64, error)
	Instances(ctx context.Context, selectors []string) (map[string]*store.Instance, map[string]int, error)
	ClaimFrom(ctx context.Context, from, incarnation string, survivors int, now time.Time) ([]store.Claimed, error)
	HandOver(ctx context.Context, selectors []string, to string, now time.Time) ([]store.Claimed, error)
	PlaceNew(ctx context.Context, sel string, self bool, now time.Time) (node, httpURL string, err error)
	SaveStatesFenced(ctx context.Context, ups []store.FencedUpdate) ([]string, error)
	Inbox(ctx context.Context, max int) ([]store.InboxItem, error)
	DoneInbox(ctx context.Context, id int64) error
}

// Manager is what the cluster drives; *instance.Manager implements it.
type Manager interface {
	Adopt(ctx context.Context, ads []instance.Adoption, window time.Duration) (int, error)
	Release(selectors []string) int
	Held() []string
	Len() int
}

// Handler applies the inbox items other than adoptions (registrations stored for this node by
// another, admin actions); nil drops them with a log line.
type Handler func(ctx context.Context, it store.InboxItem) error

// Options configure a Cluster. Zero durations take the defaults of the package comment.
type Options struct {
	Store Store
	// Address is the host:port this node puts in its Contact (survivors remove its bindings
	// there); HTTPURL its HTTP server's base URL, shown to operators.
	Address, HTTPURL string

	Lease, Renew, Margin, Scan time.Duration
	// AdoptWindow spreads the REGISTERs of the instances a node finds it owns but does not hold
	// after a lapse of its own lease (5 s). Instances taken over from a dead node are registered
	// at once, paced by the manager's per-proxy limit.
	AdoptWindow time.Duration
	// InboxPoll is how often the inbox is read when nothing wakes it: 1 s on a store without
	// notifications (SQLite), 5 s on one whose ListenInbox wakes the node at every item
	// (PostgreSQL), where the periodic read is only the safety net.
	InboxPoll time.Duration

	// Handle applies registration and admin items of the inbox.
	Handle Handler
	Logger logrus.FieldLogger
}

func (o *Options) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Lease, 9*time.Second)
	def(&o.Renew, 2*time.Second)
	def(&o.Margin, 3*time.Second)
	def(&o.Scan, 2*time.Second)
	def(&o.AdoptWindow, 5*time.Second)
	if o.Logger == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Logger = l
	}
}

// Cluster is this node's membership. Create it with New, Join before the instance manager
// starts (so a second node of the same name is refused before it sends anything), then Run.
type Cluster struct {
	opts        Options
	db          Store
	log         logrus.FieldLogger
	incarnation string

	mu         sync.Mutex
	sendUntil  time.Time         // the fence: monotonic; zero = shut
	lastRenew  time.Time         // wall, for the status
	renewErr   string            // last renewal error, "" if it worked
	epochs     map[string]uint64 // epoch of each instance held, as last known
	draining   bool
	left       bool // drained: the node sends, renews and claims nothing any more
	claimedTot int
	moved      map[string]time.Time // Contact user → until when: handed over by a drain (Moved)

	m      Manager
	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a cluster member for opts.Store's node.
func New(opts Options) (*Cluster, error) {
	if opts.Store == nil {
		return nil, errors.New("cluster: Store is required")
	}
	opts.setDefaults()
	if opts.Lease-opts.Margin <= opts.Renew {
		return nil, fmt.Errorf("cluster: lease %s less margin %s must be longer than the renewal interval %s",
			opts.Lease, opts.Margin, opts.Renew)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return &Cluster{
		opts: opts, db: opts.Store, log: opts.Logger.WithField("node", opts.Store.Node()),
		incarnation: hex.EncodeToString(b), epochs: make(map[string]uint64), wake: make(chan struct{}, 1),
	}, nil
}

// Incarnation is this process's random id in the nodes table.
func (c *Cluster) Incarnation() string { return c.incarnation }

// Join records this node as live and opens the fence. It fails with an error wrapping
// store.ErrNodeLive when another process runs under this node's name.
func (c *Cluster) Join(ctx context.Context) error {
	start := time.Now()
	if err := c.db.JoinCluster(ctx, c.self(), start, start.Add(c.opts.Lease)); err != nil {
		return fmt.Errorf("cluster: join: %w", err)
	}
	owned, err := c.db.Owned(ctx)
	if err != nil {
		return fmt.Errorf("cluster: join: %w", err)
	}
	c.mu.Lock()
	c.epochs = owned
	c.sendUntil = start.Add(c.opts.Lease - c.opts.Margin)
	c.lastRenew, c.renewErr = start, ""
	c.mu.Unlock()
	c.log.WithField("instances", len(owned)).Info("cluster: joined")
	return nil
}

func (c *Cluster) self() store.Node {
	return store.Node{Address: c.opts.Address, HTTPURL: c.opts.HTTPURL, Incarnation: c.incarnation}
}

func (c *Cluster) hasLeft() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.left
}

// SendUntil implements instance.Fence: this node may send for any instance it holds until its
// local lease ends.
func (c *Cluster) SendUntil(string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendUntil.IsZero() {
		return time.Time{}, false
	}
	return c.sendUntil, time.Now().Before(c.sendUntil)
}

// Run starts the renewal, scan and inbox loops driving m; Stop ends them.
func (c *Cluster) Run(m Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.m, c.cancel = m, cancel
	c.mu.Unlock()
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.loop(ctx, c.opts.Renew, c.renew) }()
	go func() { defer c.wg.Done(); c.scanLoop(ctx) }()
	go func() { defer c.wg.Done(); c.inboxLoop(ctx) }()
}

// Default periods of the inbox's read (Options.InboxPoll). With notifications the read only
// catches what a wake-up missed, which the store's listener makes rare: it wakes the node after
// every (re)connection, so only an item committed while a dead connection was not noticed yet
// waits for the period. 5 s bounds that wait while a node does a fifth of the idle reads it
// does without notifications (every node polls the shared server).
const (
	inboxPollPlain    = time.Second
	inboxPollNotified = 5 * time.Second
)

// inboxListener is a Store whose inbox writes wake the receiver (*store.DB on PostgreSQL).
type inboxListener interface {
	ListenInbox(ctx context.Context) <-chan struct{}
}

// listenInbox starts the store's inbox notifications, if it has any, and returns them with the
// period of the safety-net read. The channel is nil (never ready) without notifications.
func (c *Cluster) listenInbox(ctx context.Context) (<-chan struct{}, time.Duration) {
	var ch <-chan struct{}
	if l, ok := c.db.(inboxListener); ok {
		ch = l.ListenInbox(ctx)
	}
	every := c.opts.InboxPoll
	if every <= 0 {
		every = inboxPollPlain
		if ch != nil {
			every = inboxPollNotified
		}
	}
	return ch, every
}

// Stop ends the loops. The lease is left to run out: a node restarted within it keeps its
// instances; one that does not come back loses them to the survivors. Use Drain to leave.
func (c *Cluster) Stop() {
	if c.cancel != nil {
		c.cancel()
		c.wg.Wait()
	}
}

// Wake makes the inbox be read now (a notification arrived).
func (c *Cluster) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Cluster) loop(ctx context.Context, every time.Duration, fn func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn(ctx)
		}
	}
}

// scanLoop scans every Scan, and also at the moment the earliest lease of another live node
// runs out when that comes sooner: a node that died is then claimed the instant its lease has
// passed as the store sees it, not up to a Scan later.
func (c *Cluster) scanLoop(ctx context.Context) {
	t := time.NewTimer(c.opts.Scan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := c.opts.Scan
		if next := c.scan(ctx); !next.IsZero() {
			// A little past the end: ClaimFrom claims once lease_until <= now.
			d = min(d, max(time.Until(next), 0)+expiryLag)
		}
		t.Reset(d)
	}
}

// expiryLag is how long after another node's lease end a scan scheduled for it runs.
const expiryLag = 5 * time.Millisecond

// renew extends the lease; after a gap it resynchronises before the fence opens again.
func (c *Cluster) renew(ctx context.Context) {
	if c.hasLeft() {
		return
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, c.opts.Renew)
	defer cancel()
	err := c.db.RenewLease(rctx, c.incarnation, start, start.Add(c.opts.Lease), c.m.Len())
	if errors.Is(err, store.ErrLeaseLost) {
		if c.hasLeft() {
			return // a drain ended the lease meanwhile
		}
		c.shut("declared dead: joining again")
		jctx, cancel := context.WithTimeout(ctx, c.opts.Lease-c.opts.Margin)
		defer cancel()
		start = time.Now()
		if err = c.db.JoinCluster(jctx, c.self(), start, start.Add(c.opts.Lease)); err == nil {
			err = c.resync(jctx, start)
		}
	} else if err == nil {
		c.mu.Lock()
		if c.left {
			c.mu.Unlock()
			return // a drain ended the lease while this renewal was in flight: stay shut
		}
		continuous := time.Now().Before(c.sendUntil)
		if continuous {
			c.sendUntil = start.Add(c.opts.Lease - c.opts.Margin)
			c.lastRenew, c.renewErr = start, ""
		}
		c.mu.Unlock()
		if !continuous {
			sctx, cancel := context.WithTimeout(ctx, c.opts.Lease-c.opts.Margin)
			defer cancel()
			err = c.resync(sctx, start)
		}
	}
	if err != nil {
		c.mu.Lock()
		c.renewErr = err.Error()
		c.mu.Unlock()
		c.log.WithField("err", err).Warn("cluster: lease renewal failed; sending stops when the lease ends")
	}
}

func (c *Cluster) shut(why string) {
	c.mu.Lock()
	c.sendUntil = time.Time{}
	c.mu.Unlock()
	c.log.Warn("cluster: fence shut: " + why)
}

// resync drops the instances this node lost while its lease was not proven, then opens the
// fence as of the renewal that started at start.
func (c *Cluster) resync(ctx context.Context, start time.Time) error {
	owned, err := c.db.Owned(ctx)
	if err != nil {
		return fmt.Errorf("cluster: read owned instances: %w", err)
	}
	var lost []string
	for _, sel := range c.m.Held() {
		if _, ok := owned[sel]; !ok {
			lost = append(lost, sel)
		}
	}
	c.m.Release(lost)
	c.forget(lost)
	c.mu.Lock()
	c.epochs = owned
	c.sendUntil = start.Add(c.opts.Lease - c.opts.Margin)
	c.lastRenew, c.renewErr = start, ""
	c.mu.Unlock()
	if len(lost) > 0 {
		c.log.WithField("lost", len(lost)).Warn("cluster: the lease had lapsed: instances taken over by others dropped without sending")
	}
	// Instances handed to us or claimed meanwhile by nobody else are ours again: adopt what
	// the manager does not hold.
	held := make(map[string]bool)
	for _, sel := range c.m.Held() {
		held[sel] = true
	}
	var missing []instance.Adoption
	for sel := range owned {
		if !held[sel] {
			missing = append(missing, instance.Adoption{Selector: sel})
		}
	}
	if len(missing) > 0 {
		if _, err := c.m.Adopt(ctx, missing, c.opts.AdoptWindow); err != nil {
			return err
		}
	}
	return nil
}

// scan claims this node's share of every dead node's instances. It returns the earliest lease
// end of the other live nodes after the scan (zero if none), for scanLoop to look again then.
func (c *Cluster) scan(ctx context.Context) (next time.Time) {
	if _, ok := c.SendUntil(""); !ok {
		return time.Time{} // unsure of our own lease: take nothing
	}
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	if draining {
		return time.Time{}
	}
	nodes, err := c.db.Nodes(ctx)
	if err != nil {
		c.log.WithField("err", err).Warn("cluster: reading nodes failed")
		return time.Time{}
	}
	now := time.Now()
	live := 0
	for i := range nodes {
		if nodes[i].State == store.NodeLive && !nodes[i].Expired(now) {
			live++
		}
	}
	for i := range nodes {
		n := &nodes[i]
		if n.Name == c.db.Node() {
			continue
		}
		orphaned := n.State != store.NodeDead && n.Expired(now) || n.State == store.NodeDead && n.Unclaimed > 0
		if !orphaned {
			if n.State != store.NodeDead && (next.IsZero() || n.LeaseUntil.Before(next)) {
				next = n.LeaseUntil
			}
			continue
		}
		c.claim(ctx, n.Name, live, now)
	}
	return next
}

// claim takes this node's share (among survivors) of the dead node from's instances and
// adopts them.
func (c *Cluster) claim(ctx context.Context, from string, survivors int, now time.Time) {
	got, err := c.db.ClaimFrom(ctx, from, c.incarnation, survivors, now)
	if err != nil {
		c.log.WithField("err", err).WithField("from", from).Warn("cluster: claiming a dead node's instances failed")
		return
	}
	if len(got) == 0 {
		return
	}
	ads := make([]instance.Adoption, len(got))
	c.mu.Lock()
	for i, g := range got {
		c.epochs[g.Selector] = g.Epoch
		ads[i] = instance.Adoption{Selector: g.Selector, OldContactAddr: g.FromAddress}
	}
	c.claimedTot += len(got)
	c.mu.Unlock()
	c.log.WithFields(logrus.Fields{"from": from, "instances": len(got)}).Warn("cluster: took over the instances of a dead node")
	// Read and adopt them a batch at a time, so that the first batch registers while the next
	// is read. No spreading: each instance is registered at once; the manager's limit of
	// REGISTERs in flight per proxy already paces them at the rate the registrar answers, and
	// every second of spread is a second the instance cannot be called.
	for len(ads) > 0 {
		batch := ads[:min(len(ads), adoptBatch)]
		ads = ads[len(batch):]
		sels := make([]string, len(batch))
		for i := range batch {
			sels[i] = batch[i].Selector
		}
		if insts, devs, err := c.db.Instances(ctx, sels); err == nil {
			for i := range batch {
				batch[i].Instance, batch[i].Devices = insts[batch[i].Selector], devs[batch[i].Selector]
			}
		} // else Adopt reads them one by one
		if _, err := c.m.Adopt(ctx, batch, 0); err != nil {
			c.log.WithField("err", err).Warn("cluster: adopting claimed instances failed; the next resync retries")
			return
		}
	}
}

// adoptBatch is how many claimed instances are read from the store and adopted at a time.
const adoptBatch = 500

// inboxLoop reads the inbox every InboxPoll (or its default), or at once when woken (Wake, or a
// notification of the store).
func (c *Cluster) inboxLoop(ctx context.Context) {
	notified, every := c.listenInbox(ctx)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		case <-notified:
		}
		c.readInbox(ctx)
	}
}

func (c *Cluster) readInbox(ctx context.Context) {
	if _, ok := c.SendUntil(""); !ok {
		return
	}
	items, err := c.db.Inbox(ctx, 500)
	if err != nil || len(items) == 0 {
		if err != nil {
			c.log.WithField("err", err).Warn("cluster: reading the inbox failed")
		}
		return
	}
	var ads []instance.Adoption
	addrs := map[string]string{}
	for _, it := range items {
		if it.Kind != store.InboxAdopt {
			if c.opts.Handle == nil {
				c.log.WithField("kind", it.Kind).Warn("cluster: inbox item of a kind this node does not handle")
				continue
			}
			if err := c.opts.Handle(ctx, it); err != nil {
				c.log.WithFields(logrus.Fields{"kind": it.Kind, "selector": it.Selector, "err": err}).Warn("cluster: inbox item failed")
			}
			continue
		}
		if _, ok := addrs[it.Arg]; !ok {
			addrs[it.Arg] = c.addressOf(ctx, it.Arg)
		}
		node, epoch, err := c.db.OwnerOf(ctx, it.Selector)
		if err != nil || node != c.db.Node() {
			continue
		}
		c.mu.Lock()
		c.epochs[it.Selector] = epoch
		c.mu.Unlock()
		ads = append(ads, instance.Adoption{Selector: it.Selector, OldContactAddr: addrs[it.Arg]})
	}
	if len(ads) > 0 {
		// A drain paces its hand-overs and its binding is already gone: register at once.
		if _, err := c.m.Adopt(ctx, ads, 0); err != nil {
			c.log.WithField("err", err).Warn("cluster: adopting handed-over instances failed")
			return // the items stay: read again
		}
	}
	if err := c.db.DoneInbox(ctx, items[len(items)-1].ID); err != nil {
		c.log.WithField("err", err).Warn("cluster: clearing the inbox failed")
	}
}

func (c *Cluster) addressOf(ctx context.Context, node string) string {
	nodes, err := c.db.Nodes(ctx)
	if err != nil {
		return ""
	}
	for _, n := range nodes {
		if n.Name == node {
			return n.Address
		}
	}
	return ""
}

// Epoch returns the epoch this node holds selector at, 0 if unknown.
func (c *Cluster) Epoch(selector string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epochs[selector]
}

func (c *Cluster) setEpoch(selector string, epoch uint64) {
	c.mu.Lock()
	c.epochs[selector] = epoch
	c.mu.Unlock()
}

func (c *Cluster) forget(selectors []string) {
	c.mu.Lock()
	for _, s := range selectors {
		delete(c.epochs, s)
	}
	c.mu.Unlock()
}

// lostByWrite drops instances a fenced write found moved to another node.
func (c *Cluster) lostByWrite(selectors []string) {
	c.forget(selectors)
	c.mu.Lock()
	m := c.m
	c.mu.Unlock()
	if m != nil {
		m.Release(selectors)
	}
	c.log.WithField("instances", len(selectors)).Warn("cluster: state writes refused as stale: those instances belong to another node now; dropped")
}

// SetHTTPURL records where this node's HTTP server listens, for the other nodes.
func (c *Cluster) SetHTTPURL(ctx context.Context, url string) error {
	c.opts.HTTPURL = url
	return c.db.SetNodeHTTPURL(ctx, c.incarnation, url)
}

// Place returns the node a registration for selector goes to: the instance's owner if it is
// stored, else the least-loaded live node (this one when it is as loaded as any), which is
// counted as holding one more instance from then on (store.DB.PlaceNew). url is that node's
// HTTP base URL ("" for this node).
func (c *Cluster) Place(ctx context.Context, selector string) (node, url string, err error) {
	me := c.db.Node()
	owner, _, err := c.db.OwnerOf(ctx, selector)
	switch {
	case err == nil && owner == me:
		return me, "", nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return "", "", err
	}
	now := time.Now()
	if owner != "" {
		nodes, err := c.db.Nodes(ctx)
		if err != nil {
			return "", "", err
		}
		for _, n := range nodes {
			if n.Name == owner {
				if n.State == store.NodeDead || n.Expired(now) || n.HTTPURL == "" {
					return "", "", fmt.Errorf("cluster: the owner of %s, node %s, is not reachable now: try again shortly", selector, owner)
				}
				return owner, n.HTTPURL, nil
			}
		}
		return "", "", fmt.Errorf("cluster: the owner of %s, node %s, is unknown", selector, owner)
	}
	// A new selector: the store picks the least-loaded live node and counts the instance on it
	// in the same statement, so a burst posted to several nodes spreads evenly. A draining
	// node takes nothing new.
	node, url, err = c.db.PlaceNew(ctx, selector, !c.Draining(), now)
	if errors.Is(err, store.ErrNotFound) {
		return "", "", ErrNoSurvivor
	}
	if err != nil {
		return "", "", err
	}
	if node == me {
		url = ""
	}
	return node, url, nil
}

// Status is this node's view of the cluster, for the pages.
type Status struct {
	Node string
	// SendFor is how long this node may still send without renewing (0: not now).
	SendFor   time.Duration
	LastRenew time.Time
	RenewErr  string
	Draining  bool
	// Claimed counts the instances this node took over from dead nodes since it started.
	Claimed int
	Nodes   []store.Node
}

// Status reads the nodes table and this node's lease state.
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	c.mu.Lock()
	st := Status{Node: c.db.Node(), LastRenew: c.lastRenew, RenewErr: c.renewErr, Draining: c.draining, Claimed: c.claimedTot}
	if d := time.Until(c.sendUntil); !c.sendUntil.IsZero() && d > 0 {
		st.SendFor = d
	}
	c.mu.Unlock()
	nodes, err := c.db.Nodes(ctx)
	st.Nodes = nodes
	return st, err
}
