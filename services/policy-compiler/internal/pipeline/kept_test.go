package pipeline

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/bus"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// compiledState reads mesh-compiled as an edge does: every resource,
// group, name set and kept-version key with its content version (the
// generation stamps left out).
func (h *harness) compiledState() map[string]string {
	h.t.Helper()
	s, err := connect(h.t, h.srv, bus.RoleEdge).Bucket(h.t.Context(), bus.BucketCompiled)
	if err != nil {
		h.t.Fatal(err)
	}
	w, err := s.Watch(h.t.Context(), ">")
	if err != nil {
		h.t.Fatal(err)
	}
	defer w.Stop()
	out := map[string]string{}
	for ev := range w.Events() {
		switch {
		case ev.Kind == bus.EventInitialized:
			return out
		case ev.Kind != bus.EventPut:
		case layout.IsAcceptedKey(ev.Key):
			_, v, err := keptOf(ev.Value)
			if err != nil {
				h.t.Fatalf("%s: %v", ev.Key, err)
			}
			out[ev.Key] = v
		default:
			if v, _, ok := versionOf(ev.Key, ev.Value); ok {
				out[ev.Key] = v
			}
		}
	}
	h.t.Fatalf("watch of mesh-compiled ended: %v", w.Err())
	return nil
}

// inboundAdmits reports whether bookstore-v1's inbound listener, as
// mesh-compiled holds it, admits the path regex of books-bought.
func (h *harness) inboundAdmits(path string) bool {
	h.t.Helper()
	s, err := connect(h.t, h.srv, bus.RoleEdge).Bucket(h.t.Context(), bus.BucketCompiled)
	if err != nil {
		h.t.Fatal(err)
	}
	var r meshv1.CompiledResource
	if _, err := s.Get(h.t.Context(), layout.ResourceKey(layout.TypeListener, "inbound-listener:bookstore/bookstore-v1"), &r); err != nil {
		h.t.Fatal(err)
	}
	return bytes.Contains(r.GetResource(), []byte(path))
}

// dropBooksBought edits bookstore's HTTPRouteGroup so that it drops
// books-bought, a match the bookbuyer TrafficTargets name: they are
// rejected, and keep their last accepted version.
func (h *harness) dropBooksBought() {
	h.put(synth.HTTPRouteGroup("bookstore", "bookstore-service-routes",
		&meshv1.HTTPMatch{Name: "buy-a-book", PathRegex: ".*a-book.*new", Methods: []string{"GET"}}))
}

var keptTargets = []string{
	layout.AcceptedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v1"),
	layout.AcceptedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v2"),
}

