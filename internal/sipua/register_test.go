package sipua_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

func newUA(t testing.TB, mod ...func(*sipua.Config)) *sipua.UA {
	t.Helper()
	cfg := sipua.Config{
		Listeners: []sipua.Listener{
			{Transport: "udp", Address: "127.0.0.1:0"},
			{Transport: "tcp", Address: "127.0.0.1:0"},
		},
		UserAgent:          "sipis-test",
		TransactionTimeout: 2 * time.Second,
	}
	for _, m := range mod {
		m(&cfg)
	}
	u, err := sipua.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func binding(r *siptest.Registrar, user string) sipua.Binding {
	return sipua.Binding{
		Selector:    "abcd",
		User:        user,
		Password:    "pw-" + user,
		Domain:      "sipis.test",
		Proxy:       r.Host(),
		Port:        r.Port(),
		Transport:   "udp",
		ContactUser: "c-" + user,
		CallID:      "call-" + user,
		CSeq:        10,
		Expires:     600,
	}
}

func TestRegisterChallengeThenOK(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	b := binding(r, "alice")
	res, err := u.Register(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || !res.Challenged || res.CSeq != 12 || res.Expires != 600 {
		t.Fatalf("got %+v", res)
	}
	if res.BytesOut < 400 || res.BytesIn < 400 || res.BytesOut > 4000 || res.BytesIn > 4000 {
		t.Errorf("implausible bytes out %d in %d", res.BytesOut, res.BytesIn)
	}
	if strings.Contains(res.Request, "pw-alice") {
		t.Error("password in Result.Request")
	}
	if !strings.Contains(res.Request, `response="[redacted]"`) {
		t.Errorf("response= not redacted:\n%s", res.Request)
	}
	if !strings.HasPrefix(res.Response, "SIP/2.0 200 OK") {
		t.Errorf("Response = %q", res.Response)
	}
	if res.Received != "127.0.0.1" || res.RPort == 0 {
		t.Errorf("received %q rport %d", res.Received, res.RPort)
	}
	got := r.Contacts("alice")
	wantURI := fmt.Sprintf("sip:c-alice@%s;transport=udp", u.Addr("udp"))
	if len(got) != 1 || got[0].URI != wantURI {
		t.Fatalf("contacts %+v, want %s", got, wantURI)
	}
	first := r.LastRequest("alice")

	// A refresh: CSeq continues, Call-ID stays (RFC 3261 §10.2.4).
	b.CSeq = res.CSeq
	res2, err := u.Register(context.Background(), b)
	if err != nil || res2.Status != 200 || res2.CSeq != 14 {
		t.Fatalf("refresh: %+v %v", res2, err)
	}
	second := r.LastRequest("alice")
	for _, want := range []string{"Call-ID: call-alice", "CSeq: 14 REGISTER"} {
		if !strings.Contains(second, want) {
			t.Errorf("refresh request lacks %q:\n%s", want, second)
		}
	}
	if !strings.Contains(first, "CSeq: 12 REGISTER") {
		t.Errorf("first authenticated request should have CSeq 12:\n%s", first)
	}
	if n := len(r.RegisterTimes("alice")); n != 4 {
		t.Errorf("registrar saw %d REGISTERs, want 4", n)
	}
	tr := u.Traffic()
	if tr.MessagesOut != 4 || tr.MessagesIn != 4 || tr.BytesOut < int64(res.BytesOut+res2.BytesOut) {
		t.Errorf("traffic %+v", tr)
	}
}

func TestRegisterProxyAuthAndSHA256(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithProxyAuth(), siptest.WithAlgorithm("SHA-256"))
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "bob"))
	if err != nil || res.Status != 200 || !res.Challenged {
		t.Fatalf("%+v %v", res, err)
	}
	if !strings.Contains(res.Request, "Proxy-Authorization: Digest") || !strings.Contains(res.Request, "SHA-256") {
		t.Errorf("request:\n%s", res.Request)
	}
}

