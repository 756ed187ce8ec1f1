package instance

import (
	"sync"
	"time"

	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// recentEvents is how many transitions an instance remembers for the debug page.
const recentEvents = 8

// Instance is the in-memory state of one selector. Its fields are guarded by mu; a worker
// holds busy while a SIP transaction for it is in flight, so at most one runs at a time.
// Fields are kept compact (unix nanoseconds instead of time.Time) because a node holds
// hundreds of thousands of them.
type Instance struct {
	mu sync.Mutex

	selector    string
	account     store.Account  // the password is kept in memory: digest auth needs it
	oldAccount  *store.Account // the account a live binding was made with, when the app changed it
	background  bool           // the app's wish: hold the registration (else release it)
	off         bool
	phase       Phase
	lastError   string
	contactUser string
	contactAddr string // host:port of our Contact when a NAT moved it; "" = the UA's own
	// replaceAddr is the host:port of the previous owner's Contact of an adopted instance: its
	// next REGISTER removes that binding while it adds ours (sipua.Binding.ReplaceAddr), and a
	// 2xx to it clears this. "" = nothing to replace.
	replaceAddr string
	natMoves    uint8
	callID      string
	cseq        uint32
	minExpires  int32         // raised by 423 Interval Too Brief
	failures    uint16        // consecutive failures, for backoff
	retryAfter  time.Duration // Retry-After of the last failure, for the next backoff
	busy        bool
	probe       bool   // the REGISTER about to be sent is the probe of a proxy that does not answer
	gone        bool   // removed: forgotten by its app or for its silence
	deferrals   uint8  // consecutive REGISTERs put off because the proxy was busy
	pending     Event  // an app/admin event that arrived while busy
	pendingRegs uint32 // the registration count the pending event was posted at
	regs        uint32 // registrations attached so far; a forget posted before the last one is void
	gen         uint64 // bumps on every (re)schedule; older timer entries are stale
	logging     bool   // detailed per-instance logging turned on from /log

	created      int64
	lastActivity int64
	expiresAt    int64 // when the granted binding expires; 0 if none
	nextAt       int64 // next refresh or retry; 0 if none
	lastRegister int64

	nonce *sipua.Nonce // the registrar's digest challenge, reused by the next REGISTER

	// lastRequest and lastResponse are the text of the last REGISTER exchange, kept only
	// while the instance is in error or its log is on (Manager.transact).
	lastRequest, lastResponse string

	bytesIn, bytesOut         int64
	firstTraffic, lastTraffic int64

	devices, calls, messages int32

	// recent is allocated at the first transition: a resumed instance has none yet, and a
	// node resuming a million of them must not write 256 bytes each that can wait.
	recent *[recentEvents]eventRec
	nrec   uint8 // number of records written (wraps)
}

// regCount returns how many registrations were attached to inst so far.
func (inst *Instance) regCount() uint32 {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.regs
}

// EventRecord is one remembered transition.
type EventRecord struct {
	At     time.Time
	Event  string
	From   Phase
	To     Phase
	Action string
	Note   string
}

// eventRec is an EventRecord as an instance keeps it: 32 bytes instead of 80, since every
// instance keeps recentEvents of them.
type eventRec struct {
	at       int64
	note     string
	ev       Event
	act      Action
	from, to Phase
}

func (r eventRec) record() EventRecord {
	return EventRecord{At: time.Unix(0, r.at), Event: r.ev.String(), From: r.from, To: r.to, Action: r.act.String(), Note: r.note}
}

func (inst *Instance) remember(at int64, ev Event, from, to Phase, act Action, note string) {
	if inst.recent == nil {
		inst.recent = new([recentEvents]eventRec)
	}
	inst.recent[int(inst.nrec)%recentEvents] = eventRec{at: at, ev: ev, from: from, to: to, act: act, note: note}
	inst.nrec++
	if inst.nrec >= 2*recentEvents {
		inst.nrec -= recentEvents
	}
}

// Snapshot is a copy of an instance for pages and APIs. It never holds the password.
type Snapshot struct {
	Selector       string
	User           string
	AuthUser       string
	Domain         string
	Proxy          string
	Port           int
	Transport      string
	DisplayName    string
	Expires        int // what the app asked for
	PasswordSet    bool
	Phase          Phase
	Off            bool
	LastError      string
	ContactUser    string
	CallID         string
	CSeq           uint32
	Failures       int
	Created        time.Time
	LastActivity   time.Time
	ExpiresAt      time.Time
	NextAt         time.Time
	LastRegisterAt time.Time
	Devices        int
	Calls          int
	Messages       int
	BytesIn        int64
	BytesOut       int64
	FirstTraffic   time.Time
	LastTraffic    time.Time
	Logging        bool

	// Filled only by Manager.Debug.
	LastRequest  string
	LastResponse string
	Recent       []EventRecord
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// snapshot copies inst; the caller holds inst.mu.
func (inst *Instance) snapshot(detail bool) Snapshot {
	a := &inst.account
	s := Snapshot{
		Selector: inst.selector, User: a.User, AuthUser: a.AuthUser, Domain: a.Domain, Proxy: a.Proxy,
		Port: a.Port, Transport: a.Transport, DisplayName: a.DisplayName, Expires: a.Expires,
		PasswordSet: a.Password != "", Phase: inst.phase, Off: inst.off, LastError: inst.lastError,
		ContactUser: inst.contactUser, CallID: inst.callID, CSeq: inst.cseq, Failures: int(inst.failures),
		Created: unixTime(inst.created), LastActivity: unixTime(inst.lastActivity),
		ExpiresAt: unixTime(inst.expiresAt), NextAt: unixTime(inst.nextAt),
		LastRegisterAt: unixTime(inst.lastRegister),
		Devices:        int(inst.devices), Calls: int(inst.calls), Messages: int(inst.messages),
		BytesIn: inst.bytesIn, BytesOut: inst.bytesOut,
		FirstTraffic: unixTime(inst.firstTraffic), LastTraffic: unixTime(inst.lastTraffic),
		Logging: inst.logging,
	}
	if detail {
		s.LastRequest, s.LastResponse = inst.lastRequest, inst.lastResponse
		n := int(inst.nrec)
		if inst.recent == nil {
			n = 0
		}
		start := 0
		if n > recentEvents {
			start = n - recentEvents
		}
		for i := start; i < n; i++ {
			s.Recent = append(s.Recent, inst.recent[i%recentEvents].record())
		}
	}
	return s
}

// AverageBitRate returns the average SIP traffic in bits per second from the instance's first
// SIP message until now (at least one second).
func (s Snapshot) AverageBitRate(now time.Time) float64 {
	if s.FirstTraffic.IsZero() {
		return 0
	}
	d := now.Sub(s.FirstTraffic).Seconds()
	if d < 1 {
		d = 1
	}
	return float64(s.BytesIn+s.BytesOut) * 8 / d
}
