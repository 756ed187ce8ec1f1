package web

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Ladder is an instance's recent SIP exchanges for the sequence diagrams on /debug.
type Ladder struct {
	// Devices are the instance's device ids, a column each.
	Devices []string
	// Transactions are the recent REGISTER, MESSAGE and push transactions, oldest first.
	Transactions []LadderExchange
	// Calls are the recent calls, oldest first.
	Calls []LadderExchange
	// Bodies says that message texts are recorded (the instance's log is on).
	Bodies bool
}

// LadderExchange is one transaction or call.
type LadderExchange struct {
	Kind    string // "REGISTER", "MESSAGE", "call" or "push"
	Key     string // Call-ID or pairing id
	Start   time.Time
	Outcome string
	Msgs    []LadderMsg
}

// The columns of a ladder; a device's column is LadderDevice + its id.
const (
	LadderProxy  = "proxy"
	LadderSipis  = "sipis"
	LadderPush   = "push service"
	LadderDevice = "device "
)

// LadderMsg is one arrow.
type LadderMsg struct {
	At       time.Time
	Timed    bool   // At is the message's own time (false: only its place in the order is known)
	From, To string // the columns
	Label    string // method, or status and reason
	Note     string // the X-Sipis-Push-Status stage, the push service's answer ...
	Body     string // the message text, only while the instance's log is on
}

// Ladder layout, in SVG user units.
const (
	ladderTimeW = 78
	ladderColW  = 170
	ladderHead  = 34
	ladderRowH  = 30
)

type ladderView struct {
	Bodies       bool
	Calls        []exchangeView
	Transactions []exchangeView
}

type exchangeView struct {
	ID, Title, Outcome string
	W, H, LineEnd      int
	Cols               []ladderCol
	Arrows             []ladderArrow
}

type ladderCol struct {
	X    int
	Name string
}

type ladderArrow struct {
	N              int
	Y, TextY       int
	X1, X2, LabelX int
	Time           string
	Label, Note    string
	Class          string // "req", "resp", "push"
	Body           string
}

// secretHeaders matches credentials in a SIP message's text (RFC 3261 §20.7, §20.28 and the
// sipis call token); the backend already redacts them, this is the second lock.
var secretHeaders = regexp.MustCompile(`(?im)^((?:proxy-)?authorization|x-sipis-token|x-sipis-secret)[ \t]*:[^\r\n]*`)

func redactSIP(s string) string {
	return secretHeaders.ReplaceAllStringFunc(s, func(h string) string {
		return h[:strings.IndexByte(h, ':')] + ": Not Empty"
	})
}

func buildLadder(l *Ladder) *ladderView {
	if l == nil {
		return nil
	}
	v := &ladderView{Bodies: l.Bodies}
	for i, e := range l.Calls {
		v.Calls = append(v.Calls, buildExchange("call-"+strconv.Itoa(i+1), l.Devices, e))
	}
	for i, e := range l.Transactions {
		v.Transactions = append(v.Transactions, buildExchange("tx-"+strconv.Itoa(i+1), l.Devices, e))
	}
	return v
}

func buildExchange(id string, devices []string, e LadderExchange) exchangeView {
	names := []string{LadderProxy, LadderSipis}
	for _, d := range devices {
		names = append(names, LadderDevice+d)
	}
	for _, m := range e.Msgs { // a device that is gone since still gets its column
		for _, c := range []string{m.From, m.To} {
			if strings.HasPrefix(c, LadderDevice) && !contains(names, c) {
				names = append(names, c)
			}
		}
	}
	names = append(names, LadderPush)
	x := map[string]int{}
	v := exchangeView{ID: id, Outcome: e.Outcome, Title: e.Kind}
	if !e.Start.IsZero() {
		v.Title += " at " + e.Start.UTC().Format("2006-01-02 15:04:05.000") + " UTC"
	}
	if e.Key != "" {
		v.Title += " · " + e.Key
	}
	for i, n := range names {
		cx := ladderTimeW + ladderColW/2 + i*ladderColW
		x[n] = cx
		v.Cols = append(v.Cols, ladderCol{X: cx, Name: n})
	}
	v.W = ladderTimeW + len(names)*ladderColW
	var first time.Time
	for _, m := range e.Msgs {
		if m.Timed && (first.IsZero() || m.At.Before(first)) {
			first = m.At
		}
	}
	for i, m := range e.Msgs {
		x1, ok1 := x[m.From]
		x2, ok2 := x[m.To]
		if !ok1 || !ok2 {
			continue
		}
		y := ladderHead + 18 + i*ladderRowH
		a := ladderArrow{N: i + 1, Y: y, TextY: y - 6, X1: x1, X2: x2, LabelX: (x1 + x2) / 2,
			Label: redactSIP(m.Label), Note: redactSIP(m.Note), Body: redactSIP(m.Body), Class: "req", Time: "·"}
		switch {
		case m.From == LadderPush || m.To == LadderPush:
			a.Class = "push"
		case len(m.Label) > 3 && m.Label[3] == ' ' && isDigits(m.Label[:3]):
			a.Class = "resp"
		}
		if m.Timed && !first.IsZero() {
			a.Time = "+" + strconv.FormatFloat(m.At.Sub(first).Seconds(), 'f', 3, 64) + " s"
		}
		// Keep the arrow's head clear of the lifeline.
		if x2 > x1 {
			a.X2 -= 4
		} else {
			a.X2 += 4
		}
		v.Arrows = append(v.Arrows, a)
	}
	v.H = ladderHead + 18 + len(e.Msgs)*ladderRowH
	v.LineEnd = v.H - 6
	return v
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
