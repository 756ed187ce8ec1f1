package sipua_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/sipis/sipis/internal/sipua"
)

// TestHeapPerIdleConn: connections that announce a large body and then send nothing cost the
// heap what they sent, not what they announced: the framer reads bodies as they arrive
// (60,000, within the parser's limit), and one over the limit is answered 513 and skipped
// (1,000,000, which the old framer allocated whole).
func TestHeapPerIdleConn(t *testing.T) {
	for _, announced := range []int{60000, 1000000} {
		t.Run(fmt.Sprint(announced), func(t *testing.T) { heapPerIdleConn(t, announced) })
	}
}

func heapPerIdleConn(t *testing.T, announced int) {
	const conns = 200
	u := newUA(t, func(c *sipua.Config) { c.MaxConnsPerIP, c.IdleTimeout = -1, time.Minute })
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	sent := u.Traffic().BytesIn
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	for i := range conns {
		c, err := net.Dial("tcp", u.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
		head := fmt.Sprintf("MESSAGE sip:ct-1@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKh%d\r\nMax-Forwards: 70\r\n"+
			"From: <sip:a@b>;tag=1\r\nTo: <sip:ct-1@b>\r\nCall-ID: h%d\r\nCSeq: 1 MESSAGE\r\nContent-Length: %d\r\n\r\n",
			u.Addr("tcp"), c.LocalAddr(), i, i, announced)
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		sent += int64(len(head))
	}
	// Every header section has been read by the server once its byte count says so.
	deadline := time.Now().Add(30 * time.Second)
	for u.Traffic().BytesIn < sent {
		if time.Now().After(deadline) {
			t.Fatalf("server read %d of %d bytes", u.Traffic().BytesIn, sent)
		}
		time.Sleep(5 * time.Millisecond) // polling the counter the server advances
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - int64(before)) / conns
	t.Logf("heap per idle TCP connection that announced %d bytes: %d bytes (%d connections, both ends in this process)", announced, per, conns)
	if per > 16<<10 {
		t.Fatalf("heap per idle connection %d bytes, want under 16 KiB", per)
	}
}