func TestRegisterAuthUser(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithPassword("authbob", "s3cret"))
	u := newUA(t)
	b := binding(r, "bob")
	b.AuthUser, b.Password = "authbob", "s3cret"
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 200 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRegisterWrongPassword(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	b := binding(r, "carol")
	b.Password = "wrong"
	res, err := u.Register(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 401 || !res.Challenged || res.CSeq != 12 {
		t.Fatalf("got %+v", res)
	}
	if n := len(r.RegisterTimes("carol")); n != 2 {
		t.Errorf("sent %d REGISTERs, want exactly 2", n)
	}
	if len(r.Contacts("carol")) != 0 {
		t.Error("registered with a wrong password")
	}
	if res.Nonce != nil {
		t.Error("a nonce is kept after the credentials were refused")
	}
}

func TestRegister423(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.Answer423(1800)))
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "dave"))
	if err != nil || res.Status != 423 || res.MinExpires != 1800 || res.CSeq != 11 {
		t.Fatalf("%+v %v", res, err)
	}
	b := binding(r, "dave")
	b.Expires, b.CSeq = res.MinExpires, res.CSeq
	res, err = u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || res.Expires != 1800 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRegister503RetryAfter(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.Answer503(90*time.Second)))
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "erin"))
	if err != nil || res.Status != 503 || res.RetryAfter != 90*time.Second || res.Challenged {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRegister403(t *testing.T) {
	r := siptest.NewRegistrar(t)
	r.SetBehaviour("frank", siptest.Answer403)
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "frank"))
	if err != nil || res.Status != 403 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRegisterNoAnswerTimesOut(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.NoAnswer))
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 1200 * time.Millisecond })
	start := time.Now()
	res, err := u.Register(context.Background(), binding(r, "gina"))
	if !errors.Is(err, sipua.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	// Timer E: sent at 0, 0.5 s (and maybe 1.5 s).
	if n := len(r.RegisterTimes("gina")); n < 2 {
		t.Errorf("%d transmissions, want retransmissions", n)
	}
	if res.Status != 0 || res.BytesOut == 0 {
		t.Errorf("%+v", res)
	}
}

func TestRegisterContextDeadline(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.NoAnswer))
	u := newUA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := u.Register(ctx, binding(r, "gina"))
	if !errors.Is(err, sipua.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterGarbage(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.Garbage))
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 700 * time.Millisecond })
	_, err := u.Register(context.Background(), binding(r, "hank"))
	if !errors.Is(err, sipua.ErrTimeout) || !strings.Contains(err.Error(), "unparsable") {
		t.Fatalf("err = %v", err)
	}
	if u.Traffic().BytesIn == 0 {
		t.Error("garbage not counted")
	}
}

func TestUnregisterRemovesOnlyOurContact(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	mine := binding(r, "ivy")
	other := mine
	other.ContactUser, other.CallID = "other-device", "call-other"
	for _, b := range []sipua.Binding{mine, other} {
		if res, err := u.Register(context.Background(), b); err != nil || res.Status != 200 {
			t.Fatalf("%+v %v", res, err)
		}
	}
	if n := len(r.Contacts("ivy")); n != 2 {
		t.Fatalf("%d contacts", n)
	}
	mine.Expires, mine.CSeq = 0, 12
	res, err := u.Register(context.Background(), mine)
	if err != nil || res.Status != 200 || res.Expires != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if strings.Contains(res.Request, "Contact: *") || !strings.Contains(res.Request, "Expires: 0") {
		t.Errorf("unregister request:\n%s", res.Request)
	}
	left := r.Contacts("ivy")
	if len(left) != 1 || !strings.Contains(left[0].URI, "other-device") {
		t.Fatalf("left %+v", left)
	}
}

func TestGrantedExpiresFromContactParam(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithMaxExpires(120), siptest.WithExpiresHeader(999))
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "jack"))
	if err != nil || res.Status != 200 || res.Expires != 120 {
		t.Fatalf("%+v %v", res, err)
	}
}

// A 2xx that lists other contacts but not ours did not bind us: the
// granted lifetime is 0 even though the response carries "Expires: 3600"
// (RFC 3261 §10.2.4: the 2xx lists the current bindings).
func TestGrantedExpiresZeroWhenOurContactMissing(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithBehaviour(siptest.OKForeignContact))
	u := newUA(t)
	res, err := u.Register(context.Background(), binding(r, "lena"))
	if err != nil || res.Status != 200 {
		t.Fatalf("%+v %v", res, err)
	}
	if res.Expires != 0 {
		t.Fatalf("granted %d for a 2xx that does not list our contact:\n%s", res.Expires, res.Response)
	}
}

