package app

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/push/pushtest"
	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/store"
	"github.com/sipis/sipis/internal/web"
)

// TestPbxHookKamailio is the PBX-hook mode end to end with a real PBX: Kamailio
// (testdata/kamailio/pbxhook.cfg.tmpl) asks sipis's incoming-call/ with http_client_query
// before relaying a SIPp caller's INVITE to the account's registered contact. The test
// phone registered its push token with sipis (HTTP Basic, checked by the operator's
// verifier); it wakes on the APNs push, registers itself at Kamailio, posts call-response/
// and answers the call. Then: a phone that answers available=false (NAK, the caller gets
// 480 from the PBX) and a phone that never answers (NAK after the wait).
func TestPbxHookKamailio(t *testing.T) {
	sipp := siptest.SIPp(t)
	apns := pushtest.NewAPNs(t)
	verifier := newAccountVerifier(t)
	dir := t.TempDir()
	s := apnsSettings(t, dir, apns, fmt.Sprintf(`
  <PbxHook Enabled="Yes" WaitMilliseconds="3000" ResendIntervalMilliseconds="1000" Secret="pbx-shared">
    <PbxNetworks><Network Address="127.0.0.1/32"/></PbxNetworks>
    <DeviceVerifier Url="%s/verify" CacheSeconds="60"/>
  </PbxHook>`, verifier.URL))
	a := startApp(t, s)
	defer a.Stop()
	k := siptest.StartKamailio(t, siptest.KamailioOptions{Template: "pbxhook.cfg.tmpl", Vars: map[string]any{
		"HookURL": a.HTTPURL() + "/api/incoming-call/", "HookSecret": "pbx-shared"}})

	const user = "150010001"
	registerHookDevice(t, a, apns.Topic, user, pushtest.TokenOK)

	// The caller's call is answered by the woken phone.
	phone := newTestPhone(t, k, user)
	woke := make(chan error, 1)
	go func() { woke <- phone.wakeAndAnswer(a, apns, true) }()
	out, err := runSIPp(sipp, "testdata/sipp/pbxhook_answered.xml", user, k.Addr(), t.TempDir())
	if err != nil {
		t.Fatalf("sipp (answered): %v\n%s", err, out)
	}
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	calls := hookCalls(t, a, 1)
	if c := calls[0]; c.Outcome != store.OutcomeAccepted || c.SipUserID != user || !strings.Contains(c.CallerID, "Alice") ||
		c.PhoneNumber != "+31501234567" || c.CallID == "" || c.Pushes < 1 {
		t.Fatalf("call record = %+v", c)
	}

	// The phone is busy: available=false, the PBX answers 480 and never rings it.
	phone2 := newTestPhone(t, k, user)
	go func() { woke <- phone2.wakeAndAnswer(a, apns, false) }()
	out, err = runSIPp(sipp, "testdata/sipp/pbxhook_unavailable.xml", user, k.Addr(), t.TempDir())
	if err != nil {
		t.Fatalf("sipp (unavailable): %v\n%s", err, out)
	}
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	if c := hookCalls(t, a, 2)[0]; c.Outcome != store.OutcomeRejected || c.Reason != "device not available" {
		t.Fatalf("call record = %+v", c)
	}

	// Nobody answers: NAK after the 3 s wait, with 3000/1000 - 1 = 2 pushes (one resend).
	apnsBefore := len(apns.Pushes())
	start := time.Now()
	out, err = runSIPp(sipp, "testdata/sipp/pbxhook_unavailable.xml", user, k.Addr(), t.TempDir())
	if err != nil {
		t.Fatalf("sipp (no answer): %v\n%s", err, out)
	}
	if el := time.Since(start); el < 3*time.Second {
		t.Fatalf("the caller got its 480 after %s, before the wait ran out", el)
	}
	c := hookCalls(t, a, 3)[0]
	if c.Outcome != store.OutcomeMissed || c.Reason != "no response from device" || c.Pushes != 2 {
		t.Fatalf("call record = %+v", c)
	}
	if n := len(apns.Pushes()) - apnsBefore; n != 2 {
		t.Fatalf("%d pushes while nobody answered, want 2 (first + 1 resend)", n)
	}

	// Counted with the relayed calls, on /stats, the summary and /metrics.
	co := (&backend{app: a}).CallOutcomes()
	if co.Total != 3 || co.Accepted != 1 || co.Missed != 1 || co.Rejected != 1 || co.RejectedByReason["device not available"] != 1 {
		t.Fatalf("call outcomes = %+v", co)
	}
	var sum struct{ CallOutcomes web.CallOutcomes }
	if err := json.Unmarshal([]byte(httpGet(t, a.HTTPURL()+"/stats/summary/json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.CallOutcomes.Total != 3 || sum.CallOutcomes.Accepted != 1 || sum.CallOutcomes.RejectedByReason["device not available"] != 1 {
		t.Fatalf("summary call outcomes = %+v", sum.CallOutcomes)
	}
	if x := httpGet(t, a.HTTPURL()+"/stats/summary/xml"); !strings.Contains(x, "<Missed>1</Missed>") {
		t.Fatalf("summary XML lacks the missed call:\n%s", x)
	}
	metrics := httpGet(t, a.HTTPURL()+"/metrics")
	for _, want := range []string{`sipis_incoming_calls_total{outcome="accepted"} 1`, `sipis_pbxhook_calls_total{outcome="missed"} 1`, "sipis_pbxhook_waiting 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stats := httpGet(t, a.HTTPURL()+"/stats")
	if !strings.Contains(stats, "PBX-Hook Calls") || !strings.Contains(stats, "Rejected (NAK)") {
		t.Errorf("/stats has no PBX-hook section")
	}
	// An instance of the same account (user name = sip_user_id) counts the PBX-hook device
	// in its Notes and lists it on its /settings?s= page.
	const sel = "0a0b0c0d"
	holdAtKamailio(t, a, k, apns, sel, user, "relay-secret")
	var row web.InstanceRow
	if err := (&backend{app: a}).Instances(context.Background(), web.InstanceQuery{Selector: sel}, func(r web.InstanceRow) error {
		row = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if row.Devices != 2 {
		t.Fatalf("instance %s shows %d devices, want 2 (its relay device and the PBX-hook device)", sel, row.Devices)
	}
	if page := httpGetAdmin(t, a.HTTPURL()+"/settings?s="+sel); !strings.Contains(page, "pbxhook.device.1.sip_user_id") {
		t.Errorf("/settings?s=%s does not list the PBX-hook device", sel)
	}
	// The device shows on /settings?s= (the sip_user_id, digits being hex), token shortened.
	settings := httpGetAdmin(t, a.HTTPURL()+"/settings?s="+user)
	if !strings.Contains(settings, "pbxhook.device.1.app") || !strings.Contains(settings, apns.Topic) || strings.Contains(settings, pushtest.TokenOK) {
		t.Errorf("/settings?s=%s does not show the device (or shows its whole token):\n%s", user, settings)
	}
}

// registerHookDevice registers a phone's APNs token for user through the API, checking that
// wrong credentials are refused first.
func registerHookDevice(t testing.TB, a *App, app, user, token string) {
	t.Helper()
	form := url.Values{"sip_user_id": {user}, "token": {token}, "app": {app}, "sandbox": {"true"}, "name": {"Test phone"}}
	for _, tc := range []struct {
		pass string
		want int
	}{{"wrong", http.StatusForbidden}, {siptest.KamailioPassword(user), http.StatusCreated}} {
		req, _ := http.NewRequest(http.MethodPost, a.HTTPURL()+"/api/apns-device/", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(user, tc.pass)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Fatalf("device registration with password %q: %d %s, want %d", tc.pass, res.StatusCode, b, tc.want)
		}
	}
}

// newAccountVerifier is the operator's credential check: HTTP Basic user = sip_user_id and
// the account's SIP password (Kamailio's test accounts), anything else 403.
func newAccountVerifier(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		id := r.URL.Query().Get("sip_user_id")
		if r.Method != http.MethodGet || r.URL.Path != "/verify" || !ok || u != id || p != siptest.KamailioPassword(id) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runSIPp(sipp, scenario, user, target, dir string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sipp, "-sf", scenario, "-s", user, "-i", "127.0.0.1", "-p", "0",
		"-m", "1", "-l", "1", "-timeout", "30s", "-timeout_error", "-nostdin", "-trace_err",
		"-error_file", dir+"/errors.log", target)
	out, err := cmd.CombinedOutput()
	if err != nil {
		errs, _ := os.ReadFile(dir + "/errors.log")
		out = append(append(out, "\nsipp errors:\n"...), errs...)
	}
	return out, err
}

// hookCalls waits until n PBX-hook call records are stored and returns them, newest first.
func hookCalls(t testing.TB, a *App, n int) []store.HookCall {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs, err := a.Store().HookCalls(context.Background(), "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) >= n {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d PBX-hook call records, want %d", len(cs), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGetAdmin(t testing.TB, u string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.SetBasicAuth("admin", "secret-admin")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, b)
	}
	return string(b)
}

// testPhone is a softphone that sleeps until a push wakes it: then it registers at the PBX
// over UDP (digest authentication), tells sipis it is available (or not) and answers the
// PBX's INVITE.
type testPhone struct {
	t    testing.TB
	conn *net.UDPConn
	k    *siptest.Kamailio
	user string
	in   chan *phoneMsg
}

type phoneMsg struct {
	first string
	hdrs  []string // "Name: value" lines as received
	body  string
	from  *net.UDPAddr
}

func (m *phoneMsg) header(name string) string {
	for _, h := range m.hdrs {
		if n, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(n), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m *phoneMsg) all(name string) []string {
	var out []string
	for _, h := range m.hdrs {
		if n, _, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(n), name) {
			out = append(out, h)
		}
	}
	return out
}

func newTestPhone(t testing.TB, k *siptest.Kamailio, user string) *testPhone {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPhone{t: t, conn: c, k: k, user: user, in: make(chan *phoneMsg, 64)}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				close(p.in)
				return
			}
			raw := string(buf[:n])
			head, body, _ := strings.Cut(raw, "\r\n\r\n")
			lines := strings.Split(head, "\r\n")
			p.in <- &phoneMsg{first: lines[0], hdrs: lines[1:], body: body, from: from}
		}
	}()
	return p
}

func (p *testPhone) addr() string { return p.conn.LocalAddr().String() }

func (p *testPhone) send(to *net.UDPAddr, msg string) error {
	_, err := p.conn.WriteToUDP([]byte(msg), to)
	return err
}

// next returns the next message whose first line starts with prefix.
func (p *testPhone) next(prefix string, timeout time.Duration) (*phoneMsg, error) {
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-p.in:
			if !ok {
				return nil, fmt.Errorf("phone closed while waiting for %q", prefix)
			}
			if strings.HasPrefix(m.first, prefix) {
				return m, nil
			}
		case <-deadline:
			return nil, fmt.Errorf("phone: no %q within %s", prefix, timeout)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// register registers the phone's contact at Kamailio (RFC 3261 §10, digest per RFC 2617).
func (p *testPhone) register() error {
	kam, _ := net.ResolveUDPAddr("udp", p.k.Addr())
	dom := p.k.Domain()
	callID, tag := randHex(8), randHex(4)
	req := func(cseq int, auth string) string {
		return "REGISTER sip:" + dom + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + p.addr() + ";branch=z9hG4bK" + randHex(6) + ";rport\r\n" +
			"Max-Forwards: 70\r\nFrom: <sip:" + p.user + "@" + dom + ">;tag=" + tag + "\r\n" +
			"To: <sip:" + p.user + "@" + dom + ">\r\nCall-ID: " + callID + "\r\n" +
			"CSeq: " + strconv.Itoa(cseq) + " REGISTER\r\nContact: <sip:" + p.user + "@" + p.addr() + ">\r\n" +
			"Expires: 300\r\n" + auth + "Content-Length: 0\r\n\r\n"
	}
	if err := p.send(kam, req(1, "")); err != nil {
		return err
	}
	ch, err := p.next("SIP/2.0 401", 5*time.Second)
	if err != nil {
		return err
	}
	params := digestParams(ch.header("WWW-Authenticate"))
	ha1 := md5hex(p.user + ":" + params["realm"] + ":" + siptest.KamailioPassword(p.user))
	ha2 := md5hex("REGISTER:sip:" + dom)
	cnonce := randHex(8)
	resp := md5hex(ha1 + ":" + params["nonce"] + ":00000001:" + cnonce + ":auth:" + ha2)
	auth := fmt.Sprintf("Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", uri=\"sip:%s\", response=\"%s\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"%s\"\r\n",
		p.user, params["realm"], params["nonce"], dom, resp, cnonce)
	if params["qop"] == "" {
		resp = md5hex(ha1 + ":" + params["nonce"] + ":" + ha2)
		auth = fmt.Sprintf("Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", uri=\"sip:%s\", response=\"%s\", algorithm=MD5\r\n",
			p.user, params["realm"], params["nonce"], dom, resp)
	}
	if err := p.send(kam, req(2, auth)); err != nil {
		return err
	}
	ok, err := p.next("SIP/2.0 ", 5*time.Second)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(ok.first, "SIP/2.0 200") {
		return fmt.Errorf("REGISTER with credentials: %s", ok.first)
	}
	return nil
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func digestParams(v string) map[string]string {
	out := map[string]string{}
	v = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), "Digest"))
	for _, part := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			out[strings.ToLower(k)] = strings.Trim(val, `"`)
		}
	}
	return out
}

