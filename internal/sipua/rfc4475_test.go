package sipua_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tortureDir holds the RFC 4475 torture messages, one file each, byte for byte as RFC
// 4475 §4 ships them (named as there).
const tortureDir = "../siptest/testdata/rfc4475"

// firstAnswer sends msg on a new TCP connection to addr, closes its write side (so that a
// message shorter than its Content-Length ends) and returns the first response, "" when
// the connection closed without one.
func firstAnswer(t *testing.T, addr string, msg []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var head bytes.Buffer
	for {
		line, err := r.ReadString('\n')
		head.WriteString(line)
		if err != nil || line == "\r\n" {
			break
		}
	}
	return head.String()
}

func statusOf(res string) string {
	line, _, _ := strings.Cut(res, "\r\n")
	f := strings.Fields(line)
	if len(f) < 2 {
		return ""
	}
	return f[0] + " " + f[1]
}

// rfc4475Answers is the status sipis's UA (no handler: unknown users) answers each RFC 4475
// message with, "" for no answer. The section of RFC 4475 and the rule behind each.
var rfc4475Answers = map[string]string{
	// §3.1.1 valid messages: their ordinary answer (404 unknown user, 200 OPTIONS to us,
	// 405 unknown method).
	"wsinv": "404", "intmeth": "405", "esc01": "404", "escnull": "404", "esc02": "405",
	"lwsdisp": "200", "longreq": "404", "dblreq": "404", "semiuri": "200", "transports": "200",
	"mpart01": "404", "badbranch": "200", "zeromf": "200",
	// Responses (§3.1.1.12 noreason, §3.1.1.13 unreason, §3.1.2.19 bigcode, §3.3.14
	// bcast, §3.1.2.15 scalarlg) match no transaction and are dropped (RFC 3261 §18.1.2).
	"noreason": "", "unreason": "", "bigcode": "", "bcast": "", "scalarlg": "",
	// §3.1.2 invalid messages: 400 where the transport can carry it.
	"badinv01": "400", "baddn": "400", "badaspec": "400", "quotbal": "400", "ltgtruri": "400",
	"lwsruri": "400", "lwsstart": "400", "trws": "400", "scalar02": "400", "clerr": "400",
	"ncl": "400", "insuf": "400", "mcl01": "400", "multi01": "400", "mismatch01": "400",
	"mismatch02": "400", "inv2543": "400",
	// §3.1.2.16: an unknown SIP version gets 505 (with SIP/2.0 in the status line).
	"badvers": "505",
	// §3.3.2 unkscm, §3.3.3 novelsc: a Request-URI scheme other than sip/sips gets 416
	// (RFC 3261 §8.2.2.1).
	"unkscm": "416", "novelsc": "416",
	// Well-formed requests whose semantics are the handler's (unknown user here: 404);
	// §3.1.2.14 baddate allows ignoring the Date header field.
	"baddate": "404", "cparam01": "404", "cparam02": "404", "escruri": "404", "invut": "404",
	"regaut01": "404", "regbadct": "404", "regescrt": "404", "sdp01": "404", "unksm2": "404",
	// bext01 (Require of an unknown extension): answered as an ordinary OPTIONS; the
	// 420 it calls for is left to the handler, since sipis relays INVITEs to devices.
	"bext01": "200",
}

// TestRFC4475 sends every RFC 4475 message over TCP to a UA without a handler and checks
// the answer: a request sipis cannot accept gets its 4xx/505, never silence, and a valid
// one its ordinary answer.
func TestRFC4475(t *testing.T) {
	u := newUA(t)
	files, err := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	if err != nil || len(files) != 49 || len(rfc4475Answers) != 49 {
		t.Fatalf("want the 49 RFC 4475 messages and their answers, have %d files, %d answers (%v)", len(files), len(rfc4475Answers), err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".dat")
		want, ok := rfc4475Answers[name]
		if !ok {
			t.Errorf("%s: no expected answer", name)
			continue
		}
		msg, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		res := firstAnswer(t, u.Addr("tcp"), msg)
		got := statusOf(res)
		switch {
		case want == "" && got != "":
			t.Errorf("%s: answered %q, want no answer", name, got)
		case want != "" && got != "SIP/2.0 "+want:
			t.Errorf("%s: answered %q, want SIP/2.0 %s\n%s", name, got, want, res)
		}
		if strings.HasPrefix(want, "4") && want != "404" && !strings.Contains(res, "\r\nCSeq: ") && name != "insuf" {
			t.Errorf("%s: rejection without the request's CSeq:\n%s", name, res)
		}
	}
}

// TestRFC4475WsinvEcho: the answer to wsinv (RFC 4475 §3.1.1.1) carries one To tag, the
// request's own, and every Via as the request spelled it (unfolded), the top one with
// received added (RFC 3261 §18.2.1, §8.2.6.2).
func TestRFC4475WsinvEcho(t *testing.T) {
	u := newUA(t)
	msg, err := os.ReadFile(filepath.Join(tortureDir, "wsinv.dat"))
	if err != nil {
		t.Fatal(err)
	}
	res := firstAnswer(t, u.Addr("tcp"), msg)
	if statusOf(res) != "SIP/2.0 404" {
		t.Fatalf("wsinv answered:\n%s", res)
	}
	var to string
	var vias []string
	for _, l := range strings.Split(res, "\r\n") {
		name, v, _ := strings.Cut(l, ": ")
		switch name {
		case "To":
			to = v
		case "Via":
			vias = append(vias, v)
		}
	}
	if n := strings.Count(to, "tag"); n != 1 || !strings.Contains(to, "tag    = 1918181833n") {
		t.Errorf("To of the answer has %d tags, want the request's one: %q", n, to)
	}
	wantVias := []string{
		"SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw;received=127.0.0.1",
		"SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239",
	}
	if strings.Join(vias, "\n") != strings.Join(wantVias, "\n") {
		t.Errorf("Via of the answer:\n%s\nwant\n%s", strings.Join(vias, "\n"), strings.Join(wantVias, "\n"))
	}
}
