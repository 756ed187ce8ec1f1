package call

import (
	"context"
	"crypto/hmac"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/pkg/registration"
	"github.com/sirupsen/logrus"
)

// A woken device takes its call by connecting to the device-facing listener and sending
// REGISTER with the headers X-Sipis-Token: <token>, X-Sipis-Device: <device id> and
// X-Sipis-Proof: <registration.CallProof of its device secret> on that connection. sipis answers 200 and relays the INVITE to the device over the same
// connection as a stateful proxy (RFC 3261 §16): each connected device is a branch of a
// parallel fork (§16.7); the first 2xx wins, the other branches are cancelled and their devices
// get an "answered-elsewhere" push. sipis stays in the path with Record-Route and relays every
// request of the dialog both ways until BYE. It never acts on 3xx or REFER, it only relays
// them. sipis ends an answered dialog itself with BYE (RFC 3261 §15.1.1) when the device's
// connection drops (upstream only), when the dialog is older than Options.MaxDialogAge, and on
// Manager.Close (both ways), so that no dialog stays in memory and in ActiveCalls forever.
// A device's 1xx with a To tag opens an early dialog (RFC 3261 §12.1): PRACK (RFC 3262) and
// UPDATE (RFC 3311) are relayed in it both ways. Timer C (Options.TimerC, RFC 3261 §16.8)
// cancels a relayed INVITE or re-INVITE that got a provisional but no final response. A
// device's in-dialog request may only go to the caller's side of its own dialog; else 403.

// TokenHeader carries the call's one-time token in the device's REGISTER.
const TokenHeader = "X-Sipis-Token"

// DeviceHeader names the device (its registration id) in the REGISTER: it must be one of the
// devices the call was pushed to, and it is spared the "answered-elsewhere" push when it
// answers.
const DeviceHeader = "X-Sipis-Device"

// ProofHeader carries the device's proof that it holds its device secret:
// registration.CallProof(secret, device id, token). The token alone, which the push service
// and anyone who saw the push payload know, does not take a call.
const ProofHeader = "X-Sipis-Proof"

// cancelGrace bounds the wait for the devices' final responses after the caller's CANCEL
// (64*T1, RFC 3261 §16.8); then sipis answers 487 itself.
const cancelGrace = 32 * time.Second

// maxBranches bounds the devices the INVITE of one call is relayed to.
const maxBranches = 8

// registerExpires is the expiry granted to a device's REGISTER (seconds).
const registerExpires = 3600

// branch is the INVITE relayed to one connected device.
type branch struct {
	flow   *sipua.Flow
	device string
	tx     *sipua.ClientTx
	tag    string // the device's To tag: of its first 1xx with a tag (early dialog), then of its 2xx
	final  int    // its final response, 0 while pending
	closed bool   // sipis sent ACK and BYE for a 2xx that came too late
	timerC Timer  // Timer C (RFC 3261 §16.8), running from a provisional to the final response
	// timedOut: Timer C fired and the INVITE was cancelled; its final response (487) is not
	// the device's answer to the call.
	timedOut bool
}

// restartTimerC (re)starts b's Timer C on a provisional response (RFC 3261 §16.7 step 2); c.mu
// is held.
func (c *call) restartTimerC(b *branch) {
	if b.timerC != nil {
		b.timerC.Stop()
	}
	b.timerC = c.m.clock.AfterFunc(c.m.opts.TimerC, func() { c.timerCFired(b) })
}

// timerCFired cancels b's INVITE when its device sent a provisional but no final response
// within Timer C (RFC 3261 §16.8): the CANCEL's 487, or the transaction's own 408 64*T1 later,
// ends the branch.
func (c *call) timerCFired(b *branch) {
	c.mu.Lock()
	tx := b.tx
	switch {
	case b.final != 0:
		c.mu.Unlock()
		return
	case tx == nil:
		c.restartTimerC(b) // still being sent: look again later
		c.mu.Unlock()
		return
	}
	b.timedOut = true
	c.mu.Unlock()
	c.log.WithField("device", b.device).Info("call: Timer C fired, cancelling the INVITE to the device")
	tx.Cancel()
}

