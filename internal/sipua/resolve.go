package sipua

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// resolveTTL is how long a lookup is reused. net.Resolver does not expose
// record TTLs; one minute keeps thousands of refreshes per second from
// turning into as many DNS queries while still following changes soon.
const resolveTTL = time.Minute

type resolved struct {
	ip   net.IP
	port int
	exp  time.Time
	err  error
}

// resolver implements the parts of RFC 3263 a registering UA needs: an IP
// literal is used as is; with an explicit port the host's A/AAAA records
// are used (§4.2); without one, the SRV records _sip._udp, _sip._tcp or
// _sips._tcp of the host are tried first, then A/AAAA with the default port
// 5060 (5061 for TLS). NAPTR is skipped: the transport is always given by
// the account. Only the first SRV target is used.
type resolver struct {
	r     *net.Resolver
	mu    sync.Mutex
	cache map[string]resolved
}

func newResolver(r *net.Resolver) *resolver {
	return &resolver{r: r, cache: make(map[string]resolved)}
}

func defaultPort(transport string) int {
	if transport == "tls" {
		return 5061
	}
	return 5060
}

func (r *resolver) resolve(ctx context.Context, host string, port int, transport string) (net.IP, int, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip := net.ParseIP(h); ip != nil {
		if port == 0 {
			port = defaultPort(transport)
		}
		return ip, port, nil
	}
	key := fmt.Sprintf("%s|%s|%d", transport, strings.ToLower(host), port)
	now := time.Now()
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && now.Before(c.exp) {
		r.mu.Unlock()
		return c.ip, c.port, c.err
	}
	r.mu.Unlock()

	ip, p, err := r.lookup(ctx, host, port, transport)
	if ctx.Err() != nil {
		// Do not cache the caller giving up.
		return ip, p, err
	}
	exp := now.Add(resolveTTL)
	if err != nil {
		exp = now.Add(5 * time.Second)
	}
	r.mu.Lock()
	if len(r.cache) > 10000 {
		clear(r.cache)
	}
	r.cache[key] = resolved{ip: ip, port: p, exp: exp, err: err}
	r.mu.Unlock()
	return ip, p, err
}

func (r *resolver) lookup(ctx context.Context, host string, port int, transport string) (net.IP, int, error) {
	if port == 0 {
		service, proto := "sip", "udp"
		switch transport {
		case "tcp":
			proto = "tcp"
		case "tls":
			service, proto = "sips", "tcp"
		}
		_, srvs, err := r.r.LookupSRV(ctx, service, proto, host)
		if err == nil && len(srvs) > 0 && srvs[0].Target != "." {
			target := strings.TrimSuffix(srvs[0].Target, ".")
			ip, err := r.lookupIP(ctx, target)
			if err != nil {
				return nil, 0, fmt.Errorf("%w: SRV _%s._%s.%s target %s: %v", ErrResolve, service, proto, host, target, err)
			}
			return ip, int(srvs[0].Port), nil
		}
		port = defaultPort(transport)
	}
	ip, err := r.lookupIP(ctx, host)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %v", ErrResolve, host, err)
	}
	return ip, port, nil
}

// lookupIP prefers IPv4, like most SIP deployments expect.
func (r *resolver) lookupIP(ctx context.Context, host string) (net.IP, error) {
	addrs, err := r.r.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if v4 := a.IP.To4(); v4 != nil {
			return v4, nil
		}
	}
	if len(addrs) > 0 {
		return addrs[0].IP, nil
	}
	return nil, errors.New("no addresses")
}

// pathTo resolves host/port and returns the way to send a request there.
func (u *UA) pathTo(ctx context.Context, host string, port int, transport string) (*path, error) {
	ip, p, err := u.res.resolve(ctx, host, port, transport)
	if err != nil {
		return nil, err
	}
	switch transport {
	case "udp":
		l, err := u.udpListenerFor()
		if err != nil {
			return nil, err
		}
		dst := &net.UDPAddr{IP: ip, Port: p}
		return &path{transport: "udp", udp: l, dst: dst, local: l.conn.LocalAddr(), remote: dst.String()}, nil
	case "tcp", "tls":
		u.mu.RLock()
		ok := u.started && !u.closed
		u.mu.RUnlock()
		if !ok {
			return nil, ErrClosed
		}
		dst := &net.TCPAddr{IP: ip, Port: p}
		sc, err := u.streamConnTo(ctx, transport, dst, strings.Trim(host, "[]"))
		if err != nil {
			return nil, err
		}
		return &path{transport: transport, sc: sc, local: sc.conn.LocalAddr(), remote: dst.String()}, nil
	}
	return nil, fmt.Errorf("sipua: unknown transport %q (want udp, tcp or tls)", transport)
}
