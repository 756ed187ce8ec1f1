package sipua_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

func kamBinding(k *siptest.Kamailio, u siptest.User, transport string) sipua.Binding {
	return sipua.Binding{
		Selector:    "k-" + u.Name,
		User:        u.Name,
		Password:    u.Password,
		Domain:      k.Domain(),
		Proxy:       k.Host(),
		Port:        k.Port(),
		Transport:   transport,
		ContactUser: "ct" + u.Name,
		CallID:      "kam-" + u.Name,
		CSeq:        1,
		Expires:     300,
	}
}

func TestKamailioRegister(t *testing.T) {
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 5 * time.Second })
	users := k.Users(50)
	results := make([]sipua.Result, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, usr := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tp := "udp"
			if i%5 == 0 {
				tp = "tcp"
			}
			results[i], errs[i] = u.Register(context.Background(), kamBinding(k, usr, tp))
		}()
	}
	wg.Wait()
	for i, usr := range users {
		res := results[i]
		if errs[i] != nil || res.Status != 200 || !res.Challenged || res.Expires != 300 {
			t.Fatalf("%s: %+v %v", usr.Name, res, errs[i])
		}
		if res.BytesIn < 300 || res.BytesOut < 300 {
			t.Errorf("%s: bytes in %d out %d", usr.Name, res.BytesIn, res.BytesOut)
		}
		tp := "udp"
		if i%5 == 0 {
			tp = "tcp"
		}
		cs := k.Contacts(t, usr.Name)
		want := fmt.Sprintf("sip:ct%s@%s;transport=%s", usr.Name, u.Addr(tp), tp)
		if len(cs) != 1 || cs[0].URI != want || cs[0].Expires <= 0 || cs[0].Expires > 300 {
			t.Fatalf("%s: contacts %+v, want %s", usr.Name, cs, want)
		}
	}

	// Unregister one: exactly that binding goes.
	b := kamBinding(k, users[7], "udp")
	b.Expires, b.CSeq = 0, results[7].CSeq
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 200 {
		t.Fatalf("unregister: %+v %v", res, err)
	}
	if cs := k.Contacts(t, users[7].Name); len(cs) != 0 {
		t.Fatalf("after unregister: %+v", cs)
	}
	for _, i := range []int{6, 8} {
		if cs := k.Contacts(t, users[i].Name); len(cs) != 1 {
			t.Fatalf("%s lost its binding: %+v", users[i].Name, cs)
		}
	}
	tr := u.Traffic()
	// 50 cycles of two transactions plus the unregistration.
	if tr.MessagesOut < 101 || tr.MessagesIn < 101 || tr.BytesIn < 100*300 || tr.BytesOut < 100*300 || tr.BytesOut > 100*2000 {
		t.Errorf("traffic %+v", tr)
	}
}

func TestKamailioWrongPassword(t *testing.T) {
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	u := newUA(t)
	b := kamBinding(k, k.Users(1)[0], "udp")
	b.Password = "nope"
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 401 || !res.Challenged {
		t.Fatalf("%+v %v", res, err)
	}
	if strings.Contains(res.Request, "nope") {
		t.Error("password in request text")
	}
}

func TestKamailioOptionsOutage(t *testing.T) {
	k := siptest.StartKamailio(t, siptest.KamailioOptions{})
	u := newUA(t, func(c *sipua.Config) { c.TransactionTimeout = 800 * time.Millisecond })
	target := "sip:" + k.Addr()
	res, err := u.Options(context.Background(), target, "udp")
	if err != nil || res.Status != 200 {
		t.Fatalf("%+v %v", res, err)
	}
	k.Stop()
	if _, err := u.Options(context.Background(), target, "udp"); !errors.Is(err, sipua.ErrTimeout) {
		t.Fatalf("stopped: err = %v", err)
	}
	k.Start()
	res, err = u.Options(context.Background(), target, "udp")
	if err != nil || res.Status != 200 {
		t.Fatalf("restarted: %+v %v", res, err)
	}
}
