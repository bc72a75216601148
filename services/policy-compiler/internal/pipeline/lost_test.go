package pipeline

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// compiledKeys lists mesh-compiled's keys (without the fence), or nil
// while the bucket is missing.
func (h *harness) compiledKeys() []string {
	h.t.Helper()
	s, err := connect(h.t, h.srv, bus.RoleAdmin).Bucket(h.t.Context(), bus.BucketCompiled)
	if err != nil {
		return nil
	}
	keys, err := s.Prime(h.t.Context())
	if err != nil {
		return nil
	}
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == bus.FenceKey })
	slices.Sort(keys)
	return keys
}

// TestLostCompiledBucketIsRewritten (issue 15, item 2, a running
// compiler): mesh-compiled is deleted under a running, leading compiler (an
// operator's mistake, or a JetStream volume lost). At its next commit the
// compiler finds its claim gone, declares the bucket again and rewrites
// every key under a new epoch, so running edges take it as newer (and as a
// full replacement) and a new edge loads a whole mesh.
func TestLostCompiledBucketIsRewritten(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	r := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), Leader: &stalledLeader{term: 1, changes: make(chan bool, 1)}}), nil)
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	first := h.generation()
	before := h.compiledKeys()
	if len(before) < 10 {
		t.Fatalf("mesh-compiled holds %d keys", len(before))
	}

	admin := connect(t, h.srv, bus.RoleAdmin)
	if err := admin.JetStream().DeleteKeyValue(context.Background(), bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	h.put(synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.77"}))
	apptest.Eventually(t, "every key back in mesh-compiled", 20*time.Second, func() error {
		if got := h.compiledKeys(); !slices.Equal(got, before) {
			return fmt.Errorf("mesh-compiled holds %d keys, want the %d it held", len(got), len(before))
		}
		return nil
	})
	if g := h.generation(); g.GetEpoch() <= first.GetEpoch() {
		t.Errorf("generation after the loss = %d:%d, want a newer epoch than %d: running edges ignore one not newer than theirs", g.GetEpoch(), g.GetNumber(), first.GetEpoch())
	}
	t.Logf("mesh-compiled whole again %s after it was deleted", time.Since(lost).Round(time.Millisecond))
}

// TestRecreatedObservedBucketRebuildsTheModel (issue 15, item 2): the
// watcher rewrites a lost mesh-observed under a new epoch (see the
// smi-watcher's TestWatcherRewritesALostBucket). The compiler's watch, whose
// revisions started over, notices the new bucket, and the compiler rebuilds
// its model from it alone: an object the new bucket lacks (here bookthief's
// pod, gone while the bucket was lost) does not linger, so bookthief's
// group is deleted.
func TestRecreatedObservedBucketRebuildsTheModel(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	thief := layout.GroupKey("bookthief", "bookthief")
	if !slices.Contains(h.compiledKeys(), thief) {
		t.Fatalf("no %s to begin with", thief)
	}
	// Revisions of the old bucket run past what the new one will hold.
	for range 100 {
		h.sync(1, meshv1.SyncState_SYNC_STATE_SYNCED)
	}

	admin := connect(t, h.srv, bus.RoleAdmin)
	if err := admin.JetStream().DeleteKeyValue(context.Background(), bus.BucketObserved); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if _, err := connect(t, h.srv, bus.RoleWatcher).EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{Memory: true}); err != nil {
		t.Fatal(err)
	}
	h.sync(2, meshv1.SyncState_SYNC_STATE_LISTING)
	for _, o := range synth.Bookstore(false) {
		if o.Kind == layout.KindPod && o.Namespace == "bookthief" {
			continue
		}
		h.put(o)
	}
	h.sync(2, meshv1.SyncState_SYNC_STATE_SYNCED)
	apptest.EventuallyTrue(t, "bookthief's group deleted", 20*time.Second, func() bool {
		keys := h.compiledKeys()
		return len(keys) > 10 && !slices.Contains(keys, thief)
	})
	t.Logf("the compiler followed the new mesh-observed %s after it was deleted", time.Since(lost).Round(time.Millisecond))
}

