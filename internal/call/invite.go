package call

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
	"github.com/sirupsen/logrus"
)

// Values of the X-Sipis-Push-Status header of our 180 Ringing responses, in the order they are
// sent.
const (
	StatusAlerting = "Alerting-Device"
	StatusPushSent = "Push-Notification-Sent"
	StatusProgress = "Device-Making-Progress"
)

// phase is where a call is.
type phase uint8

const (
	ringing     phase = iota // pushes out, waiting for a device (T1)
	progressing              // a device claimed the call, waiting for it to connect (T2)
	relaying                 // a device connected; the INVITE is relayed to it
	answered                 // a device answered; the dialog is relayed until BYE
	ended                    // a final response was sent
)

// call is one incoming INVITE being handled. The fields under mu change as the call goes on;
// every response to the INVITE is sent with mu held, so they leave in order.
type call struct {
	m        *Manager
	sel      string
	pairing  string
	key      string
	token    string
	tokenKey [32]byte
	respond  func(code int, reason string, hs ...sipua.Header) error
	inv      *sipua.Request // the INVITE, relayed to devices; nil in tests without sockets
	callID   string
	fromTag  string  // the INVITE's From tag, carried by every request of the caller's side
	acc      Account // the instance's account, for the sources allowed upstream
	source   string  // "ip:port" the INVITE came from
	contact  string  // our Contact in the 18x we send ourselves; "" in tests without sockets
	log      logrus.FieldLogger
	ctx      context.Context
	cancel   context.CancelFunc
	devices  []store.Device

	smu sync.Mutex // serialises saves so the newest state is written last

	mu       sync.Mutex
	phase    phase
	rec      store.Call
	timer    Timer
	pending  int  // call pushes in flight
	pushedOK bool // a push service accepted a call push

	branches   []*branch       // devices the INVITE was relayed to (RFC 3261 §16.7 forking)
	winner     *branch         // the branch whose 2xx was relayed first
	best       *sipua.Response // best final non-2xx of the branches so far
	cancelling bool            // the caller sent CANCEL while relaying
	late       []*branch       // devices that connected after the end: INVITE then CANCEL (notify.go)
	dialogOver bool            // the relayed dialog ended (BYE)
	// byeRelayed: a BYE of the dialog is being relayed; its final response ends the dialog, so
	// sipis must not hang it up itself (e.g. when the device closes right after its 200).
	byeRelayed bool

	// What sipis needs to end an answered dialog itself with BYE (RFC 3261 §12.2.1.1): the
	// winner's To (with its tag) and Contact, and the highest CSeq each side has used.
	devTo, devContact string
	upCSeq, downCSeq  uint32
}

