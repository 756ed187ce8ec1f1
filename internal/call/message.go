package call

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sirupsen/logrus"
)

// maxPushedText bounds the message text put in a push: APNs takes 4 KiB of payload, FCM 4 KB.
const maxPushedText = 1024

// handleMessage stores a MESSAGE (RFC 3428) as a waiting message, answers 200 once it is
// committed (so a crash cannot lose an acknowledged message) and pushes it to the devices.
func (m *Manager) handleMessage(user string, req *inbound, log logrus.FieldLogger, reply func(int, string, ...sipua.Header)) {
	sel, ok := m.opts.Instances.ByContact(user)
	var acc Account
	if ok {
		acc, ok = m.opts.Instances.Account(sel)
	}
	if !ok {
		m.replyUnknown(user, reply)
		return
	}
	log = log.WithField("selector", sel)
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	if !m.sources.allowed(ctx, acc, req.source) {
		reply(403, "Forbidden")
		log.WithField("proxy", acc.Proxy).Warn("call: MESSAGE from a source that is not the instance's proxy")
		return
	}
	if !acc.Active {
		reply(480, "Temporarily Unavailable", sipua.Header{Name: "X-Sipis-Reason", Value: "Instance-Off"})
		return
	}
	if len(req.body) > m.opts.MaxMessageSize {
		// RFC 3261 §21.4.11; RFC 3428 §7 lets a recipient refuse large messages.
		// The limit is in the reason phrase, so that a sender sees why (issue 12 point 6).
		reply(413, "Request Entity Too Large (limit "+strconv.Itoa(m.opts.MaxMessageSize)+" bytes)")
		log.WithField("size", len(req.body)).Info("call: MESSAGE too large")
		return
	}
	ct := strings.TrimSpace(req.header("Content-Type"))
	switch f := m.filter(req, mediaType(ct)); f.Action {
	case Drop:
		reply(200, "OK")
		log.WithField("content_type", ct).Debug("call: MESSAGE dropped by filter")
		return
	case Reject:
		code, phrase := f.Code, f.Phrase
		if code == 0 {
			code, phrase = 415, "Unsupported Media Type"
		}
		if phrase == "" {
			phrase = "Rejected"
		}
		var hs []sipua.Header
		if code == 415 {
			// RFC 3261 §21.4.13: say what we take.
			hs = append(hs, sipua.Header{Name: "Accept", Value: "text/plain"})
		}
		reply(code, phrase, hs...)
		log.WithFields(logrus.Fields{"content_type": ct, "status": code}).Info("call: MESSAGE refused by filter")
		return
	}
	msg := &store.Message{
		Selector: sel, From: limit(clean(req.from), 1024), ContentType: limit(ct, 256), Body: req.body,
		CallID: limit(req.callID, 256), ReceivedAt: m.clock.Now(),
	}
	if err := m.opts.Store.AddMessage(ctx, msg); err != nil {
		reply(500, "Server Internal Error")
		log.WithField("err", err).Error("call: store MESSAGE")
		return
	}
	reply(200, "OK")
	log.WithFields(logrus.Fields{"message_id": msg.ID, "size": len(msg.Body)}).Info("call: MESSAGE stored")

	devs, err := m.opts.Store.Devices(ctx, sel)
	if err != nil {
		log.WithField("err", err).Warn("call: read devices for MESSAGE push")
		return
	}
	name, uri := callerOf(req.header, req.from)
	text := ""
	if m.opts.PushMessageText && mediaType(ct) == "text/plain" && utf8.Valid(req.body) {
		text = limit(string(req.body), maxPushedText)
	}
	for _, d := range devs {
		n := push.Notification{
			Kind: push.KindMessage, Selector: sel, PairingID: strconv.FormatInt(msg.ID, 10),
			CallerName: name, CallerURI: uri, MessageText: text,
			Device: PushDevice(d),
		}
		if n.DeviceToken() == "" {
			continue // no live token for messages (an iPhone without an alert token)
		}
		m.spawn(func() {
			ctx, cancel := context.WithTimeout(m.ctx, m.opts.PushTimeout)
			defer cancel()
			res, err := m.opts.Push.Send(ctx, n)
			if err == nil || errors.Is(err, push.ErrTurnedOff) {
				return
			}
			dlog := log.WithFields(logrus.Fields{"device": d.ID, "token": push.ShortToken(n.DeviceToken()), "err": err})
			dlog.Warn("call: MESSAGE push failed")
			if res.TokenInvalid {
				if err := MarkDeadToken(context.WithoutCancel(ctx), m.opts.Store, n); err != nil {
					dlog.WithField("err", err).Warn("call: mark push token invalid")
				}
			}
		})
	}
}

// filter returns the first filter matching the MESSAGE (media type mt), or an Accept one.
func (m *Manager) filter(req *inbound, mt string) Filter {
	for _, f := range m.opts.Filters {
		if f.matches(req, mt) {
			return f
		}
	}
	return Filter{Action: Accept}
}

// mediaType returns the lower-case type/subtype of a Content-Type value, without parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}
