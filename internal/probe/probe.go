// Package probe watches upstream SIP stacks with OPTIONS requests and reports
// when one stops or starts answering.
//
// A Prober keeps one small state machine per target (Unknown, Up, Down) and
// probes all targets from a single scheduler goroutine (a timer heap) feeding a
// bounded worker pool, so ten thousand targets cost little more than ten. Any
// final response, even 404 or 503, proves the SIP stack is alive: RFC 3261
// §11.2 lets a server answer OPTIONS with whatever it would answer an INVITE
// with, so only the absence of a final response (timeout, transport error,
// unresolvable host) counts as a failure.
//
// State changes are recorded through a History and handed asynchronously to
// Alerters (see Mailer and Webhook); alerting never blocks probing.
//
// It owns the targets' states, the probe schedule and the alert senders (SMTP mail, signed
// webhooks). It must not import the SIP stack or the store: the application wires a Pinger
// (internal/sipua's OPTIONS) and a History (the store's probe_events) to it.
package probe

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Pinger sends one OPTIONS request to uri over transport ("" lets the
// implementation choose, per RFC 3263) and waits for the final response. It
// must return when ctx is done. A nil error with a final code (200–699) means
// the target answered; an error means it did not (timeout, transport failure,
// name resolution failure) and its text is shown to operators.
type Pinger interface {
	Options(ctx context.Context, uri, transport string) (code int, reason string, rtt time.Duration, err error)
}

// History records state changes, typically in the store.
type History interface {
	AddProbeEvent(ctx context.Context, ev Event) error
}

// Alerter tells someone about a state change (see Mailer and Webhook). Alert
// is called from a goroutine dedicated to that alerter, never from the probing
// path, and ctx is cancelled when the Prober stops.
type Alerter interface {
	Alert(ctx context.Context, ch Change) error
}

// State is the health of a target as far as probing knows.
type State int

// The states of a target. A target starts Unknown, becomes Up at its first
// answer, Down after Options.DownAfter consecutive failures and Up again after
// Options.UpAfter consecutive answers.
const (
	Unknown State = iota
	Up
	Down
)

var stateNames = [...]string{Unknown: "unknown", Up: "up", Down: "down"}

// String returns "unknown", "up" or "down".
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// MarshalText encodes the state as its String form (for JSON and XML).
func (s State) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(stateNames) {
		return nil, fmt.Errorf("probe: invalid state %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText parses the String form of a state, ignoring case.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if strings.EqualFold(n, string(b)) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("probe: unknown state %q (want unknown, up or down)", b)
}

// Target is one SIP stack to probe.
type Target struct {
	// URI is a sip: or sips: URI naming the stack, e.g. "sip:proxy.example.com:5060".
	URI string `json:"uri"`
	// Transport is udp, tcp, tls, ws or wss; empty lets the Pinger choose.
	Transport string `json:"transport,omitempty"`
	// Interval between probes; zero means Options.Interval.
	Interval time.Duration `json:"interval,omitempty"`
	// Timeout of one probe; zero means Options.Timeout. Must be below the interval.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Key identifies the target: its URI, with ";transport=" appended when a
// transport is set, so the same host over UDP and over TLS are two targets.
func (t Target) Key() string {
	if t.Transport == "" || hasTransportParam(t.URI) {
		return t.URI
	}
	return t.URI + ";transport=" + t.Transport
}

// Event is one state change of one target, as recorded in the History.
type Event struct {
	// Target is the Target.Key of the target.
	Target   string `json:"target"`
	OldState State  `json:"oldState"`
	NewState State  `json:"newState"`
	// LastError is the error of the failed probe that took the target down;
	// empty when it came up.
	LastError string `json:"lastError,omitempty"`
	// Code is the final response code of the probe that caused the change
	// (0 when there was no answer).
	Code int `json:"code"`
	// RTT is the round trip of that probe (0 when there was no answer).
	RTT time.Duration `json:"rttNs"`
	At  time.Time     `json:"at"`
}

// Change is what an Alerter is told: the latest state change of a target,
// plus how many earlier changes of the same target were folded into it by the
// alert rate limit (Options.MinAlertInterval).
type Change struct {
	Event
	// Transport is the target's transport ("" when the Pinger chose).
	Transport string `json:"transport,omitempty"`
	// Suppressed counts the changes of this target since the previous alert
	// that were not sent on their own.
	Suppressed int `json:"suppressed,omitempty"`
}

// Status is a snapshot of one target for the operator pages.
type Status struct {
	// Target is the Target.Key of the target.
	Target    string `json:"target"`
	Transport string `json:"transport,omitempty"`
	State     State  `json:"state"`
	// Since is when the target entered State (when it was added, for Unknown).
	Since time.Time `json:"since"`
	// LastCode, LastReason and LastRTT describe the most recent answer.
	LastCode   int           `json:"lastCode,omitempty"`
	LastReason string        `json:"lastReason,omitempty"`
	LastRTT    time.Duration `json:"lastRttNs,omitempty"`
	// LastError is the error of the most recent failed probe, if any.
	LastError string `json:"lastError,omitempty"`
	// LastProbe is when the most recent probe finished (zero before the first).
	LastProbe time.Time `json:"lastProbe,omitzero"`
	// Failures and Successes count consecutive failed and answered probes.
	Failures  int `json:"failures"`
	Successes int `json:"successes"`
	// Recent holds the latest state changes, oldest first.
	Recent []Event `json:"recent,omitempty"`
}

// Stats counts what the Prober did since it was created, for metrics.
type Stats struct {
	// Probes is the number of probes finished, Failures of them without answer.
	Probes   uint64 `json:"probes"`
	Failures uint64 `json:"failures"`
	// Skipped counts probes not sent because the previous probe of the same
	// target was still waiting for a worker or an answer.
	Skipped uint64 `json:"skipped"`
	// Changes counts recorded state changes; ChangesDropped those lost because
	// the change queue was full.
	Changes        uint64 `json:"changes"`
	ChangesDropped uint64 `json:"changesDropped"`
	// AlertsSent, AlertsFailed and AlertsDropped count alerter calls that
	// succeeded, failed, or never happened because that alerter's queue was
	// full. AlertsCoalesced counts changes folded into a later alert.
	AlertsSent      uint64 `json:"alertsSent"`
	AlertsFailed    uint64 `json:"alertsFailed"`
	AlertsDropped   uint64 `json:"alertsDropped"`
	AlertsCoalesced uint64 `json:"alertsCoalesced"`
	// HistoryFailed counts events the History refused.
	HistoryFailed uint64 `json:"historyFailed"`
}
