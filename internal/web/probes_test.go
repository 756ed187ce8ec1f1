package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type fakeProbes []ProbeRow

func (f fakeProbes) Probes() []ProbeRow { return f }

func TestProbePages(t *testing.T) {
	rows := fakeProbes{
		{Target: "sip:up.example.com", Transport: "udp", State: "up", LastCode: 200, LastReason: "OK", LastRTT: 1.5, Since: time.Now()},
		{Target: "sip:<b>down</b>.example.com", Transport: "tcp", State: "down", LastError: "no response", Since: time.Now(),
			Recent: []ProbeEvent{{At: time.Now(), OldState: "up", NewState: "down", LastError: "no response"}}},
	}
	for _, tc := range []struct {
		probes   ProbeSource
		page     string
		contains []string
		absent   []string
	}{
		{rows, "/probes", []string{"2 targets, 1 down", "sip:up.example.com", "200 OK", `class="probe-down"`, "&lt;b&gt;down&lt;/b&gt;", "up → down"}, []string{"<b>down</b>"}},
		{nil, "/probes", []string{"Probing is off"}, nil},
		{rows, "/stats", []string{`id="probes-summary"`, "sip:up.example.com"}, nil},
		{nil, "/stats", []string{"Probing is off."}, nil},
	} {
		f := newFake()
		f.seedN(3)
		s := New(Options{Backend: f, Probes: tc.probes})
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.page, nil))
		body := rec.Body.String()
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", tc.page, rec.Code, body)
		}
		for _, want := range tc.contains {
			if !strings.Contains(body, want) {
				t.Errorf("%s (probes %v): lacks %q", tc.page, tc.probes != nil, want)
			}
		}
		for _, bad := range tc.absent {
			if strings.Contains(body, bad) {
				t.Errorf("%s: contains %q", tc.page, bad)
			}
		}
	}
	s := New(Options{Backend: newFake(), Probes: rows})
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/probes/json", nil))
	var doc struct {
		Enabled bool       `json:"enabled"`
		Probes  []ProbeRow `json:"probes"`
	}
	b, _ := io.ReadAll(rec.Body)
	if err := json.Unmarshal(b, &doc); err != nil || !doc.Enabled || len(doc.Probes) != 2 || doc.Probes[1].State != "down" || doc.Probes[0].LastRTT != 1.5 {
		t.Errorf("/probes/json: %v %s", err, b)
	}
}

func TestThrottleFullTableKeepsLockouts(t *testing.T) {
	now := time.Now()
	l := newThrottle(3, time.Second, 1, 1, func() time.Time { return now })
	for range 3 {
		l.fail(t, "victim-attacker")
	}
	if l.blocked(t, "victim-attacker") == 0 {
		t.Fatal("not blocked after 3 failures")
	}
	for i := range maxTracked + 10 { // an attack from many addresses fills the table
		l.fail(t, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if l.blocked(t, "victim-attacker") == 0 {
		t.Error("filling the table reset an existing lockout")
	}
	if l.blocked(t, "192.0.2.200") == 0 {
		t.Error("addresses beyond the table are not limited together")
	}
}

func TestSelectorParameterIsCaseInsensitive(t *testing.T) {
	f := newFake()
	f.seedN(3)
	s := New(Options{Backend: f})
	var sel string
	f.Instances(t.Context(), InstanceQuery{Limit: 1}, func(r InstanceRow) error { sel = r.Selector; return nil })
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stats?s="+strings.ToUpper(sel), nil))
	if rec.Code != 200 {
		t.Errorf("/stats?s=%s: %d", strings.ToUpper(sel), rec.Code)
	}
}

func TestURLOfAnAllAddressesListener(t *testing.T) {
	s := New(Options{Backend: newFake(), Addr: ":0"})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if u := s.URL(); !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Errorf("URL %q, want one a local browser can open", u)
	}
	resp, err := http.Get(s.URL() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s/healthz: %v", s.URL(), err)
	}
	resp.Body.Close()
}
