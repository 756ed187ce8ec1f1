package call

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// PushDevice is the push destination of a stored device: its tokens, each
// left out once the push service called it dead.
func PushDevice(d store.Device) push.Device {
	pd := push.Device{ID: d.ID, Platform: d.Platform, AppID: d.AppID, Sandbox: d.Sandbox}
	if !d.TokenInvalid {
		pd.PushToken = d.PushToken
	}
	if !d.AlertTokenInvalid {
		pd.AlertToken = d.AlertToken
	}
	return pd
}

// MarkDeadToken records, after a push to d failed with a dead token, that
// the token used (and only it) is dead.
func MarkDeadToken(ctx context.Context, st interface {
	MarkTokenInvalid(ctx context.Context, selector, deviceID, token string) error
}, n push.Notification) error {
	tok := n.DeviceToken()
	if tok == "" {
		return nil
	}
	return st.MarkTokenInvalid(ctx, n.Selector, n.Device.ID, tok)
}

// notifyEnd tells every device pushed for the call that it ended before one
// of them took it: kind is push.KindMissedCall or push.KindAnsweredElsewhere
// (skip names the device that answered). Never a VoIP push: Apple requires
// every VoIP push to be reported to CallKit as a new call (see
// push.KindCall). Operators turn these pushes off in the push texts.
func (c *call) notifyEnd(kind push.Kind, skip string) {
	m := c.m
	for _, d := range c.devices {
		if skip != "" && d.ID == skip {
			continue
		}
		n := c.notification(kind, d)
		if n.DeviceToken() == "" {
			continue // an iPhone without an alert token: nothing may be sent
		}
		m.spawn(func() {
			ctx, cancel := context.WithTimeout(m.ctx, m.opts.PushTimeout)
			defer cancel()
			if kind == push.KindMissedCall {
				n.MissedCalls = c.missedSince(ctx, d.LastSeen)
			}
			res, err := m.opts.Push.Send(ctx, n)
			switch {
			case err == nil, errors.Is(err, push.ErrTurnedOff):
			case res.TokenInvalid:
				if merr := MarkDeadToken(context.WithoutCancel(ctx), m.opts.Store, n); merr != nil {
					c.log.WithField("err", merr).Warn("call: mark push token invalid")
				}
			default:
				c.log.WithFields(logrus.Fields{"device": d.ID, "kind": string(kind), "err": err}).Debug("call: end-of-call push failed")
			}
		})
	}
}

// missedSince counts the missed calls of the instance received after since
// (when the device last registered), this one included: the missed-call
// alert's badge.
func (c *call) missedSince(ctx context.Context, since time.Time) int {
	recs, err := c.m.opts.Store.Calls(ctx, c.sel, 99)
	if err != nil {
		return 1
	}
	n := 0
	for _, r := range recs {
		if r.Outcome == store.OutcomeMissed && r.ReceivedAt.After(since) {
			n++
		}
	}
	return max(n, 1)
}

// mergedRequest reports whether req is the same INVITE as a call this
// instance already has (same Call-ID, From tag and CSeq, another Via
// branch): a forking proxy reached our contact twice. RFC 3261 §8.2.2.2
// answers such a merged request with 482 (Loop Detected); above all it must
// not wake the devices a second time, whose app would see a second call.
func (m *Manager) mergedRequest(sel string, req *inbound) bool {
	if req.sip == nil {
		return false
	}
	tag, cseq := req.sip.FromTag(), strings.TrimSpace(req.header("CSeq"))
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.byCallID[req.callID] {
		if c.sel == sel && c.inv != nil && c.fromTag == tag && strings.TrimSpace(c.inv.Header("CSeq")) == cseq {
			return true
		}
	}
	return false
}

// connectLate serves a device woken by the call's VoIP push that connects
// after the call ended (cancelled, answered elsewhere, timed out): iOS
// requires the app to report that push to CallKit as a call, so the device
// gets the INVITE on its connection and at once a CANCEL (its 487 goes
// nowhere), and the app can show and end the call. A 2xx that crosses the
// CANCEL is acknowledged and hung up.
func (c *call) connectLate(req *inbound, contact string, granted sipua.Header, reply func(int, string, ...sipua.Header)) {
	m := c.m
	flow := req.sip.Flow()
	b := &branch{flow: flow, device: limit(req.header(DeviceHeader), 128), closed: true}
	c.mu.Lock()
	for _, x := range c.late {
		if x.flow.Same(flow) {
			// A refresh of a late device's REGISTER: it has its INVITE and CANCEL already.
			c.mu.Unlock()
			reply(200, "OK", granted)
			return
		}
	}
	if len(c.late) >= maxBranches {
		c.mu.Unlock()
		reply(403, "Too Many Devices")
		return
	}
	c.late = append(c.late, b)
	c.mu.Unlock()
	reply(200, "OK", granted)
	c.log.WithFields(logrus.Fields{"device": b.device, "flow": flow.Remote()}).Info("call: device connected after the call ended: INVITE then CANCEL")
	m.spawn(func() {
		ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
		defer cancel()
		tx, err := m.opts.SIP.Forward(ctx, c.inv, sipua.ForwardOptions{
			Flow: flow, RequestURI: contact,
			OnResponse: func(r *sipua.Response) {
				if r.Status >= 200 && r.Status < 300 && !r.Local() {
					m.spawn(func() { c.closeLate(b, r) })
				}
			},
		})
		if err != nil {
			c.log.WithField("err", err).Info("call: relay INVITE to a late device")
			return
		}
		tx.Cancel()
	})
}
