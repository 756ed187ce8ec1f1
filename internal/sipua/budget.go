package sipua

import (
	"errors"
	"net"
	"sync"
	"time"
)

// errBudget is returned when a retransmission is not sent because its destination has
// used up its response budget.
var errBudget = errors.New("sipua: response budget of the source used up")

// Amplification bounds of the UDP response budget.
const (
	// budgetFactor is how many bytes the UA retransmits to a source per byte received from
	// it (the anti-amplification limit of RFC 9000 §8 uses the same factor).
	budgetFactor = 3
	// budgetSources bounds the sources remembered per window; beyond it, a new source has
	// no budget for retransmissions (its first answers still go out).
	budgetSources = 1 << 16
)

// budget bounds what the UA sends over UDP to one source, an IPv4 address or an IPv6 /64
// (sourceKey), so that a forged source address cannot turn sipis into an amplifier: every
// request gets the answers its handler makes, once, but retransmissions of them (Timer G,
// RFC 3261 §17.2.1, and the replay of the last response to a retransmitted request,
// §17.2.2) go out only while the bytes sent to that source stay within budgetFactor times
// the bytes received from it over the last two windows of 64*T1. A forged INVITE makes
// sipis send its answer and nothing more.
type budget struct {
	mu        sync.Mutex
	cur, prev map[string]*usage
	window    time.Duration
	rotated   time.Time
}

type usage struct{ in, out int64 }

func newBudget(window time.Duration) *budget {
	return &budget{cur: make(map[string]*usage), prev: make(map[string]*usage), window: window, rotated: time.Now()}
}

func (b *budget) entry(key string) *usage {
	u := b.cur[key]
	if u == nil && len(b.cur) < budgetSources {
		u = &usage{}
		b.cur[key] = u
	}
	return u
}

// received counts n bytes that arrived from key.
func (b *budget) received(key string, n int) {
	b.mu.Lock()
	if u := b.entry(key); u != nil {
		u.in += int64(n)
	}
	b.mu.Unlock()
}

// sent counts n bytes of a first answer sent to key (always allowed).
func (b *budget) sent(key string, n int) {
	b.mu.Lock()
	if u := b.entry(key); u != nil {
		u.out += int64(n)
	}
	b.mu.Unlock()
}

// allowRetransmit reports whether n more bytes may be retransmitted to key, and counts them
// if so.
func (b *budget) allowRetransmit(key string, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var in, out int64
	for _, m := range []map[string]*usage{b.cur, b.prev} {
		if u := m[key]; u != nil {
			in, out = in+u.in, out+u.out
		}
	}
	if out+int64(n) > budgetFactor*in {
		return false
	}
	if u := b.entry(key); u != nil {
		u.out += int64(n)
	}
	return true
}

// rotate starts a new window when the current one is over.
func (b *budget) rotate(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.rotated) < b.window {
		return
	}
	b.prev, b.cur, b.rotated = b.cur, make(map[string]*usage), now
}

// sourceKey is the unit per-source limits count by: the address for IPv4 (and IPv4-mapped
// IPv6), the /64 for IPv6, since one host or site commonly holds a whole /64 (RFC 4291
// §2.5.1) and could otherwise pick a fresh address for every connection or datagram.
func sourceKey(ip net.IP) string {
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	if len(ip) != net.IPv6len {
		return ip.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
