package instance

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/pkg/registration"
)

// recPusher records notices with the (bubble) time they were sent. It is as
// strict as the dispatcher: no push without the token of its kind.
type recPusher struct {
	mu   sync.Mutex
	sent []sentNotice
}

type sentNotice struct {
	at time.Time
	n  push.Notification
}

func (p *recPusher) Send(_ context.Context, n push.Notification) (push.Result, error) {
	if !n.Kind.Valid() || n.DeviceToken() == "" {
		return push.Result{}, push.ErrNoToken
	}
	p.mu.Lock()
	p.sent = append(p.sent, sentNotice{time.Now(), n})
	p.mu.Unlock()
	return push.Result{Accepted: true}, nil
}

func (p *recPusher) all() []sentNotice {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sentNotice(nil), p.sent...)
}

// The original's deployment: MaxAge 7 days, silent every hour from 24 h before, alerts every
// 11 h from 12 h before (at 12 h and 1 h), then the "off" alert when the instance expires.
func remindOptions(p *recPusher) func(*Options) {
	return func(o *Options) {
		o.MaxAge, o.SweepInterval = 7*24*time.Hour, 10*time.Minute
		o.Reminders = Reminders{
			Push: p, SilentIn: 24 * time.Hour, SilentPeriod: time.Hour,
			IntrusiveIn: 12 * time.Hour, IntrusivePeriod: 11 * time.Hour, OffNotice: true, Tick: time.Minute,
		}
	}
}

func iphoneReg(sel, appID string) *registration.Registration {
	r := regFor(sel, "rita", registration.ModeBackground)
	r.Account.Expires = 86400 // fewer refreshes over the weeks these tests span
	r.Device = registration.Device{ID: "iphone", Platform: "apns", PushToken: "0e0e0e", AlertToken: "a1a1a1", AppID: appID}
	return r
}

func TestExpiryRemindersAtConfiguredTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &recPusher{}
		h := newHarness(t, remindOptions(p))
		defer h.m.Stop()
		t0 := time.Now()
		if err := h.send(iphoneReg("ab00c0de", "com.example.phone")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		time.Sleep(7*24*time.Hour + 30*time.Minute)
		synctest.Wait()

		expiry := t0.Add(7 * 24 * time.Hour)
		var silent, intrusive, off []time.Duration // before the expiry
		for _, s := range p.all() {
			if s.n.Selector != "ab00c0de" || s.n.DeviceToken() != "a1a1a1" || s.n.Device.Platform != "apns" {
				t.Errorf("notice %+v not to the alert token", s.n)
			}
			before := expiry.Sub(s.at)
			switch {
			case s.n.Kind == push.KindExpiry && s.n.Silent:
				silent = append(silent, before)
			case s.n.Kind == push.KindExpiry:
				intrusive = append(intrusive, before)
				if !s.n.ExpiresAt.Equal(expiry) || s.n.User != "rita" {
					t.Errorf("intrusive reminder %+v", s.n)
				}
			case s.n.Kind == push.KindOff:
				off = append(off, before)
			default:
				t.Errorf("unexpected push %s", s.n.Kind)
			}
		}
		// Each reminder goes out within one tick (a minute) after its slot.
		near := func(got time.Duration, want time.Duration) bool {
			return got <= want && got > want-time.Minute-time.Second
		}
		if len(silent) != 24 {
			t.Fatalf("%d silent reminders, want 24 (every hour from 24 h before): %v", len(silent), silent)
		}
		for i, d := range silent {
			if want := time.Duration(24-i) * time.Hour; !near(d, want) {
				t.Errorf("silent reminder %d at %v before expiry, want %v", i, d, want)
			}
		}
		if len(intrusive) != 2 || !near(intrusive[0], 12*time.Hour) || !near(intrusive[1], time.Hour) {
			t.Errorf("intrusive reminders at %v before expiry, want 12h and 1h", intrusive)
		}
		if len(off) != 1 || off[0] > 0 || off[0] < -11*time.Minute {
			t.Errorf("off alerts at %v before expiry, want one within a sweep after it", off)
		}
		if _, ok := h.m.Snapshot("ab00c0de"); ok {
			t.Error("the expired instance is still held")
		}
	})
}

// A registration from the app renews the instance: the reminders stop and start over from
// the new expiry.
func TestRegistrationStopsReminders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &recPusher{}
		h := newHarness(t, func(o *Options) {
			remindOptions(p)(o)
			o.MaxAge = 2 * 24 * time.Hour // less fake time to run through
		})
		defer h.m.Stop()
		h.send(iphoneReg("ab00c0de", "com.example.phone"))
		synctest.Wait()
		time.Sleep(24*time.Hour + 13*time.Hour) // 11 h before expiry: silent ones and one alert
		synctest.Wait()
		before := len(p.all())
		if before != 15 {
			t.Fatalf("%d reminders by 11 h before expiry, want 14 silent (24 h to 11 h before) and 1 intrusive", before)
		}
		if err := h.send(iphoneReg("ab00c0de", "com.example.phone")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		time.Sleep(23 * time.Hour) // one hour before the new expiry starts the series
		synctest.Wait()
		if n := len(p.all()); n != before {
			t.Errorf("%d reminders after the renewal, want none", n-before)
		}
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if n := len(p.all()); n == before {
			t.Error("no reminder from the new expiry on")
		}
	})
}

// An administrator turning the instance off sends the off alert; a premium app's instance
// lives PremiumMaxAge, and its reminders follow that expiry.
func TestOffNoticeAndPremium(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &recPusher{}
		h := newHarness(t, func(o *Options) {
			remindOptions(p)(o)
			o.MaxAge = 2 * 24 * time.Hour // less fake time to run through
			o.Reminders.PremiumMaxAge = 4 * 24 * time.Hour
			o.Reminders.PremiumApps = map[string]bool{"com.example.pro": true}
		})
		defer h.m.Stop()
		h.send(iphoneReg("ab00c0de", "com.example.phone"))
		pro := iphoneReg("ab00beef", "com.example.pro")
		pro.Account.User = "paul"
		h.send(pro)
		synctest.Wait()
		if err := h.m.TurnOff(context.Background(), "ab00c0de"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if s := p.all(); len(s) != 1 || s[0].n.Kind != push.KindOff || s[0].n.Selector != "ab00c0de" {
			t.Fatalf("after turning off: %+v", s)
		}
		time.Sleep(2*24*time.Hour + 23*time.Hour) // MaxAge is over; 25 h before the premium expiry
		synctest.Wait()
		if _, ok := h.m.Snapshot("ab00beef"); !ok {
			t.Fatal("the premium instance expired after MaxAge")
		}
		if n := len(p.all()); n != 1 {
			t.Errorf("%d pushes to the premium instance before its reminders are due", n-1)
		}
		time.Sleep(2*time.Hour + time.Minute) // 23 h before its expiry at PremiumMaxAge
		synctest.Wait()
		got := p.all()[1:]
		if len(got) != 2 || got[0].n.Selector != "ab00beef" || !got[0].n.Silent {
			t.Errorf("premium reminders %+v, want two silent ones", got)
		}
	})
}