func (m *Manager) handleInvite(user string, req *inbound, log logrus.FieldLogger, reply func(int, string, ...sipua.Header)) {
	sel, ok := m.opts.Instances.ByContact(user)
	var acc Account
	if ok {
		acc, ok = m.opts.Instances.Account(sel)
	}
	if !ok {
		m.refused(ReasonUnknownContact)
		m.replyUnknown(user, reply)
		log.WithField("contact", user).Debug("call: INVITE for an unknown contact")
		return
	}
	log = log.WithField("selector", sel)
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	if !m.sources.allowed(ctx, acc, req.source) {
		// Not from the user's proxy: someone may be trying to ring the phone directly, or to
		// learn that the account is asleep here. No push, no record (RFC 3261 §21.4.4).
		m.refused(ReasonSourceNotAllowed)
		reply(403, "Forbidden")
		log.WithField("proxy", acc.Proxy).Warn("call: INVITE from a source that is not the instance's proxy")
		return
	}
	if req.sip != nil {
		req.sip.Flow().Bind() // a proxy's TCP/TLS connection carries the call's dialog
	}
	name, uri := callerOf(req.header, req.from)
	now := m.clock.Now()
	rec := store.Call{
		Selector: sel, PairingID: randomHex(16), CallID: limit(req.callID, 256), CallerName: name,
		CallerURI: uri, DialogState: store.DialogTerminated, ReceivedAt: now,
	}
	refuse := func(code int, reason, why string, hs ...sipua.Header) {
		rec.Outcome, rec.Reason, rec.EndedAt = store.OutcomeRejected, why, m.clock.Now()
		if err := m.opts.Store.PutCall(ctx, &rec); err != nil {
			log.WithField("err", err).Warn("call: store call record")
		}
		reply(code, reason, hs...)
		log.WithFields(logrus.Fields{"pairing_id": rec.PairingID, "reason": why}).Info("call: rejected")
	}
	if !acc.Active {
		refuse(480, "Temporarily Unavailable", ReasonInstanceOff, sipua.Header{Name: "X-Sipis-Reason", Value: "Instance-Off"})
		return
	}
	if m.mergedRequest(sel, req) {
		// The devices were woken for this call already (RFC 3261 §8.2.2.2).
		reply(482, "Loop Detected")
		log.Info("call: the same INVITE reached this instance again (forked); not waking its devices twice")
		return
	}
	// With devices known to the instance the first 180 leaves before the store is asked which
	// of them can be pushed: the caller's side hears at once that the account is alive
	// (RFC 3261 §13.3.1.1, §17.2.1: a provisional as soon as possible). Without any, the store
	// is asked first, so that a call for no device gets its 480 alone.
	var usable []store.Device
	if acc.Devices == 0 {
		if usable = m.usableDevices(ctx, sel, log); len(usable) == 0 {
			refuse(480, "Temporarily Unavailable", ReasonNoDevice, sipua.Header{Name: "X-Sipis-Reason", Value: "No-Device"})
			return
		}
		rec.Devices = deviceIDs(usable) // in the record of a call refused as too many
	}
	token := randomHex(16)
	c := &call{
		m: m, sel: sel, pairing: rec.PairingID, key: inviteKey(req.callID, req.header("Via")), token: token,
		tokenKey: sha256.Sum256([]byte(token)), respond: req.respond, inv: req.sip, callID: req.callID,
		acc: acc, source: req.source, log: log.WithField("pairing_id", rec.PairingID), rec: rec,
	}
	if req.sip != nil {
		c.fromTag = req.sip.FromTag()
		c.contact = req.sip.Contact()
	}
	c.rec.DialogState = store.DialogPending
	c.ctx, c.cancel = context.WithCancel(m.ctx)
	if !m.admit(c, reply, refuse) {
		return
	}
	c.alert()
	if usable == nil {
		usable = m.usableDevices(ctx, sel, log)
	}
	c.start(usable)
}

// usableDevices returns the devices of sel that have a push token not known to be dead.
func (m *Manager) usableDevices(ctx context.Context, sel string, log logrus.FieldLogger) []store.Device {
	devs, err := m.opts.Store.Devices(ctx, sel)
	if err != nil {
		log.WithField("err", err).Error("call: read devices")
	}
	var usable []store.Device
	for _, d := range devs {
		if d.PushToken != "" && !d.TokenInvalid {
			usable = append(usable, d)
		}
	}
	return usable
}

// deviceIDs returns the IDs of devs, for a call record.
func deviceIDs(devs []store.Device) []string {
	ids := make([]string, len(devs))
	for i, d := range devs {
		ids[i] = d.ID
	}
	return ids
}

