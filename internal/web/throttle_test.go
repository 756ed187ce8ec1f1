package web

import (
	"errors"
	"testing"
	"time"
)

// fail records one failed check of key, as a wrong password does.
func (t *throttle) fail(tb testing.TB, key string) {
	tb.Helper()
	a, err := t.begin(tb.Context(), key)
	if err != nil {
		var le *lockedError
		if errors.As(err, &le) {
			return // already locked out: nothing is checked
		}
		tb.Fatalf("begin %s: %v", key, err)
	}
	a.done(failed)
}

// blocked returns how long key must still wait (0 if it may try), without
// leaving an attempt behind.
func (t *throttle) blocked(tb testing.TB, key string) time.Duration {
	tb.Helper()
	a, err := t.begin(tb.Context(), key)
	if err == nil {
		a.done(neutral)
		return 0
	}
	var le *lockedError
	if !errors.As(err, &le) {
		tb.Fatalf("begin %s: %v", key, err)
	}
	return le.wait
}

// tracked returns the number of keys the throttle holds.
func (t *throttle) tracked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.state)
}
