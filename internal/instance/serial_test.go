package instance

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/pkg/registration"
)

// "Off" and then "background" from the app, both accepted before a worker acted on the first:
// the later registration wins, as if the two had been handled one after the other. The forget
// must not delete the instance (and its stored row) that the second registration was
// acknowledged for.
func TestRegistrationAfterQueuedForgetIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.Workers = 1 })
		defer h.m.Stop()
		if err := h.send(regFor("dd000001", "dora", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		// Keep the only worker busy with another instance's REGISTER.
		release := make(chan struct{})
		h.reg.set("busy", func(b sipua.Binding) (sipua.Result, error) { <-release; return grant(b) })
		if err := h.send(regFor("dd000002", "busy", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		off := regFor("dd000001", "dora", registration.ModeOff)
		if err := h.send(off); err != nil {
			t.Fatal(err)
		}
		if err := h.send(regFor("dd000001", "dora", registration.ModeBackground)); err != nil {
			t.Fatal(err)
		}
		close(release)
		synctest.Wait()
		s, ok := h.m.Snapshot("dd000001")
		if !ok || s.Phase != (Phase{RegisterLoop, Registered}) {
			t.Fatalf("after off then background: held %v, phase %v; want held and registered", ok, s.Phase)
		}
		if got := h.st.get("dd000001"); got.Mode != string(registration.ModeBackground) {
			t.Fatalf("stored row after off then background: %+v; want mode background", got)
		}
	})
}

// Two first registrations of one new selector from two devices with different passwords:
// whichever is stored first creates the selector, and the other must prove it owns it, which
// it cannot. Exactly one of each pair is accepted, as if they had come one after the other.
func TestConcurrentFirstRegistrationsAreSerial(t *testing.T) {
	h := newHarness(t, nil)
	defer h.m.Stop()
	const pairs = 40
	var wg sync.WaitGroup
	results := make([][2]error, pairs)
	for i := range pairs {
		for j := range 2 {
			r := regFor(fmt.Sprintf("ee%06d", i), fmt.Sprintf("e%d", i), registration.ModeForeground)
			r.Account.Password = fmt.Sprintf("pw-%d-%d", i, j)
			r.Device.ID, r.Device.Secret = fmt.Sprintf("phone-%d", j), fmt.Sprintf("secret-%d-%d", i, j)
			sealed, err := registration.Seal(r, h.pub)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i][j] = h.m.Register(t.Context(), sealed)
			}()
		}
	}
	wg.Wait()
	for i, r := range results {
		ok := 0
		for _, err := range r {
			switch {
			case err == nil:
				ok++
			case statusOf(err) != 403:
				t.Errorf("pair %d: %v, want accepted or 403", i, err)
			}
		}
		if ok != 1 {
			t.Errorf("pair %d: %d of 2 first registrations accepted (%v), want exactly 1", i, ok, r)
		}
	}
}