// TestRestartOnEmptyBucketStartsANewEpoch (issue 15, item 2): a compiler
// (re)started on an empty mesh-compiled (recreated, or its JetStream store
// lost) starts a new epoch, which every edge takes as newer than the lost
// one even though its numbers start again at 1; a compiler restarted on a
// bucket that holds a generation continues that epoch.
func TestRestartOnEmptyBucketStartsANewEpoch(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	first := h.generation()
	if first.GetEpoch() == 0 {
		t.Fatalf("the first generation has no epoch: %v", first)
	}
	r.stop()

	// Restarted on the same bucket: the same epoch goes on.
	r = h.start()
	apptest.EventuallyTrue(t, "state loaded", 10*time.Second, func() bool { return r.c.Ready(t.Context()) == nil })
	if s := r.c.Stats(); s.Epoch != first.GetEpoch() || s.Epochs != 0 {
		t.Errorf("restart on a whole bucket: epoch %d (%d started), want %d continued", s.Epoch, s.Epochs, first.GetEpoch())
	}
	r.stop()

	// Restarted on a recreated, empty bucket: a new, greater epoch.
	admin := connect(t, h.srv, bus.RoleAdmin)
	if err := admin.JetStream().DeleteKeyValue(t.Context(), bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	r = h.start()
	apptest.EventuallyTrue(t, "a generation in the new bucket", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	g := h.generation()
	if g.GetEpoch() <= first.GetEpoch() || g.GetNumber() != 1 {
		t.Errorf("generation on the empty bucket = %d:%d, want 1 of an epoch after %d", g.GetEpoch(), g.GetNumber(), first.GetEpoch())
	}
}

// TestLostBucketIsRewrittenWithNoEdit (issue 15, item 2): mesh-compiled is
// deleted under a running compiler and nothing changes in the mesh, so no
// commit runs into the loss. The compiler's check of its generation notices
// it, declares the bucket again and writes every key and a generation of a
// new epoch: edges (re)watching the bucket turn ready on it instead of
// waiting for the next edit. The compiler's clock here is behind its epoch,
// so the new epoch is the last one plus one.
func TestLostBucketIsRewrittenWithNoEdit(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	frozen := time.UnixMilli(1_700_000_000_000)
	r := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), LostCheck: 200 * time.Millisecond, Now: func() time.Time { return frozen }}), nil)
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	first := h.generation()
	before := h.compiledKeys()

	admin := connect(t, h.srv, bus.RoleAdmin)
	if err := admin.JetStream().DeleteKeyValue(t.Context(), bus.BucketCompiled); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	apptest.Eventually(t, "every key and a generation back in mesh-compiled", 20*time.Second, func() error {
		if got := h.compiledKeys(); !slices.Equal(got, before) {
			return fmt.Errorf("mesh-compiled holds %d keys, want the %d it held", len(got), len(before))
		}
		if r.c.Stats().Generations < 2 {
			return fmt.Errorf("no generation written since the loss")
		}
		return nil
	})
	t.Logf("mesh-compiled whole again %s after it was deleted, with no edit", time.Since(lost).Round(time.Millisecond))
	g := h.generation()
	if g.GetEpoch() != first.GetEpoch()+1 || g.GetNumber() != 1 {
		t.Errorf("generation after the loss = %d:%d, want 1 of epoch %d (the clock is behind the last epoch)", g.GetEpoch(), g.GetNumber(), first.GetEpoch()+1)
	}
}

// TestLostJetStreamStoreIsRewritten (issue 15, item 2): NATS restarts
// without its JetStream store (the harness's buckets live in memory, so a
// restart loses them all, as a lost volume would). The watcher declares
// mesh-observed again and rewrites it (done here by hand); the running
// compiler finds mesh-compiled gone, declares it again and writes the whole
// mesh under a new epoch, with no edit needed.
func TestLostJetStreamStoreIsRewritten(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	r := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), LostCheck: 200 * time.Millisecond}), nil)
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	first := h.generation()
	before := h.compiledKeys()

	if err := h.srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if keys := h.compiledKeys(); keys != nil {
		t.Fatalf("mesh-compiled survived the restart with %d keys: the store was not lost", len(keys))
	}
	var err error
	h.observed, err = connect(t, h.srv, bus.RoleWatcher).EnsureBucket(t.Context(), bus.BucketObserved, bus.BucketOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	h.put(synth.Bookstore(false)...)
	h.sync(2, meshv1.SyncState_SYNC_STATE_SYNCED)
	apptest.Eventually(t, "every key and a generation of a new epoch in mesh-compiled", 20*time.Second, func() error {
		if got := h.compiledKeys(); !slices.Equal(got, before) {
			return fmt.Errorf("mesh-compiled holds %d keys, want the %d it held", len(got), len(before))
		}
		s, err := connect(t, h.srv, bus.RoleEdge).Bucket(t.Context(), bus.BucketCompiled)
		if err != nil {
			return err
		}
		var g meshv1.Generation
		if _, err := s.Get(t.Context(), layout.GenerationKey, &g); err != nil {
			return err
		}
		if g.GetEpoch() <= first.GetEpoch() {
			return fmt.Errorf("generation %d:%d, want one of an epoch after %d", g.GetEpoch(), g.GetNumber(), first.GetEpoch())
		}
		return nil
	})
	t.Logf("mesh-compiled whole again under a new epoch %s after NATS restarted without its store", time.Since(lost).Round(time.Millisecond))
}
