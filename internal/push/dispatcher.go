package push

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sirupsen/logrus"
)

// Defaults of the Dispatcher's retry policy.
const (
	DefaultMinBackoff  = 200 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultMaxAttempts = 6
)

// Dispatcher sends a notification through the notifier of its device's
// platform, retrying transient failures. Set the exported fields, if at all,
// before the first Send; Send is then safe for concurrent use.
type Dispatcher struct {
	// MinBackoff is the wait before the first retry; each later retry waits
	// twice as long, up to MaxBackoff. Every wait is jittered to between
	// half and all of its nominal value so that many failing pushes do not
	// come back in step.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the number of sends of one notification, whatever
	// the deadline.
	MaxAttempts int
	// Logger receives one entry per retry and per final failure; nil
	// discards them.
	Logger logrus.FieldLogger
	// Texts are the operator's push texts; nil means the built-in English
	// ones. A notification without Alert gets its app's text.
	Texts *Texts
	// Problems counts and logs configuration errors (Result.ConfigError);
	// nil counts nothing and logs each at Warn.
	Problems *Problems
	// Now and Sleep replace the clock in tests; nil means the real clock.
	// Sleep must return ctx.Err() when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	notifiers map[string]Notifier
}

// ErrTurnedOff is matched by the error of a send the operator's texts turn
// off (for example missed-call alerts).
var ErrTurnedOff = errors.New("push: this kind of push is turned off")

// NewDispatcher returns a Dispatcher over the given notifiers, one per
// platform (a later notifier for the same platform replaces an earlier one).
func NewDispatcher(notifiers ...Notifier) *Dispatcher {
	d := &Dispatcher{
		MinBackoff:  DefaultMinBackoff,
		MaxBackoff:  DefaultMaxBackoff,
		MaxAttempts: DefaultMaxAttempts,
		notifiers:   make(map[string]Notifier, len(notifiers)),
	}
	for _, n := range notifiers {
		if n != nil {
			d.notifiers[n.Platform()] = n
		}
	}
	return d
}

// Platforms returns the platforms the dispatcher can send to.
func (d *Dispatcher) Platforms() []string {
	out := make([]string, 0, len(d.notifiers))
	for p := range d.notifiers {
		out = append(out, p)
	}
	return out
}

// Send delivers n through the notifier of n.Device.Platform. A 429, a 5xx
// or a transport error is retried with exponential backoff and jitter, the
// wait never shorter than the service's Retry-After, for as long as the
// next attempt can start before ctx's deadline and at most MaxAttempts
// times. A dead token or any other refusal is returned at once. The
// returned Result is the last attempt's, with Attempts set; the error is
// nil exactly when the push was accepted.
//
// A notification whose kind the operator turned off for the device's app
// is not sent: the error matches ErrTurnedOff. One to a device without a
// token for its kind is not sent either (ErrNoToken).
func (d *Dispatcher) Send(ctx context.Context, n Notification) (Result, error) {
	nt, ok := d.notifiers[n.Device.Platform]
	if !ok {
		return Result{}, fmt.Errorf("%w %q", ErrNoNotifier, n.Device.Platform)
	}
	if d.Texts.Off(&n) && !n.Kind.IsCall() {
		return Result{}, fmt.Errorf("%w: %s for app %q", ErrTurnedOff, n.Kind, n.Device.AppID)
	}
	if n.DeviceToken() == "" {
		return Result{}, fmt.Errorf("%w (%s to device %q)", ErrNoToken, n.Kind, n.Device.ID)
	}
	if n.SentAt.IsZero() {
		n.SentAt = d.now()
	}
	if n.Alert == nil && !(n.Kind == KindExpiry && n.Silent) {
		n.Alert = d.Texts.Render(&n)
	}
	log := logger(d.Logger).WithFields(logrus.Fields{
		"platform": n.Device.Platform,
		"device":   n.Device.ID,
		"token":    ShortToken(n.DeviceToken()),
		"kind":     string(n.Kind),
		"selector": n.Selector,
	})
	maxAttempts := d.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = DefaultMaxAttempts
	}
	var prev Result
	var prevErr error
	for attempt := 1; ; attempt++ {
		res, err := nt.Send(ctx, n)
		res.Attempts = attempt
		if err == nil {
			return res, nil
		}
		if res.Status == 0 && prevErr != nil && ctx.Err() != nil {
			// A retry cut short by the deadline says less than the answer
			// before it: report that answer.
			prev.Attempts = attempt
			log.WithFields(logrus.Fields{"status": prev.Status, "reason": prev.Reason, "attempt": attempt, "err": err}).
				Warn("push failed; last retry cut short by the deadline")
			return prev, fmt.Errorf("%w (retry cut short: %v)", prevErr, ctx.Err())
		}
		prev, prevErr = res, err
		log := log.WithFields(logrus.Fields{"status": res.Status, "reason": res.Reason, "attempt": attempt, "err": err})
		if res.TokenInvalid {
			log.Info("push token is dead; not retrying")
			return res, err
		}
		if res.ConfigError {
			if d.Problems != nil {
				d.Problems.Note(d.Logger, n.Selector, n.Device.Platform, res.Reason)
			} else {
				log.Warn("push refused because of the configuration")
			}
			return res, err
		}
		if !res.Retryable || ctx.Err() != nil || attempt >= maxAttempts {
			log.Warn("push failed")
			return res, err
		}
		wait := d.backoff(attempt)
		if res.RetryAfter > wait {
			wait = res.RetryAfter
		}
		if dl, ok := ctx.Deadline(); ok && d.now().Add(wait).After(dl) {
			log.WithField("wait", wait).Warn("push failed; no time left to retry before the deadline")
			return res, err
		}
		log.WithField("wait", wait).Debug("push failed; retrying")
		if serr := d.sleep(ctx, wait); serr != nil {
			return res, err
		}
	}
}

// backoff returns the jittered wait before retry number attempt (1-based).
func (d *Dispatcher) backoff(attempt int) time.Duration {
	lo, hi := d.MinBackoff, d.MaxBackoff
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi < lo {
		hi = lo
	}
	w := lo
	for i := 1; i < attempt && w < hi; i++ {
		w *= 2
	}
	w = min(w, hi)
	half := w / 2
	return half + rand.N(w-half+1)
}

func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Dispatcher) sleep(ctx context.Context, w time.Duration) error {
	if d.Sleep != nil {
		return d.Sleep(ctx, w)
	}
	t := time.NewTimer(w)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