// admit makes c known to the Manager, unless it is closing (503), c's INVITE is already a
// call (it answers for itself) or the instance has MaxCalls calls in progress (486, through
// refuse); it reports whether it did.
func (m *Manager) admit(c *call, reply func(int, string, ...sipua.Header), refuse func(code int, reason, why string, hs ...sipua.Header)) bool {
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		c.cancel()
		reply(503, "Service Unavailable")
		return false
	case m.byKey[c.key] != nil:
		// The same INVITE again outside its transaction (a new Via branch would give a new
		// key): the call in progress answers for it.
		m.mu.Unlock()
		c.cancel()
		return false
	case m.active[c.sel] >= m.opts.MaxCalls:
		m.mu.Unlock()
		c.cancel()
		refuse(486, "Busy Here", ReasonTooManyCalls)
		return false
	}
	m.byKey[c.key] = c
	m.byToken[c.tokenKey] = c
	// A forking proxy may send the same INVITE (same Call-ID, other Via branch) to several of
	// our contacts: each is a call of its own, told apart by tags in the dialog (RFC 3261 §12).
	m.byCallID[c.callID] = append(m.byCallID[c.callID], c)
	m.active[c.sel]++
	m.mu.Unlock()
	return true
}

// alert answers 180 Alerting-Device and starts T1.
func (c *call) alert() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.send(180, "Ringing", sipua.Header{Name: "X-Sipis-Push-Status", Value: StatusAlerting})
	c.rec.DialogState = store.DialogEarly // our 180 carries a To tag (RFC 3261 §12.1.1)
	c.timer = c.m.clock.AfterFunc(c.m.opts.NoResponseTimeout, func() { c.expire(ringing, ReasonNoResponse) })
}

// start stores the record, then pushes to every device of usable; with none (the instance's
// devices went, or lost their tokens, since it counted them) the call is rejected with 480
// No-Device after its 180. A call that ended meanwhile (CANCEL) pushes nothing. The second
// 180 is sent when a push service accepts a push (pushDone): its order after the first is
// kept by c.mu, under which both are sent, and by alert having sent the first before any
// push starts (TestWakeUp180sLeaveInOrder). They may still reach the caller the other way
// round: provisional responses are not retransmitted nor ordered hop by hop (RFC 3261
// §17.1.1, §16.7 step 5 forwards each as it comes), and a proxy whose UDP workers read one
// socket in parallel, as Kamailio's children do, can relay two close 180s out of order
// (BenchmarkCallPathKamailio counts it: never at sipis's socket, a few per thousand calls at
// the caller with two Kamailio workers, none with one). Only reliable provisionals (RFC 3262,
// RSeq) would order them end to end.
func (c *call) start(usable []store.Device) {
	m := c.m
	if len(usable) == 0 {
		c.end(ringing, 480, "Temporarily Unavailable", store.OutcomeRejected, ReasonNoDevice, false,
			sipua.Header{Name: "X-Sipis-Reason", Value: "No-Device"})
		return
	}
	c.mu.Lock()
	if c.phase != ringing {
		c.mu.Unlock()
		return
	}
	// Written once, under mu while ringing and before any push: end (which reads it in
	// notifyEnd) and a device's REGISTER (after its push) come later.
	c.devices = usable
	c.rec.Devices = deviceIDs(usable)
	c.pending = len(usable)
	c.mu.Unlock()
	c.log.WithField("devices", len(usable)).Info("call: incoming call, alerting devices")
	// Stored before the pushes go: whoever a push wakes (or a restart) finds the call's record.
	c.save()
	for _, d := range usable {
		if !m.spawn(func() { c.pushCall(d) }) {
			c.pushDone(d, push.Result{}, errors.New("call: shutting down"))
		}
	}
}

// pushCall sends the call notification to one device.
func (c *call) pushCall(d store.Device) {
	ctx, cancel := context.WithTimeout(c.ctx, c.m.opts.PushTimeout)
	defer cancel()
	n := c.notification(push.KindCall, d)
	res, err := c.m.opts.Push.Send(ctx, n)
	c.pushDone(d, res, err)
}

func (c *call) notification(kind push.Kind, d store.Device) push.Notification {
	n := push.Notification{
		Kind: kind, Selector: c.sel, PairingID: c.pairing, CallID: c.callID,
		CallerName: c.rec.CallerName, CallerURI: c.rec.CallerURI, Domain: c.acc.Domain,
		Device: PushDevice(d),
	}
	if kind == push.KindCall {
		n.RelayAddress, n.Token = c.m.opts.RelayAddress, c.token
	}
	return n
}