// respond answers req with a status, copying the headers RFC 3261 §8.2.6.2 asks for.
func (p *testPhone) respond(req *phoneMsg, status, toTag, body string) error {
	var b strings.Builder
	b.WriteString("SIP/2.0 " + status + "\r\n")
	for _, h := range req.all("Via") {
		b.WriteString(h + "\r\n")
	}
	to := req.header("To")
	if toTag != "" && !strings.Contains(to, "tag=") {
		to += ";tag=" + toTag
	}
	b.WriteString("From: " + req.header("From") + "\r\nTo: " + to + "\r\nCall-ID: " + req.header("Call-ID") +
		"\r\nCSeq: " + req.header("CSeq") + "\r\nContact: <sip:" + p.user + "@" + p.addr() + ">\r\n")
	if body != "" {
		b.WriteString("Content-Type: application/sdp\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	return p.send(req.from, b.String())
}

// wakeAndAnswer waits for a new call push to the phone's token, registers at the PBX, posts
// call-response/ and, when available, answers the INVITE and the caller's BYE.
func (p *testPhone) wakeAndAnswer(a *App, apns *pushtest.APNs, available bool) error {
	key, err := waitCallPush(apns, 20*time.Second)
	if err != nil {
		return err
	}
	if available {
		if err := p.register(); err != nil {
			return fmt.Errorf("phone: register at the PBX: %w", err)
		}
	}
	form := url.Values{"unique_key": {key}, "message_start_time": {strconv.FormatFloat(float64(time.Now().UnixMilli())/1000, 'f', 3, 64)},
		"available": {strconv.FormatBool(available)}}
	res, err := http.PostForm(a.HTTPURL()+"/api/call-response/", form)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		return fmt.Errorf("call-response: %d, want 202", res.StatusCode)
	}
	if !available {
		return nil
	}
	inv, err := p.next("INVITE ", 10*time.Second)
	if err != nil {
		return err
	}
	tag := randHex(4)
	if err := p.respond(inv, "180 Ringing", tag, ""); err != nil {
		return err
	}
	sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"
	if err := p.respond(inv, "200 OK", tag, sdp); err != nil {
		return err
	}
	if _, err := p.next("ACK ", 10*time.Second); err != nil {
		return err
	}
	bye, err := p.next("BYE ", 10*time.Second)
	if err != nil {
		return err
	}
	return p.respond(bye, "200 OK", "", "")
}

// waitCallPush waits for an APNs VoIP push not seen before and returns its one-time key.
var seenPushes sync.Map

func waitCallPush(apns *pushtest.APNs, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, p := range apns.Pushes() {
			if p.Header.Get("apns-push-type") != "voip" || p.Status != http.StatusOK {
				continue
			}
			key, _ := p.Payload["token"].(string)
			if key == "" {
				continue
			}
			if _, dup := seenPushes.LoadOrStore(key, true); !dup {
				return key, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "", fmt.Errorf("no new VoIP push within %s", timeout)
}
