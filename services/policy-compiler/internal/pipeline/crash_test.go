package pipeline

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// dieBeforeGeneration is the failpoint of fault F3: the keys of a commit go
// through (they use Batch), and the generation write fails, as if the
// process died between the two.
type dieBeforeGeneration struct {
	Writable
	refused atomic.Int64
}

func (d *dieBeforeGeneration) Put(ctx context.Context, key string, m proto.Message) (uint64, error) {
	if key == layout.GenerationKey {
		d.refused.Add(1)
		return 0, context.Canceled
	}
	return d.Writable.Put(ctx, key, m)
}

// TestCrashBeforeTheGenerationIsCommittedOnRestart (issue 15, item 3;
// fault F3): a compiler that wrote an edit's keys and died before its
// generation write left the edit unpublished, since on restart every key
// already matched and nothing made a generation. The next compiler commits
// the generation the keys carry, so the edges apply the edit, and writes no
// key again.
func TestCrashBeforeTheGenerationIsCommittedOnRestart(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r1 := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r1.c.Stats().Generations == 1 })
	r1.stop()

	// An edit, compiled by a compiler that dies between its key writes and
	// its generation write.
	h.put(synth.TrafficSplit("bookstore", "bookstore-split", "bookstore", synth.Backend{Service: "bookstore-v1", Weight: 50}, synth.Backend{Service: "bookstore-v2", Weight: 50}))
	conn, observed, compiled := h.buckets()
	dying := &dieBeforeGeneration{Writable: compiled}
	r2 := h.run(New(observed, dying, conn.NATS(), Options{Engine: bookstoreEngine()}), nil)
	apptest.EventuallyTrue(t, "the edit's keys written and its generation refused", 10*time.Second, func() bool {
		return r2.c.Stats().Puts > 0 && dying.refused.Load() > 0
	})
	r2.stop()
	if g := h.generation(); g.GetNumber() != 1 {
		t.Fatalf("generation = %d after the crash, want still 1", g.GetNumber())
	}

	h.watchCompiled()
	start := time.Now()
	r3 := h.start()
	apptest.EventuallyTrue(t, "the crashed edit's generation", 10*time.Second, func() bool { return h.generation().GetNumber() == 2 })
	t.Logf("generation 2 committed %s after the restart", time.Since(start).Round(time.Millisecond))
	settle()
	if s := r3.c.Stats(); s.Puts != 0 || s.Deletes != 0 || s.Generation != 2 {
		t.Errorf("restart: %+v, want no key written again and generation 2", s)
	}
	if keys := h.drainCompiled(); len(keys) != 1 || keys[0] != layout.GenerationKey {
		t.Errorf("the edges saw %v, want the generation alone", keys)
	}
	r3.stop()

	// The next restart with nothing new writes nothing at all.
	r4 := h.start()
	apptest.EventuallyTrue(t, "readiness", 10*time.Second, func() bool { return r4.c.Ready(t.Context()) == nil })
	settle()
	if s := r4.c.Stats(); s.Puts != 0 || s.Generations != 0 || s.Generation != 2 {
		t.Errorf("second restart: %+v, want nothing written at generation 2", s)
	}
}
