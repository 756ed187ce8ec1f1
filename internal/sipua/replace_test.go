package sipua_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

// TestKamailioReplaceAddr: a REGISTER with ReplaceAddr moves a binding from one UA's Contact to
// another's in one challenged cycle at the real Kamailio: afterwards the AOR is bound at the new
// Contact only. Without ReplaceAddr the same REGISTER leaves both Contacts bound (the control:
// the removal is ReplaceAddr's doing, not the registrar's).
func TestKamailioReplaceAddr(t *testing.T) {
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	old := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 5 * time.Second })
	nu := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 5 * time.Second })
	users := k.Users(2)
	for i, replace := range []bool{true, false} {
		usr := users[i]
		b := kamBinding(k, usr, "udp")
		res, err := old.Register(context.Background(), b)
		if err != nil || res.Status != 200 {
			t.Fatalf("%s: first REGISTER: %+v %v", usr.Name, res, err)
		}
		oldURI := fmt.Sprintf("sip:ct%s@%s;transport=udp", usr.Name, old.Addr("udp"))
		if cs := k.Contacts(t, usr.Name); len(cs) != 1 || cs[0].URI != oldURI {
			t.Fatalf("%s: contacts %+v, want %s", usr.Name, cs, oldURI)
		}

		// The new owner: same Call-ID, a higher CSeq (RFC 3261 §10.3 step 7).
		b.CSeq = res.CSeq + 100
		if replace {
			b.ReplaceAddr = old.Addr("udp")
		}
		res, err = nu.Register(context.Background(), b)
		if err != nil || res.Status != 200 || res.Expires != 300 {
			t.Fatalf("%s: moving REGISTER: %+v %v", usr.Name, res, err)
		}
		newURI := fmt.Sprintf("sip:ct%s@%s;transport=udp", usr.Name, nu.Addr("udp"))
		cs := k.Contacts(t, usr.Name)
		got := map[string]bool{}
		for _, c := range cs {
			got[c.URI] = true
		}
		switch {
		case replace && (len(cs) != 1 || !got[newURI]):
			t.Fatalf("%s: with ReplaceAddr: contacts %+v, want only %s", usr.Name, cs, newURI)
		case !replace && (len(cs) != 2 || !got[newURI] || !got[oldURI]):
			t.Fatalf("%s: without ReplaceAddr: contacts %+v, want %s and %s", usr.Name, cs, newURI, oldURI)
		}
	}
}

// TestReplaceAddrInvalid: a ReplaceAddr that is not host:port, or would inject a header, is
// refused before anything is sent.
func TestReplaceAddrInvalid(t *testing.T) {
	u := newUA(t)
	for _, addr := range []string{"no-port", "1.2.3.4:5060\r\nX: y", "a@b:5060", "[::1]:"} {
		b := sipua.Binding{User: "u", Domain: "example.test", Proxy: "127.0.0.1", Port: 9, Transport: "udp",
			ContactUser: "c", CallID: "id", Expires: 60, ReplaceAddr: addr}
		if _, err := u.Register(context.Background(), b); err == nil {
			t.Errorf("ReplaceAddr %q: no error", addr)
		}
	}
}