// stopTimerC stops b's Timer C at its final response; c.mu is held.
func (b *branch) stopTimerC() {
	if b.timerC != nil {
		b.timerC.Stop()
	}
}

// openBranches returns the branches still waiting for a final response, except skip.
func (c *call) openBranches(skip *branch) []*branch {
	var out []*branch
	for _, b := range c.branches {
		if b != skip && b.tx != nil && b.final == 0 {
			out = append(out, b)
		}
	}
	return out
}

// handleRegister takes a device's claim over SIP: a valid token, the id of a device the call
// was pushed to and that device's proof of its secret, on a TCP or TLS flow, attach the flow
// to the call and relay the INVITE over it. Each device takes a call once: its token is used
// up by the first flow that proves it (a refresh on that flow is still answered 200). A
// missing header gets 400; a bad, used or foreign token, device or proof gets 403 and changes
// nothing.
func (m *Manager) handleRegister(req *inbound, log logrus.FieldLogger, reply func(int, string, ...sipua.Header)) {
	token := strings.TrimSpace(req.header(TokenHeader))
	device := strings.TrimSpace(req.header(DeviceHeader))
	proof := strings.ToLower(strings.TrimSpace(req.header(ProofHeader)))
	switch {
	case token == "":
		reply(400, "Missing "+TokenHeader)
		return
	case device == "":
		reply(400, "Missing "+DeviceHeader)
		return
	case proof == "":
		reply(400, "Missing "+ProofHeader)
		return
	case len(token) != 32 || strings.Trim(token, "0123456789abcdef") != "" ||
		len(proof) != 64 || strings.Trim(proof, "0123456789abcdef") != "" || len(device) > 256:
		reply(403, "Forbidden")
		return
	case req.sip == nil || m.opts.SIP == nil:
		reply(503, "Service Unavailable")
		return
	case req.sip.Flow().Transport() == "udp":
		// A device behind NAT is reached only over the connection it opened (RFC 5626).
		reply(403, "Use TCP Or TLS")
		return
	}
	c := m.lookupToken(token)
	if c == nil || c.inv == nil {
		reply(403, "Forbidden")
		log.Debug("call: REGISTER with an unknown or used token")
		return
	}
	pushed := false
	for _, d := range c.devices {
		pushed = pushed || d.ID == device
	}
	if !pushed {
		reply(403, "Forbidden")
		c.log.WithFields(logrus.Fields{"device": limit(device, 64), "src": req.source}).Warn("call: REGISTER for a device the call was not pushed to")
		return
	}
	// The manager's context, not the call's: a device woken for a call that has since ended
	// still proves itself, to get the INVITE and CANCEL its app reports to CallKit.
	ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
	err := m.opts.Store.CheckDeviceProof(ctx, c.sel, device, func(secret []byte) bool {
		return hmac.Equal([]byte(registration.CallProof(string(secret), device, token)), []byte(proof))
	})
	cancel()
	if err != nil {
		reply(403, "Forbidden")
		c.log.WithFields(logrus.Fields{"device": device, "src": req.source, "err": err}).Warn("call: REGISTER with a wrong device proof")
		return
	}
	c.connect(req, device, reply)
}

