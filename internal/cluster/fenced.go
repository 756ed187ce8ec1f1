package cluster

import (
	"context"
	"errors"

	"github.com/sipis/sipis/internal/instance"
	"github.com/sipis/sipis/internal/store"
)

// FencedStore returns s with its SaveStates fenced by epoch: every state update the manager's
// persister writes names the epoch this node holds the instance at, and an update for an
// instance that has since moved (a newer epoch, another owner) changes nothing. Those instances
// are released from the manager at once, without sending anything for them: the write told this
// node it lost them, possibly before its own renewal did.
func (c *Cluster) FencedStore(s instance.Store) instance.Store { return fencedStore{s, c} }

type fencedStore struct {
	instance.Store
	c *Cluster
}

func (f fencedStore) SaveStates(ctx context.Context, ups []store.StateUpdate) error {
	if len(ups) == 0 {
		return nil
	}
	fenced := make([]store.FencedUpdate, 0, len(ups))
	var stale []string
	for _, u := range ups {
		e := f.c.Epoch(u.Selector)
		if e == 0 {
			// Made here by a registration since the epochs were read: learn its epoch once.
			node, epoch, err := f.c.db.OwnerOf(ctx, u.Selector)
			switch {
			case errors.Is(err, store.ErrNotFound):
				continue // deleted meanwhile, like SaveStates skips it
			case err != nil:
				return err
			case node != f.c.db.Node():
				stale = append(stale, u.Selector)
				continue
			}
			f.c.setEpoch(u.Selector, epoch)
			e = epoch
		}
		fenced = append(fenced, store.FencedUpdate{StateUpdate: u, Epoch: e})
	}
	more, err := f.c.db.SaveStatesFenced(ctx, fenced)
	if err != nil {
		return err
	}
	stale = append(stale, more...)
	if len(stale) > 0 {
		f.c.lostByWrite(stale)
	}
	return nil
}
