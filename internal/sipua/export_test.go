package sipua

import (
	"net"
	"time"
)

// NewWithTimers is New with the server transactions' T1 and T2 shortened, so that tests see
// a whole Timer G/H cycle (RFC 3261 §17.2.1) in well under a second.
func NewWithTimers(cfg Config, t1, t2 time.Duration) (*UA, error) {
	u, err := New(cfg)
	if err != nil {
		return nil, err
	}
	u.setTimers(t1, t2)
	return u, nil
}

// StartOnConn starts u with one UDP listener reading from and writing to pc (an in-memory
// socket in the transaction tests) instead of binding Config.Listeners, and the sweeper of
// expired server transactions.
func StartOnConn(u *UA, pc interface {
	ReadFromUDP(b []byte) (int, *net.UDPAddr, error)
	WriteToUDP(b []byte, addr *net.UDPAddr) (int, error)
	LocalAddr() net.Addr
	Close() error
}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.started = true
	ul := &udpListener{ua: u, conn: pc}
	u.udp = append(u.udp, ul)
	u.wg.Add(2)
	go ul.serve()
	go u.sweep()
}
