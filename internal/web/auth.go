package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Admin authentication. Admin pages take HTTP Basic credentials. Admin
// actions are POSTs that take either Basic credentials plus a CSRF token
// (browsers send Basic credentials by themselves, so the token proves the
// form came from our page), or the user name and password as form fields
// (which a forging site cannot know). Wrong credentials get 401 and are
// counted per client address; after too many the address must wait (429).

var (
	errNoCredentials  = &httpError{code: http.StatusUnauthorized, msg: "administrator credentials required"}
	errBadCredentials = &httpError{code: http.StatusUnauthorized, msg: "wrong administrator user name or password"}
	errBadCSRF        = &httpError{code: http.StatusForbidden, msg: "missing or invalid CSRF token: reload the page and try again"}
	errCrossOrigin    = &httpError{code: http.StatusForbidden, msg: "cross-origin request refused"}
)

// lockedError is a 429 telling the client how long to wait.
type lockedError struct{ wait time.Duration }

func (e *lockedError) Error() string {
	return fmt.Sprintf("too many failed logins: wait %d s", int(e.wait.Seconds()+0.999))
}
func (e *lockedError) StatusCode() int { return http.StatusTooManyRequests }

// csrfToken is the HMAC of user under the per-process key: only a page
// rendered for an authenticated admin carries it, and it dies with the
// process.
func (s *Server) csrfToken(user string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte("sipis-csrf\x00" + user))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) checkCSRF(user, token string) bool {
	return hmac.Equal([]byte(token), []byte(s.csrfToken(user)))
}

func (s *Server) clientAddr(r *http.Request) string {
	if s.opts.TrustForwardedFor {
		if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			if a := strings.TrimSpace(parts[len(parts)-1]); a != "" {
				return a
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkCredentials checks user/pass against the backend, honouring and
// feeding the failure limiter.
func (s *Server) checkCredentials(r *http.Request, user, pass string) error {
	addr := s.clientAddr(r)
	if wait := s.limiter.blocked(addr); wait > 0 {
		return &lockedError{wait: wait}
	}
	if !s.b.CheckAdmin(user, pass) {
		s.limiter.fail(addr)
		s.log.WithField("remote", addr).Warn("failed administrator login")
		return errBadCredentials
	}
	s.limiter.succeed(addr)
	return nil
}

// requireAdmin checks the Basic credentials of a GET admin page and
// returns the user name.
func (s *Server) requireAdmin(r *http.Request) (string, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", errNoCredentials
	}
	if err := s.checkCredentials(r, user, pass); err != nil {
		return "", err
	}
	return user, nil
}

// optionalAdmin returns the admin user name when the request carries valid
// Basic credentials, "" otherwise; public pages use it to show admin
// controls. Wrong credentials count as failures.
func (s *Server) optionalAdmin(r *http.Request) string {
	user, pass, ok := r.BasicAuth()
	if !ok || s.checkCredentials(r, user, pass) != nil {
		return ""
	}
	return user
}

// requireAdminPost authenticates an admin action (see the comment at the
// top of this file). The form must already be parsed.
func (s *Server) requireAdminPost(r *http.Request) (string, error) {
	if !s.sameOrigin(r) {
		return "", errCrossOrigin
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if err := s.checkCredentials(r, user, pass); err != nil {
			return "", err
		}
		if !s.checkCSRF(user, r.PostFormValue("csrf")) {
			return "", errBadCSRF
		}
		return user, nil
	}
	user, pass := r.PostFormValue("user"), r.PostFormValue("password")
	if user == "" && pass == "" {
		return "", errNoCredentials
	}
	if err := s.checkCredentials(r, user, pass); err != nil {
		return "", err
	}
	return user, nil
}

// sameOrigin refuses requests whose Origin (sent by browsers on POSTs)
// names another host than the one addressed (Host, X-Forwarded-Host) or a
// trusted origin. No Origin (scripts, curl) passes: the credentials and
// token checks still apply.
func (s *Server) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	if slices.Contains(s.opts.TrustedOrigins, o) {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || o == "null" || u.Host == "" {
		return false
	}
	return u.Host == r.Host || u.Host == r.Header.Get("X-Forwarded-Host")
}

// limiter counts consecutive failed logins per client address.
type limiter struct {
	max   int
	base  time.Duration
	now   func() time.Time
	mu    sync.Mutex
	state map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

const (
	maxLockout     = 15 * time.Minute
	forgetFailures = 30 * time.Minute
	maxTracked     = 10000
)

func newLimiter(max int, base time.Duration, now func() time.Time) *limiter {
	return &limiter{max: max, base: base, now: now, state: make(map[string]*failures)}
}

// blocked returns how long addr must still wait, 0 if it may try.
func (l *limiter) blocked(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.state[addr]
	if f == nil && len(l.state) >= maxTracked {
		f = l.state[overflowKey] // an address we could not track shares the overflow bucket
	}
	if f == nil || f.n < l.max {
		return 0
	}
	d := l.base << min(f.n-l.max, 20)
	if d <= 0 || d > maxLockout {
		d = maxLockout
	}
	if wait := f.last.Add(d).Sub(l.now()); wait > 0 {
		return wait
	}
	return 0
}

func (l *limiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.state[addr]
	if f == nil {
		if len(l.state) >= maxTracked {
			l.prune(now)
		}
		if len(l.state) >= maxTracked {
			// Too many addresses failing at once (an attack from many addresses): they
			// share one bucket, so none of them resets anyone's lockout.
			addr = overflowKey
			f = l.state[addr]
		}
	}
	if f == nil {
		f = &failures{}
		l.state[addr] = f
	} else if now.Sub(f.last) > forgetFailures {
		f.n = 0
	}
	f.n++
	f.last = now
}

func (l *limiter) succeed(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.state, addr)
}

// prune forgets old failures.
func (l *limiter) prune(now time.Time) {
	for k, f := range l.state {
		if now.Sub(f.last) > forgetFailures {
			delete(l.state, k)
		}
	}
}

// overflowKey is the bucket of addresses failing once the table is full.
const overflowKey = "*overflow*"
