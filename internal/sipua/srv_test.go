package sipua_test

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/sipis/sipis/internal/siptest"
	"github.com/sipis/sipis/internal/sipua"
)

// dnsServer is a tiny DNS responder on loopback: SRV questions get one record pointing at
// srvTarget:srvPort, A questions for srvTarget get 127.0.0.1, anything else no answer.
type dnsServer struct {
	conn      net.PacketConn
	srvTarget string
	srvPort   uint16
	mu        sync.Mutex
	asked     []string
}

const (
	typeA   = 1
	typeSRV = 33
)

func newDNSServer(t *testing.T, target string, port int) *dnsServer {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{conn: c, srvTarget: target, srvPort: uint16(port)}
	go d.serve()
	t.Cleanup(func() { c.Close() })
	return d
}

// readName decodes the question's name (no compression in queries).
func readName(b []byte, off int) (string, int) {
	var labels []string
	for off < len(b) && b[off] != 0 {
		n := int(b[off])
		if off+1+n > len(b) {
			return "", len(b)
		}
		labels = append(labels, string(b[off+1:off+1+n]))
		off += 1 + n
	}
	return strings.Join(labels, "."), off + 1
}

func writeName(name string) []byte {
	var out []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		out = append(out, byte(len(l)))
		out = append(out, l...)
	}
	return append(out, 0)
}

func (d *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		name, end := readName(q, 12)
		if end+4 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[end:])
		d.mu.Lock()
		d.asked = append(d.asked, name)
		d.mu.Unlock()
		var rdata []byte
		switch {
		case qtype == typeSRV:
			rdata = binary.BigEndian.AppendUint16(nil, 10)  // priority
			rdata = binary.BigEndian.AppendUint16(rdata, 0) // weight
			rdata = binary.BigEndian.AppendUint16(rdata, d.srvPort)
			rdata = append(rdata, writeName(d.srvTarget)...)
		case qtype == typeA && strings.EqualFold(name, strings.TrimSuffix(d.srvTarget, ".")):
			rdata = []byte{127, 0, 0, 1}
		}
		resp := append([]byte(nil), q[:end+4]...) // header and question
		resp[2] = 0x81                            // response, recursion desired
		resp[3] = 0x80                            // recursion available, NOERROR
		binary.BigEndian.PutUint16(resp[4:], 1)   // one question
		binary.BigEndian.PutUint16(resp[8:], 0)
		binary.BigEndian.PutUint16(resp[10:], 0)
		if rdata != nil {
			binary.BigEndian.PutUint16(resp[6:], 1)
			resp = append(resp, 0xc0, 12) // the question's name
			resp = binary.BigEndian.AppendUint16(resp, qtype)
			resp = binary.BigEndian.AppendUint16(resp, 1) // IN
			resp = binary.BigEndian.AppendUint32(resp, 60)
			resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
			resp = append(resp, rdata...)
		} else {
			binary.BigEndian.PutUint16(resp[6:], 0)
		}
		d.conn.WriteTo(resp, from)
	}
}

// TestRegisterFindsProxyBySRV: with port 0 the proxy is found by DNS SRV (RFC 3263 §4.2),
// here _sip._udp.sipis.test → reg.sipis.test:<registrar port> → 127.0.0.1.
func TestRegisterFindsProxyBySRV(t *testing.T) {
	r := siptest.NewRegistrar(t)
	dns := newDNSServer(t, "reg.sipis.test.", r.Port())
	u := newUA(t, func(c *sipua.Config) {
		c.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "udp", dns.conn.LocalAddr().String())
		}}
	})
	b := binding(r, "srvuser")
	b.Proxy, b.Port = "sipis.test", 0
	res, err := u.Register(context.Background(), b)
	if err != nil || res.Status != 200 {
		t.Fatalf("register by SRV: %+v %v", res, err)
	}
	if len(r.Contacts("srvuser")) != 1 {
		t.Error("the registrar found by SRV holds no binding")
	}
	dns.mu.Lock()
	asked := strings.Join(dns.asked, " ")
	dns.mu.Unlock()
	if !strings.Contains(asked, "_sip._udp.sipis.test") {
		t.Errorf("no SRV question for _sip._udp.sipis.test; asked: %s", asked)
	}
}
