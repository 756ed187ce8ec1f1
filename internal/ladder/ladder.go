// Package ladder keeps, per instance, the recent SIP exchanges and push attempts that the /debug
// page draws as a sequence diagram (a "SIP ladder"): the last REGISTER and MESSAGE transactions
// and the last few calls, each a list of arrows between the columns proxy, sipis, the devices and
// the push service.
//
// Memory is bounded twice: each instance's ring holds at most MaxTransactions transactions and
// MaxCalls calls of at most MaxMessages arrows, and a ring exists only for an instance someone
// looks at (Watch, from /debug, kept for WatchFor), whose detailed log is on, or whose last
// REGISTER failed; the Book holds at most MaxRings rings. Recording for any other instance is a
// map look-up and nothing is kept. Message bodies are kept only while the instance's log is on,
// and Authorization values never: Redact replaces them with "Not Empty".
//
// Memory budget: an instance in error keeps its last MaxTransactions REGISTER cycles of two to
// four arrows, about 10 KiB; the MaxRings rings of a server whose every proxy is down thus hold
// about 10 MiB (TestMemoryBudget measures it). A watched instance with calls adds at most
// MaxCalls*MaxMessages arrows; bodies (MaxBody each) only for the few instances whose log an
// administrator turned on.
//
// It imports nothing of sipis: internal/app records into it and internal/web draws it. It must
// not keep anything unbounded, nor a credential.
package ladder

import (
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Bounds of a Book.
const (
	MaxTransactions = 16               // REGISTER/MESSAGE/push transactions kept per instance
	MaxCalls        = 3                // calls kept per instance
	MaxMessages     = 40               // arrows kept per exchange
	MaxBody         = 4 << 10          // bytes of one message's text kept (log on only)
	MaxRings        = 1000             // instances with a ring at most
	WatchFor        = 30 * time.Minute // a ring opened by Watch is kept this long after the last look
)

// The columns of a ladder besides the devices ("device <id>").
const (
	Proxy = "proxy"
	Sipis = "sipis"
	Push  = "push service"
)

// Device is the column of one device.
func Device(id string) string { return "device " + id }

// The kinds of exchange.
const (
	KindRegister = "REGISTER"
	KindMessage  = "MESSAGE"
	KindCall     = "call"
	KindPush     = "push"
)

// Msg is one arrow of a ladder.
type Msg struct {
	At       time.Time
	From, To string // columns: Proxy, Sipis, Push or Device(id)
	Label    string // method or "status reason"
	Note     string // e.g. the X-Sipis-Push-Status stage or the push service's answer
	Body     string // the message text, only while the instance's log is on; redacted
	Timed    bool   // At is the real time of the message (false: only its order is known)
}

// Exchange is one transaction or call.
type Exchange struct {
	Kind    string // KindRegister, KindMessage, KindCall or KindPush
	Key     string // Call-ID, or the pairing id of a push
	Start   time.Time
	Msgs    []Msg
	Outcome string
	pairing string // the pairing id of a call's pushes
}

// Ladder is a copy of one instance's ring, newest exchange last.
type Ladder struct {
	Transactions []Exchange
	Calls        []Exchange
	Logging      bool
}

type ring struct {
	tx, calls  []Exchange
	watchUntil time.Time
	inError    bool
	logging    bool
}

func (r *ring) keep(now time.Time) bool {
	return r.inError || r.logging || now.Before(r.watchUntil)
}

// Book holds the rings of every instance. The zero value is not usable; call New.
type Book struct {
	mu    sync.Mutex
	rings map[string]*ring
	now   func() time.Time
	swept time.Time // when full rings were last looked through for expired ones
}

// New returns an empty Book; now is the clock (nil: time.Now).
func New(now func() time.Time) *Book {
	if now == nil {
		now = time.Now
	}
	return &Book{rings: make(map[string]*ring), now: now}
}

// Watch opens (or keeps open) the ring of sel for WatchFor: /debug calls it, so that the next
// visit shows what happened since.
func (b *Book) Watch(sel string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if b.rings[sel] == nil && len(b.rings) >= MaxRings {
		// Someone is looking: make room by dropping a ring kept only for an error.
		b.swept = time.Time{}
		for k, o := range b.rings {
			if !o.logging && !now.Before(o.watchUntil) {
				delete(b.rings, k)
				break
			}
		}
	}
	r := b.ringLocked(sel, true)
	if r != nil {
		r.watchUntil = b.now().Add(WatchFor)
	}
}

// SetLogging says whether the detailed log of sel is on: while it is, the ring is kept and
// message bodies are recorded.
func (b *Book) SetLogging(sel string, on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.ringLocked(sel, on); r != nil {
		r.logging = on
	}
}

// Logging reports whether message bodies of sel are recorded (its log is on), so that a
// caller builds a message's text only then.
func (b *Book) Logging(sel string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rings[sel]
	return r != nil && r.logging
}

// Len is the number of rings held.
func (b *Book) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.rings)
}

