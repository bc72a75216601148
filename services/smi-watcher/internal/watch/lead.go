package watch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// Lead is one term as the bucket's writer, for an instance that holds the
// lease (or runs without leader election). It waits for the caches, then
// takes over:
//
//  1. it forgets what it knew about the bucket and primes the digests of
//     every current key (another writer may have written in between);
//  2. it starts a new epoch, the previous marker's epoch plus one, claims
//     it as the bucket's fence (bus.Store.Claim: from then on the server
//     refuses the writes of any older epoch), and writes the sync marker
//     in state LISTING;
//  3. it reconciles every published object of its caches and every key in
//     the bucket through the workqueue: missing or changed keys are written,
//     stale keys deleted, and unchanged keys cost nothing;
//  4. it writes the marker in state SYNCED with the object counts.
//
// Then it keeps the bucket following the informers until ctx ends. Lead
// returns nil when ctx ends, or an error if the takeover failed.
func (w *Watcher) Lead(ctx context.Context) error {
	defer w.stopLeading()
	if !w.waitForCacheSync(ctx) {
		return fmt.Errorf("lead: informer caches did not sync: %w", ctx.Err())
	}
	start := time.Now()
	st := w.o.Store
	st.Forget()
	keys, err := st.Prime(ctx)
	if err != nil {
		return fmt.Errorf("lead: %w", err)
	}
	var prev meshv1.SyncMarker
	if _, err := st.Get(ctx, layout.SyncKey, &prev); err != nil && !errors.Is(err, bus.ErrNotFound) {
		return fmt.Errorf("lead: read the previous sync marker: %w", err)
	}
	epoch := prev.GetEpoch() + 1
	// The epoch is this term's fence: once a newer watcher claims its own,
	// the server refuses every write of this one (bus.ErrFenced), so a
	// deposed watcher that stalled past its lease writes nothing.
	if err := st.Claim(ctx, epoch, w.o.WatcherID); err != nil {
		return fmt.Errorf("lead: claim epoch %d: %w", epoch, err)
	}
	if _, err := st.Put(ctx, layout.SyncKey, w.marker(epoch, meshv1.SyncState_SYNC_STATE_LISTING, nil)); err != nil {
		return fmt.Errorf("lead: write the sync marker: %w", err)
	}
	log := w.log.WithField("epoch", epoch)
	log.WithField("keys", len(keys)).Info("leading: reconciling the bucket")

	// From here on, informer events are queued; everything before is
	// covered by listing the caches below.
	pending := map[Item]struct{}{}
	done := make(chan struct{})
	w.mu.Lock()
	w.active, w.epoch = true, epoch
	lost := make(chan struct{})
	w.fenceLost = lost
	w.present = make(map[string]string, len(keys))
	for _, k := range keys {
		if k == layout.SyncKey {
			continue
		}
		o, err := layout.ParseObserved(k)
		if err != nil {
			continue // not a key this watcher writes; leave it
		}
		w.present[k] = o.Kind
		pending[Item{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}] = struct{}{}
	}
	w.mu.Unlock()
	for _, s := range w.srcs.Load().order {
		for _, obj := range s.informer.GetStore().List() {
			if it, ok := w.itemOf(s, obj); ok {
				pending[it] = struct{}{}
			}
		}
	}
	w.mu.Lock()
	if len(pending) == 0 {
		close(done)
	} else {
		w.pending, w.pendingOK = pending, done
	}
	items := make([]Item, 0, len(pending))
	for it := range pending {
		items = append(items, it)
	}
	w.mu.Unlock()
	for _, it := range items {
		w.queue.Add(it)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil
	case <-lost:
		return errClaimLost
	}
	counts := w.counts()
	if _, err := st.Put(ctx, layout.SyncKey, w.marker(epoch, meshv1.SyncState_SYNC_STATE_SYNCED, counts)); err != nil {
		return fmt.Errorf("lead: write the sync marker: %w", err)
	}
	w.m.syncDuration.Record(ctx, time.Since(start).Seconds())
	log.WithFields(logrus.Fields{"object_counts": counts, "duration": time.Since(start).String()}).Info("leading: bucket synced")
	// Check the claim now and then: a watcher with nothing to write would
	// otherwise never notice that the bucket was lost.
	tick := time.NewTicker(claimCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			return errClaimLost
		case <-tick.C:
			if gone, err := st.ClaimLost(ctx); err == nil && gone {
				log.Warn("the bucket lost this term's claim (deleted, recreated or JetStream's store lost): starting a new epoch")
				return errClaimLost
			}
		}
	}
}

// claimCheckInterval is how often a leading watcher checks that its claim
// of the bucket is still there.
const claimCheckInterval = 2 * time.Second

// errClaimLost ends a term whose claim of the bucket is gone.
var errClaimLost = errors.New("the bucket lost this term's claim (deleted and recreated?); a new epoch starts")

// itemOf is the item of a cached object when the object is published; the
// takeover reconciles only those (and the keys already in the bucket).
func (w *Watcher) itemOf(s *source, obj any) (Item, bool) {
	var it Item
	switch o := obj.(type) {
	case interface {
		GetNamespace() string
		GetName() string
	}:
		it = Item{Kind: s.kind, Namespace: o.GetNamespace(), Name: o.GetName()}
	default:
		return it, false
	}
	if s.kind == layout.KindMeshConfig && it.Namespace != w.o.ControlPlaneNamespace {
		return it, false
	}
	m, err := w.desired(it)
	return it, err == nil && m != nil
}

// stopLeading ends a term: events are no longer queued or written, and what
// the store knew about the bucket is dropped, since the next leader writes.
func (w *Watcher) stopLeading() {
	w.mu.Lock()
	w.active = false
	w.fenceLost = nil
	w.pending, w.pendingOK = nil, nil
	w.eventTimes = map[Item]time.Time{}
	w.mu.Unlock()
	w.o.Store.Unclaim()
	w.o.Store.Forget()
}

func (w *Watcher) marker(epoch uint64, state meshv1.SyncState, counts map[string]uint64) *meshv1.SyncMarker {
	return &meshv1.SyncMarker{
		Epoch:        epoch,
		State:        state,
		ObjectCounts: counts,
		Time:         timestamppb.Now(),
		WatcherId:    w.o.WatcherID,
	}
}
