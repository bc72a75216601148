package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/xds-edge/internal/pool"
)

// target is what the feed drives: the xDS server.
type target interface {
	Stage(key string, value []byte) error
	Commit(g *meshv1.Generation) (*pool.Change, error)
	DropStaged()
	Dangling() int
	SetTrustBundle(b *meshv1.TrustBundle) error
	SetServing(ok bool)
}

// watchable is a KV bucket the feed watches.
type watchable interface {
	Watch(ctx context.Context, pattern string) (*bus.Watcher, error)
}

// feed applies KV mesh-compiled and mesh-trust to the server and decides
// readiness: the initial values of both are delivered, the latest generation
// is applied, and NATS has not been lost for longer than the threshold.
//
// A generation of a newer epoch (the compiler rewrote a lost mesh-compiled)
// replaces the whole applied state, so it is applied only from a watch that
// delivered the bucket from its start: one seen on a watch that already
// delivered a generation (which may have resumed, past the old revisions, in
// a recreated bucket, delivering only part of it) makes the feed watch the
// bucket again. From a recreated bucket until its generation is applied, and
// while the bucket holds a generation older than the applied one, the edge
// holds no current generation and is not ready.
type feed struct {
	log       *logrus.Entry
	target    target
	compiled  watchable
	trust     watchable
	connected func() bool
	threshold time.Duration
	now       func() time.Time
	// onBundle, when set, is told about every installed trust bundle.
	onBundle func(*meshv1.TrustBundle)

	mu           sync.Mutex
	compiledInit bool
	trustInit    bool
	hasBundle    bool
	latest       pool.Gen // newest generation seen
	applied      pool.Gen
	lostSince    time.Time // zero while connected
	// watchGen: the current watch of mesh-compiled delivered a generation.
	watchGen bool
	// rewatched, when set, says why mesh-compiled is being watched again
	// from the start; cleared once its current generation is applied.
	rewatched string
	// older is a generation of an older epoch than the applied one that
	// mesh-compiled holds as its current one; zero for none.
	older pool.Gen
	// dangling is the number of names the applied groups refer to whose
	// resource the edge lacks: the applied generation is not whole. An
	// edge that starts while the compiler writes the next generation's keys
	// gets the current generation's record before those keys, whose values
	// of that generation the bucket no longer holds: it cannot serve that
	// generation whole, and waits, not ready, for the next one.
	dangling int
}

// run watches both buckets until ctx ends or a watch fails.
func (f *feed) run(ctx context.Context) error {
	cw, err := f.compiled.Watch(ctx, ">")
	if err != nil {
		return err
	}
	defer func() { cw.Stop() }()
	tw, err := f.trust.Watch(ctx, layout.BundleKey)
	if err != nil {
		return err
	}
	defer func() { tw.Stop() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-cw.Events():
			if !ok {
				if !errors.Is(cw.Err(), bus.ErrBucketRecreated) {
					return cw.Ended(ctx)
				}
				// mesh-compiled was lost and declared again: watch it
				// anew. The pool keeps serving what it holds to connected
				// proxies until the compiler's new epoch arrives with
				// every key, and replaces it.
				f.log.Warn("mesh-compiled was recreated: watching it again")
				if cw, err = f.rewatch(ctx, cw, "mesh-compiled was recreated"); err != nil {
					return err
				}
				continue
			}
			if f.compiledEvent(ev) {
				if cw, err = f.rewatch(ctx, cw, "mesh-compiled started a new epoch"); err != nil {
					return err
				}
			}
		case ev, ok := <-tw.Events():
			if !ok {
				if !errors.Is(tw.Err(), bus.ErrBucketRecreated) {
					return tw.Ended(ctx)
				}
				f.log.Warn("mesh-trust was recreated: watching it again")
				tw.Stop()
				if tw, err = f.trust.Watch(ctx, layout.BundleKey); err != nil {
					return err
				}
				continue
			}
			f.trustEvent(ev)
		case <-tick.C:
		}
		f.update()
	}
}

