package instance

import "testing"

func TestTransitionTable(t *testing.T) {
	idle := Phase{Idle, NotRegistered}
	reg := Phase{Registering, StatusRegistering}
	ok := Phase{RegisterLoop, Registered}
	bad := Phase{RegisterLoop, Error}
	unauth := Phase{RegisterLoop, Unauthorized}
	for _, tc := range []struct {
		from   Phase
		ev     Event
		to     Phase
		action Action
	}{
		{idle, EvBackground, reg, ActRegister},
		{idle, EvForeground, idle, ActUnregister},
		{idle, EvTurnOff, idle, ActUnregister},
		{idle, EvForget, idle, ActUnregisterGone},
		{idle, EvTimer, idle, ActNone},
		{idle, EvRegistered, idle, ActNone},
		{idle, EvFailed, idle, ActNone},
		{reg, EvRegistered, ok, ActRefreshLater},
		{reg, EvFailed, bad, ActRetryLater},
		{reg, EvUnauthorized, unauth, ActRetrySlowly},
		{reg, EvIntervalTooBrief, reg, ActRegister},
		{reg, EvForeground, idle, ActUnregister},
		{reg, EvTurnOff, idle, ActUnregister},
		{reg, EvBackground, reg, ActRegister},
		{ok, EvTimer, ok, ActRegister},
		{ok, EvRegistered, ok, ActRefreshLater},
		{ok, EvFailed, bad, ActRetryLater},
		{ok, EvUnauthorized, unauth, ActRetrySlowly},
		{ok, EvForeground, idle, ActUnregister},
		{ok, EvForget, idle, ActUnregisterGone},
		{ok, EvBackground, ok, ActRegister},
		{bad, EvTimer, bad, ActRegister},
		{bad, EvRegistered, ok, ActRefreshLater},
		{bad, EvFailed, bad, ActRetryLater},
		{unauth, EvTimer, unauth, ActRegister},
		{unauth, EvRegistered, ok, ActRefreshLater},
		{unauth, EvTurnOff, idle, ActUnregister},
		{ok, EvNone, ok, ActNone},
	} {
		to, act := Transition(tc.from, tc.ev)
		if to != tc.to || act != tc.action {
			t.Errorf("%v --%v--> got %v %v, want %v %v", tc.from, tc.ev, to, act, tc.to, tc.action)
		}
	}
}

func TestParseState(t *testing.T) {
	for _, p := range []Phase{{Idle, NotRegistered}, {Registering, StatusRegistering}, {RegisterLoop, Registered},
		{RegisterLoop, Unauthorized}, {RegisterLoop, Error}} {
		st, ss, ok := ParseState(p.State.Key(), p.Status.String())
		if !ok || st != p.State || ss != p.Status {
			t.Errorf("%v: parsed %v %v %v", p, st, ss, ok)
		}
	}
	if _, _, ok := ParseState("Bogus", "Registered"); ok {
		t.Error("bogus state accepted")
	}
	if got := (Phase{RegisterLoop, Registered}).String(); got != "Register Loop / Registered" {
		t.Errorf("phase shown as %q", got)
	}
}
