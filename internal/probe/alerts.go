package probe

import (
	"context"
	"time"
)

// window is the alert rate limit of one target: when it last alerted, and the
// latest change waiting for the window to end.
type window struct {
	last    time.Time
	pending Change
	count   int // changes folded into pending; 0 when nothing waits
}

// dispatch records each change in the History and hands it to the alerter
// queues, at most one alert per target per MinAlertInterval: a change inside
// the window waits for its end, and later changes replace it, so the alert
// that goes out states the latest change and how many were suppressed.
func (p *Prober) dispatch(ctx context.Context, queues []chan Change) {
	wins := make(map[string]*window)
	waiting := make(map[string]*window) // the windows with a pending change
	pruneAt := 1024
	timer := p.opt.Clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var armed time.Time
	for {
		// Arm the timer for the earliest window with a change waiting.
		var first time.Time
		for _, w := range waiting {
			if end := w.last.Add(p.opt.MinAlertInterval); first.IsZero() || end.Before(first) {
				first = end
			}
		}
		if !first.Equal(armed) {
			if first.IsZero() {
				timer.Stop()
			} else {
				timer.Reset(first.Sub(p.opt.Clock.Now()))
			}
			armed = first
		}
		var timerC <-chan time.Time
		if !armed.IsZero() {
			timerC = timer.C()
		}

		select {
		case ch := <-p.changes:
			p.addHistory(ctx, ch.Event)
			now := p.opt.Clock.Now()
			w := wins[ch.Target]
			switch {
			case w == nil:
				wins[ch.Target] = &window{last: now}
				p.enqueue(queues, ch)
			case w.count == 0 && now.Sub(w.last) >= p.opt.MinAlertInterval:
				w.last = now
				p.enqueue(queues, ch)
			default:
				w.pending = ch
				w.count++
				waiting[ch.Target] = w
			}
			if len(wins) >= pruneAt {
				for k, w := range wins {
					if w.count == 0 && now.Sub(w.last) >= p.opt.MinAlertInterval {
						delete(wins, k)
					}
				}
				pruneAt = max(1024, 2*len(wins))
			}
		case <-timerC:
			armed = time.Time{}
			now := p.opt.Clock.Now()
			for k, w := range waiting {
				if now.Sub(w.last) < p.opt.MinAlertInterval {
					continue
				}
				ch := w.pending
				ch.Suppressed = w.count - 1
				p.stats.coalesced.Add(uint64(ch.Suppressed))
				w.last, w.pending, w.count = now, Change{}, 0
				delete(waiting, k)
				p.enqueue(queues, ch)
			}
		case <-ctx.Done():
			return
		}
	}
}

// addHistory records ev, logging a failure: history is for operators, and a
// store hiccup must not stop alerting.
func (p *Prober) addHistory(ctx context.Context, ev Event) {
	if p.opt.History == nil {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, p.opt.AlertTimeout)
	defer cancel()
	if err := p.opt.History.AddProbeEvent(hctx, ev); err != nil && ctx.Err() == nil {
		p.stats.historyFailed.Add(1)
		p.log.WithField("target", ev.Target).WithError(err).Warn("cannot record probe event")
	}
}

// enqueue hands ch to every alerter queue without waiting; a full queue
// means that alerter is stuck, and the alert is dropped and counted.
func (p *Prober) enqueue(queues []chan Change, ch Change) {
	for _, q := range queues {
		select {
		case q <- ch:
		default:
			p.stats.alertsDropped.Add(1)
			p.log.WithField("target", ch.Target).WithField("state", ch.NewState).Warn("alert queue full, alert dropped")
		}
	}
}

// runAlerter feeds one alerter from its queue.
func (p *Prober) runAlerter(ctx context.Context, a Alerter, q <-chan Change) {
	for {
		select {
		case ch := <-q:
			actx, cancel := context.WithTimeout(ctx, p.opt.AlertTimeout)
			err := a.Alert(actx, ch)
			cancel()
			switch {
			case err == nil:
				p.stats.alertsSent.Add(1)
			case ctx.Err() != nil:
				return // stopping: the cancelled alert is not a failure of the alerter
			default:
				p.stats.alertsFailed.Add(1)
				p.log.WithField("target", ch.Target).WithField("state", ch.NewState).WithError(err).Warn("alert failed")
			}
		case <-ctx.Done():
			return
		}
	}
}
