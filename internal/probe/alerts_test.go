package probe_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/probe"
)

// signalHistory is a History that hands each event to a channel.
type signalHistory chan probe.Event

func (h signalHistory) AddProbeEvent(_ context.Context, ev probe.Event) error {
	h <- ev
	return nil
}

// waitFor receives one value from c or fails the test after a generous
// deadline (a hang guard, not a timing assumption).
func waitFor[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// TestProberAlertsEndToEnd drives a Prober on a manual clock through three
// changes and checks that the webhook receiver and the SMTP sink each get
// exactly one signed POST and one mail per change, in order.
func TestProberAlertsEndToEnd(t *testing.T) {
	const uri = "sip:edge.example.com"
	r := newReceiver(t, http.StatusOK)
	sink := newSMTPSink(t, nil, "", "")
	hook, err := probe.NewWebhook(probe.WebhookOptions{URL: r.srv.URL, Secret: []byte(secret), Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	mailer, err := probe.NewMailer(probe.MailOptions{Host: sink.host, Port: sink.port, TLS: probe.TLSNone,
		From: "sipis@example.com", To: []string{"ops@example.com"}, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	pinger := newFakePinger(ok200)
	pinger.set(uri, failTO, ok200, failTO)
	hist := make(signalHistory, 10)
	clk := newFakeClock()
	p, err := probe.NewProber(probe.Options{Pinger: pinger, History: hist, Alerters: []probe.Alerter{hook, mailer},
		Clock: clk, Interval: 30 * time.Second, Timeout: time.Second, DownAfter: 1, UpAfter: 1,
		MinAlertInterval: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTargets([]probe.Target{{URI: uri}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	wantStates := []string{"down", "up", "down"}
	for i, want := range wantStates {
		if i > 0 {
			clk.Advance(30 * time.Second)
		}
		ev := waitFor(t, hist, "history event")
		if ev.NewState.String() != want {
			t.Fatalf("event %d = %+v, want %s", i, ev, want)
		}
		waitFor(t, r.posted, "webhook POST")
		waitFor(t, sink.received, "mail")
	}
	p.Stop()

	bodies, bad := r.got()
	if len(bodies) != 3 || bad != 0 {
		t.Fatalf("receiver got %d POSTs, %d badly signed; want 3 and 0", len(bodies), bad)
	}
	msgs := sink.messages()
	if len(msgs) != 3 {
		t.Fatalf("sink got %d mails, want 3", len(msgs))
	}
	for i, want := range wantStates {
		if bodies[i]["newState"] != want || bodies[i]["target"] != uri || bodies[i]["node"] != "n1" {
			t.Errorf("POST %d = %v, want %s for %s", i, bodies[i], want, uri)
		}
		if subj := "[sipis] edge.example.com is " + strings.ToUpper(want); msgs[i].subject != subj {
			t.Errorf("mail %d subject %q, want %q", i, msgs[i].subject, subj)
		}
	}
	// AlertsSent is not checked: Stop may cancel the last Alert calls after
	// the receivers got their message but before the calls returned.
	if st := p.Stats(); st.AlertsFailed != 0 || st.AlertsDropped != 0 || st.Changes != 3 {
		t.Errorf("stats = %+v, want 3 changes and no failed or dropped alerts", st)
	}
}
