package hook

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/store"
)

// waitsEnv holds n incoming-call/ requests, one per account, and returns the unique key of
// each account's push and the channels the PBX's answers arrive on (with their arrival time).
type pbxAnswer struct {
	body string
	at   time.Time
}

func holdWaits(t testing.TB, e *env, n int) (keys map[string]string, answers map[string]chan pbxAnswer) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		user := strconv.Itoa(150000000 + i)
		if _, err := e.db.PutHookDevice(ctx, &store.HookDevice{SipUserID: user, Platform: "apns", App: "com.example.app",
			Token: fmt.Sprintf("tok-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	answers = make(map[string]chan pbxAnswer, n)
	for i := range n {
		user := strconv.Itoa(150000000 + i)
		ch := make(chan pbxAnswer, 1)
		answers[user] = ch
		go func() {
			res, err := e.client.PostForm(e.srv.URL+"/api/incoming-call/", url.Values{"sip_user_id": {user}, "phonenumber": {"+3150"}})
			if err != nil {
				ch <- pbxAnswer{body: err.Error(), at: time.Now()}
				return
			}
			b, _ := io.ReadAll(res.Body)
			at := time.Now()
			res.Body.Close()
			ch <- pbxAnswer{body: string(b), at: at}
		}()
	}
	keys = make(map[string]string, n)
	for len(keys) < n {
		p := e.push.next(t)
		keys[p.Selector] = p.Token
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.h.Waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d calls waiting", e.h.Waiting(), n)
		}
		runtime.Gosched()
	}
	return keys, answers
}

// TestThousandWaitsNoGoroutinePerSecond holds 1,000 calls across two resend intervals: the
// number of goroutines must not grow while they wait (resends come from the fixed worker
// pool, timers are runtime timers), and every call gets its ACK once its device answers.
func TestThousandWaitsNoGoroutinePerSecond(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 waits")
	}
	const n = 1000
	e := newEnv(t, func(o *Options) { o.Wait, o.ResendInterval = 60*time.Second, 2*time.Second })
	keys, answers := holdWaits(t, e, n)
	before := runtime.NumGoroutine()
	// Two resend rounds: 1,000 pushes each.
	for range 2 * n {
		e.push.next(t)
	}
	after := runtime.NumGoroutine()
	if after > before+2 {
		t.Fatalf("goroutines grew from %d to %d while %d calls waited two resend intervals", before, after, n)
	}
	for user, key := range keys {
		if code := e.respond(key, true); code != http.StatusAccepted {
			t.Fatalf("call-response of %s: %d", user, code)
		}
	}
	for user, ch := range answers {
		if a := answerOf2(t, ch); a.body != "status=ACK" {
			t.Fatalf("%s: PBX got %q", user, a.body)
		}
	}
	if o := e.h.Outcomes(); o.Accepted != n {
		t.Fatalf("outcomes = %+v", o)
	}
}

func answerOf2(t testing.TB, ch chan pbxAnswer) pbxAnswer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the PBX within 30 s")
		return pbxAnswer{}
	}
}

// BenchmarkThousandWaits holds 1,000 calls at once, then answers them one by one while the
// rest still wait, and reports the latency the hook adds between a device's call-response/
// and the PBX's answer: "server-p50/p99-µs" from the handler taking the answer to the
// PBX's response being written (from the call records), "e2e-p50/p99-µs" from the device
// sending call-response/ to the PBX's client reading status=ACK, over loopback HTTP.
func BenchmarkThousandWaits(b *testing.B) {
	const n = 1000
	var server, e2e []time.Duration
	for range b.N {
		b.StopTimer()
		e := newEnv(b, func(o *Options) { o.Wait, o.ResendInterval = 120*time.Second, 60*time.Second })
		keys, answers := holdWaits(b, e, n)
		b.StartTimer()
		for user, key := range keys {
			t0 := time.Now()
			if code := e.respond(key, true); code != http.StatusAccepted {
				b.Fatalf("call-response: %d", code)
			}
			a := answerOf2(b, answers[user])
			if a.body != "status=ACK" {
				b.Fatalf("PBX got %q", a.body)
			}
			e2e = append(e2e, a.at.Sub(t0))
		}
		b.StopTimer()
		calls := waitCalls(b, e.db, n)
		for _, c := range calls[:n] {
			server = append(server, c.EndedAt.Sub(c.RespondedAt))
		}
		e.h.Close()
		e.srv.Close()
	}
	report := func(name string, d []time.Duration) {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Microseconds()), name+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), name+"-p99-µs")
	}
	report("server", server)
	report("e2e", e2e)
}
