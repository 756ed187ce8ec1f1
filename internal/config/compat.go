package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file binds the elements of the original product's settings files
// that have no older sipis form (log e-mail, the MESSAGE filter entries, the
// push relays) and lists the settings that are accepted without effect.

// fileAlias binds a path given under either of two attribute names (ours
// and the original product's); giving both is an error.
func (e *elem) fileAlias(name, alias string, dst *string) {
	_, a := e.n.attrValue(name)
	_, b := e.n.attrValue(alias)
	if a && b {
		e.attr(name)
		e.attr(alias)
		e.fail(alias, "give "+name+" or "+alias+", not both")
		return
	}
	e.file(name, dst)
	e.file(alias, dst)
}

// unitSum binds child element name as the sum of whole-number attributes,
// each multiplied by its unit; at least one must be given.
func (e *elem) unitSum(name string, dst *int64, max int64, units []unitAttr) {
	e.child(name, func(c *elem) {
		total, any, bad := c.sumUnits(units, max, 63, "too large")
		if !any {
			names := make([]string, len(units))
			for i, u := range units {
				names[i] = u.attr
			}
			c.fail("", "needs "+strings.Join(names, ", "))
			return
		}
		if !bad {
			*dst = total
		}
	})
}

// sumUnits adds up e's whole-number attributes of units, each times its unit, parsed with
// bits bits; a negative, non-numeric or over-max value fails with its reason (tooLarge for
// the last) and sets bad. any says whether any of the attributes was given.
func (e *elem) sumUnits(units []unitAttr, max int64, bits int, tooLarge string) (total int64, any, bad bool) {
	for _, u := range units {
		v, ok := e.attr(u.attr)
		if !ok {
			continue
		}
		any = true
		v = strings.TrimSpace(v)
		n, err := strconv.ParseUint(v, 10, bits)
		switch {
		case strings.HasPrefix(v, "-"):
			e.fail(u.attr, "must not be negative")
			bad = true
		case err != nil:
			e.fail(u.attr, "not a whole number")
			bad = true
		case n > uint64(max/u.unit) || total+int64(n)*u.unit > max:
			e.fail(u.attr, tooLarge)
			bad = true
		default:
			total += int64(n) * u.unit
		}
	}
	return total, any, bad
}

type unitAttr struct {
	attr string
	unit int64
}

// bindLogEmail binds <Log><Email>.
func bindLogEmail(c *elem, m *LogEmail) {
	c.str("To", &m.To)
	c.str("From", &m.From)
	c.level("Level", &m.Level)
	c.child("Summary", func(c *elem) {
		c.boolean("Enabled", &m.Summary.Enabled)
		c.duration("Period", &m.Summary.Period)
		at := int64(m.Summary.StartingAt)
		c.unitSum("StartingAt", &at, int64(24*time.Hour-time.Second), []unitAttr{
			{"Hour", int64(time.Hour)}, {"Minute", int64(time.Minute)}, {"Second", int64(time.Second)}})
		m.Summary.StartingAt = time.Duration(at)
	})
	c.child("Excerpt", func(c *elem) {
		x := &m.Excerpt
		c.boolean("Enabled", &x.Enabled)
		c.duration("MinPeriod", &x.MinPeriod)
		size := int64(x.MaxSize)
		c.unitSum("MaxSize", &size, 64<<20, []unitAttr{{"MegaBytes", 1 << 20}, {"KiloBytes", 1 << 10}, {"Bytes", 1}})
		x.MaxSize = int(size)
		c.child("Filter", func(c *elem) {
			// Include and Exclude interleave and their order matters: bind
			// the children in document order.
			c.children("Include")
			c.children("Exclude")
			x.Filter = nil
			for i, k := range c.n.kids {
				if k.name != "Include" && k.name != "Exclude" {
					continue
				}
				r := LogFilterRule{Include: k.name == "Include", Severity: LevelTrace, Enabled: true}
				ke := c.b.elem(k, append(c.path[:len(c.path):len(c.path)], k.name), c.key+"/"+k.name+"["+strconv.Itoa(i)+"]")
				ke.level("Severity", &r.Severity)
				ke.boolean("Enabled", &r.Enabled)
				ke.done()
				x.Filter = append(x.Filter, r)
			}
		})
	})
}

// bindFilters binds the <Filter> elements of <IncomingTextMessage>, short
// form (ContentType, Action) or the original product's <Entry> list, into
// one ordered list. If the document has any, they replace the defaults.
func bindFilters(c *elem, dst *[]Filter) {
	kids := c.children("Filter")
	if len(kids) == 0 {
		return
	}
	prefix := c.key + "/Filter["
	for k := range c.b.pos {
		if strings.HasPrefix(k, prefix) {
			delete(c.b.pos, k)
		}
	}
	out := []Filter{}
	for i, k := range kids {
		fe := c.b.elem(k, append(c.path[:len(c.path):len(c.path)], "Filter"), c.key+"/Filter["+strconv.Itoa(i)+"]")
		_, short := k.attrValue("ContentType")
		if _, act := k.attrValue("Action"); act {
			short = true
		}
		if short || len(k.kids) == 0 {
			f := Filter{Action: FilterDrop, elem: i}
			if v, ok := fe.attr("ContentType"); ok {
				f.ContentType = strings.ToLower(strings.TrimSpace(v))
			}
			enum(fe, "Action", &f.Action, FilterDrop, FilterReject, FilterAccept)
			fe.done()
			out = append(out, f)
			continue
		}
		var entries []Filter
		list(fe, "Entry", &entries, func() Filter { return Filter{elem: -1} }, bindEntry)
		fe.done()
		out = append(out, entries...)
	}
	*dst = out
}

