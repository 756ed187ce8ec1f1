package app

import (
	"github.com/sipis/sipis/internal/call"
	"github.com/sipis/sipis/internal/config"
)

// messageFilters turns <IncomingTextMessage>'s filters (the short form and the original
// product's Entry elements) into the call manager's, in order, leaving out the disabled ones.
// No filter at all stays an empty list, not nil, so the defaults do not come back.
func messageFilters(in []config.Filter) []call.Filter {
	out := []call.Filter{}
	for _, f := range in {
		if f.Disabled {
			continue
		}
		act := call.Accept
		switch f.Action {
		case config.FilterDrop:
			act = call.Drop
		case config.FilterReject:
			act = call.Reject
		}
		cf := call.Filter{ContentType: f.ContentType, Action: act, Code: f.RejectCode, Phrase: f.RejectPhrase}
		for _, h := range f.Headers {
			op := call.Equal
			switch h.Op {
			case config.HeaderContains:
				op = call.Contains
			case config.HeaderUintGt:
				op = call.UintGt
			case config.HeaderUintLt:
				op = call.UintLt
			}
			cf.Headers = append(cf.Headers, call.HeaderMatch{Name: h.Name, Op: op, Value: h.Value})
		}
		out = append(out, cf)
	}
	return out
}
