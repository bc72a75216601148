package pipeline

import (
	"strings"
	"testing"
	"time"

	"github.com/openservicemesh/osm/libs/app/apptest"
	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// drainStatuses reads the policy statuses published until none has come for a
// while.
func (h *harness) drainStatuses() []*meshv1.PolicyStatus {
	var out []*meshv1.PolicyStatus
	for {
		select {
		case st := <-h.statuses:
			out = append(out, st)
		case <-time.After(300 * time.Millisecond):
			return out
		}
	}
}

// TestUnrelatedChangesPublishNoStatus: a verdict is published once, and
// again only when it changes; a MeshConfig change, a namespace joining and
// an endpoint change recompile the policies without publishing anything, so
// the watcher emits no Event and bumps none.
func TestUnrelatedChangesPublishNoStatus(t *testing.T) {
	h := newHarness(t)
	h.put(synth.Bookstore(false)...)
	h.put(synth.TrafficTarget("bookstore", "bookbuyer-access-nothing", "bookstore-v1",
		[]*meshv1.TrafficTargetRule{synth.Rule("HTTPRouteGroup", "no-such-routes")}, synth.Subject("bookbuyer", "bookbuyer")))
	h.sync(1, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the first generation", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	settle()
	var rejected []*meshv1.PolicyStatus
	sts := h.drainStatuses()
	for _, st := range sts {
		if st.GetCondition() == meshv1.PolicyCondition_POLICY_CONDITION_REJECTED {
			rejected = append(rejected, st)
		}
	}
	if len(sts) != 9 || len(rejected) != 1 {
		t.Fatalf("%d statuses, %d rejected; want the 8 accepted bookstore policies and the rejected TrafficTarget", len(sts), len(rejected))
	}
	if st := rejected[0]; st.GetFieldPath() != "spec.rules[0].name" || strings.Count(st.GetMessage(), st.GetFieldPath()) != 1 {
		t.Errorf("rejection names field %q in %q, want spec.rules[0].name named once", st.GetFieldPath(), st.GetMessage())
	}

	http := synth.Port{Number: 14001, Name: "bookwarehouse-port", AppProtocol: "http"}
	changes := []struct {
		name string
		objs []synth.Object
	}{
		{"a MeshConfig change", []synth.Object{synth.MeshConfig(true)}},
		{"a namespace joining", []synth.Object{
			synth.ServiceAccount("bookgift", "bookgift"),
			synth.Pod("bookgift", "bookgift-0", "bookgift", "10.244.5.10", map[string]string{"app": "bookgift"}),
			synth.Namespace("bookgift"),
		}},
		{"an endpoint change", []synth.Object{synth.EndpointSlice("bookwarehouse", "bookwarehouse", "bookwarehouse-pqrst", []synth.Port{http},
			synth.Endpoint{Pod: "bookwarehouse-9e8d7c6b5-uvwxy", IP: "10.244.3.10"}, synth.Endpoint{Pod: "bookwarehouse-2", IP: "10.244.3.11"})}},
	}
	for _, c := range changes {
		gens := r.c.Stats().Generations
		h.put(c.objs...)
		apptest.EventuallyTrue(t, "the generation of "+c.name, 10*time.Second, func() bool { return r.c.Stats().Generations > gens })
		settle()
		for _, st := range h.drainStatuses() {
			o := st.GetObject()
			t.Errorf("%s published the unchanged status of %s %s/%s: %v %s", c.name, o.GetKind(), o.GetNamespace(), o.GetName(), st.GetCondition(), st.GetReason())
		}
	}
	if n := r.c.Stats().Statuses; n != 9 {
		t.Errorf("published %d statuses in all, want the first 9 only", n)
	}
}

// TestEmptyMeshCommitsAGeneration: a MeshConfig and no meshed namespace is
// a complete mesh, so the sync marker yields a generation (with no key) that
// an edge can turn ready on; a namespace joining then yields the next one
// with its group.
func TestEmptyMeshCommitsAGeneration(t *testing.T) {
	h := newHarness(t)
	h.put(synth.MeshConfig(false))
	h.sync(1, meshv1.SyncState_SYNC_STATE_SYNCED)
	r := h.start()
	apptest.EventuallyTrue(t, "the generation of the empty mesh", 10*time.Second, func() bool { return r.c.Stats().Generations == 1 })
	if gen := h.generation(); gen.GetNumber() != 1 || gen.GetChangedKeys() != 0 || gen.GetObservedEpoch() != 1 {
		t.Errorf("generation = %v, want number 1 with no changed key at epoch 1", gen)
	}
	if err := r.c.Ready(t.Context()); err != nil {
		t.Errorf("not ready on the empty mesh: %v", err)
	}
	if s := r.c.Stats(); s.Puts != 0 || s.Deletes != 0 {
		t.Errorf("the empty mesh wrote keys: %+v", s)
	}

	h.watchCompiled()
	h.put(synth.ServiceAccount("bookbuyer", "bookbuyer"),
		synth.Pod("bookbuyer", "bookbuyer-0", "bookbuyer", "10.244.1.10", map[string]string{"app": "bookbuyer"}),
		synth.Namespace("bookbuyer"))
	apptest.EventuallyTrue(t, "the generation of the joined namespace", 10*time.Second, func() bool { return r.c.Stats().Generations == 2 })
	keys := h.drainCompiled()
	group := layout.GroupKey("bookbuyer", "bookbuyer")
	hasGroup := false
	for _, k := range keys {
		hasGroup = hasGroup || k == group
	}
	if !hasGroup || len(keys) == 0 || keys[len(keys)-1] != layout.GenerationKey {
		t.Errorf("the joined namespace wrote %v, want its group %s, then the generation", keys, group)
	}
	if gen := h.generation(); gen.GetNumber() != 2 || gen.GetChangedKeys() == 0 {
		t.Errorf("generation = %v, want number 2 with changed keys", gen)
	}
}
