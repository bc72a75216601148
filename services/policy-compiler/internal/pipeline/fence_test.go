package pipeline

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
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

// stalledLeader believes it leads at term, whatever happened since: a
// compiler paused past its lease that has not yet noticed.
type stalledLeader struct {
	term    uint64
	changes chan bool
}

func (s *stalledLeader) Leading() bool        { return true }
func (s *stalledLeader) Term() uint64         { return s.term }
func (s *stalledLeader) Changes() <-chan bool { return s.changes }

// TestDeposedCompilerLandsNothing (issue 15, item 4): a compiler paused
// past its lease, and still believing it leads, commits an edit after its
// successor claimed mesh-compiled for the next term: the server refuses
// every write of the old term (the claim fences the bucket), so zero writes
// of the old term land after the new term starts.
func TestDeposedCompilerLandsNothing(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	conn, observed, compiled := h.buckets()
	old := h.run(New(observed, compiled, conn.NATS(), Options{Engine: bookstoreEngine(), Leader: &stalledLeader{term: 1, changes: make(chan bool, 1)}}), nil)
	apptest.EventuallyTrue(t, "the old leader's first generation", 10*time.Second, func() bool { return old.c.Stats().Generations == 1 })
	settle()

	// The successor (term 2) claims the bucket; the old leader does not know.
	_, _, next := h.buckets()
	if err := next.Claim(t.Context(), 2, "compiler-b"); err != nil {
		t.Fatal(err)
	}
	h.watchCompiled()
	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	h.put(synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.99"}))
	settle()
	settle()
	if landed := h.drainCompiled(); len(landed) != 0 {
		t.Fatalf("the deposed compiler's writes landed after the new term: %v", landed)
	}
	if g := h.generation(); g.GetNumber() != 1 {
		t.Errorf("generation = %d, want 1 (the deposed compiler's generation must not land)", g.GetNumber())
	}
}