// pushDone notes the result of one call push: the first accepted push gives the second 180;
// when every push failed while no device claimed the call, the call is rejected.
func (c *call) pushDone(d store.Device, res push.Result, err error) {
	log := c.log.WithFields(logrus.Fields{"device": d.ID, "platform": d.Platform, "token": push.ShortToken(d.PushToken)})
	if res.TokenInvalid {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
		if merr := MarkDeadToken(ctx, c.m.opts.Store, c.notification(push.KindCall, d)); merr != nil {
			log.WithField("err", merr).Warn("call: mark push token invalid")
		}
		cancel()
	}
	c.mu.Lock()
	c.pending--
	if err == nil {
		log.WithField("attempts", res.Attempts).Debug("call: push accepted")
		// After the end the record is final: a push accepted too late changes nothing.
		if !c.pushedOK && c.phase != ended {
			c.pushedOK = true
			c.rec.PushedAt = c.m.clock.Now()
			if c.phase == ringing {
				c.send(180, "Ringing", sipua.Header{Name: "X-Sipis-Push-Status", Value: StatusPushSent})
			}
		}
	} else {
		log.WithFields(logrus.Fields{"status": res.Status, "reason": res.Reason, "err": err}).Warn("call: push failed")
	}
	allFailed := c.pending == 0 && !c.pushedOK && c.phase == ringing
	accepted := err == nil && c.phase != ended
	c.mu.Unlock()
	switch {
	case allFailed:
		c.end(ringing, 480, "Temporarily Unavailable", store.OutcomeRejected, ReasonPushFailed, false,
			sipua.Header{Name: "X-Sipis-Reason", Value: "Push-Failed"})
	case accepted:
		c.save()
	}
}

// expire ends the call when T1 (in phase ringing) or T2 (in phase progressing) runs out.
func (c *call) expire(in phase, why string) {
	code, reason := 480, "Temporarily Unavailable"
	if c.m.opts.NoResponseAnswer == 408 {
		code, reason = 408, "Request Timeout"
	}
	c.end(in, code, reason, store.OutcomeMissed, why, true,
		sipua.Header{Name: "X-Sipis-Reason", Value: "No-Response-From-Device"})
}

// anyPhase makes end act in whatever phase the call is (except ended).
const anyPhase phase = 255

// end sends the final response to the INVITE and records the outcome, if the call is in phase
// in (or anyPhase) and not yet ended; it reports whether it did. With notify, a missed call
// gives the devices a missed-call push (never a VoIP push, see notifyEnd).
func (c *call) end(in phase, code int, reason, outcome, why string, notify bool, hs ...sipua.Header) bool {
	return c.finish(in, outcome, why, notify, func() { c.send(code, reason, hs...) })
}

// finish is end with the final response sent by send (ours, or one relayed from a device);
// the INVITEs relayed to devices that have not answered are cancelled.
func (c *call) finish(in phase, outcome, why string, notify bool, send func()) bool {
	m := c.m
	c.mu.Lock()
	if c.phase == ended || c.phase == answered || (in != anyPhase && c.phase != in) {
		c.mu.Unlock()
		return false
	}
	c.phase = ended
	if c.timer != nil {
		c.timer.Stop()
	}
	open := c.openBranches(nil)
	c.rec.DialogState = store.DialogTerminated
	c.rec.Outcome, c.rec.Reason, c.rec.EndedAt = outcome, why, m.clock.Now()
	c.mu.Unlock()
	c.cancel()

	m.mu.Lock()
	if m.active[c.sel]--; m.active[c.sel] <= 0 {
		delete(m.active, c.sel)
	}
	m.mu.Unlock()
	// Stay known for a while: a CANCEL crossing our final response still gets its 200, and a
	// late device request learns that the call is over.
	m.clock.AfterFunc(endedGrace, func() { m.forget(c) })
	// Store (and so count) before answering, so that whoever sees the final response also
	// finds the outcome. No other response can be sent any more: the phase is ended.
	c.save()
	send()
	for _, b := range open {
		b.tx.Cancel()
	}
	c.log.WithFields(logrus.Fields{"outcome": outcome, "reason": why}).Info("call: ended")
	if notify && outcome == store.OutcomeMissed {
		c.notifyEnd(push.KindMissedCall, "")
	}
	return true
}