// ringLocked returns the ring of sel, creating it when create is true and there is room (a
// Watch always finds room by dropping rings no longer kept). An expired ring is dropped.
func (b *Book) ringLocked(sel string, create bool) *ring {
	now := b.now()
	r := b.rings[sel]
	if r != nil && !r.keep(now) && !create {
		delete(b.rings, sel)
		return nil
	}
	if r != nil || !create {
		return r
	}
	if len(b.rings) >= MaxRings && now.Sub(b.swept) >= time.Second {
		// Full: drop the rings no longer kept, looking at most once a second, so that
		// 100,000 failing instances do not each walk the map.
		b.swept = now
		for k, o := range b.rings {
			if !o.keep(now) {
				delete(b.rings, k)
			}
		}
	}
	if len(b.rings) >= MaxRings {
		return nil
	}
	r = &ring{}
	b.rings[sel] = r
	return r
}

// Get returns a copy of the ring of sel (empty when none is kept).
func (b *Book) Get(sel string) Ladder {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rings[sel]
	if r == nil {
		return Ladder{}
	}
	cp := func(in []Exchange) []Exchange {
		out := make([]Exchange, len(in))
		for i, e := range in {
			e.Msgs = append([]Msg(nil), e.Msgs...)
			out[i] = e
		}
		return out
	}
	return Ladder{Transactions: cp(r.tx), Calls: cp(r.calls), Logging: r.logging}
}

// Register records one REGISTER cycle of sel that started at start: msgs are its arrows in
// order, failed says whether it ended in error (which keeps the ring until a later success).
func (b *Book) Register(sel string, start time.Time, msgs []Msg, outcome string, failed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.ringLocked(sel, failed)
	if r == nil {
		return
	}
	r.inError = failed
	r.tx = appendBounded(r.tx, Exchange{Kind: KindRegister, Start: start, Msgs: r.clean(msgs), Outcome: outcome}, MaxTransactions)
}

// Message records one arrow of the call or MESSAGE transaction with Call-ID callID; method is
// the request's method ("" for a response), which decides whether it opens an exchange: an
// INVITE opens a call, a MESSAGE a transaction, anything else joins the exchange of its Call-ID.
func (b *Book) Message(sel, callID, method string, m Msg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.ringLocked(sel, false)
	if r == nil {
		return
	}
	m = r.cleanOne(m)
	if e := r.find(callID); e != nil {
		if len(e.Msgs) < MaxMessages {
			e.Msgs = append(e.Msgs, m)
		}
		return
	}
	switch method {
	case "INVITE":
		r.calls = appendBounded(r.calls, Exchange{Kind: KindCall, Key: callID, Start: m.At, Msgs: []Msg{m}}, MaxCalls)
	case "MESSAGE":
		r.tx = appendBounded(r.tx, Exchange{Kind: KindMessage, Key: callID, Start: m.At, Msgs: []Msg{m}}, MaxTransactions)
	}
}

// End sets the outcome of the exchange with Call-ID callID, if it is kept.
func (b *Book) End(sel, callID, outcome string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.rings[sel]; r != nil {
		if e := r.find(callID); e != nil {
			e.Outcome = outcome
		}
	}
}

