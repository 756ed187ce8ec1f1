package instance

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sipis/sipis/internal/errs"
	"github.com/sipis/sipis/internal/sipua"
	"github.com/sipis/sipis/internal/store"
)

// memStore is an in-memory Store with the semantics the manager relies on.
type memStore struct {
	mu      sync.Mutex
	insts   map[string]*store.Instance
	devs    map[string]map[string]store.Device
	nonces  map[string]time.Time
	saves   int
	deleted []string
	badRows map[string]bool // selectors whose row ScanInstances reports as unusable
}

func newMemStore() *memStore {
	return &memStore{insts: map[string]*store.Instance{}, devs: map[string]map[string]store.Device{}, nonces: map[string]time.Time{}}
}

func (s *memStore) PutRegistrationCounted(_ context.Context, in *store.Instance, d *store.Device, nonce string, at time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := in.Selector + "/" + nonce
	if _, ok := s.nonces[key]; ok {
		return 0, store.ErrReplay
	}
	s.nonces[key] = at
	cp := *in
	if old := s.insts[in.Selector]; old != nil {
		cp.ContactUser, cp.CallID, cp.CSeq, cp.State, cp.Status, cp.CreatedAt = old.ContactUser, old.CallID, old.CSeq, old.State, old.Status, old.CreatedAt
		cp.ExpiresAt, cp.Off, cp.ContactAddr = old.ExpiresAt, old.Off, old.ContactAddr
	}
	s.insts[in.Selector] = &cp
	in.ContactUser, in.CallID, in.CSeq, in.State, in.Status = cp.ContactUser, cp.CallID, cp.CSeq, cp.State, cp.Status
	if s.devs[in.Selector] == nil {
		s.devs[in.Selector] = map[string]store.Device{}
	}
	s.devs[in.Selector][d.ID] = *d
	return len(s.devs[in.Selector]), nil
}

func (s *memStore) SaveStates(_ context.Context, ups []store.StateUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range ups {
		s.saves++
		if in := s.insts[u.Selector]; in != nil {
			in.State, in.Status, in.LastError, in.CSeq, in.ExpiresAt, in.Off, in.UpdatedAt = u.State, u.Status, u.LastError, u.CSeq, u.ExpiresAt, u.Off, u.At
			in.ContactAddr = u.ContactAddr
		}
	}
	return nil
}

func (s *memStore) ForEachInstance(_ context.Context, fn func(*store.Instance) error) error {
	s.mu.Lock()
	var list []store.Instance
	for _, in := range s.insts {
		list = append(list, *in)
	}
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Selector < list[j].Selector })
	for i := range list {
		if err := fn(&list[i]); err != nil {
			return err
		}
	}
	return nil
}

// ScanInstances walks the instances like ForEachInstance, in parts ranges of the sorted
// selectors, one goroutine each, with the device counts; a selector in badRows is handed to fn
// with an error wrapping store.ErrDataKey, as the store does for a password that does not open.
func (s *memStore) ScanInstances(ctx context.Context, parts int, fn func(int, *store.Instance, error) error) error {
	s.mu.Lock()
	var list []store.Instance
	for sel, in := range s.insts {
		cp := *in
		cp.Devices = len(s.devs[sel])
		list = append(list, cp)
	}
	bad := s.badRows
	s.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Selector < list[j].Selector })
	parts = max(min(parts, len(list)), 1)
	errs := make(chan error, parts)
	for p := range parts {
		go func() {
			var err error
			for i := p * len(list) / parts; i < (p+1)*len(list)/parts && err == nil; i++ {
				in := list[i]
				var rowErr error
				if bad[in.Selector] {
					in.Account.Password = ""
					rowErr = fmt.Errorf("%w: password of selector %s", store.ErrDataKey, in.Selector)
				}
				err = fn(p, &in, rowErr)
			}
			errs <- err
		}()
	}
	var first error
	for range parts {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *memStore) Instance(_ context.Context, sel string) (*store.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.insts[sel]
	if in == nil {
		return nil, store.ErrNotFound
	}
	cp := *in
	return &cp, nil
}

func (s *memStore) Devices(_ context.Context, sel string) ([]store.Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Device
	for _, d := range s.devs[sel] {
		out = append(out, d)
	}
	return out, nil
}

func (s *memStore) DeviceCounts(context.Context) (map[string]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for sel, d := range s.devs {
		out[sel] = len(d)
	}
	return out, nil
}

func (s *memStore) DeleteInstance(_ context.Context, sel string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.insts, sel)
	delete(s.devs, sel)
	s.deleted = append(s.deleted, sel)
	return nil
}

func (s *memStore) SilentInstances(_ context.Context, before time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for sel, in := range s.insts {
		if in.LastActivity.Before(before) {
			out = append(out, sel)
		}
	}
	return out, nil
}

func (s *memStore) PruneNonces(_ context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for k, at := range s.nonces {
		if at.Before(before) {
			delete(s.nonces, k)
			n++
		}
	}
	return n, nil
}

func (s *memStore) get(sel string) store.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.insts[sel]; in != nil {
		return *in
	}
	return store.Instance{}
}

// call is one REGISTER cycle the fake registrar saw.
type call struct {
	At      time.Time
	Binding sipua.Binding
}

// fakeRegistrar answers REGISTER cycles with a script per user; the default grants what was
// asked for.
type fakeRegistrar struct {
	mu       sync.Mutex
	calls    []call
	answer   map[string]func(b sipua.Binding) (sipua.Result, error)
	inFlight int
	maxIn    int
	block    chan struct{} // when set, every cycle waits on it
	cseq     map[string]uint32
}

func newFakeRegistrar() *fakeRegistrar {
	return &fakeRegistrar{answer: map[string]func(sipua.Binding) (sipua.Result, error){}, cseq: map[string]uint32{}}
}

func (f *fakeRegistrar) Register(ctx context.Context, b sipua.Binding) (sipua.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call{At: time.Now(), Binding: b})
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	ans := f.answer[b.User]
	block := f.block
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return sipua.Result{CSeq: b.CSeq + 1}, sipua.ErrTimeout
		}
	}
	if ans == nil {
		ans = grant
	}
	res, err := ans(b)
	if res.CSeq == 0 {
		res.CSeq = b.CSeq + 2 // challenged, then authenticated
	}
	res.BytesIn, res.BytesOut = 700, 900
	return res, err
}

func grant(b sipua.Binding) (sipua.Result, error) {
	return sipua.Result{Status: 200, Reason: "OK", Expires: b.Expires, Request: "REGISTER sip:x SIP/2.0", Response: "SIP/2.0 200 OK"}, nil
}

func (f *fakeRegistrar) set(user string, fn func(sipua.Binding) (sipua.Result, error)) {
	f.mu.Lock()
	f.answer[user] = fn
	f.mu.Unlock()
}

func (f *fakeRegistrar) callsFor(user string) []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []call
	for _, c := range f.calls {
		if c.Binding.User == user {
			out = append(out, c)
		}
	}
	return out
}

func (s *memStore) CheckDeviceSecret(_ context.Context, sel, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devs[sel][id]
	if !ok {
		return store.ErrNotFound
	}
	if d.Secret == "" || d.Secret != secret {
		return store.ErrSecret
	}
	return nil
}

// statusOf is the HTTP status internal/web answers a refusal of Apply or Register with (its
// errorStatus maps the kinds the same way), 0 for an error that is not a refusal.
func statusOf(err error) int {
	return map[string]int{errs.Invalid: 400, errs.Conflict: 409, errs.Forbidden: 403, errs.NotFound: 404}[errs.ErrorCode(err)]
}