func acceptedKeys(state map[string]string) []string {
	var out []string
	for k := range state {
		if layout.IsAcceptedKey(k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// rejectAndKeep has the running compiler reject the bookbuyer
// TrafficTargets and waits until mesh-compiled holds their kept versions;
// it returns mesh-compiled's state then.
func (h *harness) rejectAndKeep() map[string]string {
	h.t.Helper()
	h.dropBooksBought()
	apptest.EventuallyTrue(h.t, "the kept versions of the rejected TrafficTargets", 10*time.Second, func() bool {
		return slices.Equal(acceptedKeys(h.compiledState()), keptTargets)
	})
	settle()
	if !h.inboundAdmits("/books-bought") {
		h.t.Fatal("the rejected TrafficTargets' last accepted version is not served: books-bought no longer admitted")
	}
	return h.compiledState()
}

func diffStates(before, after map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if a, ok := after[k]; !ok {
			out = append(out, "- "+k)
		} else if a != before[k] {
			out = append(out, "~ "+k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[k]; !ok {
			out = append(out, "+ "+k)
		}
	}
	return strings.Join(out, "\n")
}

// TestFailoverKeepsTheRejectedPoliciesLastVersion: the leading compiler
// rejects the bookbuyer TrafficTargets (their HTTPRouteGroup dropped a
// match they name) and keeps serving their last accepted version; it
// stops, the standby takes the lease over, and mesh-compiled does not
// change: the new leader restored the kept versions before its first
// compile. Without them it would compile the targets as rejected with
// nothing accepted, and bookstore-v1 would stop admitting books-bought.
func TestFailoverKeepsTheRejectedPoliciesLastVersion(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	a, elA := h.startElected("compiler-a")
	apptest.EventuallyTrue(t, "a to lead", 10*time.Second, elA.Leading)
	b, elB := h.startElected("compiler-b")
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return a.c.Stats().Generations == 1 })
	apptest.EventuallyTrue(t, "b to be warm", 10*time.Second, func() bool { return b.c.Ready(t.Context()) == nil })
	before := h.rejectAndKeep()
	gen := h.generation()

	a.stop()
	apptest.EventuallyTrue(t, "b to lead", 10*time.Second, elB.Leading)
	apptest.EventuallyTrue(t, "b's first compile", 10*time.Second, func() bool { return b.c.Ready(t.Context()) == nil })
	settle()
	if d := diffStates(before, h.compiledState()); d != "" {
		t.Fatalf("mesh-compiled changed at the failover, with no edit:\n%s", d)
	}
	if s := b.c.Stats(); s.Puts != 0 || s.Deletes != 0 || s.Kept != 0 || h.generation().GetNumber() != gen.GetNumber() {
		t.Fatalf("the new leader wrote %+v (generation %d, was %d)", s, h.generation().GetNumber(), gen.GetNumber())
	}

	// Accepted again (the match is back): the kept versions are deleted.
	h.put(synth.Bookstore(false)...)
	apptest.EventuallyTrue(t, "the kept versions deleted", 10*time.Second, func() bool { return len(acceptedKeys(h.compiledState())) == 0 })
	if !h.inboundAdmits("/books-bought") {
		t.Fatal("books-bought not admitted once accepted again")
	}
}

// TestRestartKeepsTheRejectedPoliciesLastVersion is the same for a
// compiler that restarts (no standby).
func TestRestartKeepsTheRejectedPoliciesLastVersion(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	before := h.rejectAndKeep()
	r.stop()

	r2 := h.start()
	apptest.EventuallyTrue(t, "readiness", 10*time.Second, func() bool { return r2.c.Ready(t.Context()) == nil })
	settle()
	if d := diffStates(before, h.compiledState()); d != "" {
		t.Fatalf("mesh-compiled changed at the restart, with no edit:\n%s", d)
	}
	if s := r2.c.Stats(); s.Puts != 0 || s.Deletes != 0 || s.Kept != 0 || s.Generations != 0 {
		t.Fatalf("the restarted compiler wrote %+v", s)
	}

	// The TrafficTarget deleted while rejected: its kept version goes too.
	if err := h.observed.Delete(t.Context(), layout.ObservedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v2")); err != nil {
		t.Fatal(err)
	}
	apptest.EventuallyTrue(t, "the deleted target's kept version deleted", 10*time.Second, func() bool {
		return slices.Equal(acceptedKeys(h.compiledState()), keptTargets[:1])
	})
}

// TestKeptVersionsOfAnOlderLeaderAreNotRestored: a generation written by a
// compiler that does not keep the accepted.* records current (an older
// release, which leaves them as they were) says so; the next compiler does
// not trust the records, compiles cold, and replaces them with its own.
func TestKeptVersionsOfAnOlderLeaderAreNotRestored(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	h.rejectAndKeep()
	r.stop()

	// An older compiler commits the next generation.
	_, _, compiled := h.buckets()
	g := h.generation()
	g.Number++
	g.KeepsAcceptedVersions = false
	if _, err := compiled.Put(t.Context(), layout.GenerationKey, g); err != nil {
		t.Fatal(err)
	}

	r2 := h.start()
	apptest.EventuallyTrue(t, "readiness", 10*time.Second, func() bool { return r2.c.Ready(t.Context()) == nil })
	settle()
	if h.inboundAdmits("/books-bought") {
		t.Fatal("records left by an older leader were restored")
	}
	if got := acceptedKeys(h.compiledState()); len(got) != 0 {
		t.Fatalf("a cold compile keeps nothing, mesh-compiled still holds %v", got)
	}
	if !h.generation().GetKeepsAcceptedVersions() {
		t.Fatal("the new generation does not say its writer keeps the records")
	}
}

// TestUpgradeFromAnOlderLeaderMarksTheGeneration: a compiler that takes
// over from one that does not keep the records, with nothing served to
// change, still commits a generation saying it keeps them; otherwise a
// rejection it kept later (written without a generation) would not be
// restored after its own restart.
func TestUpgradeFromAnOlderLeaderMarksTheGeneration(t *testing.T) {
	h := newBookstoreHarness(t, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	r.stop()
	_, _, compiled := h.buckets()
	g := h.generation()
	g.Number++
	g.KeepsAcceptedVersions = false
	if _, err := compiled.Put(t.Context(), layout.GenerationKey, g); err != nil {
		t.Fatal(err)
	}

	r2 := h.start()
	apptest.EventuallyTrue(t, "a generation that says its writer keeps the records", 10*time.Second, func() bool {
		return h.generation().GetKeepsAcceptedVersions()
	})
	if s := r2.c.Stats(); s.Puts != 0 || s.Deletes != 0 || h.generation().GetNumber() != g.GetNumber()+1 {
		t.Fatalf("the marking generation: %+v, number %d after %d", s, h.generation().GetNumber(), g.GetNumber())
	}
	before := h.rejectAndKeep()
	r2.stop()

	r3 := h.start()
	apptest.EventuallyTrue(t, "readiness", 10*time.Second, func() bool { return r3.c.Ready(t.Context()) == nil })
	settle()
	if d := diffStates(before, h.compiledState()); d != "" {
		t.Fatalf("mesh-compiled changed at the restart, with no edit:\n%s", d)
	}
}
