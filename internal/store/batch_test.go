package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// holdWriter takes the write connection in a transaction, so that registrations queue up
// behind it; the returned function lets them go.
func holdWriter(t *testing.T, db *DB) (release func()) {
	t.Helper()
	// A writer that finished the set-up's registrations may still be on its way out: wait
	// for it, so that the next registration starts a writer of its own (see waitTaken).
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.regs.mu.Lock()
		writing := db.regs.writing
		db.regs.mu.Unlock()
		if !writing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not finish")
		}
		time.Sleep(time.Millisecond)
	}
	tx, err := db.write.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback() }
}

// waitTaken waits until the writer took everything queued (and waits for the connection).
func waitTaken(t *testing.T, db *DB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.regs.mu.Lock()
		taken := db.regs.writing && len(db.regs.queue) == 0
		db.regs.mu.Unlock()
		if taken {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not take the first registration")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitQueued waits until n registrations wait in the queue (the writer took the first one
// and waits for the connection).
func waitQueued(t *testing.T, db *DB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		db.regs.mu.Lock()
		q := len(db.regs.queue)
		db.regs.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d registrations queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type putResult struct {
	inst    *Instance
	devices int
	err     error
}

// putAsync starts a PutRegistrationCounted and returns where its result arrives.
func putAsync(db *DB, inst *Instance, dev *Device, nonce string) <-chan putResult {
	ch := make(chan putResult, 1)
	go func() {
		n, err := db.PutRegistrationCounted(context.Background(), inst, dev, nonce, t0)
		ch <- putResult{inst, n, err}
	}()
	return ch
}

// Registrations queued together are written in one transaction, and each behaves as if
// written alone and in order: a replayed nonce fails alone, a second registration of the same
// selector sees the first's row (same Contact and Call-ID) and device, and the others commit.
func TestBatchedRegistrationsBehaveAsSerial(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b testBackend) {
		db, _ := b.openTest(t)
		mustPut(t, db, sampleInstance("0f00"), sampleDevice("0f00"), "used")

		release := holdWriter(t, db)
		first := putAsync(db, sampleInstance("0f01"), sampleDevice("0f01"), "n0") // taken alone, waits
		waitTaken(t, db)
		var chans []<-chan putResult
		a := sampleInstance("0aaa")
		chans = append(chans, putAsync(db, a, sampleDevice("0aaa"), "a1"))
		waitQueued(t, db, 1)
		a2 := sampleInstance("0aaa")
		a2.ContactUser, a2.CallID = "other-contact", "other-call-id" // ignored: the row exists by then
		d2 := sampleDevice("0aaa")
		d2.ID = "dev-2"
		chans = append(chans, putAsync(db, a2, d2, "a2"))
		waitQueued(t, db, 2)
		chans = append(chans, putAsync(db, sampleInstance("0aaa"), sampleDevice("0aaa"), "a1")) // same nonce as the first
		waitQueued(t, db, 3)
		chans = append(chans, putAsync(db, sampleInstance("0f00"), sampleDevice("0f00"), "used")) // replay of a stored one
		waitQueued(t, db, 4)
		for i := range 4 {
			chans = append(chans, putAsync(db, sampleInstance(fmt.Sprintf("0b0%d", i)), sampleDevice(fmt.Sprintf("0b0%d", i)), "b"))
		}
		waitQueued(t, db, 8)
		release()

		if r := <-first; r.err != nil {
			t.Fatalf("first: %v", r.err)
		}
		var res []putResult
		for _, ch := range chans {
			res = append(res, <-ch)
		}
		if res[0].err != nil || res[0].devices != 1 {
			t.Errorf("0aaa first: %d devices, %v", res[0].devices, res[0].err)
		}
		if res[1].err != nil || res[1].devices != 2 || res[1].inst.ContactUser != a.ContactUser || res[1].inst.CallID != a.CallID {
			t.Errorf("0aaa second: %d devices, contact %q call-id %q (first %q %q), %v; want 2 devices and the first's identity",
				res[1].devices, res[1].inst.ContactUser, res[1].inst.CallID, a.ContactUser, a.CallID, res[1].err)
		}
		for i, name := range map[int]string{2: "nonce reused within the batch", 3: "nonce of a stored registration"} {
			if !errors.Is(res[i].err, ErrReplay) {
				t.Errorf("%s: %v, want ErrReplay", name, res[i].err)
			}
		}
		for i := 4; i < 8; i++ {
			if res[i].err != nil {
				t.Errorf("%s: %v", res[i].inst.Selector, res[i].err)
			} else if _, err := db.Instance(context.Background(), res[i].inst.Selector); err != nil {
				t.Errorf("%s acknowledged but not stored: %v", res[i].inst.Selector, err)
			}
		}
		devs, err := db.Devices(context.Background(), "0aaa")
		if err != nil || len(devs) != 2 {
			t.Errorf("0aaa devices %v, %v; want dev-1 and dev-2", devs, err)
		}
		db.regs.mu.Lock()
		sizes := append([]int(nil), db.regs.sizes...)
		db.regs.mu.Unlock()
		if len(sizes) != 1 || sizes[0] != 8 {
			t.Errorf("batches written %v, want one of 8 (the first registration went alone)", sizes)
		}
	})
}

// When a batch cannot commit, nothing of it is stored and every registration is written again
// alone: each is answered by its own outcome, none is lost or acknowledged unstored.
func TestFailedBatchIsWrittenOneByOne(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b testBackend) {
		db, _ := b.openTest(t)
		mustPut(t, db, sampleInstance("0c00"), sampleDevice("0c00"), "used")
		db.regs.mu.Lock()
		db.regs.failCommit = func() error { return errors.New("disk I/O error") }
		db.regs.mu.Unlock()

		release := holdWriter(t, db)
		first := putAsync(db, sampleInstance("0c01"), sampleDevice("0c01"), "n")
		waitTaken(t, db)
		var chans []<-chan putResult
		for i := range 5 {
			chans = append(chans, putAsync(db, sampleInstance(fmt.Sprintf("0d0%d", i)), sampleDevice(fmt.Sprintf("0d0%d", i)), "n"))
		}
		chans = append(chans, putAsync(db, sampleInstance("0c00"), sampleDevice("0c00"), "used"))
		waitQueued(t, db, 6)
		release()
		if r := <-first; r.err != nil {
			t.Fatal(r.err)
		}
		for i, ch := range chans {
			r := <-ch
			if i == 5 {
				if !errors.Is(r.err, ErrReplay) {
					t.Errorf("replay in a failed batch: %v, want ErrReplay", r.err)
				}
				continue
			}
			if r.err != nil {
				t.Errorf("%s: %v", r.inst.Selector, r.err)
				continue
			}
			if _, err := db.Instance(context.Background(), r.inst.Selector); err != nil {
				t.Errorf("%s acknowledged but not stored: %v", r.inst.Selector, err)
			}
		}
		db.regs.mu.Lock()
		sizes := db.regs.sizes
		db.regs.mu.Unlock()
		if len(sizes) != 1 || sizes[0] != 6 {
			t.Errorf("batches tried %v, want one of 6 (then one by one)", sizes)
		}
	})
}