// bindEntry binds <Filter><Entry Action Enabled><Header/>…<RejectWith/>.
func bindEntry(c *elem, f *Filter) {
	if v, ok := c.attr("Action"); !ok {
		c.fail("", "needs an Action (Accept, AcceptAndDrop or Reject)")
	} else {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "accept":
			f.Action = FilterAccept
		case "acceptanddrop", "drop":
			f.Action = FilterDrop
		case "reject":
			f.Action = FilterReject
		default:
			c.fail("Action", "must be one of Accept, AcceptAndDrop, Reject")
		}
	}
	enabled := true
	c.boolean("Enabled", &enabled)
	f.Disabled = !enabled
	list(c, "Header", &f.Headers, func() HeaderMatch { return HeaderMatch{} }, func(c *elem, h *HeaderMatch) {
		c.str("Name", &h.Name)
		h.Name = strings.TrimSpace(h.Name)
		if h.Name == "" || strings.ContainsAny(h.Name, ": \t\r\n") {
			c.fail("Name", "must be a SIP header name")
		}
		n := 0
		for _, op := range []HeaderOp{HeaderEqual, HeaderContains, HeaderUintGt, HeaderUintLt} {
			v, ok := c.attr(string(op))
			if !ok {
				continue
			}
			n++
			h.Op, h.Value = op, strings.TrimSpace(v)
			if op == HeaderUintGt || op == HeaderUintLt {
				if _, err := strconv.ParseUint(h.Value, 10, 63); err != nil {
					c.fail(string(op), "not a whole number")
				}
			}
		}
		if n != 1 {
			c.fail("", "needs exactly one of Equal, Contains, UintGt, UintLt")
		}
	})
	if len(c.children("Header")) == 0 {
		c.fail("", "an Entry needs at least one <Header>")
	}
	c.child("RejectWith", func(r *elem) {
		r.integer("Code", &f.RejectCode)
		r.str("Phrase", &f.RejectPhrase)
		if f.RejectCode < 400 || f.RejectCode > 699 {
			r.fail("Code", "must be a SIP error status, 400 to 699")
		}
		if strings.ContainsFunc(f.RejectPhrase, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			r.fail("Phrase", "must not contain control characters")
		}
		if f.Action != FilterReject {
			r.fail("", "only an Entry with Action Reject answers with <RejectWith>")
		}
	})
}

// Warning is a setting that is accepted but has no effect, or that needs
// the operator's attention; see Settings.Warnings.
type Warning struct {
	Setting string // the element or attribute, e.g. "<Log ProblematicInstancesAutomatically>"
	Why     string // why it has no effect, and what to use instead
}

// String is "<Setting>: why".
func (w Warning) String() string { return w.Setting + ": " + w.Why }

// Warnings lists the settings of s that are accepted but do nothing in
// sipis, and configurations that work but are most likely a mistake. The
// server logs each once at start and `sipis check` prints them.
func (s *Settings) Warnings() []Warning {
	var out []Warning
	add := func(set bool, setting, why string) {
		if set {
			out = append(out, Warning{Setting: setting, Why: why})
		}
	}
	add(s.Server.PrivateAddress != "", "<Server PrivateAddress>",
		"not used yet: sipis uses PublicAddress towards every host")
	add(s.Log.ProblematicInstancesAutomatically != nil, "<Log ProblematicInstancesAutomatically>",
		"has no effect: sipis never turns instance logs on by itself; turn one on from /log?s=SELECTOR")
	for _, r := range s.NotificationServers.Relays {
		add(true, fmt.Sprintf("<NotificationServer Name=%q Host=%q>", r.Name, r.Host),
			"has no effect: it is the original vendor's proprietary push relay, which sipis does not speak; "+
				"sipis sends pushes itself: configure <Apns>, <Fcm> or <Webhook> in <NotificationServers>")
	}
	ns := s.NotificationServers
	add(ns.Apns.Topic != "", "<Apns Topic>",
		"has no effect: each device's appId (from its registration) is its APNs topic, with .voip appended for calls")
	add(!ns.Apns.Enabled && !ns.Fcm.Enabled && !ns.Webhook.Enabled, "<NotificationServers>",
		"no push provider is enabled (<Apns>, <Fcm> or <Webhook> Enabled=\"Yes\"): calls and messages cannot wake any device")
	return out
}
