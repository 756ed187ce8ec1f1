package config

import (
	"strconv"
	"strings"
)

// Level is a log level as Settings.xml names it: Trace, Debug, Info, Warning, Error or Fatal
// (the original product's words; compared without case). The values are ordered from the most
// severe (LevelFatal) to the least (LevelTrace), so "l <= min" means "l is at least as severe
// as min". The zero value is no level and fails validation. config knows nothing of the logger:
// the app maps a Level to its logging library's.
type Level uint8

// The log levels, most severe first.
const (
	LevelFatal Level = iota + 1
	LevelError
	LevelWarning
	LevelInfo
	LevelDebug
	LevelTrace
)

// levelNames are the accepted log levels, in the case shown in messages and in the order of
// the Level values from LevelFatal on (reversed for messages by levelList).
var levelNames = [...]string{LevelFatal - 1: "Fatal", LevelError - 1: "Error", LevelWarning - 1: "Warning",
	LevelInfo - 1: "Info", LevelDebug - 1: "Debug", LevelTrace - 1: "Trace"}

// String returns the level as Settings.xml writes it, e.g. "Warning".
func (l Level) String() string {
	if l < LevelFatal || l > LevelTrace {
		return "Level(" + strconv.Itoa(int(l)) + ")"
	}
	return levelNames[l-1]
}

// Valid reports whether l is one of the six levels.
func (l Level) Valid() bool { return l >= LevelFatal && l <= LevelTrace }

// ParseLevel parses a level name as Settings.xml writes it, without regard to case or
// surrounding space.
func ParseLevel(v string) (Level, error) {
	v = strings.TrimSpace(v)
	for i, n := range levelNames {
		if strings.EqualFold(v, n) {
			return Level(i + 1), nil
		}
	}
	return 0, errorString("must be one of " + levelList())
}

// levelList names the levels from the least severe on, as messages list them.
func levelList() string {
	names := make([]string, 0, len(levelNames))
	for i := len(levelNames) - 1; i >= 0; i-- {
		names = append(names, levelNames[i])
	}
	return strings.Join(names, ", ")
}
