package web

import (
	"encoding/json"
	"encoding/xml"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Counts maps a name (a rejection reason, a push outcome) to a count. In
// JSON it is an object; in XML a list of <Count Name="...">n</Count>.
type Counts map[string]int

// Total returns the sum of the counts.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// sorted returns the counts ordered by name.
func (c Counts) sorted() []namedCount {
	out := make([]namedCount, 0, len(c))
	for k, v := range c {
		out = append(out, namedCount{Name: k, Count: v})
	}
	slices.SortFunc(out, func(a, b namedCount) int { return compareStrings(a.Name, b.Name) })
	return out
}

type namedCount struct {
	Name  string `xml:"Name,attr"`
	Count int    `xml:",chardata"`
}

// MarshalJSON writes the counts as an object; nil is {}.
func (c Counts) MarshalJSON() ([]byte, error) {
	if c == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]int(c))
}

// MarshalXML writes the counts as <Count Name="...">n</Count> elements,
// sorted by name.
func (c Counts) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return e.EncodeElement(struct {
		Counts []namedCount `xml:"Count"`
	}{c.sorted()}, start)
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// summaryDoc is /stats/summary/json and /xml. Server and Instance carry
// exactly the contract's names; the rest are our additions.
type summaryDoc struct {
	XMLName          xml.Name         `json:"-" xml:"Summary"`
	Server           summaryServer    `json:"Server"`
	Instance         summaryInstance  `json:"Instance"`
	CallOutcomes     CallOutcomes     `json:"CallOutcomes"`
	PushTestOutcomes pushTestOutcomes `json:"PushTestOutcomes"`
	// Cluster is there only on a node of a cluster (Options.Cluster).
	Cluster *ClusterInfo `json:"Cluster,omitempty" xml:",omitempty"`
}

// ClusterInfo is the cluster block of /stats/summary: this node and every node of the
// cluster, as the shared database has them.
type ClusterInfo struct {
	Node string `json:"Node"`
	// LeaseValidForSeconds is how long this node may still send without renewing its lease
	// (0: it may not send now).
	LeaseValidForSeconds float64       `json:"LeaseValidForSeconds"`
	Nodes                []ClusterNode `json:"Nodes" xml:"Nodes>Node"`
}

// ClusterNode is one node of ClusterInfo.
type ClusterNode struct {
	Name      string `json:"Name" xml:"Name,attr"`
	State     string `json:"State"` // live, draining, dead; "expired" for a live one whose lease passed
	Instances int    `json:"Instances"`
	// LeaseLeftSeconds is how long the node's lease runs (negative: passed that long ago).
	LeaseLeftSeconds float64 `json:"LeaseLeftSeconds"`
	Heartbeat        string  `json:"Heartbeat"` // RFC 3339
	Address          string  `json:"Address"`
}

type summaryServer struct {
	Name                 string `json:"Name"`
	VersionString        string `json:"VersionString"`
	VersionNumber        string `json:"VersionNumber"`
	Build                string `json:"Build"`
	UptimeInSeconds      int64  `json:"UptimeInSeconds"`
	MessageLoopQueueSize int    `json:"MessageLoopQueueSize"`
	Started              string `json:"Started"` // RFC 3339
}

type summaryInstance struct {
	Count        int          `json:"Count"`
	CountInState countInState `json:"CountInState"`
}

type countInState struct {
	Idle         int `json:"Idle"`
	Registered   int `json:"Registered"`
	Registering  int `json:"Registering"`
	Unauthorized int `json:"Unauthorized"`
	Error        int `json:"Error"`
}

// pushTestOutcomes is platform -> {Sent, Outcomes}; a JSON object keyed by
// platform, in XML <Platform Name="...">.
type pushTestOutcomes []pushPlatform

type pushPlatform struct {
	Name     string `json:"-" xml:"Name,attr"`
	Sent     int    `json:"Sent"`
	Outcomes Counts `json:"Outcomes"`
}