// connect adds the device on req's flow as a branch and relays the INVITE to it. A flow is
// one branch at most: a repeated REGISTER on it (a refresh) is answered 200 and changes nothing,
// also once the call was answered on it.
func (c *call) connect(req *inbound, device string, reply func(int, string, ...sipua.Header)) {
	m := c.m
	flow := req.sip.Flow()
	_, contact := parseNameAddr(firstOfList(req.header("Contact")))
	if contact == "" || strings.ContainsAny(contact, " \t") {
		contact = "sip:device@" + flow.Remote() + ";transport=" + flow.Transport()
	}
	// A long expiry, so that a standard stack does not REGISTER again in the middle of the call.
	granted := sipua.Header{Name: "Contact", Value: "<" + contact + ">;expires=" + strconv.Itoa(registerExpires)}
	b := &branch{flow: flow, device: device}
	c.mu.Lock()
	for _, x := range c.branches {
		if x.flow.Same(flow) {
			ok := x.device == device && !c.dialogOver && (c.phase != ended || c.winner != nil)
			c.mu.Unlock()
			if ok {
				reply(200, "OK", granted)
			} else {
				reply(403, "Forbidden")
			}
			return
		}
	}
	for _, x := range c.branches {
		if x.device == device {
			// The device's token is used up: a second connection presenting it is not the
			// device (or is a copy that must not get the caller's INVITE and SDP).
			c.mu.Unlock()
			reply(403, "Token Already Used")
			c.log.WithFields(logrus.Fields{"device": device, "flow": flow.Remote()}).Warn("call: second connection for a device that already took the call")
			return
		}
	}
	switch {
	case c.phase != ringing && c.phase != progressing && c.phase != relaying || c.cancelling:
		// The call ended or the caller gave up (RFC 3261 §9.2) while the device woke: it gets
		// the INVITE and at once CANCEL, so that its app can report the VoIP push to CallKit.
		c.mu.Unlock()
		if c.inv == nil || c.dialogOver {
			reply(403, "Call Ended")
			return
		}
		c.connectLate(req, contact, granted, reply)
		return
	case len(c.branches) >= maxBranches:
		c.mu.Unlock()
		reply(403, "Too Many Devices")
		c.log.WithField("flow", flow.Remote()).Warn("call: too many devices connected for one call")
		return
	}
	if c.phase != relaying {
		c.phase = relaying
		if c.timer != nil {
			c.timer.Stop()
		}
		if c.rec.ProgressAt.IsZero() {
			c.rec.ProgressAt = m.clock.Now()
		}
		// The device is here; it has T2 again to answer (RFC 3261 §16.8 Timer C plays this part).
		c.timer = m.clock.AfterFunc(m.opts.ProgressTimeout, func() {
			c.end(relaying, 480, "Temporarily Unavailable", store.OutcomeMissed, ReasonNotAnswered, true,
				sipua.Header{Name: "X-Sipis-Reason", Value: "No-Response-From-Device"})
		})
	}
	c.branches = append(c.branches, b)
	c.mu.Unlock()
	flow.Bind() // the device proved its token: its connection may idle through the call
	reply(200, "OK", granted)
	c.recordConnect(b.device) // the ladder on /debug
	c.log.WithFields(logrus.Fields{"device": b.device, "flow": flow.Remote()}).Info("call: device connected, relaying INVITE")

	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	tx, err := m.opts.SIP.Forward(ctx, c.inv, sipua.ForwardOptions{
		Flow: flow, RequestURI: contact, RecordRoute: true,
		OnResponse: func(r *sipua.Response) { c.recordDeviceResponse(b.device, r); c.branchResponse(b, r) },
	})
	c.mu.Lock()
	b.tx = tx
	if err != nil {
		b.final = 503
		c.mu.Unlock()
		c.log.WithField("err", err).Warn("call: relay INVITE to device")
		c.branchFailed()
		return
	}
	// The call ended, was answered or cancelled while we sent (cancelRelayed saw no tx yet).
	late := (c.phase != relaying || c.cancelling) && b.final == 0
	c.mu.Unlock()
	if late {
		tx.Cancel()
	}
}

// branchFailed ends the call when no branch is left waiting and none answered.
func (c *call) branchFailed() {
	c.mu.Lock()
	done := c.phase == relaying && len(c.openBranches(nil)) == 0 && c.pendingForward() == 0
	best := c.best
	cancelling := c.cancelling
	c.mu.Unlock()
	if !done {
		return
	}
	switch {
	case best != nil:
		c.relayFinal(best, cancelling)
	case cancelling:
		c.end(relaying, 487, "Request Terminated", store.OutcomeMissed, ReasonCancelled, true)
	default:
		c.end(relaying, 480, "Temporarily Unavailable", store.OutcomeMissed, ReasonNotConnected, true,
			sipua.Header{Name: "X-Sipis-Reason", Value: "No-Response-From-Device"})
	}
}