// send answers the INVITE; the caller holds c.mu, or the call has ended (then only end sends).
// Our 18x carry our To tag and so create an early dialog: they carry our Contact too (RFC 3261
// §12.1.1).
func (c *call) send(code int, reason string, hs ...sipua.Header) {
	if code > 100 && code < 300 && c.contact != "" {
		hs = append(hs, sipua.Header{Name: "Contact", Value: c.contact})
	}
	if err := c.respond(code, reason, hs...); err != nil {
		c.log.WithFields(logrus.Fields{"code": code, "err": err}).Warn("call: respond to INVITE")
	}
}

// save writes the call record as it is now.
func (c *call) save() {
	c.smu.Lock()
	defer c.smu.Unlock()
	c.mu.Lock()
	rec := c.rec
	rec.Devices = append([]string(nil), c.rec.Devices...)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 10*time.Second)
	defer cancel()
	if err := c.m.opts.Store.PutCall(ctx, &rec); err != nil {
		c.log.WithField("err", err).Warn("call: store call record")
	}
}

// progress is a device's claim of the call: 180 Device-Making-Progress, T1 stops, T2 starts.
// A second claim changes nothing.
func (c *call) progress() error {
	m := c.m
	c.mu.Lock()
	switch c.phase {
	case ended:
		c.mu.Unlock()
		return errEnded
	case progressing:
		c.mu.Unlock()
		return nil
	}
	c.phase = progressing
	if c.timer != nil {
		c.timer.Stop()
	}
	c.send(180, "Ringing", sipua.Header{Name: "X-Sipis-Push-Status", Value: StatusProgress})
	c.rec.ProgressAt = m.clock.Now()
	c.timer = m.clock.AfterFunc(m.opts.ProgressTimeout, func() { c.expire(progressing, ReasonNotConnected) })
	c.mu.Unlock()
	c.log.Info("call: device making progress")
	c.save()
	return nil
}

var errEnded = errors.New("call: the call has ended")

