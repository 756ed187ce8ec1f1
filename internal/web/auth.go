package web

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// AdminChecker checks the administrator's credentials for the admin pages and actions.
type AdminChecker interface {
	// CheckAdmin reports whether user and pass are the administrator's,
	// comparing in constant time (or with bcrypt); false when no
	// administrator is configured.
	CheckAdmin(user, pass string) bool
}

// Admin authentication. Admin pages take HTTP Basic credentials. Admin
// actions are POSTs that take either Basic credentials plus a CSRF token
// (browsers send Basic credentials by themselves, so the token proves the
// form came from our page), or the user name and password as form fields
// (which a forging site cannot know). Wrong credentials get 401 and are
// counted per client address; after too many the address must wait (429).
// The client address is the peer's, or what a trusted proxy in front says
// it is (Options.TrustedProxies): X-Forwarded-For and X-Forwarded-Host are
// believed from nobody else.

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

// peerAddr is the address of the connection's peer (as the PROXY protocol
// header of a trusted proxy gave it, see proxyproto.go).
func peerAddr(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// trusted reports whether a is one of Options.TrustedProxies.
func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fromTrustedProxy reports whether the request's peer is a trusted proxy,
// whose X-Forwarded-* headers are believed.
func (s *Server) fromTrustedProxy(r *http.Request) bool {
	a, ok := peerAddr(r)
	return ok && s.trusted(a)
}

// clientAddr is the address failures are counted by: the peer, or, when the
// peer is a trusted proxy, the right-most X-Forwarded-For address that is
// not itself a trusted proxy (each proxy appends the address it got the
// request from, so everything left of the first untrusted hop was written
// by the client and is ignored).
func (s *Server) clientAddr(r *http.Request) string {
	a, ok := peerAddr(r)
	if !ok {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			return r.RemoteAddr
		}
		return host
	}
	if !s.trusted(a) {
		return a.String()
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		h, ok := parseHop(hops[i])
		if !ok {
			break // a hop a proxy would not write: stop at the last proxy we trust
		}
		a = h
		if !s.trusted(a) {
			break
		}
	}
	return a.String()
}

// parseHop parses one X-Forwarded-For entry: an address, possibly with a
// port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseHop(h string) (netip.Addr, bool) {
	h = strings.TrimSpace(h)
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(h); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

// checkCredentials checks user/pass against the backend through the admin
// throttle: the attempt is reserved before the slow check and counted after
// it in one step per client address (see throttle.go).
func (s *Server) checkCredentials(r *http.Request, user, pass string) error {
	addr := s.clientAddr(r)
	a, err := s.adminThrottle.begin(r.Context(), clientKey(addr))
	if err != nil {
		return err
	}
	defer a.done(neutral) // if CheckAdmin panics; a no-op after the done below
	if !s.admins.CheckAdmin(user, pass) {
		a.done(failed)
		s.log.WithField("remote", addr).Warn("failed administrator login")
		return errBadCredentials
	}
	a.done(succeeded)
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
// names another host than the one addressed (Host, or X-Forwarded-Host when
// the peer is a trusted proxy) or a trusted origin. No Origin (scripts, curl) passes: the credentials and
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
	if u.Host == r.Host {
		return true
	}
	if !s.fromTrustedProxy(r) {
		return false // anybody else can write X-Forwarded-Host
	}
	v := r.Header.Values("X-Forwarded-Host")
	if len(v) == 0 {
		return false
	}
	parts := strings.Split(v[len(v)-1], ",")
	return u.Host == strings.TrimSpace(parts[len(parts)-1])
}