// pendingForward counts branches whose INVITE is still being sent; c.mu is held.
func (c *call) pendingForward() int {
	n := 0
	for _, b := range c.branches {
		if b.tx == nil && b.final == 0 {
			n++
		}
	}
	return n
}

// branchResponse handles a response of a device to the relayed INVITE (RFC 3261 §16.7).
func (c *call) branchResponse(b *branch, r *sipua.Response) {
	m := c.m
	c.mu.Lock()
	switch {
	case r.Status < 200:
		if b.final == 0 {
			// A reliable 18x (RFC 3262) or any 1xx with a tag creates an early dialog (RFC
			// 3261 §12.1): its PRACK and UPDATE (RFC 3311) are matched to this branch by it.
			if t := r.ToTag(); t != "" && b.tag == "" {
				b.tag = t
			}
			c.restartTimerC(b)
		}
		if c.phase == relaying {
			c.relay(r) // under mu: responses leave in order
		}
		c.mu.Unlock()
	case r.Status < 300:
		if r.Local() {
			c.mu.Unlock()
			return
		}
		b.final = r.Status
		b.stopTimerC()
		if c.phase == answered || (c.phase == ended && c.winner != nil) {
			// A retransmission, or a second device answering too: every 2xx goes upstream
			// (§16.7 step 5); the caller acknowledges and hangs up the extra dialog.
			b.tag = r.ToTag()
			c.relay(r)
			c.mu.Unlock()
			return
		}
		if c.phase != relaying {
			// The call ended without a winner: the device's dialog is ours to close, with
			// ACK then BYE over its flow (RFC 3261 §13.2.2.4, §15.1.1), once.
			first := !b.closed
			b.closed = true
			c.mu.Unlock()
			if first {
				c.log.WithField("code", r.Status).Warn("call: device answered after the call ended, hanging up")
				c.m.spawn(func() { c.closeLate(b, r) })
			}
			return
		}
		c.phase, c.winner, b.tag = answered, b, r.ToTag()
		c.devTo = r.Header("To")
		_, c.devContact = parseNameAddr(firstOfList(r.Header("Contact")))
		c.upCSeq = cseqNumber(c.inv.Header("CSeq"))
		if c.timer != nil {
			c.timer.Stop()
		}
		// A dialog whose BYE got lost would live forever: end it at the maximum age.
		c.timer = m.clock.AfterFunc(m.opts.MaxDialogAge, func() { c.hangUp(true, true, ReasonMaxAge) })
		now := m.clock.Now()
		c.rec.AnsweredAt = now
		c.rec.Outcome, c.rec.Reason, c.rec.DialogState = store.OutcomeAccepted, "", store.DialogStable
		c.relay(r)
		others := c.openBranches(b)
		c.mu.Unlock()
		c.save()
		c.log.WithField("device", b.device).Info("call: answered")
		// The device's connection is its only way in (RFC 5626): when it drops, the caller
		// is told with a BYE rather than left in a dead call.
		m.spawn(func() {
			select {
			case <-b.flow.Done():
				c.hangUp(false, true, ReasonDeviceLost)
			case <-c.ctx.Done():
			}
		})
		for _, o := range others {
			o.tx.Cancel()
		}
		c.notifyEnd(push.KindAnsweredElsewhere, b.device)
	default:
		b.final = r.Status
		b.stopTimerC()
		if c.phase != relaying {
			c.mu.Unlock()
			return
		}
		if !r.Local() && !b.timedOut && (c.best == nil || better(r.Status, c.best.Status)) {
			c.best = r
		}
		c.mu.Unlock()
		c.branchFailed()
	}
}