// PushKind says which exchange a push belongs to.
type PushKind int

// The push kinds as the ladder groups them.
const (
	PushForCall    PushKind = iota // call, cancel, answered-elsewhere: the call of its pairing id
	PushForMessage                 // message: the newest MESSAGE transaction
	PushAlone                      // test, reminders: a transaction of its own
)

// Push records a push attempt of sel and the push service's answer, as two arrows: sipis to
// the push service (label, e.g. "call push to iphone (APNs)") and back (answer).
func (b *Book) Push(sel, pairing string, kind PushKind, start, end time.Time, label, answer string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.ringLocked(sel, false)
	if r == nil {
		return
	}
	msgs := []Msg{
		{At: start, From: Sipis, To: Push, Label: label, Timed: true},
		{At: end, From: Push, To: Sipis, Label: answer, Timed: true},
	}
	var e *Exchange
	switch kind {
	case PushForCall:
		for i := len(r.calls) - 1; i >= 0 && e == nil; i-- {
			c := &r.calls[i]
			if c.pairing == pairing || (c.pairing == "" && c.Outcome == "" && pairing != "") {
				c.pairing = pairing
				e = c
			}
		}
	case PushForMessage:
		for i := len(r.tx) - 1; i >= 0 && e == nil; i-- {
			if r.tx[i].Kind == KindMessage {
				e = &r.tx[i]
			}
		}
	}
	if e == nil {
		r.tx = appendBounded(r.tx, Exchange{Kind: KindPush, Key: pairing, Start: start, Msgs: msgs}, MaxTransactions)
		return
	}
	for _, m := range msgs {
		if len(e.Msgs) < MaxMessages {
			e.Msgs = append(e.Msgs, m)
		}
	}
	// Pushes run beside the SIP messages: keep the arrows in time order.
	sort.SliceStable(e.Msgs, func(i, j int) bool { return e.Msgs[i].At.Before(e.Msgs[j].At) })
}

func (r *ring) find(callID string) *Exchange {
	if callID == "" {
		return nil
	}
	for i := len(r.calls) - 1; i >= 0; i-- {
		if r.calls[i].Key == callID {
			return &r.calls[i]
		}
	}
	for i := len(r.tx) - 1; i >= 0; i-- {
		if r.tx[i].Key == callID && r.tx[i].Kind == KindMessage {
			return &r.tx[i]
		}
	}
	return nil
}

func (r *ring) clean(msgs []Msg) []Msg {
	if len(msgs) > MaxMessages {
		msgs = msgs[:MaxMessages]
	}
	out := make([]Msg, len(msgs))
	for i, m := range msgs {
		out[i] = r.cleanOne(m)
	}
	return out
}

// cleanOne drops the body unless the log is on, and redacts it.
func (r *ring) cleanOne(m Msg) Msg {
	if !r.logging {
		m.Body = ""
	} else if m.Body != "" {
		if len(m.Body) > MaxBody {
			m.Body = m.Body[:MaxBody] + "\n[…]"
		}
		m.Body = Redact(m.Body)
	}
	m.Label, m.Note = Redact(m.Label), Redact(m.Note)
	return m
}

func appendBounded(s []Exchange, e Exchange, n int) []Exchange {
	if len(s) >= n {
		copy(s, s[1:])
		s = s[:n-1]
	}
	return append(s, e)
}

// secretHeader matches the headers whose values are credentials (RFC 3261 §20.7, §20.28, and
// the one-time call token of sipis).
var secretHeader = regexp.MustCompile(`(?im)^((?:proxy-)?authorization|x-sipis-token|x-sipis-secret)[ \t]*:[^\r\n]*`)

// Redact replaces the values of Authorization, Proxy-Authorization and the sipis token headers
// in a SIP message's text with "Not Empty".
func Redact(text string) string {
	if !strings.ContainsAny(text, ":") {
		return text
	}
	return secretHeader.ReplaceAllStringFunc(text, func(h string) string {
		return h[:strings.IndexByte(h, ':')] + ": Not Empty"
	})
}
