package hook

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/sipis/sipis/internal/push"
	"github.com/sipis/sipis/internal/store"
)

// call is one incoming-call/ request being held.
type call struct {
	rec      store.HookCall
	keys     []string // one per device, in the order of devs
	devs     []store.HookDevice
	deadline time.Time

	// answer receives the first device's call-response/ (buffered: the sender never blocks).
	answer chan response
	// failed is closed when the first push to every device has failed.
	failed     chan struct{}
	failedOnce sync.Once
	nFailed    atomic.Int32
	pushes     atomic.Int32
	ended      atomic.Bool
	dead       []atomic.Bool // per device: its token was refused as dead; no resends
}

type response struct {
	available bool
	at        time.Time
}

type pushJob struct {
	c       *call
	i       int // device index
	attempt int
}

// keyHash is how a unique_key is stored: the key is a bearer secret, its hash is not.
func keyHash(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

func newKey() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b[:])
}

// allowedSource checks the PBX's address and the shared secret.
func (h *Hook) allowedSource(r *http.Request, p params) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	ok := false
	for _, n := range h.opts.PBXNetworks {
		if n.Contains(addr) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	if h.opts.Secret == "" {
		return true
	}
	got := r.Header.Get("X-Sipis-Hook-Secret")
	if got == "" {
		got = p["secret"]
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.opts.Secret)) == 1
}