// closeLate acknowledges a device's 2xx that came after the call ended and ends its dialog with
// BYE, standing in for the caller.
func (c *call) closeLate(b *branch, r *sipua.Response) {
	_, target := parseNameAddr(firstOfList(r.Header("Contact")))
	if target == "" || c.inv == nil {
		c.log.Warn("call: late 2xx without Contact, cannot hang up")
		return
	}
	n := cseqNumber(c.inv.Header("CSeq"))
	for i, method := range []string{"ACK", "BYE"} {
		ctx, cancel := context.WithTimeout(c.m.ctx, 10*time.Second)
		_, err := c.m.opts.SIP.SendRequest(ctx, sipua.DialogRequest{Method: method, RequestURI: target,
			From: c.inv.From, To: r.Header("To"), CallID: c.callID, CSeq: n + uint32(i), Flow: b.flow})
		cancel()
		if err != nil {
			c.log.WithFields(logrus.Fields{"method": method, "err": err}).Info("call: cannot end a late device dialog")
			return
		}
	}
}

// better reports whether final response code a beats b as the one to relay (RFC 3261 §16.7
// step 6, simplified: a 6xx wins, else the lowest class).
func better(a, b int) bool {
	if a/100 == 6 || b/100 == 6 {
		return a/100 == 6 && b/100 != 6
	}
	return a/100 < b/100
}

// relayFinal relays a device's final non-2xx response and ends the call with its outcome.
func (c *call) relayFinal(r *sipua.Response, cancelling bool) {
	outcome, why := store.OutcomeRejected, ReasonDeviceFailed
	switch {
	case cancelling:
		outcome, why = store.OutcomeMissed, ReasonCancelled
	case r.Status == 486 || r.Status == 600:
		why = ReasonBusy
	case r.Status == 603 || r.Status == 403:
		why = ReasonDeclined
	}
	c.finish(relaying, outcome, why, true, func() { c.relay(r) })
}

// relay sends a device's response upstream.
func (c *call) relay(r *sipua.Response) {
	c.recordRelayed(r) // the ladder on /debug
	if err := c.inv.Relay(r); err != nil {
		c.log.WithFields(logrus.Fields{"code": r.Status, "err": err}).Warn("call: relay response upstream")
	}
}

// cancelRelayed handles the caller's CANCEL while the INVITE is relayed: 200 to the CANCEL,
// CANCEL to every device, whose 487 then goes upstream. It reports false when the call is
// not relaying.
func (c *call) cancelRelayed(reply func(int, string, ...sipua.Header)) bool {
	c.mu.Lock()
	if c.phase != relaying {
		c.mu.Unlock()
		return false
	}
	c.cancelling = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.timer = c.m.clock.AfterFunc(cancelGrace, func() {
		c.end(relaying, 487, "Request Terminated", store.OutcomeMissed, ReasonCancelled, true)
	})
	open := c.openBranches(nil)
	c.mu.Unlock()
	reply(200, "OK")
	for _, b := range open {
		b.tx.Cancel()
	}
	return true
}

// inDialog relays a request of a relayed dialog (it has a To tag and the Call-ID of a call):
// from a device's flow upstream, from upstream to the device whose To tag it carries. Several
// calls may share a Call-ID (a forking proxy sent the INVITE to more than one of our contacts),
// so a request is matched by its tags too (RFC 3261 §12): from a device, by its flow, its From
// tag (the device's To tag) and its To tag (the INVITE's From tag); from upstream, by its To
// tag (the device's) and From tag (the INVITE's), and only from the source the INVITE came
// from or an allowed one. It reports whether the request was such a request.
func (m *Manager) inDialog(req *inbound, reply func(int, string, ...sipua.Header)) bool {
	if req.sip == nil || req.method == "CANCEL" || req.sip.ToTag() == "" || m.opts.SIP == nil {
		return false
	}
	c, b, fromDevice := m.dialogOf(req)
	if c == nil {
		return false
	}
	if !c.inDialogAllowed(req, fromDevice, reply) {
		return true
	}
	o, bye := c.noteInDialog(req, b, fromDevice)
	c.forwardInDialog(req, o, bye, reply)
	return true
}

