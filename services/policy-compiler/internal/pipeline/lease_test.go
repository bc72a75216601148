package pipeline

import (
	"slices"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/lease"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// startElected starts a compiler that writes only while it holds the
// compiler lease, as the service runs it.
func (h *harness) startElected(holder string) (*running, *lease.Elector) {
	h.t.Helper()
	conn, observed, compiled := h.buckets()
	leases, err := conn.EnsureBucket(h.t.Context(), bus.BucketLeases, bus.BucketOptions{Memory: true})
	if err != nil {
		h.t.Fatal(err)
	}
	el, err := lease.New(leases, lease.Options{Key: layout.CompilerLeaseKey, Holder: holder, TTL: 1500 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	c := New(observed, compiled, conn.NATS(), Options{Leader: el, Engine: bookstoreEngine()})
	return h.run(c, el.Run), el
}

func TestStandbyTakesOverWritingOnlyWhatChanged(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	a, elA := h.startElected("compiler-a")
	apptest.EventuallyTrue(t, "a to lead", 10*time.Second, elA.Leading)
	b, elB := h.startElected("compiler-b")
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return a.c.Stats().Generations == 1 })
	apptest.EventuallyTrue(t, "b to be warm", 10*time.Second, func() bool { return b.c.Ready(t.Context()) == nil })
	settle()
	if elB.Leading() || b.c.Stats().Puts != 0 || b.c.Stats().Generations != 0 {
		t.Fatalf("the standby leads=%v or wrote: %+v", elB.Leading(), b.c.Stats())
	}
	h.watchCompiled()

	// An edit while a leads: only a writes.
	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	h.put(synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.20"}))
	apptest.EventuallyTrue(t, "a's second generation", 10*time.Second, func() bool { return a.c.Stats().Generations == 2 })
	settle()
	if b.c.Stats().Puts != 0 {
		t.Fatalf("the standby wrote: %+v", b.c.Stats())
	}
	h.drainCompiled()

	// a stops (and releases the lease); an edit lands while b takes over.
	a.stop()
	h.put(synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
		synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.21"}))
	apptest.EventuallyTrue(t, "b to lead", 10*time.Second, elB.Leading)
	apptest.EventuallyTrue(t, "b's first generation", 10*time.Second, func() bool { return b.c.Stats().Generations == 1 })
	keys := h.drainCompiled()
	want := []string{bus.FenceKey, layout.ResourceKey(layout.TypeEndpoint, "bookwarehouse/bookwarehouse|14001"), layout.GenerationKey}
	if !slices.Equal(keys, want) {
		t.Fatalf("takeover wrote %v, want only the claim of its term, the changed endpoint, then the generation %v", keys, want)
	}
	if gen := h.generation(); gen.GetNumber() != 3 {
		t.Fatalf("generation after takeover = %d, want 3 (numbers never go back)", gen.GetNumber())
	}
}