func newPushTestOutcomes(m map[string]Counts) pushTestOutcomes {
	out := make(pushTestOutcomes, 0, len(m))
	for name, c := range m {
		out = append(out, pushPlatform{Name: name, Sent: c.Total(), Outcomes: c})
	}
	slices.SortFunc(out, func(a, b pushPlatform) int { return compareStrings(a.Name, b.Name) })
	return out
}

// MarshalJSON writes an object keyed by platform name.
func (p pushTestOutcomes) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, pl := range p {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, pl.Name)
		b = append(b, ':')
		v, err := json.Marshal(pl)
		if err != nil {
			return nil, err
		}
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

// MarshalXML writes one <Platform Name="..."> element per platform.
func (p pushTestOutcomes) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return e.EncodeElement(struct {
		Platforms []pushPlatform `xml:"Platform"`
	}{p}, start)
}

// instanceFields are the names of the instance record fields, in order;
// JSON keys and XML elements alike. The golden tests pin them.
//
//	Selector, UserName, Domain, Proxy, Port, State, Status, Off, Age,
//	Created, Devices, Calls, Messages, BytesIn, BytesOut, TrafficBytes,
//	BitRate, TrafficClass, FirstTraffic, LastTraffic, LastError
//
// Age is in 5-second intervals, BitRate in bit/s, TrafficClass is the MAD
// colouring ("low", "normal" or "high"), times are RFC 3339 (null in JSON
// and empty in XML when unknown).
type rowEncoder struct {
	now            time.Time
	median, spread float64
}

func (e rowEncoder) appendJSON(b []byte, r InstanceRow) []byte {
	rate := r.BitRate()
	b = append(b, `{"Selector":`...)
	b = appendJSONString(b, r.Selector)
	b = append(b, `,"UserName":`...)
	b = appendJSONString(b, r.UserName)
	b = append(b, `,"Domain":`...)
	b = appendJSONString(b, r.Domain)
	b = append(b, `,"Proxy":`...)
	b = appendJSONString(b, r.Proxy)
	b = append(b, `,"Port":`...)
	b = strconv.AppendInt(b, int64(r.Port), 10)
	b = append(b, `,"State":`...)
	b = appendJSONString(b, r.State)
	b = append(b, `,"Status":`...)
	b = appendJSONString(b, r.Status)
	b = append(b, `,"Off":`...)
	b = strconv.AppendBool(b, r.Off)
	b = append(b, `,"Age":`...)
	b = strconv.AppendInt(b, ageIntervals(r.Created, e.now), 10)
	b = append(b, `,"Created":`...)
	b = appendJSONTime(b, r.Created)
	b = append(b, `,"Devices":`...)
	b = strconv.AppendInt(b, int64(r.Devices), 10)
	b = append(b, `,"Calls":`...)
	b = strconv.AppendInt(b, int64(r.Calls), 10)
	b = append(b, `,"Messages":`...)
	b = strconv.AppendInt(b, int64(r.Messages), 10)
	b = append(b, `,"BytesIn":`...)
	b = strconv.AppendInt(b, r.BytesIn, 10)
	b = append(b, `,"BytesOut":`...)
	b = strconv.AppendInt(b, r.BytesOut, 10)
	b = append(b, `,"TrafficBytes":`...)
	b = strconv.AppendInt(b, r.BytesIn+r.BytesOut, 10)
	b = append(b, `,"BitRate":`...)
	b = appendFloat(b, rate)
	b = append(b, `,"TrafficClass":"`...)
	b = append(b, classify(rate, e.median, e.spread)...)
	b = append(b, `","FirstTraffic":`...)
	b = appendJSONTime(b, r.FirstTraffic)
	b = append(b, `,"LastTraffic":`...)
	b = appendJSONTime(b, r.LastTraffic)
	b = append(b, `,"LastError":`...)
	b = appendJSONString(b, r.LastError)
	return append(b, '}')
}

