package web

import (
	"net/http"
	"strings"
	"testing"
)

// TestDebugSections: /debug titles and formats the source's data itself, in page order;
// an unset time is "-", and the push configuration section appears only when there is a
// problem to show.
func TestDebugSections(t *testing.T) {
	d := InstanceDebug{Selector: "0a", Phase: "Register Loop / Registered", Password: "Not Empty",
		Created: testNow, CSeq: 7, Devices: []DebugDevice{{ID: "iphone", Platform: "apns", PushToken: "ab…cd"}},
		Recent: []DebugEvent{{At: testNow, Event: "registered", From: "Registering / Registering",
			To: "Register Loop / Registered", Action: "schedule", Note: "200"}}}
	var titles []string
	for _, s := range debugSections(d) {
		titles = append(titles, s.Title)
	}
	want := "State|Account|Binding and timers|Traffic|Last REGISTER request|Last REGISTER response|Devices|Recent events"
	if got := strings.Join(titles, "|"); got != want {
		t.Errorf("sections\n%s\nwant\n%s", got, want)
	}
	secs := debugSections(d)
	if f := secs[0].Fields[4]; f.Name != "Created" || f.Value != "2026-01-02T03:04:05Z" {
		t.Errorf("created: %+v", f)
	}
	if f := secs[0].Fields[5]; f.Name != "Last activity" || f.Value != "-" {
		t.Errorf("unset time: %+v", f)
	}
	if f := secs[6].Fields[0]; f.Name != "iphone" || !strings.HasPrefix(f.Value, "apns token ab…cd (invalid false)") {
		t.Errorf("device: %+v", f)
	}
	if f := secs[7].Fields[0]; f.Value != "registered: Registering / Registering -> Register Loop / Registered, schedule 200" {
		t.Errorf("event: %+v", f)
	}
	d.PushProblems = []DebugPushProblem{{Platform: "apns", Reason: "DeviceTokenNotForTopic", Count: 2}}
	secs = debugSections(d)
	if p := secs[7]; p.Title != "Push configuration errors (tokens kept)" || p.Fields[0] != (Field{"apns DeviceTokenNotForTopic", "2"}) {
		t.Errorf("push problems: %+v", p)
	}
}

// TestDeviceRoutesMounted: web routes the device calls to their handlers, each on its
// method only, and leaves a route out when it has no handler.
func TestDeviceRoutesMounted(t *testing.T) {
	named := func(name string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(name)) })
	}
	s, _ := newTestServer(t, newFake(), func(o *Options) {
		o.Devices = &DeviceHandlers{Progress: named("progress"), Decline: named("decline"), Messages: named("messages")}
	})
	for _, c := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"POST", "/sipis/call/progress", 200, "progress"},
		{"POST", "/sipis/call/decline", 200, "decline"},
		{"GET", "/sipis/messages?s=0a", 200, "messages"},
		{"GET", "/sipis/call/progress", 405, "not allowed"},
		{"POST", "/sipis/messages?s=0a", 405, "not allowed"},
		{"POST", "/sipis/messages/ack?s=0a", 404, "no such page"},
	} {
		w := do(t, s, req{method: c.method, path: c.path})
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, w.Code, w.Body.String(), c.code, c.body)
		}
	}
}