// dialogOf finds the call and branch of an in-dialog request (see inDialog for the matching),
// and whether it comes from the device's side; c is nil when the request is of no relayed
// dialog.
func (m *Manager) dialogOf(req *inbound) (c *call, b *branch, fromDevice bool) {
	m.mu.Lock()
	calls := append([]*call(nil), m.byCallID[req.callID]...)
	m.mu.Unlock()
	flow := req.sip.Flow()
	toTag, fromTag := req.sip.ToTag(), req.sip.FromTag()
	var up *call
	var upB *branch
	for _, x := range calls {
		x.mu.Lock()
		for _, y := range x.branches {
			if y.tag == "" || y.final >= 300 {
				// Not a dialog of a device, or an early dialog that a non-2xx final response
				// ended (RFC 3261 §12.3), e.g. the ACK of that response.
				continue
			}
			if y.flow.Same(flow) && y.tag == fromTag && x.fromTag == toTag {
				c, b = x, y
				break
			}
			if upB == nil && y.tag == toTag && x.fromTag == fromTag {
				up, upB = x, y
			}
		}
		x.mu.Unlock()
		if c != nil {
			return c, b, true
		}
	}
	return up, upB, false
}

// inDialogAllowed checks where an in-dialog request goes (from a device) or comes from (from
// upstream); a refused one is answered 403 (an ACK is dropped) and false returned.
func (c *call) inDialogAllowed(req *inbound, fromDevice bool, reply func(int, string, ...sipua.Header)) bool {
	switch {
	case fromDevice && !c.upstreamTarget(req.sip.NextHop()):
		// A device may only talk to the other side of its own dialog, never use sipis to
		// reach an arbitrary host (RFC 3261 §16.4, §26.4.3 open relay).
		c.log.WithFields(logrus.Fields{"method": req.method, "target": limit(req.sip.NextHop(), 128)}).Warn("call: device in-dialog request not addressed to the caller's side")
	case !fromDevice && !c.upstreamSource(req.source):
		c.log.WithFields(logrus.Fields{"method": req.method, "src": req.source}).Warn("call: in-dialog request from a source that did not send the INVITE")
	default:
		return true
	}
	if req.method != "ACK" {
		reply(403, "Forbidden")
	}
	return false
}

// noteInDialog notes the CSeq each side has used (for a BYE of sipis's own, RFC 3261
// §12.2.1.1) and a BYE of the answered dialog being relayed; it returns the options to
// forward the request with (towards the device: on its branch's flow) and whether it is a BYE.
func (c *call) noteInDialog(req *inbound, b *branch, fromDevice bool) (o sipua.ForwardOptions, bye bool) {
	n := cseqNumber(req.header("CSeq"))
	c.mu.Lock()
	defer c.mu.Unlock()
	if fromDevice {
		c.downCSeq = max(c.downCSeq, n)
	} else {
		o.Flow = b.flow
		c.upCSeq = max(c.upCSeq, n)
	}
	bye = req.method == "BYE"
	if bye && b == c.winner {
		// From now on the BYE's final response (relayed, or the transaction's own 408/503)
		// ends the dialog: a connection closing meanwhile must not end it a second time
		// (RFC 3261 §15.1.2).
		c.byeRelayed = true
	}
	return o, bye
}

