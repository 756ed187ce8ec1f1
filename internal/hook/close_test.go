package hook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestCloseNAKsWaitingCalls: Close answers a held call at once with NAK (reason counted) and
// stops every push worker.
func TestCloseNAKsWaitingCalls(t *testing.T) {
	base := runtime.NumGoroutine()
	e := newEnv(t, func(o *Options) { o.Wait, o.ResendInterval, o.PushWorkers = time.Minute, 30*time.Second, 4 })
	e.register("150010001", "tok-a")
	ans := e.incoming("150010001")
	e.push.next(t)
	e.h.Close()
	if got := answerOf(t, ans); got != "status=NAK" {
		t.Fatalf("PBX got %q after Close, want status=NAK", got)
	}
	if o := e.h.Outcomes(); o.ByReason[ReasonShuttingDown] != 1 {
		t.Fatalf("outcomes = %+v", o)
	}
	e.srv.Close()
	e.client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzReadParams feeds arbitrary bodies through the request parser and the validators: no
// panic, and whatever validates is bounded printable text.
func FuzzReadParams(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "sip_user_id=150010001&token=abc&app=x&sandbox=true")
	f.Add("application/json", `{"sip_user_id":"150010001","time_to_initial_response":12.5,"available":false}`)
	f.Add("", `{"a":[1,2]}`)
	f.Add("application/json", `{"unique_key":null}`)
	f.Add("text/plain", "%zz=1&&=")
	f.Fuzz(func(t *testing.T, ct, body string) {
		r := httptest.NewRequest(http.MethodPost, "/api/x/", bytes.NewBufferString(body))
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		p, err := readParams(httptest.NewRecorder(), r)
		if err != nil {
			return
		}
		if v, err := p.sipUserID(); err == nil && (len(v) > 64 || strings.ContainsAny(v, " \r\n&=")) {
			t.Fatalf("sip_user_id %q validated", v)
		}
		for _, name := range []string{"token", "app", "unique_key", "reason", "caller_id"} {
			v, err := p.text(name, false, maxText)
			if err == nil && (len(v) > maxText || !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n\x00")) {
				t.Fatalf("%s %q validated", name, v)
			}
		}
		_, _ = p.boolean("available", true)
		_, _, _ = p.number("message_start_time", false)
	})
}