// A statement that fails for one registration of a batch (other than a replayed nonce, which
// writes nothing) fails the batch: its transaction, holding part of that registration, is not
// committed, and every registration is written again alone and answered by its own outcome.
func TestStatementFailureInBatchWritesOneByOne(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b testBackend) {
		db, _ := b.openTest(t)
		mustPut(t, db, sampleInstance("0c00"), sampleDevice("0c00"), "used")
		db.regs.mu.Lock()
		db.regs.failExec = func(sel string) error {
			if sel == "0d02" {
				return errors.New("constraint failed")
			}
			return nil
		}
		db.regs.mu.Unlock()

		release := holdWriter(t, db)
		first := putAsync(db, sampleInstance("0c01"), sampleDevice("0c01"), "n")
		waitTaken(t, db)
		var chans []<-chan putResult
		for i := range 5 {
			chans = append(chans, putAsync(db, sampleInstance(fmt.Sprintf("0d0%d", i)), sampleDevice(fmt.Sprintf("0d0%d", i)), "n"))
			waitQueued(t, db, i+1)
		}
		chans = append(chans, putAsync(db, sampleInstance("0c00"), sampleDevice("0c00"), "used"))
		waitQueued(t, db, 6)
		release()
		if r := <-first; r.err != nil {
			t.Fatal(r.err)
		}
		for i, ch := range chans {
			r := <-ch
			if i == 5 {
				if !errors.Is(r.err, ErrReplay) {
					t.Errorf("replay: %v, want ErrReplay", r.err)
				}
				continue
			}
			// Written alone, 0d02 meets no injected failure: all five are stored.
			if r.err != nil {
				t.Errorf("%s: %v", r.inst.Selector, r.err)
			} else if _, err := db.Instance(context.Background(), r.inst.Selector); err != nil {
				t.Errorf("%s acknowledged but not stored: %v", r.inst.Selector, err)
			}
		}
		db.regs.mu.Lock()
		sizes := append([]int(nil), db.regs.sizes...)
		db.regs.mu.Unlock()
		if len(sizes) != 0 {
			t.Errorf("batches committed %v, want none (the failed one is written one by one)", sizes)
		}
		if got, err := db.CountInstances(context.Background()); err != nil || got != 7 {
			t.Errorf("%d instances stored (%v), want 7", got, err)
		}
	})
}

// A caller whose context ended before its registration was written gets the context's error,
// and nothing of it is stored.
func TestCancelledRegistrationNotStored(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b testBackend) {
		db, _ := b.openTest(t)
		release := holdWriter(t, db)
		first := putAsync(db, sampleInstance("0e01"), sampleDevice("0e01"), "n")
		waitTaken(t, db)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := db.PutRegistrationCounted(ctx, sampleInstance("0e02"), sampleDevice("0e02"), "n", t0)
			done <- err
		}()
		waitQueued(t, db, 1)
		cancel()
		release()
		if r := <-first; r.err != nil {
			t.Fatal(r.err)
		}
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled registration: %v, want context.Canceled", err)
		}
		if _, err := db.Instance(context.Background(), "0e02"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("cancelled registration stored: %v", err)
		}
	})
}

// Many concurrent registrations are all acknowledged and all stored (how many shared a
// transaction depends on the scheduler, so it is only logged).
func TestConcurrentRegistrationsGroupCommit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b testBackend) {
		db, _ := b.openTest(t)
		const n = 300
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sel := fmt.Sprintf("%04x", 0x1000+i)
				errs[i] = db.PutRegistration(context.Background(), sampleInstance(sel), sampleDevice(sel), "n", t0)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("registration %d: %v", i, err)
			}
		}
		if got, err := db.CountInstances(context.Background()); err != nil || got != n {
			t.Fatalf("%d instances stored (%v), want %d", got, err, n)
		}
		db.regs.mu.Lock()
		batches := len(db.regs.sizes)
		db.regs.mu.Unlock()
		t.Logf("%d registrations in %d batched transactions (plus those written alone)", n, batches)
	})
}
