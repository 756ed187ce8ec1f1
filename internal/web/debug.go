package web

import (
	"fmt"
	"strconv"
	"time"
)

// InstanceDebug is everything known about one instance, as data: DebugSource
// returns it and /debug titles, orders and formats it (debugSections). Secrets
// are masked by the source: Password is "Not Empty" or "Empty", the push tokens
// are already shortened.
type InstanceDebug struct {
	Selector string

	// State.
	Phase        string // e.g. "Register Loop / Registered"
	Off          bool
	LastError    string
	Failures     int // consecutive failed REGISTERs
	Created      time.Time
	LastActivity time.Time
	Logging      bool // detailed logging is on

	// Account, as the app sent it.
	User        string
	AuthUser    string
	Password    string // "Not Empty" or "Empty", never the password
	Domain      string
	Proxy       string
	Port        int
	Transport   string
	DisplayName string
	Expires     int // what the app asked for

	// Binding and timers.
	ContactUser    string
	CallID         string
	CSeq           uint32
	ExpiresAt      time.Time
	NextAt         time.Time
	LastRegisterAt time.Time

	// Traffic.
	BytesIn      int64
	BytesOut     int64
	FirstTraffic time.Time
	LastTraffic  time.Time
	Calls        int // in progress
	Messages     int // waiting

	// The last REGISTER exchange as sent and received; /debug redacts the
	// credentials in it.
	LastRequest  string
	LastResponse string

	Devices []DebugDevice
	// PushProblems are the configuration errors push services reported for
	// the instance; the section is left out when there are none.
	PushProblems []DebugPushProblem
	// Recent are the state machine's latest events, oldest first.
	Recent []DebugEvent
	// Ladder is the instance's recent SIP exchanges, drawn as sequence
	// diagrams; nil when none are kept.
	Ladder *Ladder
}

// DebugDevice is one device of an instance on /debug.
type DebugDevice struct {
	ID                string
	Platform          string
	PushToken         string // shortened by the source
	TokenInvalid      bool
	AlertToken        string // shortened by the source
	AlertTokenInvalid bool
	AppID             string
	Sandbox           bool
	AppVersion        string
	Locale            string
	LastSeen          time.Time
}

// DebugPushProblem counts one kind of push configuration error of an instance.
type DebugPushProblem struct {
	Platform string // as the push package names it, e.g. "apns"
	Reason   string // e.g. "DeviceTokenNotForTopic"
	Count    int
}

// DebugEvent is one transition of the instance's state machine.
type DebugEvent struct {
	At       time.Time
	Event    string
	From, To string // phases, e.g. "Idle / NotRegistered"
	Action   string
	Note     string
}

// debugTime formats a time on /debug: RFC 3339 in UTC, "-" when unset.
func debugTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// debugSections are the titled sections /debug shows for d, in page order.
func debugSections(d InstanceDebug) []DebugSection {
	f := func(n, v string) Field { return Field{Name: n, Value: v} }
	secs := []DebugSection{
		{Title: "State", Fields: []Field{
			f("State", d.Phase), f("Off", strconv.FormatBool(d.Off)), f("Last error", d.LastError),
			f("Consecutive failures", strconv.Itoa(d.Failures)), f("Created", debugTime(d.Created)),
			f("Last activity", debugTime(d.LastActivity)), f("Detailed logging", strconv.FormatBool(d.Logging)),
		}},
		{Title: "Account", Fields: []Field{
			f("User", d.User), f("Auth user", d.AuthUser), f("Password", d.Password), f("Domain", d.Domain),
			f("Proxy", d.Proxy), f("Port", strconv.Itoa(d.Port)), f("Transport", d.Transport),
			f("Display name", d.DisplayName), f("Expires asked by the app", strconv.Itoa(d.Expires)),
		}},
		{Title: "Binding and timers", Fields: []Field{
			f("Contact user", d.ContactUser), f("Call-ID", d.CallID), f("CSeq", strconv.FormatUint(uint64(d.CSeq), 10)),
			f("Binding expires", debugTime(d.ExpiresAt)), f("Next REGISTER", debugTime(d.NextAt)),
			f("Last REGISTER", debugTime(d.LastRegisterAt)),
		}},
		{Title: "Traffic", Fields: []Field{
			f("Bytes in", strconv.FormatInt(d.BytesIn, 10)), f("Bytes out", strconv.FormatInt(d.BytesOut, 10)),
			f("First", debugTime(d.FirstTraffic)), f("Last", debugTime(d.LastTraffic)),
			f("Calls in progress", strconv.Itoa(d.Calls)), f("Waiting messages", strconv.Itoa(d.Messages)),
		}},
		{Title: "Last REGISTER request", Text: d.LastRequest},
		{Title: "Last REGISTER response", Text: d.LastResponse},
	}
	ds := DebugSection{Title: "Devices"}
	for _, v := range d.Devices {
		ds.Fields = append(ds.Fields, f(v.ID, fmt.Sprintf("%s token %s (invalid %t) alert token %s (invalid %t) app %s sandbox %t version %s locale %s last seen %s",
			v.Platform, v.PushToken, v.TokenInvalid, v.AlertToken, v.AlertTokenInvalid,
			v.AppID, v.Sandbox, v.AppVersion, v.Locale, debugTime(v.LastSeen))))
	}
	secs = append(secs, ds)
	if len(d.PushProblems) > 0 {
		ps := DebugSection{Title: "Push configuration errors (tokens kept)"}
		for _, p := range d.PushProblems {
			ps.Fields = append(ps.Fields, f(p.Platform+" "+p.Reason, strconv.Itoa(p.Count)))
		}
		secs = append(secs, ps)
	}
	ev := DebugSection{Title: "Recent events"}
	for _, r := range d.Recent {
		ev.Fields = append(ev.Fields, f(debugTime(r.At), fmt.Sprintf("%s: %v -> %v, %s %s", r.Event, r.From, r.To, r.Action, r.Note)))
	}
	return append(secs, ev)
}