// rewatch watches mesh-compiled again from the start, dropping the writes
// staged from the old watch: the new one delivers every key anew.
func (f *feed) rewatch(ctx context.Context, cw *bus.Watcher, why string) (*bus.Watcher, error) {
	cw.Stop()
	f.target.DropStaged()
	f.mu.Lock()
	f.watchGen, f.rewatched = false, why
	f.mu.Unlock()
	return f.compiled.Watch(ctx, ">")
}

// compiledEvent applies one mesh-compiled event. It reports whether the
// feed must watch mesh-compiled again from the start (a new epoch arrived
// on a watch that already delivered a generation).
func (f *feed) compiledEvent(ev bus.Event) (rewatch bool) {
	log := f.log.WithContext(ev.Context).WithField("key", ev.Key)
	switch {
	case ev.Kind == bus.EventInitialized:
		f.mu.Lock()
		f.compiledInit = true
		f.mu.Unlock()
		log.Info("mesh-compiled initial values delivered")
	case ev.Key == layout.GenerationKey && ev.Kind == bus.EventPut:
		var g meshv1.Generation
		if err := ev.Decode(&g); err != nil {
			log.WithError(err).Error("bad generation record")
			return false
		}
		next := pool.GenOf(&g)
		log = log.WithFields(logrus.Fields{"epoch": next.Epoch, "generation": next.Number})
		f.mu.Lock()
		applied, resumed := f.applied, f.watchGen
		f.watchGen = true
		f.mu.Unlock()
		switch {
		case applied != (pool.Gen{}) && applied.Epoch < next.Epoch && resumed:
			log.WithField("applied_epoch", applied.Epoch).Warn("mesh-compiled started a new epoch: watching it again from the start")
			return true
		case next.Epoch < applied.Epoch:
			// Only a compiler whose clock lags the one that started the
			// applied epoch writes this (see docs/ARCHITECTURE.md).
			f.mu.Lock()
			f.older = next
			f.mu.Unlock()
			log.WithField("applied_epoch", applied.Epoch).Error("mesh-compiled holds a generation of an older epoch than the applied one (a policy-compiler clock behind?): not ready")
			return false
		case !applied.Less(next):
			f.mu.Lock()
			if next == applied {
				f.rewatched = "" // the bucket's current generation is the applied one
			}
			f.mu.Unlock()
			log.Warn("ignored a generation not newer than the applied one")
			return false
		}
		f.mu.Lock()
		f.latest = f.latest.Max(next)
		f.mu.Unlock()
		ch, err := f.target.Commit(&g)
		if err != nil {
			log.WithError(err).Error("generation applied with bad keys left out")
		}
		if ch == nil {
			log.Warn("ignored a generation not newer than the applied one")
			return false
		}
		f.mu.Lock()
		f.applied = pool.Gen{Epoch: ch.Epoch, Number: ch.Generation}
		f.rewatched, f.older = "", pool.Gen{}
		wasWhole := f.dangling == 0
		f.mu.Unlock()
		// The commit counted the dangling names it touched; once any, the
		// whole pool is counted after each commit until it is whole again.
		dangling := 0
		if ch.Dangling > 0 || !wasWhole {
			dangling = f.target.Dangling()
		}
		f.mu.Lock()
		f.dangling = dangling
		f.mu.Unlock()
		entry := log.WithFields(logrus.Fields{"groups": len(ch.Groups), "resources": ch.Resources})
		if ch.Replaced {
			entry.WithField("previous_epoch", applied.Epoch).Warn("new epoch applied: it replaced the whole mesh-compiled state")
		}
		if ch.Dangling > 0 {
			entry.WithField("dangling", ch.Dangling).Warn("generation applied with names of missing resources left out")
		} else {
			entry.Debug("generation applied")
		}
	case ev.Key == layout.GenerationKey:
		// A deleted generation record changes nothing: the pool never goes back.
	case ev.Key == bus.FenceKey:
		// The compiler's lease term (bus.Store.Claim): nothing to serve.
	case layout.IsAcceptedKey(ev.Key):
		// A rejected policy's last accepted version, which the compiler
		// keeps for its successor: nothing to serve.
	case ev.Kind == bus.EventPut:
		if err := f.target.Stage(ev.Key, ev.Value); err != nil {
			log.WithError(err).Warn("ignored a bad mesh-compiled key")
		}
	case ev.Kind == bus.EventDelete:
		if err := f.target.Stage(ev.Key, nil); err != nil {
			log.WithError(err).Warn("ignored a bad mesh-compiled key")
		}
	}
	return false
}