// handleIncomingCall is POST incoming-call/ from the PBX: push the account's devices and hold
// the request until one answers or the wait ends.
func (h *Hook) handleIncomingCall(w http.ResponseWriter, r *http.Request) {
	p, err := readParams(w, r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if !h.allowedSource(r, p) {
		h.count(store.OutcomeRejected, ReasonSourceNotAllow)
		h.log.WithField("remote", r.RemoteAddr).Warn("incoming-call from a source that is not a configured PBX")
		writeText(w, http.StatusForbidden, "source not allowed\n")
		return
	}
	c := &call{answer: make(chan response, 1), failed: make(chan struct{})}
	c.rec.ReceivedAt = time.Now()
	f := &fields{p: p}
	c.rec.SipUserID, c.rec.CallerID = f.sipUserID(), f.text("caller_id", false, maxText)
	c.rec.PhoneNumber, c.rec.CallID = f.text("phonenumber", true, 32), f.text("call_id", false, maxText)
	if f.err != nil {
		h.writeError(w, r, f.err)
		return
	}
	log := h.log.WithFields(logrus.Fields{"sip_user_id": c.rec.SipUserID, "call_id": c.rec.CallID})

	devs, err := h.opts.Store.HookDevices(r.Context(), c.rec.SipUserID)
	if err != nil {
		log.WithField("err", err).Error("reading PBX-hook devices failed")
		h.finish(w, c, store.OutcomeRejected, ReasonNoDevice, log)
		return
	}
	for _, d := range devs {
		if !d.TokenInvalid && d.Token != "" {
			c.devs = append(c.devs, d)
		}
	}
	if len(c.devs) == 0 {
		h.finish(w, c, store.OutcomeRejected, ReasonNoDevice, log)
		return
	}
	c.keys = make([]string, len(c.devs))
	c.dead = make([]atomic.Bool, len(c.devs))
	for i := range c.keys {
		c.keys[i] = newKey()
	}
	c.rec.KeyHash = keyHash(c.keys[0])
	c.rec.Devices = len(c.devs)
	c.deadline = c.rec.ReceivedAt.Add(h.opts.Wait)

	h.mu.Lock()
	if h.waits >= h.opts.MaxWaits {
		h.mu.Unlock()
		h.finish(w, c, store.OutcomeRejected, ReasonTooManyCalls, log)
		return
	}
	h.waits++
	for _, k := range c.keys {
		h.keys[k] = c
	}
	h.mu.Unlock()

	wait := time.NewTimer(h.opts.Wait)
	defer wait.Stop()
	resend := time.NewTimer(h.opts.ResendInterval)
	defer resend.Stop()
	attempts := max(1, int(h.opts.Wait/h.opts.ResendInterval)-1)
	attempt := 1
	h.enqueue(c, attempt)

	outcome, reason := store.OutcomeMissed, ReasonNoResponse
loop:
	for {
		select {
		case a := <-c.answer:
			c.rec.RespondedAt = a.at
			if a.available {
				outcome, reason = store.OutcomeAccepted, ""
			} else {
				outcome, reason = store.OutcomeRejected, ReasonNotAvailable
			}
			break loop
		case <-c.failed:
			outcome, reason = store.OutcomeRejected, ReasonPushFailed
			break loop
		case <-wait.C:
			break loop
		case <-resend.C:
			if attempt < attempts {
				attempt++
				h.enqueue(c, attempt)
				resend.Reset(h.opts.ResendInterval)
			}
		case <-r.Context().Done():
			outcome, reason = store.OutcomeMissed, ReasonPBXGone
			break loop
		case <-h.closing:
			outcome, reason = store.OutcomeRejected, ReasonShuttingDown
			break loop
		}
	}
	c.ended.Store(true)
	h.release(c)
	h.finish(w, c, outcome, reason, log)
}

// release forgets the call's keys (if no answer took them already).
func (h *Hook) release(c *call) {
	h.mu.Lock()
	if len(c.keys) > 0 && h.keys[c.keys[0]] == c {
		for _, k := range c.keys {
			delete(h.keys, k)
		}
	}
	h.waits--
	h.mu.Unlock()
}

// finish counts the call's outcome, answers the PBX, then stores the record. The count comes
// first so that whoever sees the PBX's answer also sees the call counted.
func (h *Hook) finish(w http.ResponseWriter, c *call, outcome, reason string, log logrus.FieldLogger) {
	h.count(outcome, reason)
	if outcome == store.OutcomeAccepted {
		writeText(w, http.StatusOK, "status=ACK")
	} else {
		writeText(w, http.StatusOK, "status=NAK")
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	c.rec.EndedAt = time.Now()
	c.rec.Outcome, c.rec.Reason = outcome, reason
	c.rec.Pushes = int(c.pushes.Load())
	log.WithFields(logrus.Fields{"outcome": outcome, "reason": reason, "devices": c.rec.Devices,
		"pushes": c.rec.Pushes, "ms": c.rec.EndedAt.Sub(c.rec.ReceivedAt).Milliseconds()}).Info("PBX-hook incoming call answered")
	if c.rec.KeyHash == "" {
		c.rec.KeyHash = keyHash(newKey()) // no device: the record still needs its own id
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.opts.Store.PutHookCall(ctx, &c.rec); err != nil {
		log.WithField("err", err).Warn("storing the PBX-hook call record failed")
	}
}

// enqueue hands one push per device to the workers; a full queue counts as a failed push.
func (h *Hook) enqueue(c *call, attempt int) {
	for i := range c.devs {
		select {
		case h.jobs <- pushJob{c: c, i: i, attempt: attempt}:
		default:
			h.log.WithField("sip_user_id", c.rec.SipUserID).Warn("PBX-hook push queue full; push dropped")
			if attempt == 1 {
				c.pushFailed()
			}
		}
	}
}

func (c *call) pushFailed() {
	if int(c.nFailed.Add(1)) == len(c.devs) {
		c.failedOnce.Do(func() { close(c.failed) })
	}
}

// pushWorker sends queued pushes until Close.
func (h *Hook) pushWorker() {
	defer h.wg.Done()
	for {
		select {
		case <-h.closing:
			return
		case j := <-h.jobs:
			h.send(j)
		}
	}
}

func (h *Hook) send(j pushJob) {
	c, d := j.c, j.c.devs[j.i]
	if c.ended.Load() || c.dead[j.i].Load() {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), c.deadline)
	defer cancel()
	res, err := h.opts.Push.Send(ctx, push.Notification{
		Kind: push.KindCall, Selector: c.rec.SipUserID, PairingID: c.rec.CallID,
		CallerName: c.rec.CallerID, CallerURI: c.rec.PhoneNumber, Token: c.keys[j.i],
		Device: push.Device{ID: strconv.FormatInt(d.ID, 10), Platform: d.Platform, PushToken: d.Token,
			AppID: d.App, Sandbox: d.Sandbox},
	})
	if err == nil {
		c.pushes.Add(1)
		return
	}
	log := h.log.WithFields(logrus.Fields{"sip_user_id": c.rec.SipUserID, "device": d.ID,
		"token": push.ShortToken(d.Token), "attempt": j.attempt, "err": err})
	if res.TokenInvalid || errors.Is(err, push.ErrTokenInvalid) {
		c.dead[j.i].Store(true)
		log.Info("PBX-hook push token is dead; the device is skipped until it registers again")
		mctx, mcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := h.opts.Store.MarkHookTokenInvalid(mctx, d.ID); err != nil {
			log.WithField("err", err).Warn("marking a PBX-hook token dead failed")
		}
		mcancel()
	} else {
		log.Warn("PBX-hook push failed")
	}
	if j.attempt == 1 {
		c.pushFailed()
	}
}

// handleCallResponse is POST call-response/ from the woken app: unique_key,
// message_start_time and available. It is the path the PBX waits on, so it does nothing
// slow: a map lookup under a mutex and a send on a buffered channel.
func (h *Hook) handleCallResponse(w http.ResponseWriter, r *http.Request) {
	var key string
	var available bool
	if h.readFields(w, r, func(f *fields) {
		key = f.word("unique_key", true, maxText)
		f.number("message_start_time", true)
		available = f.boolean("available", true)
	}) == nil {
		return
	}
	h.mu.Lock()
	c, ok := h.keys[key]
	if ok {
		for _, k := range c.keys {
			delete(h.keys, k) // one-time: the first answer uses up every device's key
		}
	}
	h.mu.Unlock()
	if !ok {
		writeText(w, http.StatusNotFound, "")
		return
	}
	c.answer <- response{available: available, at: time.Now()}
	writeText(w, http.StatusAccepted, "")
}
