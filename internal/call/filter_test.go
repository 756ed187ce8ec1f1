package call

import (
	"context"
	"strings"
	"testing"
)

// TestMessageEntryFilters runs the original product's filter entries on MESSAGEs: a header
// Equal drops typing notices (parameters and case aside), Content-Length UintGt rejects with the
// configured status and phrase, Contains and UintLt select on other headers, and everything
// else is stored and pushed.
func TestMessageEntryFilters(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.MaxMessageSize = 1 << 20
		o.Filters = []Filter{
			{Action: Drop, Headers: []HeaderMatch{{Name: "Content-Type", Op: Equal, Value: "application/im-iscomposing+xml"}}},
			{Action: Reject, Code: 413, Phrase: "Request Entity Too Large", Headers: []HeaderMatch{{Name: "Content-Length", Op: UintGt, Value: "10"}}},
			{Action: Reject, Code: 403, Phrase: "Spam", Headers: []HeaderMatch{
				{Name: "X-Spam-Score", Op: UintGt, Value: "5"}, {Name: "Subject", Op: Contains, Value: "OFFER"}}},
			{Action: Accept, Headers: []HeaderMatch{{Name: "X-Priority", Op: UintLt, Value: "3"}}},
			{Action: Drop, Headers: []HeaderMatch{{Name: "X-Priority", Op: UintGt, Value: "0"}}},
		}
	})
	send := func(ct, body string, extra ...string) *callResp {
		t.Helper()
		id := e.caller.Message(e.target, testContact, ct, []byte(body), extra...)
		r, err := e.caller.Next(id, "MESSAGE", waitSIP)
		if err != nil {
			t.Fatal(err)
		}
		return &callResp{status: r.Status, reason: r.Reason, accept: r.Header("Accept")}
	}
	if r := send("Application/IM-IsComposing+XML; charset=utf-8", "<x/>"); r.status != 200 {
		t.Errorf("typing notice = %d, want 200 (dropped)", r.status)
	}
	if r := send("text/plain", "more than ten bytes"); r.status != 413 || r.reason != "Request Entity Too Large" || r.accept != "" {
		t.Errorf("long body = %d %q (Accept %q), want 413 Request Entity Too Large", r.status, r.reason, r.accept)
	}
	// Both headers must match: a high score alone is not enough.
	if r := send("text/plain", "hi", "X-Spam-Score: 9", "Subject: best offer"); r.status != 403 || r.reason != "Spam" {
		t.Errorf("spam = %d %q, want 403 Spam", r.status, r.reason)
	}
	if r := send("text/plain", "score", "X-Spam-Score: 9", "Subject: hello"); r.status != 200 {
		t.Errorf("high score without the subject = %d, want 200", r.status)
	}
	if r := send("text/plain", "urgent", "X-Priority: 1"); r.status != 200 {
		t.Errorf("priority 1 = %d, want 200", r.status)
	}
	if r := send("text/plain", "low", "X-Priority: 7"); r.status != 200 {
		t.Errorf("priority 7 = %d, want 200 (dropped)", r.status)
	}
	if r := send("text/plain", "odd", "X-Priority: high"); r.status != 200 {
		t.Errorf("priority not a number = %d, want 200", r.status)
	}
	// Stored: "score", "urgent" and "odd" (a header that is no number never matches UintGt/UintLt).
	for range 3 {
		e.pusher.next(t)
	}
	msgs, err := e.db.Messages(context.Background(), testSel, 10)
	if err != nil {
		t.Fatal(err)
	}
	var bodies []string
	for _, m := range msgs {
		bodies = append(bodies, string(m.Body))
	}
	if got := strings.Join(bodies, ","); got != "score,urgent,odd" {
		t.Errorf("stored %q, want score,urgent,odd", got)
	}
}

type callResp struct {
	status         int
	reason, accept string
}

// TestMessageFilterShortFormStill415: the short form's Reject keeps answering 415 with Accept.
func TestMessageFilterShortFormStill415(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Filters = []Filter{{ContentType: "image/*", Action: Reject}} })
	id := e.caller.Message(e.target, testContact, "image/png", []byte("png"))
	if r := e.expect(id, "MESSAGE", 415, ""); r.Header("Accept") != "text/plain" {
		t.Errorf("415 without Accept: %s", r.Raw)
	}
}

func TestBadEntryFilters(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []Filter{
		{Action: Drop},
		{Action: Drop, Headers: []HeaderMatch{{Name: "Bad Name", Op: Equal, Value: "x"}}},
		{Action: Drop, Headers: []HeaderMatch{{Name: "X-N", Op: UintGt, Value: "ten"}}},
		{Action: Drop, Headers: []HeaderMatch{{Name: "X-N", Op: 9, Value: "1"}}},
		{Action: Reject, Code: 200, Headers: []HeaderMatch{{Name: "X-N", Op: Equal, Value: "1"}}},
		{Action: Reject, Code: 488, Phrase: "a\r\nb", Headers: []HeaderMatch{{Name: "X-N", Op: Equal, Value: "1"}}},
	} {
		if _, err := New(Options{Instances: e.insts, Store: e.db, Push: e.pusher, Filters: []Filter{bad}}); err == nil {
			t.Errorf("filter %+v accepted", bad)
		}
	}
}
