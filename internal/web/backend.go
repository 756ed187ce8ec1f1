package web

import (
	"context"
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

// Backend is everything the web server needs from the rest of sipis. The
// lead's adapter in internal/app implements it over the instance manager
// and the store. Every method must be safe for concurrent use; methods with
// a context must give up when it is done.
type Backend interface {
	// Server describes the running server.
	Server() ServerInfo
	// InstanceCounts counts the instances, in total and by state.
	InstanceCounts(ctx context.Context) (InstanceCounts, error)
	// Instances calls fn for each instance matching q, in ascending
	// selector order, and stops with fn's error if fn fails. fn may block
	// on a slow HTTP client (the JSON/XML documents stream), so do not hold
	// locks the rest of sipis needs while calling it: iterate a snapshot
	// or a read transaction.
	Instances(ctx context.Context, q InstanceQuery, fn func(InstanceRow) error) error
	// TrafficRates returns the average SIP traffic in bit/s of every
	// instance (in any order), each computed as BitRate of the instance's
	// byte counters, for the median/MAD colouring.
	TrafficRates(ctx context.Context) ([]float64, error)
	// Debug returns everything known about one instance; ErrNotFound if
	// there is none. Secrets must already be masked ("Not Empty"/"Empty").
	Debug(ctx context.Context, selector string) (DebugInfo, error)
	// AppSettings returns every field the app sent when it registered, in
	// a stable order; ErrNotFound if there is no such instance. Passwords
	// must already be masked as "Not Empty" or "Empty".
	AppSettings(ctx context.Context, selector string) ([]Field, error)
	// Selectors calls fn for every known selector, in ascending order,
	// with the time of its last activity.
	Selectors(ctx context.Context, fn func(selector string, lastActivity time.Time) error) error
	// CallOutcomes counts incoming calls since start.
	CallOutcomes() CallOutcomes
	// PushTestOutcomes counts test pushes since start: platform (e.g.
	// "APNs", "FCM", "Webhook") -> outcome -> count.
	PushTestOutcomes() map[string]Counts
	// TestPush sends a test push notification to every device of the
	// instance and reports how each ended; ErrNotFound if no instance.
	TestPush(ctx context.Context, selector string) ([]PushResult, error)
	// TurnOff turns one instance off (unREGISTER, then Idle).
	TurnOff(ctx context.Context, selector string) error
	// TurnOffAll turns every instance off and returns how many it turned off.
	TurnOffAll(ctx context.Context) (int, error)
	// EnableInstanceLog turns on detailed logging for the instance and
	// returns the path of the file the log goes to.
	EnableInstanceLog(ctx context.Context, selector string) (path string, err error)
	// Register takes the body of POST /sipis/register as received. An
	// error implementing StatusCoder with a 4xx code is a bad request
	// whose message is shown to the app; any other error is a 500.
	Register(ctx context.Context, body []byte) error
	// CheckAdmin reports whether user and pass are the administrator's,
	// comparing in constant time (or with bcrypt); false when no
	// administrator is configured.
	CheckAdmin(user, pass string) bool
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

// DebugInfo is everything known about one instance, for /debug. The
// backend chooses the sections (state, timers, last REGISTER request and
// response, bindings, devices, calls, traffic, recent events ...).
type DebugInfo struct {
	Selector string
	Sections []DebugSection
	// Ladder is the instance's recent SIP exchanges, drawn as sequence diagrams; nil when
	// none are kept.
	Ladder *Ladder
}

// DebugSection is one titled part of DebugInfo: fields, preformatted text
// (e.g. a SIP message), or both.
type DebugSection struct {
	Title  string
	Fields []Field
	Text   string
}

// CallOutcomes counts incoming calls since start.
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
