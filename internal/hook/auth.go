package hook

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Device registration is authenticated with HTTP Basic credentials checked by a verifier the
// operator configures, not with a per-account secret kept by sipis. The reasons:
//   - the PBX operator already holds the accounts and their passwords (vialer checks them
//     against VoIPGRID's API the same way), so there is nothing new to provision or rotate;
//   - a per-account secret must be created on a first registration (trust on first use), and
//     whoever registers first for someone else's account would then receive that account's
//     call pushes (caller numbers) and could answer NAK to its calls;
//   - existing vialer apps already send credentials with every device request.
// The verifier is asked once per credentials and account, and a success is remembered for a
// short time, so a check-in storm does not become a storm at the operator's API.

// ErrDenied is returned by a Verifier when the credentials do not hold for the account.
var ErrDenied = errors.New("hook: credentials refused for this account")

// ErrVerifierDown is returned by a Verifier that could not get an answer.
var ErrVerifierDown = errors.New("hook: credential verifier unavailable")

// Verifier checks that user and password may manage the devices of account sipUserID.
type Verifier interface {
	Verify(ctx context.Context, user, password, sipUserID string) error
}

// URLVerifier asks an HTTP endpoint of the operator: a GET of URL with the query parameter
// sip_user_id and the app's credentials as HTTP Basic authorization. 2xx means allowed;
// 401, 403 and 404 mean denied; anything else, or no answer, means unavailable (the app gets
// 503 and tries again). Successes are cached for CacheFor.
type URLVerifier struct {
	// URL is the operator's endpoint; it may carry its own query (a token, say), never logged.
	URL string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// CacheFor is how long a success is remembered; 0 asks every time.
	CacheFor time.Duration
	// MaxCached bounds the cache; default 10,000 entries.
	MaxCached int

	mu    sync.Mutex
	cache map[[32]byte]time.Time
}

// Verify implements Verifier.
func (v *URLVerifier) Verify(ctx context.Context, user, password, sipUserID string) error {
	if user == "" || password == "" {
		return ErrDenied
	}
	key := sha256.Sum256([]byte(user + "\x00" + password + "\x00" + sipUserID))
	now := time.Now()
	v.mu.Lock()
	if exp, ok := v.cache[key]; ok && now.Before(exp) {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()

	u, err := url.Parse(v.URL)
	if err != nil {
		return fmt.Errorf("%w: bad verifier URL", ErrVerifierDown)
	}
	q := u.Query()
	q.Set("sip_user_id", sipUserID)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return ErrVerifierDown // the error would quote the URL
	}
	req.SetBasicAuth(user, password)
	c := v.Client
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		// The URL (which may hold a token) and the credentials stay out of the error.
		return ErrVerifierDown
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden || res.StatusCode == http.StatusNotFound:
		return ErrDenied
	default:
		return fmt.Errorf("%w: status %d", ErrVerifierDown, res.StatusCode)
	}
	if v.CacheFor > 0 {
		max := v.MaxCached
		if max <= 0 {
			max = 10000
		}
		v.mu.Lock()
		if v.cache == nil {
			v.cache = make(map[[32]byte]time.Time)
		}
		if len(v.cache) >= max {
			for k, exp := range v.cache {
				if !now.Before(exp) {
					delete(v.cache, k)
				}
			}
			if len(v.cache) >= max {
				v.cache = make(map[[32]byte]time.Time)
			}
		}
		v.cache[key] = now.Add(v.CacheFor)
		v.mu.Unlock()
	}
	return nil
}

// authError is a refused request: its code and message are shown.
type authError struct {
	code int
	msg  string
}

func (e *authError) Error() string { return e.msg }

// authorize checks the request's Basic credentials for account sipUserID.
func (h *Hook) authorize(r *http.Request, sipUserID string) error {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return &authError{http.StatusUnauthorized, "credentials required (HTTP Basic)"}
	}
	switch err := h.opts.Verifier.Verify(r.Context(), user, pass, sipUserID); {
	case err == nil:
		return nil
	case errors.Is(err, ErrDenied):
		return &authError{http.StatusForbidden, "credentials refused for this sip_user_id"}
	default:
		h.log.WithField("err", err).Warn("PBX-hook credential verifier failed")
		return &authError{http.StatusServiceUnavailable, "cannot verify credentials now; try again"}
	}
}
