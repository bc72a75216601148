package pipeline

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
)

// pausedLeader leads for its first limit answers, then no more: a leader
// whose commit stalled past its renew deadline right after it started,
// which the lease reports on the clock of each call.
type pausedLeader struct {
	answers atomic.Int64
	limit   int64
	changes chan bool
}

func (p *pausedLeader) Leading() bool        { return p.answers.Add(1) <= p.limit }
func (p *pausedLeader) Changes() <-chan bool { return p.changes }

// TestLeaseLostMidCommitStopsTheWrites (issue 15, item 4): the compiler asks
// the lease before each write of a commit, not only when it starts, so a
// commit whose lease runs out once it has started sends nothing (a
// generation's keys go out together, at the batch's flush) and writes no
// generation; the next leader commits it all.
func TestLeaseLostMidCommitStopsTheWrites(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	h.watchCompiled()
	// The first answer lets the commit start; the lease runs out then.
	old := &pausedLeader{limit: 1, changes: make(chan bool, 1)}
	r1 := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), Leader: old}), nil)
	apptest.EventuallyTrue(t, "the commit to start and the lease to run out", 10*time.Second, func() bool {
		return old.answers.Load() > old.limit || r1.c.Stats().Generations > 0
	})
	landed := h.drainCompiled()
	r1.stop()
	if len(landed) != 0 {
		t.Fatalf("after its lease ran out the old leader's writes landed: %v; want none", landed)
	}

	r2 := h.start()
	apptest.EventuallyTrue(t, "the new leader's generation", 10*time.Second, func() bool { return r2.c.Stats().Generations == 1 })
	if g := h.generation(); g.GetNumber() != 1 || g.GetChangedKeys() == 0 {
		t.Errorf("generation = %v, want number 1 with the rest of the keys", g)
	}
}
