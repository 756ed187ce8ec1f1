package web

import (
	"errors"
	"time"
)

// ErrNotFound is returned (wrapped or as is) by a Backend when the selector
// names no instance; the web server answers 404.
var ErrNotFound = errors.New("not found")

// StatusCoder is implemented by errors that carry the HTTP status the web
// server should answer with (refusals of a kind use internal/errs instead). The
// error's message, first line only, is sent as the reason.
type StatusCoder interface {
	StatusCode() int
}

// Backend is every source the web server reads and every action it asks for, in
// one value: internal/app's backend implements it over the instance manager and
// the store. Each part is a small interface declared beside the pages that use
// it: StatsSource (stats.go: /stats, the documents, /metrics), SelectorSource,
// DebugSource and SettingsSource (pages.go: /selectors, /debug, /settings),
// InstanceAdmin (pages.go: /log and the admin actions), Registrar (register.go:
// POST /sipis/register) and AdminChecker (auth.go). Every method must be safe for
// concurrent use; methods with a context must give up when it is done.
type Backend interface {
	StatsSource
	SelectorSource
	DebugSource
	SettingsSource
	InstanceAdmin
	Registrar
	AdminChecker
}

// ServerInfo describes the running server for /about, /stats and the summary.
type ServerInfo struct {
	Name          string // node name, Server Name in Settings.xml
	VersionString string // e.g. "sipis 1.2.3"
	VersionNumber string // e.g. "1.2.3"
	Build         string // e.g. commit and build date
	Started       time.Time
	// MessageLoopQueueSize is the number of events waiting in the
	// instance manager's message loop.
	MessageLoopQueueSize int
}

// InstanceCounts counts instances in total and by state. The states are
// those of the summary document's CountInState.
type InstanceCounts struct {
	Count        int
	Idle         int // Idle / NotRegistered
	Registering  int // Registering / Registering
	Registered   int // Register Loop / Registered
	Unauthorized int // Register Loop / Unauthorized
	Error        int // Register Loop / Error
}

// InstanceQuery selects instances for Backend.Instances.
type InstanceQuery struct {
	Selector string // exact match; "" means every instance
	Offset   int    // skip this many instances (in selector order)
	Limit    int    // at most this many; 0 means no limit
}

// The state machine states and registration statuses shown as two words in
// the Instances table, e.g. "Register Loop / Registered".
const (
	StateIdle         = "Idle"
	StateRegistering  = "Registering"
	StateRegisterLoop = "Register Loop"

	StatusNotRegistered = "NotRegistered"
	StatusRegistering   = "Registering"
	StatusRegistered    = "Registered"
	StatusUnauthorized  = "Unauthorized"
	StatusError         = "Error"
)

// InstanceRow is one row of the Instances table.
type InstanceRow struct {
	Selector string
	UserName string
	Domain   string
	Proxy    string
	Port     int    // 0: from DNS SRV or the transport's default
	State    string // StateIdle, StateRegistering or StateRegisterLoop
	Status   string // StatusNotRegistered ... StatusError
	Created  time.Time
	Devices  int // current number of devices
	Calls    int // calls in progress
	Messages int // waiting messages
	BytesIn  int64
	BytesOut int64
	// AsOf is when the backend took the row; BitRate averages up to it.
	AsOf time.Time
	// ProxyDown says the OPTIONS probe of the instance's proxy finds it down.
	ProxyDown bool
	// FirstTraffic and LastTraffic bound the instance's SIP traffic; zero
	// when there was none.
	FirstTraffic time.Time
	LastTraffic  time.Time
	Off          bool   // turned off by the administrator
	LastError    string // why the last REGISTER failed, if it did
}

// BitRate returns the row's average SIP traffic in bit/s from its first SIP message until
// AsOf (until LastTraffic when AsOf is zero). Averaging up to "now" rather than up to the
// last message keeps an instance that sent one REGISTER an hour ago from looking like a
// heavy talker.
func (r InstanceRow) BitRate() float64 {
	end := r.AsOf
	if end.IsZero() {
		end = r.LastTraffic
	}
	return BitRate(r.BytesIn+r.BytesOut, r.FirstTraffic, end)
}

func BitRate(bytes int64, first, last time.Time) float64 {
	if bytes <= 0 || first.IsZero() {
		return 0
	}
	d := last.Sub(first).Seconds()
	if d < 1 {
		d = 1
	}
	return float64(bytes) * 8 / d
}

// Field is one named value shown on /settings or /debug.
type Field struct {
	Name  string
	Value string
}

// PushProblemReporter is implemented by a Backend that counts the
// configuration errors push services report (a token sent to the wrong
// topic, a sandbox token sent to production, a bad provider key): /stats
// shows them under "Push Configuration Errors".
type PushProblemReporter interface {
	// PushConfigErrors counts them since start: "platform reason" -> count.
	PushConfigErrors() Counts
}

// DebugSection is one titled part of a page (/debug, and the further sections of
// /stats): fields, preformatted text (e.g. a SIP message), or both.
type DebugSection struct {
	Title  string
	Fields []Field
	Text   string
}

// CallOutcomes counts incoming calls from the stored call records (they survive restarts).
type CallOutcomes struct {
	Total            int
	Accepted         int
	Missed           int
	Rejected         int
	RejectedByReason Counts // reason -> count
}

// PushResult is how a test push to one device ended.
type PushResult struct {
	Device   string // device id
	Platform string // "APNs", "FCM", "Webhook" ...
	Outcome  string // e.g. "Accepted", "Failed"
	Error    string // details when it failed
	Topic    string // the APNs topic (or FCM app id) the push went to; "" when none was sent
	Answer   string // what the push service answered, e.g. "200 apns-id 3F2…" or "400 BadDeviceToken"
}
