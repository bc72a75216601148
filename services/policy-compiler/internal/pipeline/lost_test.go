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
// every key, with a generation numbered after its last one, so running
// edges take it as newer and a new edge loads a whole mesh.
func TestLostCompiledBucketIsRewritten(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	r := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), Leader: &stalledLeader{term: 1, changes: make(chan bool, 1)}}), nil)
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
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
	if g := h.generation(); g.GetNumber() <= 1 {
		t.Errorf("generation after the loss = %d, want above 1: running edges ignore one not newer than theirs", g.GetNumber())
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
