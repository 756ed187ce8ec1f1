package siptest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// udpClient sends hand-written REGISTERs to a Registrar.
type udpClient struct {
	t    *testing.T
	conn *net.UDPConn
	r    *Registrar
}

func newClient(t *testing.T, r *Registrar) *udpClient {
	t.Helper()
	c, err := net.DialUDP("udp", nil, r.udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{t: t, conn: c, r: r}
}

func (c *udpClient) register(user, branch, contact, expires, auth string) *message {
	c.t.Helper()
	l := c.conn.LocalAddr().String()
	req := fmt.Sprintf("REGISTER sip:sipis.test SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:%s@sipis.test>;tag=1\r\nTo: <sip:%s@sipis.test>\r\nCall-ID: %s\r\nCSeq: 1 REGISTER\r\n"+
		"Contact: %s\r\nExpires: %s\r\n%sContent-Length: 0\r\n\r\n", l, branch, user, user, user+"-call", contact, expires, auth)
	if _, err := c.conn.Write([]byte(req)); err != nil {
		c.t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 65535)
	n, err := c.conn.Read(buf)
	if err != nil {
		return nil
	}
	m, err := parseMessage(buf[:n])
	if err != nil {
		return &message{status: -1, reason: string(buf[:n])}
	}
	return m
}

func digestFor(chal, user, pw string) string {
	ps, _ := authParams(chal)
	h := func(s string) string { d := md5.Sum([]byte(s)); return hex.EncodeToString(d[:]) }
	ha1 := h(user + ":" + ps["realm"] + ":" + pw)
	ha2 := h("REGISTER:sip:sipis.test")
	resp := h(ha1 + ":" + ps["nonce"] + ":00000001:cn:auth:" + ha2)
	return fmt.Sprintf("Authorization: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", uri=\"sip:sipis.test\", response=\"%s\", qop=auth, nc=00000001, cnonce=\"cn\"\r\n",
		user, ps["realm"], ps["nonce"], resp)
}

func TestRegistrarChallengeAndBindings(t *testing.T) {
	r := NewRegistrar(t, WithMaxExpires(300))
	c := newClient(t, r)
	m := c.register("al", "z9hG4bK1", "<sip:one@127.0.0.1:1>", "600", "")
	if m == nil || m.status != 401 || !strings.Contains(m.get("www-authenticate"), `realm="sipis.test"`) {
		t.Fatalf("%+v", m)
	}
	if _, ps := viaParams(m.all("via")[0]); ps["received"] != "127.0.0.1" || ps["rport"] == "" {
		t.Errorf("via %q", m.all("via")[0])
	}
	chal := m.get("www-authenticate")
	if bad := c.register("al", "z9hG4bK2", "<sip:one@127.0.0.1:1>", "600", digestFor(chal, "al", "wrong")); bad == nil || bad.status != 401 {
		t.Fatalf("wrong password: %+v", bad)
	}
	ok := c.register("al", "z9hG4bK3", "<sip:one@127.0.0.1:1>", "600", digestFor(chal, "al", "pw-al"))
	if ok == nil || ok.status != 200 || !strings.Contains(strings.Join(ok.all("contact"), ","), "expires=300") {
		t.Fatalf("%+v", ok)
	}
	// Retransmission: same answer, no new processing.
	again := c.register("al", "z9hG4bK3", "<sip:one@127.0.0.1:1>", "600", digestFor(chal, "al", "pw-al"))
	if again == nil || again.status != 200 {
		t.Fatalf("%+v", again)
	}
	r.SetBehaviour("al", AlwaysOK)
	c.register("al", "z9hG4bK4", "<sip:two@127.0.0.1:2>", "100", "")
	if got := r.Bindings("al"); len(got) != 2 || !strings.HasPrefix(got[0], "<sip:one@127.0.0.1:1>;expires=") {
		t.Fatalf("bindings %v", got)
	}
	c.register("al", "z9hG4bK5", "<sip:one@127.0.0.1:1>", "0", "")
	if got := r.Contacts("al"); len(got) != 1 || got[0].URI != "sip:two@127.0.0.1:2" || got[0].Expires != 100 {
		t.Fatalf("after removal %v", got)
	}
	c.register("al", "z9hG4bK6", "*", "0", "")
	if got := r.Contacts("al"); len(got) != 0 {
		t.Fatalf("after * %v", got)
	}
	if n := len(r.RegisterTimes("al")); n != 6 {
		t.Errorf("%d register times (retransmission must not count)", n)
	}
	if r.Requests() != 7 || !strings.Contains(r.LastRequest("al"), "Contact: *") {
		t.Errorf("requests %d last %q", r.Requests(), r.LastRequest("al"))
	}
}

func TestRegistrarBehaviours(t *testing.T) {
	r := NewRegistrar(t)
	c := newClient(t, r)
	r.SetScript("bo", Answer503(42*time.Second), Answer403, Answer423(600), Answer423(600), Garbage, NoAnswer)
	checks := []struct {
		expires string
		status  int
		header  string
	}{
		{"60", 503, "retry-after: 42"},
		{"60", 403, ""},
		{"60", 423, "min-expires: 600"},
		{"3600", 401, ""}, // long enough: challenged
		{"60", -1, ""},    // garbage
		{"60", 0, ""},     // no answer
		{"60", 401, ""},   // script done: default
	}
	for i, ch := range checks {
		m := c.register("bo", fmt.Sprintf("z9hG4bKb%d", i), "<sip:x@127.0.0.1:1>", ch.expires, "")
		switch {
		case ch.status == 0 && m != nil:
			t.Errorf("%d: want silence, got %+v", i, m)
		case ch.status != 0 && (m == nil || m.status != ch.status):
			t.Errorf("%d: want %d, got %+v", i, ch.status, m)
		case ch.header != "":
			name, val, _ := strings.Cut(ch.header, ": ")
			if m.get(name) != val {
				t.Errorf("%d: %s = %q", i, name, m.get(name))
			}
		}
	}
	for _, b := range []Behaviour{ChallengeThenOK, AlwaysOK, Answer403, NoAnswer, Garbage, Answer423(5), Answer503(time.Second)} {
		if b.String() == "?" {
			t.Errorf("%#v has no name", b)
		}
	}
}

func TestRegistrarOptionsAndTCP(t *testing.T) {
	r := NewRegistrar(t)
	if err := optionsPing(r.Addr(), time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x>\r\nCall-ID: t\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte("\r\n" + req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 OK") {
		t.Fatalf("%q %v", buf[:n], err)
	}
}

func TestParseMessage(t *testing.T) {
	m, err := parseMessage([]byte("MESSAGE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=1, SIP/2.0/TCP g\r\nSubject: a\r\n  folded\r\nl: 2\r\n\r\nhixx"))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.all("via")) != 2 || m.get("subject") != "a folded" || string(m.body) != "hi" {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{"", "garbage\r\n\r\n", "SIP/2.0 abc OK\r\n\r\n", "INVITE x SIP/2.0\r\nnocolon\r\n\r\n", "INVITE x SIP/2.0\r\nl: 5\r\n\r\nab"} {
		if _, err := parseMessage([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte("REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nContact: <sip:x>;expires=5, *\r\nContent-Length: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMessage(data)
		if err != nil {
			return
		}
		if len(m.body) > len(data) {
			t.Fatal("body longer than input")
		}
		for _, c := range m.all("contact") {
			nameAddr(c)
		}
		for _, v := range m.all("via") {
			viaParams(v)
		}
		authParams(m.get("authorization"))
		uriUser(m.uri)
	})
}

func TestKamailioHarness(t *testing.T) {
	k := StartKamailio(t, KamailioOptions{})
	if k.Port() == 0 || k.Host() != "127.0.0.1" || k.Domain() != "sipis.test" {
		t.Fatalf("%s %d %s", k.Host(), k.Port(), k.Domain())
	}
	if us := k.Users(3); len(us) != 3 || us[2].Name != "user0002" || us[2].Password != "pw-user0002" {
		t.Fatalf("%+v", us)
	}
	if cs := k.Contacts(t, "user0000"); cs != nil {
		t.Fatalf("contacts before registering: %+v", cs)
	}
	out, err := k.RPC("core.version")
	if err != nil || !strings.Contains(out, "kamailio") {
		t.Fatalf("%q %v", out, err)
	}
}

func TestParseULContacts(t *testing.T) {
	out := "{\n\tAoR: user0001\n\tContacts: {\n\t\tContact: {\n\t\t\tAddress: sip:ct@127.0.0.1:5070;transport=udp\n\t\t\tExpires: 297\n\t\t}\n\t\tContact: {\n\t\t\tAddress: sip:b@h\n\t\t\tExpires: permanent\n\t\t}\n\t}\n}\n"
	cs := parseULContacts(out)
	if len(cs) != 2 || cs[0].URI != "sip:ct@127.0.0.1:5070;transport=udp" || cs[0].Expires != 297 || cs[1].Expires != 0 {
		t.Fatalf("%+v", cs)
	}
}

// TestKamailioBindingsAtScale: Bindings reads every one of 5,000 contacts, where kamcmd's
// ul.dump fails ("reply too big") from a few hundred on. The contacts are added straight
// into usrloc with JSON-RPC ul.add.
func TestKamailioBindingsAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("Kamailio scale test skipped in -short mode")
	}
	k := StartKamailio(t, KamailioOptions{})
	const n = 5000
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(k.rpcPort)) + "/RPC"
	work := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				body := fmt.Sprintf(`{"jsonrpc":"2.0","method":"ul.add","params":["location","user%04d",`+
					`"sip:user%04d@127.0.0.1:5099",3600,1.0,"",0,0,0],"id":1}`, i, i)
				res, err := http.Post(url, "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || strings.Contains(string(b), `"error"`) {
					errs <- fmt.Errorf("ul.add %d: %d %s", i, res.StatusCode, b)
				}
			}
		}()
	}
	for i := range n {
		select {
		case work <- i:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if out, err := k.RPC("ul.dump"); err == nil && strings.Count(out, "Address: ") == n {
		t.Logf("kamcmd ul.dump read all %d contacts too", n)
	} else {
		t.Logf("kamcmd ul.dump at %d contacts: %v %.80q", n, err, out)
	}
	b, err := k.Bindings()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != n {
		t.Fatalf("Bindings: %d AoRs, want %d", len(b), n)
	}
	for _, i := range []int{0, 1234, n - 1} {
		aor := fmt.Sprintf("user%04d", i)
		if cs := b[aor]; len(cs) != 1 || cs[0] != "sip:"+aor+"@127.0.0.1:5099" {
			t.Fatalf("%s: %v", aor, cs)
		}
	}
}

func TestParseJSONDump(t *testing.T) {
	ok := `{"jsonrpc":"2.0","result":{"Domains":[{"Domain":{"Domain":"location","Size":1024,"AoRs":[` +
		`{"Info":{"AoR":"user0001","Contacts":[{"Contact":{"Address":"sip:a@127.0.0.1:5070","Expires":300}},` +
		`{"Contact":{"Address":"sip:b@h"}}]}},{"Info":{"AoR":"sip:user0002@sipis.test","Contacts":[]}}]}}]},"id":1}`
	b, err := parseJSONDump(strings.NewReader(ok))
	if err != nil || len(b["user0001"]) != 2 || b["user0001"][1] != "sip:b@h" || len(b["user0002"]) != 0 {
		t.Fatalf("%v %v", b, err)
	}
	for _, bad := range []string{
		`{"jsonrpc":"2.0","error":{"code":500,"message":"no memory"},"id":1}`,
		`{"jsonrpc":"2.0","result":{"Domains":[]},"id":1}`,
		`{"jsonrpc":"2.0","id":1}`,
		`{"jsonrpc":`,
	} {
		if b, err := parseJSONDump(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: no error, %v", bad, b)
		}
	}
}