// handleCancel answers a CANCEL (RFC 3261 §9.2): 200 to the CANCEL, then 487 to the INVITE it
// matches (same Call-ID and top Via branch), or 481 when there is no such INVITE. A CANCEL is
// only believed from the address the INVITE came from: the previous hop sends its CANCEL
// where it sent the INVITE, from the same socket or connection (RFC 3261 §9.1, §16.10).
// Anyone else who saw the INVITE gets 481, as for an unknown transaction, and changes nothing.
func (m *Manager) handleCancel(req *inbound, reply func(int, string, ...sipua.Header)) {
	key := inviteKey(req.callID, req.header("Via"))
	m.mu.Lock()
	c := m.byKey[key]
	m.mu.Unlock()
	if c == nil {
		if req.sip != nil && m.restartedCall(req.callID) {
			// Its INVITE rang when the last run was killed: the record says missed; the
			// caller still hears the end of its call (RFC 3261 §9.2) instead of a 481.
			reply(200, "OK")
			if err := req.sip.RespondInvite(487, "Request Terminated"); err != nil {
				m.log.WithFields(logrus.Fields{"call_id": req.callID, "err": err}).Info("call: answer the INVITE of a call from before the restart")
			}
			return
		}
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	if !sameSource(req.source, c.source) {
		c.log.WithField("src", req.source).Warn("call: CANCEL from a source that did not send the INVITE, ignored")
		reply(481, "Call/Transaction Does Not Exist")
		return
	}
	if c.cancelRelayed(reply) {
		return
	}
	reply(200, "OK")
	c.end(anyPhase, 487, "Request Terminated", store.OutcomeMissed, ReasonCancelled, true)
}

// sameSource reports whether two "ip:port" addresses are the same (IPv4-mapped IPv6 addresses
// equal their IPv4 form).
func sameSource(a, b string) bool {
	x, err1 := netip.ParseAddrPort(a)
	y, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && x.Addr().Unmap() == y.Addr().Unmap() && x.Port() == y.Port()
}

// forget drops c from the Manager's indexes.
func (m *Manager) forget(c *call) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byKey[c.key] == c {
		delete(m.byKey, c.key)
	}
	if m.byToken[c.tokenKey] == c {
		delete(m.byToken, c.tokenKey)
	}
	list := m.byCallID[c.callID]
	for i, x := range list {
		if x == c {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(m.byCallID, c.callID)
	} else {
		m.byCallID[c.callID] = list
	}
}

// lookupToken finds the call of a device's token, comparing in constant time.
func (m *Manager) lookupToken(token string) *call {
	key := sha256.Sum256([]byte(token))
	m.mu.Lock()
	c := m.byToken[key]
	m.mu.Unlock()
	if c == nil || subtle.ConstantTimeCompare([]byte(c.token), []byte(token)) != 1 {
		return nil
	}
	return c
}

// spawn runs f on a goroutine the Manager waits for on Close; it reports false (and does not
// run f) once Close is waiting.
func (m *Manager) spawn(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// inviteKey identifies an INVITE server transaction by Call-ID and the branch of the top Via,
// which a CANCEL repeats (RFC 3261 §9.1, §17.2.3).
func inviteKey(callID, via string) string {
	branch := ""
	for _, p := range strings.Split(firstOfList(via), ";")[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "branch") {
			branch = v
			break
		}
	}
	return callID + "|" + branch
}

// callerOf names the caller: P-Asserted-Identity (RFC 3325 §9.1), else Remote-Party-ID, else
// From.
func callerOf(header func(string) string, from string) (name, uri string) {
	for _, v := range []string{header("P-Asserted-Identity"), header("Remote-Party-ID"), from} {
		if v == "" {
			continue
		}
		if name, uri = parseNameAddr(firstOfList(v)); uri != "" {
			return limit(name, 256), limit(uri, 512)
		}
	}
	return "", ""
}

// parseNameAddr splits a name-addr or addr-spec (RFC 3261 §25.1) into display name and URI.
func parseNameAddr(v string) (name, uri string) {
	v = strings.TrimSpace(v)
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		i := 1
		for ; i < len(v) && v[i] != '"'; i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			b.WriteByte(v[i])
		}
		name, v = b.String(), v[min(i+1, len(v)):]
	}
	if lt := strings.IndexByte(v, '<'); lt >= 0 {
		if name == "" {
			name = strings.TrimSpace(v[:lt])
		}
		rest := v[lt+1:]
		gt := strings.IndexByte(rest, '>')
		if gt < 0 {
			return "", ""
		}
		return clean(name), clean(rest[:gt])
	}
	// addr-spec: header parameters follow the URI after ';' (RFC 3261 §20.20).
	uri, _, _ = strings.Cut(strings.TrimSpace(v), ";")
	return clean(name), clean(uri)
}

// firstOfList returns the first element of a comma-separated header value, ignoring commas in
// quotes and angle brackets.
func firstOfList(v string) string {
	inQuote, inAngle := false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == '<' && !inQuote:
			inAngle = true
		case c == '>' && !inQuote:
			inAngle = false
		case c == ',' && !inQuote && !inAngle:
			return v[:i]
		}
	}
	return v
}

// clean drops control characters, which have no place in a name shown on a phone.
func clean(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s))
}

// limit cuts s to at most n bytes, on a rune boundary.
func limit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
