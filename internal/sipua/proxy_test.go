package sipua_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sipis/sipis/internal/sipua"
)

// TestSendRequest: a BYE that sipis sends by itself goes to the first Route entry that is not
// ours (loose routing, RFC 3261 §16.12), carries our Via, the given dialog identifiers and a
// fresh Max-Forwards; its 200 reaches OnResponse.
func TestSendRequest(t *testing.T) {
	u := newUA(t)
	p := newRawPeer(t)
	got := make(chan *sipua.Response, 1)
	_, err := u.SendRequest(context.Background(), sipua.DialogRequest{
		Method: "BYE", RequestURI: "sip:caller@192.0.2.7:5060",
		Route: []string{"<sip:127.0.0.1:1;transport=udp;lr;sipis>", "<sip:" + p.conn.LocalAddr().String() + ";lr>"},
		From:  "<sip:device@sipis>;tag=dev", To: "<sip:caller@example.org>;tag=caller", CallID: "c1", CSeq: 9,
		OnResponse: func(r *sipua.Response) { got <- r },
	})
	if err != nil {
		t.Fatal(err)
	}
	req := p.read()
	if !strings.HasPrefix(req, "BYE sip:caller@192.0.2.7:5060 SIP/2.0\r\n") || strings.Contains(req, ";sipis") ||
		!strings.Contains(req, "CSeq: 9 BYE") || !strings.Contains(req, "tag=dev") || !strings.Contains(req, "Max-Forwards: 70") {
		t.Fatalf("BYE:\n%s", req)
	}
	// Answer with every Via copied.
	var vias []string
	for _, l := range strings.Split(req, "\r\n") {
		if strings.HasPrefix(l, "Via: ") {
			vias = append(vias, l)
		}
	}
	p.send(u.Addr("udp"), "SIP/2.0 200 OK\r\n"+strings.Join(vias, "\r\n")+
		"\r\nFrom: <sip:device@sipis>;tag=dev\r\nTo: <sip:caller@example.org>;tag=caller\r\nCall-ID: c1\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n")
	if r := <-got; r.Status != 200 || r.Local() {
		t.Fatalf("response %+v", r)
	}
}

// TestSendRequestBadInput: malformed requests are refused with an error naming the field,
// and nothing is sent.
func TestSendRequestBadInput(t *testing.T) {
	u := newUA(t)
	ok := sipua.DialogRequest{Method: "BYE", RequestURI: "sip:a@127.0.0.1:9", From: "<sip:a@b>;tag=1", To: "<sip:c@d>;tag=2", CallID: "x", CSeq: 1}
	for name, mod := range map[string]func(*sipua.DialogRequest){
		"method":     func(r *sipua.DialogRequest) { r.Method = "INVITE" },
		"From":       func(r *sipua.DialogRequest) { r.From = "" },
		"CallID":     func(r *sipua.DialogRequest) { r.CallID = "x\r\nEvil: 1" },
		"Route":      func(r *sipua.DialogRequest) { r.Route = []string{" "} },
		"RequestURI": func(r *sipua.DialogRequest) { r.RequestURI = "" },
	} {
		r := ok
		mod(&r)
		_, err := u.SendRequest(context.Background(), r)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(name)) {
			t.Errorf("%s: error %v", name, err)
		}
	}
}
