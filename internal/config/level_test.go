package config

import (
	"strings"
	"testing"
)

func TestParseLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Level
	}{
		{"Trace", LevelTrace}, {"debug", LevelDebug}, {" INFO ", LevelInfo},
		{"Warning", LevelWarning}, {"error", LevelError}, {"Fatal", LevelFatal},
	} {
		got, err := ParseLevel(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := ParseLevel(got.String()); err != nil || back != got {
			t.Errorf("ParseLevel(%q.String()) = %v, %v", tc.in, back, err)
		}
	}
	for _, bad := range []string{"", "Warn", "Panic", "verbose"} {
		if l, err := ParseLevel(bad); err == nil {
			t.Errorf("ParseLevel(%q) = %v, want an error", bad, l)
		} else if !strings.Contains(err.Error(), "Trace, Debug, Info, Warning, Error, Fatal") {
			t.Errorf("ParseLevel(%q): %v does not list the levels", bad, err)
		}
	}
	if Level(0).Valid() || !LevelTrace.Valid() || Level(7).Valid() {
		t.Error("Valid accepts a level outside Fatal..Trace or refuses Trace")
	}
	if !(LevelFatal < LevelError && LevelError < LevelWarning && LevelWarning < LevelInfo &&
		LevelInfo < LevelDebug && LevelDebug < LevelTrace) {
		t.Error("levels are not ordered from the most severe to the least")
	}
}
