package call

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// sourceTTL is how long the resolved addresses of a proxy are trusted.
const sourceTTL = time.Minute

// sources decides whether a request may come from an address: one of the addresses the
// instance's proxy resolves to (RFC 3263: SRV targets when no port is given, then A/AAAA), or
// one of the allowed networks. Resolutions are cached for sourceTTL.
type sources struct {
	allow []netip.Prefix
	res   *net.Resolver
	clock Clock

	mu    sync.Mutex
	cache map[string]resolvedHost
}

type resolvedHost struct {
	addrs []netip.Addr
	exp   time.Time
}

func newSources(allow []netip.Prefix, res *net.Resolver, clock Clock) *sources {
	return &sources{allow: allow, res: res, clock: clock, cache: make(map[string]resolvedHost)}
}

// allowed reports whether source ("ip:port") may send requests for acc.
func (s *sources) allowed(ctx context.Context, acc Account, source string) bool {
	host, _, err := net.SplitHostPort(source)
	if err != nil {
		host = source
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range s.allow {
		if p.Contains(ip) {
			return true
		}
	}
	target := acc.Proxy
	if target == "" {
		target = acc.Domain
	}
	for _, a := range s.resolve(ctx, target, acc.Port == 0) {
		if a == ip {
			return true
		}
	}
	return false
}

// resolve returns the addresses of host; with srv, also those of its SIP SRV targets.
func (s *sources) resolve(ctx context.Context, host string, srv bool) []netip.Addr {
	host = strings.Trim(host, "[]")
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap().WithZone("")}
	}
	if host == "" {
		return nil
	}
	key := host
	if srv {
		key += "|srv"
	}
	now := s.clock.Now()
	s.mu.Lock()
	if e, ok := s.cache[key]; ok && now.Before(e.exp) {
		s.mu.Unlock()
		return e.addrs
	}
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	names := []string{host}
	if srv {
		for _, q := range [][2]string{{"sip", "udp"}, {"sip", "tcp"}, {"sips", "tcp"}} {
			_, recs, err := s.res.LookupSRV(ctx, q[0], q[1], host)
			if err != nil {
				continue
			}
			for _, r := range recs {
				names = append(names, strings.TrimSuffix(r.Target, "."))
			}
		}
	}
	var addrs []netip.Addr
	seen := make(map[string]bool)
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		ips, err := s.res.LookupNetIP(ctx, "ip", n)
		if err != nil {
			continue
		}
		for _, a := range ips {
			addrs = append(addrs, a.Unmap().WithZone(""))
		}
	}
	if len(addrs) > 0 {
		s.mu.Lock()
		if len(s.cache) > 10000 {
			clear(s.cache)
		}
		s.cache[key] = resolvedHost{addrs: addrs, exp: now.Add(sourceTTL)}
		s.mu.Unlock()
	}
	return addrs
}
