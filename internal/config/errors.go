package config

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in the settings. Load, Parse and Validate return one
// *Error, or several joined with errors.Join; use errors.As to get one.
type Error struct {
	// File is the settings file as named to Load (or in a Defaults
	// attribute); "settings" for Parse; empty for Validate.
	File string
	// Line is the 1-based line of the attribute or element, 0 if unknown
	// (the value is a default, or the error comes from Validate).
	Line int
	// Path is the chain of element names from the root, for example
	// ["Sipis", "Sip", "Register", "Backoff", "Min"]; empty when the error
	// is about the file as a whole (unreadable, malformed XML).
	Path []string
	// Attr is the attribute at fault, if any.
	Attr string
	// Value is the attribute's value as written, never the value of a
	// secret.
	Value string
	// Msg says what is wrong.
	Msg string

	key    string // position key, see posKey
	order  int    // index of File in load order, for sorting
	secret bool   // Value must not be shown
}

// Error formats the error as `file:line: <Element Attr="value">: Attr: msg`.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	path := e.Path
	if len(path) > 0 && e.Line > 0 {
		// The line number locates it; the last name is enough.
		path = path[len(path)-1:]
	}
	for i, name := range path {
		b.WriteString("<")
		b.WriteString(name)
		if i == len(path)-1 && e.Attr != "" {
			b.WriteString(" ")
			b.WriteString(e.Attr)
			if e.secret {
				b.WriteString("=(hidden)")
			} else {
				b.WriteString("=")
				b.WriteString(strconv.Quote(shorten(e.Value)))
			}
		}
		b.WriteString(">")
	}
	if len(path) > 0 {
		b.WriteString(": ")
	}
	if e.Attr != "" {
		b.WriteString(e.Attr)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func shorten(v string) string {
	const max = 60
	if len(v) <= max {
		return v
	}
	return v[:max] + "…"
}

// maxErrors caps how many problems one call reports.
const maxErrors = 20

// joinErrors sorts errs by file and line and joins at most maxErrors of them.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].order != errs[j].order {
			return errs[i].order < errs[j].order
		}
		return errs[i].Line < errs[j].Line
	})
	if len(errs) == 1 {
		return errs[0]
	}
	n := min(len(errs), maxErrors)
	out := make([]error, 0, n+1)
	for _, e := range errs[:n] {
		out = append(out, e)
	}
	if len(errs) > n {
		out = append(out, errors.New("… and "+strconv.Itoa(len(errs)-n)+" more"))
	}
	return errors.Join(out...)
}
