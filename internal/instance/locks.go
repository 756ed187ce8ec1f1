package instance

import (
	"hash/maphash"
	"sync"
)

// lockStripes is the number of selector locks. Selectors hash onto them, so memory stays
// fixed (32 KiB) at any number of instances; two selectors share a lock only by collision: with
// 64 registrations in flight, one waits for an unrelated other about 1.5 % of the time.
const lockStripes = 4096

// selectorLocks serialise what changes whether a selector is held and what is stored for it:
// a registration from its lookup to its attach (so two registrations of one selector act one
// after the other: the second sees the first's device and must prove it owns the selector),
// and the removal of a forgotten instance (so a registration either comes before it and is
// forgotten with it, or after it and makes a new instance; never is its row deleted under it).
// No lock covers all selectors: registrations of different selectors never wait for each other.
//
// Lock order: a selector's lock before that instance's mu. A worker already holding an
// instance's mu takes the selector's lock with lockHeld.
type selectorLocks struct {
	seed    maphash.Seed
	stripes [lockStripes]sync.Mutex
}

func newSelectorLocks() *selectorLocks { return &selectorLocks{seed: maphash.MakeSeed()} }

func (l *selectorLocks) of(selector string) *sync.Mutex {
	return &l.stripes[maphash.String(l.seed, selector)%lockStripes]
}

// lockHeld takes inst's selector lock for a caller that holds inst.mu. If the lock is taken, it
// marks inst busy (so other workers leave its events pending), lets go of inst.mu, waits for
// the selector lock and takes inst.mu again: whatever a registration changed meanwhile, the
// caller must check again. It returns the selector lock, which the caller unlocks.
func (l *selectorLocks) lockHeld(inst *Instance) *sync.Mutex {
	mu := l.of(inst.selector)
	if mu.TryLock() {
		return mu
	}
	busy := inst.busy
	inst.busy = true
	inst.mu.Unlock()
	mu.Lock()
	inst.mu.Lock()
	inst.busy = busy
	return mu
}