// forwardInDialog relays an in-dialog request and its responses back (a re-INVITE under its
// own Timer C); when it cannot be relayed it is answered 483 or 480 (an ACK is dropped), and a
// BYE ends the dialog either way.
func (c *call) forwardInDialog(req *inbound, o sipua.ForwardOptions, bye bool, reply func(int, string, ...sipua.Header)) {
	var tc *reinviteTimerC
	if req.method == "INVITE" {
		tc = &reinviteTimerC{c: c, reply: reply}
	}
	o.OnResponse = func(r *sipua.Response) {
		if tc != nil && !tc.response(r.Status) {
			return // Timer C fired and 408 was sent: the call's side got its final response
		}
		if r.Local() {
			reply(r.Status, r.Reason)
		} else if err := req.sip.Relay(r); err != nil {
			c.log.WithFields(logrus.Fields{"method": req.method, "code": r.Status, "err": err}).Debug("call: relay in-dialog response")
		}
		if bye && r.Status >= 200 {
			c.endDialog("")
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 10*time.Second)
	defer cancel()
	tx, err := c.m.opts.SIP.Forward(ctx, req.sip, o)
	if err == nil {
		if tc != nil {
			tc.sent(tx)
		}
		return
	}
	c.log.WithFields(logrus.Fields{"method": req.method, "err": err}).Info("call: cannot relay in-dialog request")
	if req.method != "ACK" {
		if errors.Is(err, sipua.ErrTooManyHops) {
			reply(483, "Too Many Hops")
		} else {
			reply(480, "Temporarily Unavailable")
		}
	}
	if bye {
		c.endDialog("")
	}
}

// reinviteTimerC is Timer C of a relayed re-INVITE (RFC 3261 §16.8): started by a
// provisional response, stopped by the final one; when it fires the re-INVITE is cancelled
// and its sender answered 408, and later responses are dropped.
type reinviteTimerC struct {
	c     *call
	reply func(int, string, ...sipua.Header)

	mu     sync.Mutex
	timer  Timer
	tx     *sipua.ClientTx
	final  bool // a final response came
	gaveUp bool // Timer C fired: 408 was sent
}

// response notes a response to the re-INVITE; it reports false when it must not be relayed.
func (t *reinviteTimerC) response(status int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.gaveUp:
		return false
	case t.final:
		return true // a 2xx retransmission
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	if status >= 200 {
		t.final = true
		return true
	}
	t.timer = t.c.m.clock.AfterFunc(t.c.m.opts.TimerC, t.fire)
	return true
}

// sent records the transaction of the forwarded re-INVITE.
func (t *reinviteTimerC) sent(tx *sipua.ClientTx) {
	t.mu.Lock()
	t.tx = tx
	cancel := t.gaveUp
	t.mu.Unlock()
	if cancel && tx != nil {
		tx.Cancel()
	}
}

// fire cancels the re-INVITE and answers its sender 408 (RFC 3261 §16.8).
func (t *reinviteTimerC) fire() {
	t.mu.Lock()
	if t.final || t.gaveUp {
		t.mu.Unlock()
		return
	}
	t.gaveUp = true
	tx := t.tx
	t.mu.Unlock()
	t.c.log.Info("call: Timer C fired for a re-INVITE, cancelling it and answering 408")
	if tx != nil {
		tx.Cancel()
	}
	t.reply(408, "Request Timeout")
}

// upstreamTarget reports whether next, where a device's in-dialog request would go, is the
// caller's side of the dialog (RFC 3261 §12.2.1.1): the first entry of the INVITE's
// Record-Route (the device's route set after sipis) when it has one; else the caller's Contact
// (the remote target) or the host the INVITE came from.
func (c *call) upstreamTarget(next string) bool {
	host, port, err := sipua.URIHostPort(next)
	if err != nil || c.inv == nil {
		return false
	}
	if rr := c.inv.Headers("Record-Route"); len(rr) > 0 {
		h, p, err := sipua.URIHostPort(firstOfList(rr[0]))
		return err == nil && h == host && defaultPort(p) == defaultPort(port)
	}
	_, contact := parseNameAddr(firstOfList(c.inv.Header("Contact")))
	if h, p, err := sipua.URIHostPort(contact); err == nil && h == host && defaultPort(p) == defaultPort(port) {
		return true
	}
	return sameHost(net.JoinHostPort(host, "0"), c.source)
}

// defaultPort is port, or 5060 when the URI has none (RFC 3263 §4.2 without SRV).
func defaultPort(port int) int {
	if port == 0 {
		return 5060
	}
	return port
}

// upstreamSource reports whether an in-dialog request from source may be relayed to the
// device: it comes from the address the INVITE came from, or from an allowed source of the
// account (its proxy, Options.AllowedSources).
func (c *call) upstreamSource(source string) bool {
	if sameHost(source, c.source) {
		return true
	}
	ctx, cancel := context.WithTimeout(c.m.ctx, 5*time.Second)
	defer cancel()
	return c.m.sources.allowed(ctx, c.acc, source)
}

// sameHost reports whether two "ip:port" addresses have the same IP.
func sameHost(a, b string) bool {
	ha, _, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, _, err := net.SplitHostPort(b)
	if err != nil {
		return false
	}
	x, err1 := netip.ParseAddr(ha)
	y, err2 := netip.ParseAddr(hb)
	return err1 == nil && err2 == nil && x.Unmap() == y.Unmap()
}

// endDialog notes that the relayed dialog ended (a BYE, or sipis ended it for reason why):
// record, active calls, and forgetting the call after a grace period. It reports false when
// the dialog had already ended or was never answered.
func (c *call) endDialog(why string) bool {
	m := c.m
	c.mu.Lock()
	if c.dialogOver || c.winner == nil {
		c.mu.Unlock()
		return false
	}
	c.dialogOver = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.rec.DialogState, c.rec.EndedAt = store.DialogTerminated, m.clock.Now()
	if why != "" {
		c.rec.Reason = why
	}
	c.mu.Unlock()
	c.log.WithField("reason", why).Info("call: dialog ended")
	c.save()
	c.cancel()
	m.mu.Lock()
	if m.active[c.sel]--; m.active[c.sel] <= 0 {
		delete(m.active, c.sel)
	}
	m.mu.Unlock()
	m.clock.AfterFunc(endedGrace, func() { m.forget(c) })
	return true
}

// hangUp ends an answered dialog from the middle (RFC 3261 §15.1.1): BYE to the device over
// its flow (toDevice) and BYE upstream to the caller's Contact along the INVITE's route set
// (toCaller), each with the identity of the side sipis stands in for and a CSeq above any that
// side used. The returned channel is closed once every BYE sent got a final response (or
// failed). Nothing is sent when the dialog has already ended or a BYE of either side is being
// relayed (its answer ends the dialog).
func (c *call) hangUp(toDevice, toCaller bool, why string) <-chan struct{} {
	done := make(chan struct{})
	c.mu.Lock()
	b := c.winner
	if b == nil || c.dialogOver || c.byeRelayed || c.inv == nil {
		c.mu.Unlock()
		close(done)
		return done
	}
	down := sipua.DialogRequest{Method: "BYE", RequestURI: c.devContact, From: c.inv.From, To: c.devTo,
		CallID: c.callID, CSeq: c.upCSeq + 1, Flow: b.flow}
	up := sipua.DialogRequest{Method: "BYE", RequestURI: "", Route: c.inv.Headers("Record-Route"),
		From: c.devTo, To: c.inv.From, CallID: c.callID, CSeq: c.downCSeq + 1}
	_, up.RequestURI = parseNameAddr(firstOfList(c.inv.Header("Contact")))
	c.mu.Unlock()
	if !c.endDialog(why) {
		close(done)
		return done
	}
	var reqs []sipua.DialogRequest
	if toDevice {
		reqs = append(reqs, down)
	}
	if toCaller {
		reqs = append(reqs, up)
	}
	var mu sync.Mutex
	left := len(reqs)
	finished := func() {
		mu.Lock()
		defer mu.Unlock()
		if left--; left == 0 {
			close(done)
		}
	}
	if left == 0 {
		close(done)
	}
	for _, r := range reqs {
		var once sync.Once
		r.OnResponse = func(res *sipua.Response) {
			if res.Status >= 200 {
				once.Do(finished)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.m.opts.SIP.SendRequest(ctx, r)
		cancel()
		if err != nil {
			c.log.WithFields(logrus.Fields{"to": r.RequestURI, "err": err}).Info("call: cannot send BYE")
			once.Do(finished)
		}
	}
	c.log.WithFields(logrus.Fields{"reason": why, "device": toDevice, "caller": toCaller}).Info("call: BYE sent to end the dialog")
	return done
}

// cseqNumber reads the sequence number of a CSeq header value (RFC 3261 §20.16); 0 if none.
func cseqNumber(v string) uint32 {
	num, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}
