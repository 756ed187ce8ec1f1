// Package instance runs one registration state machine per selector and the manager that
// owns them all: the message loop (a queue of events served by a bounded pool of workers),
// a single timer heap for refreshes and retries (no goroutine per instance), the per-proxy
// admission of REGISTERs (a limit in flight, and one probe at a time to a proxy that does not
// answer), write-behind persistence of the latest state of every instance, and the intake of
// registrations sent by apps. Nothing waits for the store or the network while holding an
// instance's lock, except the deletion of a forgotten instance.
//
// It owns the instances' in-memory state (the only writer of their phase, CSeq, Contact and
// timers), who may claim a selector, the expiry of silent instances and their reminders.
//
// It must not speak HTTP (a refused registration is an internal/errs kind that internal/web
// maps to a status), import sipgo (REGISTERs go through the Registrar interface, which
// internal/sipua implements), handle INVITEs or MESSAGEs (internal/call does), or drop a state
// update: a failed write goes back into the dirty set and is written again (at stop, retried
// for up to two minutes, then logged). docs/design.md draws the state machine.
package instance

import "fmt"

// State is the first of the two words the stats page shows.
type State uint8

// The states of an instance, as /stats shows them (docs/http.md, "Operator pages": the
// instances table's State column).
const (
	Idle         State = iota // the app is in the foreground and registers by itself
	Registering               // the first REGISTER of a background period is under way
	RegisterLoop              // sipis holds (or keeps trying to hold) the registration
)

// String returns the state as it is shown: "Idle", "Registering", "Register Loop".
func (s State) String() string {
	switch s {
	case Idle:
		return "Idle"
	case Registering:
		return "Registering"
	case RegisterLoop:
		return "Register Loop"
	}
	return fmt.Sprintf("State(%d)", s)
}

// Key returns the state as it is stored and named in JSON: "Idle", "Registering", "RegisterLoop".
func (s State) Key() string {
	if s == RegisterLoop {
		return "RegisterLoop"
	}
	return s.String()
}

// Status is the second word: the registration status.
type Status uint8

// The registration statuses.
const (
	NotRegistered Status = iota
	StatusRegistering
	Registered
	Unauthorized // the proxy refused our credentials: the user must fix them
	Error        // any other failure; LastError says why
)

// String returns the status as it is shown and stored.
func (s Status) String() string {
	switch s {
	case NotRegistered:
		return "NotRegistered"
	case StatusRegistering:
		return "Registering"
	case Registered:
		return "Registered"
	case Unauthorized:
		return "Unauthorized"
	case Error:
		return "Error"
	}
	return fmt.Sprintf("Status(%d)", s)
}

// ParseState parses a stored state and status; unknown words give Idle/NotRegistered and false.
func ParseState(state, status string) (State, Status, bool) {
	var st State
	switch state {
	case "Idle":
		st = Idle
	case "Registering":
		st = Registering
	case "RegisterLoop", "Register Loop":
		st = RegisterLoop
	default:
		return Idle, NotRegistered, false
	}
	for s := NotRegistered; s <= Error; s++ {
		if s.String() == status {
			return st, s, true
		}
	}
	return Idle, NotRegistered, false
}

// Phase is the pair shown on the stats page.
type Phase struct {
	State  State
	Status Status
}

func (p Phase) String() string { return p.State.String() + " / " + p.Status.String() }

// Event is what can happen to an instance.
type Event uint8

// The events of the state machine.
const (
	EvNone             Event = iota
	EvBackground             // the app handed its account to us (possibly changed)
	EvForeground             // the app took its account back
	EvTurnOff                // an administrator turned the instance off
	EvForget                 // the app asked to be forgotten, or it was silent too long
	EvTimer                  // a refresh or retry is due
	EvRegistered             // the proxy granted our binding (2xx with expiry > 0)
	EvFailed                 // timeout, transport error, 5xx, or any other refusal
	EvUnauthorized           // 401/407 after credentials, or 403 (RFC 3261 §22.1)
	EvIntervalTooBrief       // 423 with Min-Expires (RFC 3261 §10.3 step 7): register again at once
	EvExpire                 // the sweep found the instance silent too long: forget it if it still is
)

var eventNames = [...]string{"None", "Background", "Foreground", "TurnOff", "Forget", "Timer",
	"Registered", "Failed", "Unauthorized", "IntervalTooBrief", "Expire"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", e)
}

// Action is what the manager must do after a transition.
type Action uint8

// The actions a transition can ask for.
const (
	ActNone           Action = iota
	ActRegister              // send REGISTER now
	ActUnregister            // send REGISTER with Expires: 0 for our Contact, then stay idle
	ActUnregisterGone        // unregister, then delete the instance and its credentials
	ActRefreshLater          // schedule a refresh before the granted expiry
	ActRetryLater            // schedule a retry with exponential backoff and jitter
	ActRetrySlowly           // schedule a slow retry (credentials refused: never a tight loop)
)

var actionNames = [...]string{"None", "Register", "Unregister", "UnregisterGone", "RefreshLater", "RetryLater", "RetrySlowly"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// Transition is the whole state machine: given the current phase and an event it returns the
// next phase and the one action to take. It is pure; the manager executes the action.
//
//	Idle/NotRegistered --Background--> Registering/Registering (REGISTER)
//	Registering --Registered--> Register Loop/Registered (refresh later)
//	Registering|Register Loop --Failed--> Register Loop/Error (retry with backoff)
//	Registering|Register Loop --Unauthorized--> Register Loop/Unauthorized (retry slowly)
//	Register Loop --Timer--> Register Loop, same status (REGISTER)
//	any --Foreground|TurnOff--> Idle/NotRegistered (unREGISTER if a binding may exist)
//	any --Forget--> gone (unREGISTER, delete)
func Transition(p Phase, ev Event) (Phase, Action) {
	idle := Phase{Idle, NotRegistered}
	active := p.State != Idle
	switch ev {
	case EvForeground, EvTurnOff:
		// Even when idle: a binding may outlive a crash between the app's wish and our
		// unREGISTER. The executor sends nothing when no binding can exist.
		return idle, ActUnregister
	case EvForget, EvExpire:
		return idle, ActUnregisterGone // the executor skips the REGISTER when no binding can exist
	case EvBackground:
		if active {
			// New or refreshed account data: register again now with it.
			return p, ActRegister
		}
		return Phase{Registering, StatusRegistering}, ActRegister
	}
	if !active {
		// Timers and results that arrive after the app came back are stale.
		return p, ActNone
	}
	switch ev {
	case EvTimer, EvIntervalTooBrief:
		return p, ActRegister
	case EvRegistered:
		return Phase{RegisterLoop, Registered}, ActRefreshLater
	case EvFailed:
		return Phase{RegisterLoop, Error}, ActRetryLater
	case EvUnauthorized:
		return Phase{RegisterLoop, Unauthorized}, ActRetrySlowly
	}
	return p, ActNone
}
