// Package pushtest provides loopback fakes of the push services sipis
// speaks to, shaped like net/http/httptest: an APNs provider API (HTTP/2
// over TLS with token authentication), the FCM HTTP v1 API with its OAuth2
// token endpoint, and a webhook receiver that checks signatures.
//
// Each fake listens on 127.0.0.1:0, checks requests the way the real
// service does (answering with the real service's status codes and
// reasons), records what it received, and answers per device token from a
// script. The well-known tokens below are scripted in every fake; any other
// token is accepted unless scripted with [Reply] values.
//
// Only tests import it. It must not import any package of sipis (it checks the wire, not our
// types), nor listen anywhere but on loopback.
package pushtest

import (
	"net/http"
	"sync"
	"time"
)

// Well-known device tokens, scripted in every fake. They are hexadecimal so
// that they are valid APNs device tokens too.
const (
	// TokenOK is always accepted (as is any unscripted token).
	TokenOK = "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"
	// TokenUnregistered belongs to an uninstalled app: APNs 410
	// Unregistered, FCM 404 UNREGISTERED, webhook 410.
	TokenUnregistered = "1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d"
	// TokenBad is malformed for the service: APNs 400 BadDeviceToken, FCM
	// 400 INVALID_ARGUMENT on message.token, webhook 410.
	TokenBad = "2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b"
	// TokenBusyOnce gets 429 on its first push and 200 afterwards.
	TokenBusyOnce = "3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c"
	// TokenBroken always gets 500.
	TokenBroken = "4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e4e"
)

// Reply is one scripted answer. A zero Status means 200. Reason is the
// service's reason (APNs "reason", FCM "errorCode", webhook "reason");
// RetryAfter, when set, is sent as the Retry-After header.
type Reply struct {
	Status     int
	Reason     string
	RetryAfter string
}

// script holds the replies per token: each push takes the first reply of
// its token's list, and the last one stays for all later pushes.
type script struct {
	mu sync.Mutex
	m  map[string][]Reply
}

// newScript scripts the well-known tokens with the service's own answers.
func newScript(unregistered, bad, busy, broken Reply) *script {
	return &script{m: map[string][]Reply{
		TokenUnregistered: {unregistered},
		TokenBad:          {bad},
		TokenBusyOnce:     {busy, {}},
		TokenBroken:       {broken},
	}}
}

func (s *script) set(token string, replies []Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(replies) == 0 {
		delete(s.m, token)
		return
	}
	s.m[token] = append([]Reply(nil), replies...)
}

func (s *script) next(token string) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.m[token]
	if len(rs) == 0 {
		return Reply{Status: http.StatusOK}
	}
	r := rs[0]
	if len(rs) > 1 {
		s.m[token] = rs[1:]
	}
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	return r
}

// clock is a replaceable time source shared by a fake's checks.
type clock struct {
	mu  sync.Mutex
	now func() time.Time
}

func (c *clock) set(now func() time.Time) {
	c.mu.Lock()
	c.now = now
	c.mu.Unlock()
}

func (c *clock) get() time.Time {
	c.mu.Lock()
	now := c.now
	c.mu.Unlock()
	if now == nil {
		return time.Now()
	}
	return now()
}

// record is a concurrency-safe list of received requests.
type record[T any] struct {
	mu    sync.Mutex
	items []T
}

func (r *record[T]) add(v T) {
	r.mu.Lock()
	r.items = append(r.items, v)
	r.mu.Unlock()
}

func (r *record[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.items...)
}

func (r *record[T]) reset() {
	r.mu.Lock()
	r.items = nil
	r.mu.Unlock()
}
