package sipua

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// rxResponse is a response as it arrived.
type rxResponse struct {
	res *sip.Response
	raw []byte
}

// clientTx is a non-INVITE client transaction (RFC 3261 §17.1.2), matched
// by the branch of the top Via and the CSeq method (§17.1.3).
type clientTx struct {
	method string
	rx     chan rxResponse
}

const txShards = 32

// txTable holds the client transactions in flight, sharded to keep lock
// contention low with thousands of concurrent transactions.
type txTable struct {
	seed   maphash.Seed
	shards [txShards]struct {
		mu sync.Mutex
		m  map[string]*clientTx
	}
}

func (t *txTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string]*clientTx)
	}
}

func (t *txTable) shard(branch string) int {
	return int(maphash.String(t.seed, branch) % txShards)
}

func (t *txTable) add(branch string, tx *clientTx) {
	s := &t.shards[t.shard(branch)]
	s.mu.Lock()
	s.m[branch] = tx
	s.mu.Unlock()
}

func (t *txTable) remove(branch string) {
	s := &t.shards[t.shard(branch)]
	s.mu.Lock()
	delete(s.m, branch)
	s.mu.Unlock()
}

func (t *txTable) get(branch string) *clientTx {
	s := &t.shards[t.shard(branch)]
	s.mu.Lock()
	tx := s.m[branch]
	s.mu.Unlock()
	return tx
}

// failAll is called on Close; waiting transactions notice through u.done.
func (t *txTable) failAll(error) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// handleResponse hands a response to its transaction. Responses that match
// none (late retransmissions, strays) are dropped, as RFC 3261 §18.1.2
// allows for a UAC core without a matching transaction.
func (u *UA) handleResponse(res *sip.Response, raw []byte) {
	via := res.Via()
	cseq := res.CSeq()
	if via == nil || cseq == nil {
		return
	}
	branch, _ := via.Params.Get("branch")
	tx := u.txs.get(branch)
	if tx == nil || string(cseq.MethodName) != tx.method {
		u.proxyResponse(res, branch)
		return
	}
	select {
	case tx.rx <- rxResponse{res: res, raw: raw}:
	default: // a flood of retransmissions; the waiter has enough
	}
}

// path is where a request goes: a UDP destination through our listener or
// a stream connection.
type path struct {
	transport string
	udp       *udpListener
	dst       *net.UDPAddr
	sc        *streamConn
	local     net.Addr // our socket's address, for Via/Contact
	remote    string   // "ip:port" of the next hop
}

func (p *path) send(b []byte) error {
	if p.sc != nil {
		return p.sc.write(b)
	}
	return p.udp.writeTo(b, p.dst)
}

func (p *path) reliable() bool { return p.sc != nil }

// exchange is one finished client transaction.
type exchange struct {
	res      *sip.Response
	raw      []byte
	bytesIn  int
	bytesOut int
}

// transact runs a non-INVITE client transaction: send, retransmit over UDP
// with Timer E (T1 doubling to T2, then T2 after a provisional response,
// RFC 3261 §17.1.2.2), give up at Timer F (the UA's TransactionTimeout) or
// when ctx ends. The returned exchange carries the byte counts even on
// error.
func (u *UA) transact(ctx context.Context, p *path, branch, method string, req []byte) (exchange, error) {
	var ex exchange
	tx := &clientTx{method: method, rx: make(chan rxResponse, 4)}
	u.txs.add(branch, tx)
	defer u.txs.remove(branch)

	if err := sendable(ctx, method, p); err != nil {
		return ex, err
	}
	if err := p.send(req); err != nil {
		return ex, fmt.Errorf("sipua: send %s to %s/%s: %w", method, p.transport, p.remote, err)
	}
	ex.bytesOut += len(req)

	now := time.Now()
	deadline := now.Add(u.timeout)
	interval := timerT1
	nextE := now.Add(interval)
	if p.reliable() {
		nextE = time.Time{}
	}
	next := func() time.Duration {
		d := time.Until(deadline)
		if !nextE.IsZero() {
			d = min(d, time.Until(nextE))
		}
		return max(d, 0)
	}
	timer := time.NewTimer(next())
	defer timer.Stop()
	var closed <-chan struct{}
	if p.sc != nil {
		closed = p.sc.closed
	}
	for {
		select {
		case r := <-tx.rx:
			ex.bytesIn += len(r.raw)
			if r.res.StatusCode < 200 {
				if !nextE.IsZero() {
					interval = timerT2
				}
				continue
			}
			ex.res, ex.raw = r.res, r.raw
			return ex, nil
		case <-timer.C:
			if !time.Now().Before(deadline) {
				return ex, u.timeoutError(method, p, now)
			}
			if !nextE.IsZero() && !time.Now().Before(nextE) {
				if err := sendable(ctx, method, p); err != nil {
					return ex, err
				}
				if err := p.send(req); err != nil {
					return ex, fmt.Errorf("sipua: resend %s to %s/%s: %w", method, p.transport, p.remote, err)
				}
				ex.bytesOut += len(req)
				interval = min(2*interval, timerT2)
				nextE = time.Now().Add(interval)
			}
			timer.Reset(next())
		case <-closed:
			return ex, fmt.Errorf("sipua: %s to %s/%s: connection closed before a final response", method, p.transport, p.remote)
		case <-u.done:
			return ex, ErrClosed
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return ex, u.timeoutError(method, p, now)
			}
			return ex, fmt.Errorf("sipua: %s to %s/%s: %w", method, p.transport, p.remote, ctx.Err())
		}
	}
}

// sendable refuses a transmission once ctx has ended, checked by the clock itself rather
// than by ctx.Done: after the process was paused (SIGSTOP), the retransmission timer and the
// context's deadline are both due and select would pick either. A caller that may only send
// while a lease holds (the cluster fence) bounds ctx by the lease, and nothing leaves after it.
func sendable(ctx context.Context, method string, p *path) error {
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("sipua: %s to %s/%s not sent: %w", method, p.transport, p.remote, context.DeadlineExceeded)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sipua: %s to %s/%s not sent: %w", method, p.transport, p.remote, err)
	}
	return nil
}

func (u *UA) timeoutError(method string, p *path, since time.Time) error {
	if v, ok := u.parseErrs.Load(p.remote); ok && !v.(parseFailure).at.Before(since) {
		return fmt.Errorf("%w: %s to %s/%s (unparsable message from it: %s)", ErrTimeout, method, p.transport, p.remote, v.(parseFailure).err)
	}
	return fmt.Errorf("%w: %s to %s/%s", ErrTimeout, method, p.transport, p.remote)
}

// randHex returns n random bytes as hex, for branches, tags and cnonces.
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newBranch returns a branch with the RFC 3261 §8.1.1.7 magic cookie.
func newBranch() string { return sip.RFC3261BranchMagicCookie + randHex(10) }