func (e rowEncoder) appendXML(b []byte, r InstanceRow) []byte {
	rate := r.BitRate()
	b = append(b, "<Instance>"...)
	b = appendXMLElem(b, "Selector", r.Selector)
	b = appendXMLElem(b, "UserName", r.UserName)
	b = appendXMLElem(b, "Domain", r.Domain)
	b = appendXMLElem(b, "Proxy", r.Proxy)
	b = appendXMLInt(b, "Port", int64(int64(r.Port)))
	b = appendXMLElem(b, "State", r.State)
	b = appendXMLElem(b, "Status", r.Status)
	b = appendXMLBool(b, "Off", r.Off)
	b = appendXMLInt(b, "Age", int64(ageIntervals(r.Created, e.now)))
	b = appendXMLTime(b, "Created", r.Created)
	b = appendXMLInt(b, "Devices", int64(int64(r.Devices)))
	b = appendXMLInt(b, "Calls", int64(int64(r.Calls)))
	b = appendXMLInt(b, "Messages", int64(int64(r.Messages)))
	b = appendXMLInt(b, "BytesIn", int64(r.BytesIn))
	b = appendXMLInt(b, "BytesOut", int64(r.BytesOut))
	b = appendXMLInt(b, "TrafficBytes", int64(r.BytesIn+r.BytesOut))
	b = appendXMLFloat(b, "BitRate", rate)
	b = appendXMLElem(b, "TrafficClass", classify(rate, e.median, e.spread))
	b = appendXMLTime(b, "FirstTraffic", r.FirstTraffic)
	b = appendXMLTime(b, "LastTraffic", r.LastTraffic)
	b = appendXMLElem(b, "LastError", r.LastError)
	return append(b, "</Instance>"...)
}

// ageIntervals is the contract's Age: whole 5-second intervals since created.
func ageIntervals(created, now time.Time) int64 {
	if created.IsZero() || now.Before(created) {
		return 0
	}
	return int64(now.Sub(created) / (5 * time.Second))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339)
	return append(b, '"')
}

// appendFloat writes x with at most three decimals; NaN and infinities
// (which JSON cannot carry) become 0.
func appendFloat(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, math.Round(x*1000)/1000, 'f', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping like encoding/json
// does (including <, >, & and U+2028/U+2029; invalid UTF-8 becomes U+FFFD).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendXMLElem(b []byte, name, text string) []byte {
	return appendXMLClose(appendXMLText(appendXMLOpen(b, name), text), name)
}

func appendXMLOpen(b []byte, name string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	return append(b, '>')
}

func appendXMLClose(b []byte, name string) []byte {
	b = append(b, '<', '/')
	b = append(b, name...)
	return append(b, '>')
}

func appendXMLInt(b []byte, name string, n int64) []byte {
	return appendXMLClose(strconv.AppendInt(appendXMLOpen(b, name), n, 10), name)
}

func appendXMLBool(b []byte, name string, v bool) []byte {
	return appendXMLClose(strconv.AppendBool(appendXMLOpen(b, name), v), name)
}

func appendXMLFloat(b []byte, name string, x float64) []byte {
	return appendXMLClose(appendFloat(appendXMLOpen(b, name), x), name)
}

// appendXMLTime writes t in RFC 3339, an empty element when t is zero.
func appendXMLTime(b []byte, name string, t time.Time) []byte {
	b = appendXMLOpen(b, name)
	if !t.IsZero() {
		b = t.UTC().AppendFormat(b, time.RFC3339)
	}
	return appendXMLClose(b, name)
}

// appendXMLText escapes s as XML character data; characters XML 1.0 does
// not allow (most control characters, invalid UTF-8) become U+FFFD, as
// encoding/xml does.
func appendXMLText(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch {
		case r == '&':
			b = append(b, "&amp;"...)
		case r == '<':
			b = append(b, "&lt;"...)
		case r == '>':
			b = append(b, "&gt;"...)
		case r == '"':
			b = append(b, "&#34;"...)
		case r == '\'':
			b = append(b, "&#39;"...)
		case r == '\n' || r == '\t':
			b = append(b, byte(r))
		case r == '\r':
			b = append(b, "&#xD;"...)
		case r == utf8.RuneError && size == 1, r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			b = append(b, "\uFFFD"...)
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return b
}