func (f *feed) trustEvent(ev bus.Event) {
	switch ev.Kind {
	case bus.EventInitialized:
		f.mu.Lock()
		f.trustInit = true
		has := f.hasBundle
		f.mu.Unlock()
		if !has {
			f.log.Warn("mesh-trust holds no trust bundle yet; root-cert is served once the cert-authority writes it")
		}
	case bus.EventPut:
		var b meshv1.TrustBundle
		if err := ev.Decode(&b); err != nil {
			f.log.WithError(err).Error("bad trust bundle")
			return
		}
		if err := f.target.SetTrustBundle(&b); err != nil {
			f.log.WithError(err).Error("trust bundle not installed")
			return
		}
		if f.onBundle != nil {
			f.onBundle(&b)
		}
		f.mu.Lock()
		f.hasBundle = true
		f.mu.Unlock()
		f.log.WithField("bundle_version", b.GetVersion()).Info("trust bundle installed")
	}
}

// update tracks the NATS connection and opens or closes the server to new
// streams.
func (f *feed) update() {
	f.mu.Lock()
	switch up := f.connected(); {
	case up:
		f.lostSince = time.Time{}
	case f.lostSince.IsZero():
		f.lostSince = f.now()
	}
	f.mu.Unlock()
	f.target.SetServing(f.checkSync() == nil && f.checkNATS() == nil)
}

// checkSync is the "mesh-compiled" readiness check.
func (f *feed) checkSync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.compiledInit:
		return errors.New("the initial values of mesh-compiled are not delivered yet")
	case !f.trustInit:
		return errors.New("the initial value of mesh-trust is not delivered yet")
	case f.applied == pool.Gen{}:
		// Serving an empty mesh would strip every proxy of its config.
		return errors.New("mesh-compiled holds no generation yet: the policy-compiler has not compiled")
	case f.rewatched != "":
		return fmt.Errorf("%s: waiting for its current generation; generation %s is served to connected proxies only", f.rewatched, f.applied)
	case f.older != pool.Gen{}:
		return fmt.Errorf("mesh-compiled holds generation %s, of an older epoch than the applied %s (a policy-compiler whose clock is behind the one that started epoch %d?); connected proxies keep %s", f.older, f.applied, f.applied.Epoch, f.applied)
	case f.applied.Less(f.latest):
		return fmt.Errorf("generation %s applied, %s seen", f.applied, f.latest)
	case f.dangling > 0:
		return fmt.Errorf("generation %s applied without %d names of resources the bucket holds only in a later version (the policy-compiler is writing the next generation?): waiting for a whole generation", f.applied, f.dangling)
	}
	return nil
}

// checkNATS is the "nats" readiness check: it fails only once NATS has been
// lost for longer than the threshold, so that a blip does not take every
// edge out of the Service at once, while a replica cut off for long stops
// taking new proxies.
func (f *feed) checkNATS() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.lostSince.IsZero() {
		if lost := f.now().Sub(f.lostSince); lost > f.threshold {
			return fmt.Errorf("nats lost for %s (threshold %s); serving the last good state to connected proxies only", lost.Round(time.Second), f.threshold)
		}
	}
	return nil
}