func TestRegisterTCP(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	b := binding(r, "kate")
	b.Transport = "tcp"
	for range 2 { // the second reuses the connection
		res, err := u.Register(context.Background(), b)
		if err != nil || res.Status != 200 {
			t.Fatalf("%+v %v", res, err)
		}
		b.CSeq = res.CSeq
	}
	c := r.Contacts("kate")
	if len(c) != 1 || !strings.HasSuffix(c[0].URI, ";transport=tcp") || !strings.Contains(c[0].URI, u.Addr("tcp")) {
		t.Fatalf("%+v (tcp listener %s)", c, u.Addr("tcp"))
	}
}

func TestRegisterBadBinding(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	cases := map[string]func(*sipua.Binding){
		"User":        func(b *sipua.Binding) { b.User = "" },
		"Domain":      func(b *sipua.Binding) { b.Domain = "" },
		"Transport":   func(b *sipua.Binding) { b.Transport = "sctp" },
		"DisplayName": func(b *sipua.Binding) { b.DisplayName = "x\r\nVia: evil" },
		"Expires":     func(b *sipua.Binding) { b.Expires = -1 },
		"ContactUser": func(b *sipua.Binding) { b.ContactUser = "a@b" },
		"Port":        func(b *sipua.Binding) { b.Port = 70000 },
	}
	for field, mod := range cases {
		b := binding(r, "x")
		mod(&b)
		_, err := u.Register(context.Background(), b)
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: err = %v", field, err)
		}
	}
	if r.Requests() != 0 {
		t.Errorf("bad bindings sent %d requests", r.Requests())
	}
}

func TestRegisterUnresolvable(t *testing.T) {
	u := newUA(t)
	b := sipua.Binding{User: "a", Domain: "sipis.test", Proxy: "no-such-host.invalid", Port: 5060, Transport: "udp", ContactUser: "c", CallID: "x", Expires: 60}
	_, err := u.Register(context.Background(), b)
	if !errors.Is(err, sipua.ErrResolve) {
		t.Fatalf("err = %v", err)
	}
}

func TestRegisterConcurrent(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	var wg sync.WaitGroup
	var fails atomic.Int32
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := u.Register(context.Background(), binding(r, fmt.Sprintf("u%03d", i)))
			if err != nil || res.Status != 200 {
				fails.Add(1)
			}
		}()
	}
	wg.Wait()
	if fails.Load() != 0 {
		t.Fatalf("%d of 200 failed", fails.Load())
	}
}

func TestOptions(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	for _, tc := range []struct{ uri, tp string }{
		{"sip:" + r.Addr(), "udp"},
		{r.Addr(), ""},
		{"sip:" + r.Addr() + ";transport=tcp", ""},
	} {
		res, err := u.Options(context.Background(), tc.uri, tc.tp)
		if err != nil || res.Status != 200 || res.RTT <= 0 {
			t.Errorf("%s %s: %+v %v", tc.uri, tc.tp, res, err)
		}
	}
	if _, err := u.Options(context.Background(), "sip:no-such-host.invalid", "udp"); !errors.Is(err, sipua.ErrResolve) {
		t.Errorf("unresolvable: %v", err)
	}
	if _, err := u.Options(context.Background(), "sip:"+r.Addr(), "sctp"); err == nil {
		t.Error("bad transport accepted")
	}
}

func TestOptionsTimeout(t *testing.T) {
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 600 * time.Millisecond })
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_, err = u.Options(context.Background(), "sip:"+silent.LocalAddr().String(), "udp")
	if !errors.Is(err, sipua.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]sipua.Config{
		"no listeners":  {},
		"transport":     {Listeners: []sipua.Listener{{Transport: "sctp", Address: "127.0.0.1:0"}}},
		"tls no config": {Listeners: []sipua.Listener{{Transport: "tls", Address: "127.0.0.1:0"}}},
		"address":       {Listeners: []sipua.Listener{{Transport: "udp", Address: "nope"}}},
	} {
		if _, err := sipua.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRegisterThousandsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 2000
	r := siptest.NewRegistrar(t)
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 20 * time.Second })
	var wg sync.WaitGroup
	var fails atomic.Int32
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := u.Register(context.Background(), binding(r, fmt.Sprintf("t%04d", i)))
			if err != nil || res.Status != 200 {
				fails.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if f := fails.Load(); f != 0 {
		t.Fatalf("%d of %d failed", f, n)
	}
	if got := u.Traffic().MessagesOut; got < 2*n {
		t.Errorf("%d messages out", got)
	}
}

