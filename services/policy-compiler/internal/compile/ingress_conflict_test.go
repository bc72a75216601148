package compile

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/openservicemesh/osm/libs/layout"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// ingressVerdicts are the current IngressBackend verdicts, "name condition
// field reason".
func ingressVerdicts(e *Engine) []string {
	var out []string
	for k, st := range e.pol.verdicts {
		if k.kind == layout.KindIngressBackend {
			out = append(out, fmt.Sprintf("%s %s %s %s", k.nn, st.GetCondition(), st.GetFieldPath(), st.GetReason()))
		}
	}
	slices.Sort(out)
	return out
}

// sameBackendAs is an IngressBackend named name on bookstore-v1's port
// 14001, as synth.BookstoreIngress's bookstore-v1, from another range.
func sameBackendAs(name string) synth.Object {
	return synth.IngressBackend("bookstore", name, &meshv1.IngressBackend{
		Backends: []*meshv1.IngressBackendBackend{
			{Name: "bookstore-v1", Port: &meshv1.IngressBackendPort{Number: 14002, Protocol: "http"}},
			{Name: "bookstore-v1", Port: &meshv1.IngressBackendPort{Number: 14001, Protocol: "http"}},
		},
		Sources: []*meshv1.IngressSource{{Kind: "IPRange", Name: "198.51.100.0/24"}},
	})
}

// TestIngressBackendPortTaken: two IngressBackends naming the same backend
// port: the one first by name serves it (its filter chain), the other is
// accepted with a warning naming the field, the port and the owner, in
// either order of arrival; the owner's deletion clears the warning in the
// same compile (Accepted again) and hands the port over. Each step equals
// a cold compile, verdicts included.
func TestIngressBackendPortTaken(t *testing.T) {
	e, _ := withIngress(t)
	objs := append(synth.Bookstore(false), synth.BookstoreIngress()...)
	chain := func(name string) bool {
		return ingressChainOf(t, e, "bookstore", "bookstore-v1", "ingress:bookstore/"+name+"|14001") != nil
	}
	check := func(step string, d *Delta, statuses, verdicts []string) {
		t.Helper()
		var got []string
		for _, st := range d.Statuses {
			if st.GetObject().GetKind() == "IngressBackend" {
				got = append(got, fmt.Sprintf("%s %s %s", st.GetObject().GetName(), st.GetCondition(), st.GetFieldPath()))
			}
		}
		if !slices.Equal(got, statuses) {
			t.Errorf("%s: statuses %v, want %v", step, got, statuses)
		}
		if got := ingressVerdicts(e); !slices.Equal(got, verdicts) {
			t.Errorf("%s: verdicts %v, want %v", step, got, verdicts)
		}
		validateAll(t, e)
		cold := newEngine()
		load(t, cold, objs)
		if got, want := ingressVerdicts(e), ingressVerdicts(cold); !slices.Equal(got, want) {
			t.Errorf("%s: verdicts %v, a cold compile's %v", step, got, want)
		}
		equalsColdOf(t, e, objs)
	}
	const (
		ok   = "POLICY_CONDITION_ACCEPTED"
		warn = "POLICY_CONDITION_ACCEPTED_WITH_WARNING"
	)

	// Arriving first by name: it takes the port; bookstore-v1, untouched,
	// is judged again and warned.
	objs = append(objs, sameBackendAs("a-bookstore-v1"))
	d := apply(t, e, objs[len(objs)-1])
	check("a-bookstore-v1 added", d,
		[]string{"a-bookstore-v1 " + ok + " ", "bookstore-v1 " + warn + " spec.backends[0]"},
		[]string{"bookstore/a-bookstore-v1 " + ok + "  Accepted", "bookstore/bookstore-v1 " + warn + " spec.backends[0] IngressBackendPortTaken", "bookstore/bookstore-v2 " + ok + "  Accepted"})
	if !chain("a-bookstore-v1") || chain("bookstore-v1") {
		t.Errorf("port 14001: a-bookstore-v1's chain %v, bookstore-v1's %v; want only the first", chain("a-bookstore-v1"), chain("bookstore-v1"))
	}
	for _, st := range d.Statuses {
		if st.GetObject().GetName() == "bookstore-v1" && !strings.Contains(st.GetMessage(), "port 14001 of Service bookstore/bookstore-v1 is also a backend of IngressBackend a-bookstore-v1") {
			t.Errorf("warning %q names neither the port nor the owner", st.GetMessage())
		}
	}

	// Arriving after by name: it is warned at once, at the index of the
	// port in its own spec; the owner is not judged again.
	objs = append(objs, sameBackendAs("z-bookstore-v1"))
	d = apply(t, e, objs[len(objs)-1])
	check("z-bookstore-v1 added", d,
		[]string{"z-bookstore-v1 " + warn + " spec.backends[1]"},
		[]string{"bookstore/a-bookstore-v1 " + ok + "  Accepted", "bookstore/bookstore-v1 " + warn + " spec.backends[0] IngressBackendPortTaken",
			"bookstore/bookstore-v2 " + ok + "  Accepted", "bookstore/z-bookstore-v1 " + warn + " spec.backends[1] IngressBackendPortTaken"})

	// The owner goes: bookstore-v1 serves the port again and is accepted;
	// z-bookstore-v1, still after it, is warned of its new owner.
	objs = slices.DeleteFunc(objs, func(o synth.Object) bool { return o.Name == "a-bookstore-v1" })
	d = remove(t, e, layout.KindIngressBackend, "bookstore", "a-bookstore-v1")
	check("a-bookstore-v1 deleted", d,
		[]string{"bookstore-v1 " + ok + " ", "z-bookstore-v1 " + warn + " spec.backends[1]"},
		[]string{"bookstore/bookstore-v1 " + ok + "  Accepted", "bookstore/bookstore-v2 " + ok + "  Accepted", "bookstore/z-bookstore-v1 " + warn + " spec.backends[1] IngressBackendPortTaken"})
	if !chain("bookstore-v1") {
		t.Error("bookstore-v1 did not take port 14001 back")
	}
	for _, st := range d.Statuses {
		if st.GetObject().GetName() == "z-bookstore-v1" && !strings.Contains(st.GetMessage(), "IngressBackend bookstore-v1, which serves it") {
			t.Errorf("warning %q does not name the new owner", st.GetMessage())
		}
	}

	// bookstore-v1 moves off 14001: z-bookstore-v1 takes it over.
	objs = slices.DeleteFunc(objs, func(o synth.Object) bool { return o.Name == "bookstore-v1" && o.Kind == layout.KindIngressBackend })
	moved := ingressWith(0, func(ib *meshv1.IngressBackend) { ib.Backends[0].Port.Number = 14002 })
	objs = append(objs, moved)
	d = apply(t, e, moved)
	check("bookstore-v1 moved to 14002", d,
		[]string{"z-bookstore-v1 " + warn + " spec.backends[0]"},
		[]string{"bookstore/bookstore-v1 " + ok + "  Accepted", "bookstore/bookstore-v2 " + ok + "  Accepted", "bookstore/z-bookstore-v1 " + warn + " spec.backends[0] IngressBackendPortTaken"})
	if !chain("z-bookstore-v1") {
		t.Error("z-bookstore-v1 did not take port 14001 over")
	}
}