// TestRegisterNotSentAfterDeadline: a REGISTER whose context's deadline has passed is not
// sent at all (the cluster fence bounds the context by the node's lease; after a pause both the
// retransmission timer and the deadline are due, and nothing may leave then).
func TestRegisterNotSentAfterDeadline(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	if _, err := u.Register(ctx, binding(r, "alice")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Register after the deadline: err = %v, want DeadlineExceeded", err)
	}
	if n := r.Requests(); n != 0 {
		t.Fatalf("registrar got %d requests sent after the deadline", n)
	}
}

// TestRegisterReusesNonce: a refresh carries credentials for the nonce of the previous cycle
// with the next nonce count (RFC 7616 §3.4), so it is one REGISTER answered 200.
func TestRegisterReusesNonce(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	b := binding(r, "nora")
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || !res.Challenged || res.Nonce == nil {
		t.Fatalf("first cycle: %+v %v", res, err)
	}
	for i, nc := range []string{"00000002", "00000003"} {
		b.CSeq, b.Nonce = res.CSeq, res.Nonce
		before := len(r.RegisterTimes("nora"))
		res, err = u.Register(context.Background(), b)
		if err != nil || res.Status != 200 || res.Challenged || res.Nonce == nil {
			t.Fatalf("refresh %d: %+v %v", i+1, res, err)
		}
		if n := len(r.RegisterTimes("nora")) - before; n != 1 {
			t.Errorf("refresh %d sent %d REGISTERs, want 1", i+1, n)
		}
		req := r.LastRequest("nora")
		if !strings.Contains(req, "nc="+nc) || !strings.Contains(req, "Authorization: Digest ") {
			t.Errorf("refresh %d lacks credentials with nc=%s:\n%s", i+1, nc, req)
		}
	}
	if len(r.Contacts("nora")) != 1 {
		t.Errorf("contacts %+v", r.Contacts("nora"))
	}
}

// TestRegisterStaleNonce: once the registrar no longer takes the nonce (401 stale=true), the
// new challenge is answered in the same cycle.
func TestRegisterStaleNonce(t *testing.T) {
	r := siptest.NewRegistrar(t)
	u := newUA(t)
	b := binding(r, "sten")
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Nonce == nil {
		t.Fatalf("first cycle: %+v %v", res, err)
	}
	r.ExpireNonces()
	b.CSeq, b.Nonce = res.CSeq, res.Nonce
	before := len(r.RegisterTimes("sten"))
	res, err = u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || !res.Challenged || res.Nonce == nil {
		t.Fatalf("stale cycle: %+v %v", res, err)
	}
	if n := len(r.RegisterTimes("sten")) - before; n != 2 {
		t.Errorf("stale cycle sent %d REGISTERs, want 2", n)
	}
	if req := r.LastRequest("sten"); !strings.Contains(req, "nc=00000001") {
		t.Errorf("answer to the new challenge should count from 1:\n%s", req)
	}
}

// TestRegisterReusedNonceRefused: a registrar that refuses a reused nonce with something else
// than a challenge (here 403) gets a fresh cycle without it: REGISTER, 401, REGISTER, 200.
func TestRegisterReusedNonceRefused(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithOneTimeNonces(403))
	u := newUA(t)
	b := binding(r, "otto")
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || res.Nonce == nil {
		t.Fatalf("first cycle: %+v %v", res, err)
	}
	b.CSeq, b.Nonce = res.CSeq, res.Nonce
	before := len(r.RegisterTimes("otto"))
	res, err = u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || !res.Challenged {
		t.Fatalf("refused reuse: %+v %v", res, err)
	}
	if n := len(r.RegisterTimes("otto")) - before; n != 3 {
		t.Errorf("sent %d REGISTERs, want 3 (reused, fresh, answer)", n)
	}
	if res.CSeq != b.CSeq+3 {
		t.Errorf("CSeq %d, want %d", res.CSeq, b.CSeq+3)
	}
}

// TestRegisterReusedNonceOneTimeStale: a registrar taking each nonce once answers the reuse
// with a stale challenge, which is answered at once.
func TestRegisterReusedNonceOneTimeStale(t *testing.T) {
	r := siptest.NewRegistrar(t, siptest.WithOneTimeNonces(0))
	u := newUA(t)
	b := binding(r, "olga")
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Nonce == nil {
		t.Fatalf("first cycle: %+v %v", res, err)
	}
	b.CSeq, b.Nonce = res.CSeq, res.Nonce
	res, err = u.Register(context.Background(), b)
	if err != nil || res.Status != 200 || !res.Challenged || len(r.Contacts("olga")) != 1 {
		t.Fatalf("one-time nonce reuse: %+v %v", res, err)
	}
}
