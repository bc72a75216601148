package compile

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openservicemesh/osm/libs/layout"
	"github.com/openservicemesh/osm/libs/policy"
	meshv1 "github.com/openservicemesh/osm/proto/osm/mesh/v1"
	"github.com/openservicemesh/osm/services/policy-compiler/internal/synth"
)

// keptMesh is the Bookstore demo with a policy object of every kind that
// keeps a last accepted version.
func keptMesh() []synth.Object {
	objs := append(synth.BookstoreEgress(), synth.BookstoreIngress()...)
	objs = append(objs, synth.BookstoreUpstreams()...)
	return append(objs, synth.Retry("bookbuyer", "retry-bookstore", "bookbuyer", "bookstore", "bookstore"))
}

// invalidField marks an OSM policy object invalid, as the watcher does
// for a field it cannot read.
var invalidField = []*meshv1.InvalidField{{FieldPath: "spec.x", Value: "?", Message: "not readable"}}

// keptEdit is an edit that rejects a policy object which keeps its last
// accepted version.
type keptEdit struct {
	name string
	kind string // of the object edited
	ns   string
	obj  string
	edit func(m proto.Message)
	// kept are the records the rejection keeps.
	kept []string
}

var keptEdits = []keptEdit{
	{"TrafficTarget through its HTTPRouteGroup", layout.KindHTTPRouteGroup, "bookstore", "bookstore-service-routes",
		func(m proto.Message) { // drop books-bought, which the bookbuyer targets name
			g := m.(*meshv1.HTTPRouteGroup)
			g.Matches = slices.DeleteFunc(g.Matches, func(x *meshv1.HTTPMatch) bool { return x.GetName() == "books-bought" })
		},
		[]string{
			layout.AcceptedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v1"),
			layout.AcceptedKey(layout.KindTrafficTarget, "bookstore", "bookbuyer-access-bookstore-v2"),
		}},
	{"HTTPRouteGroup", layout.KindHTTPRouteGroup, "bookstore", "bookstore-service-routes",
		func(m proto.Message) { m.(*meshv1.HTTPRouteGroup).Matches[0].PathRegex = "/books(" },
		[]string{layout.AcceptedKey(layout.KindHTTPRouteGroup, "bookstore", "bookstore-service-routes")}},
	{"TCPRoute", layout.KindTCPRoute, "bookwarehouse", "mysql",
		func(m proto.Message) { m.(*meshv1.TCPRoute).Matches.Ports = []int32{70000} },
		[]string{layout.AcceptedKey(layout.KindTCPRoute, "bookwarehouse", "mysql")}},
	{"TrafficSplit", layout.KindTrafficSplit, "bookstore", "bookstore-split",
		func(m proto.Message) { s := m.(*meshv1.TrafficSplit); s.Backends = append(s.Backends, s.Backends[0]) },
		[]string{layout.AcceptedKey(layout.KindTrafficSplit, "bookstore", "bookstore-split")}},
	{"Retry", layout.KindRetry, "bookbuyer", "retry-bookstore",
		func(m proto.Message) { m.(*meshv1.Retry).InvalidFields = invalidField },
		[]string{layout.AcceptedKey(layout.KindRetry, "bookbuyer", "retry-bookstore")}},
	{"UpstreamTrafficSetting", layout.KindUpstreamTrafficSetting, "bookstore", "bookstore-v1",
		func(m proto.Message) { m.(*meshv1.UpstreamTrafficSetting).InvalidFields = invalidField },
		[]string{layout.AcceptedKey(layout.KindUpstreamTrafficSetting, "bookstore", "bookstore-v1")}},
	{"IngressBackend", layout.KindIngressBackend, "bookstore", "bookstore-v1",
		func(m proto.Message) { m.(*meshv1.IngressBackend).InvalidFields = invalidField },
		[]string{layout.AcceptedKey(layout.KindIngressBackend, "bookstore", "bookstore-v1")}},
	{"Egress", layout.KindEgress, "bookbuyer", "books-api",
		func(m proto.Message) { m.(*meshv1.Egress).InvalidFields = invalidField },
		[]string{layout.AcceptedKey(layout.KindEgress, "bookbuyer", "books-api")}},
}

// editObjects returns objs with the edit applied to its object (a copy).
func editObjects(t *testing.T, objs []synth.Object, x keptEdit) []synth.Object {
	t.Helper()
	out := slices.Clone(objs)
	for i, o := range out {
		if o.Kind == x.kind && o.Namespace == x.ns && o.Name == x.obj {
			m := proto.Clone(o.Msg)
			x.edit(m)
			out[i].Msg = m
			return out
		}
	}
	t.Fatalf("no %s %s/%s in the mesh", x.kind, x.ns, x.obj)
	return nil
}

func keptKeys(ks []*Kept) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.Key())
	}
	return out
}

// TestSeededEngineServesTheKeptVersions: an engine that rejected an edit
// keeps the object's last accepted version; a fresh engine seeded with its
// Kept records (what a restarted compiler, or a standby taking the lease,
// reads back from mesh-compiled) compiles the same objects to the same
// output, and reports the same records. Unseeded, it does not (the check
// that each case is a real one). Undoing the edit deletes the records.
func TestSeededEngineServesTheKeptVersions(t *testing.T) {
	base := keptMesh()
	for _, x := range keptEdits {
		t.Run(x.name, func(t *testing.T) {
			running := newEngine()
			load(t, running, base)
			if len(running.Kept()) != 0 {
				t.Fatalf("kept versions before any rejection: %v", keptKeys(running.Kept()))
			}
			edited := editObjects(t, base, x)
			d := load(t, running, edited)
			if got := keptKeys(d.Kept); !slices.Equal(got, x.kept) {
				t.Fatalf("delta kept %v, want %v", got, x.kept)
			}
			if got := keptKeys(running.Kept()); !slices.Equal(got, x.kept) {
				t.Fatalf("engine keeps %v, want %v", got, x.kept)
			}
			if running.Rejected() == 0 {
				t.Fatal("the edit was not rejected")
			}

			seeded := newEngine()
			if errs := seeded.Seed(roundTrip(t, running.Kept())); len(errs) > 0 {
				t.Fatal(errs)
			}
			load(t, seeded, edited)
			if got, want := snapshot(seeded), snapshot(running); !slices.Equal(got, want) {
				t.Fatalf("a seeded engine compiles other than the running one:\n%s", diffLists(want, got))
			}
			if got, want := keptKeys(seeded.Kept()), x.kept; !slices.Equal(got, want) {
				t.Fatalf("the seeded engine keeps %v, want %v", got, want)
			}
			for i, k := range seeded.Kept() {
				if string(k.Value) != string(running.Kept()[i].Value) {
					t.Fatalf("%s: seeded engine keeps %s, running engine %s", k.Key(), k.Value, running.Kept()[i].Value)
				}
			}

			cold := newEngine()
			load(t, cold, edited)
			if slices.Equal(snapshot(cold), snapshot(running)) {
				t.Fatal("an unseeded engine compiles what the running one serves: the case keeps nothing")
			}

			for _, e := range []*Engine{running, seeded} {
				d := load(t, e, base)
				if got := d.DeletedKept; !slices.Equal(got, x.kept) {
					t.Fatalf("accepted again: deleted kept %v, want %v", got, x.kept)
				}
				if len(e.Kept()) != 0 || e.Rejected() != 0 {
					t.Fatalf("accepted again: still keeps %v (%d rejected)", keptKeys(e.Kept()), e.Rejected())
				}
			}
			if got, want := snapshot(seeded), snapshot(running); !slices.Equal(got, want) {
				t.Fatalf("accepted again, the engines differ:\n%s", diffLists(want, got))
			}
		})
	}
}

// roundTrip passes records through their stored form.
func roundTrip(t *testing.T, ks []*Kept) []*Kept {
	t.Helper()
	var out []*Kept
	for _, k := range ks {
		b, err := proto.Marshal(k.Proto(7))
		if err != nil {
			t.Fatal(err)
		}
		var p meshv1.KeptVersion
		if err := proto.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		r, err := KeptFromProto(&p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestKeptVersionDeletedWithItsObject: deleting a rejected object deletes
// its record; a seed for an object that no longer exists is dropped.
func TestKeptVersionDeletedWithItsObject(t *testing.T) {
	x := keptEdits[0]
	e := newEngine()
	load(t, e, keptMesh())
	load(t, e, editObjects(t, keptMesh(), x))
	kept := e.Kept()
	if len(kept) == 0 {
		t.Fatal("nothing kept")
	}
	for _, k := range kept {
		if err := e.Apply(k.Kind, k.NN.Namespace, k.NN.Name, nil); err != nil {
			t.Fatal(err)
		}
	}
	d := e.Compile()
	if got := d.DeletedKept; !slices.Equal(got, keptKeys(kept)) || len(e.Kept()) != 0 {
		t.Fatalf("deleted kept %v (still keeps %v), want %v", got, keptKeys(e.Kept()), keptKeys(kept))
	}

	fresh := newEngine()
	fresh.Seed(kept)
	load(t, fresh, editObjects(t, keptMesh(), x)[:0])
	if len(fresh.Kept()) != 0 || len(fresh.pol.seeds) != 0 {
		t.Fatalf("seeds of absent objects linger: kept %v, seeds %d", keptKeys(fresh.Kept()), len(fresh.pol.seeds))
	}
}

// TestSeedRefusesForeignRecords: a record of another format (another
// release) or of a kind that keeps nothing changes nothing.
func TestSeedRefusesForeignRecords(t *testing.T) {
	if _, err := KeptFromProto(&meshv1.KeptVersion{Kind: layout.KindTrafficTarget, Namespace: "a", Name: "b", Format: KeptFormat + 1, Value: []byte("{}")}); err == nil {
		t.Fatal("a record of a newer format was read")
	}
	if _, err := KeptFromProto(&meshv1.KeptVersion{Kind: layout.KindService, Namespace: "a", Name: "b", Format: KeptFormat, Value: []byte("{}")}); err == nil {
		t.Fatal("a record of a Service was read")
	}
	e := newEngine()
	errs := e.Seed([]*Kept{{Kind: layout.KindTrafficTarget, Value: []byte("[")}})
	if len(errs) != 1 || len(e.pol.seeds) != 0 {
		t.Fatalf("bad record: errors %v, seeds %d", errs, len(e.pol.seeds))
	}
}

// TestKeptFormatShape pins the shape of the kept forms: a change to one of
// them must bump KeptFormat (so that a compiler of another release compiles
// such records cold instead of reading them wrong), then update want.
func TestKeptFormatShape(t *testing.T) {
	const want = 2
	if KeptFormat != want {
		t.Fatalf("KeptFormat is %d: update want and the shapes below together", KeptFormat)
	}
	roots := []any{map[string]HTTPMatch{}, TCPMatch{}, &Target{}, &Split{}, &policy.AcceptedRetry{}, &Upstream{}, ingressPolicyJSON{}, egressPolicyJSON{}}
	var got []string
	for _, r := range roots {
		got = append(got, shapeOf(reflect.TypeOf(r), map[reflect.Type]bool{}))
	}
	wantShapes := keptShapes
	if strings.Join(got, "\n") != strings.Join(wantShapes, "\n") {
		t.Fatalf("the kept forms changed shape: bump KeptFormat and set keptShapes to\n%s", fmt.Sprintf("%#v", got))
	}
}

// shapeOf describes a type's JSON shape: kinds, exported field names and
// their shapes, recursively.
func shapeOf(t reflect.Type, seen map[reflect.Type]bool) string {
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + shapeOf(t.Elem(), seen)
	case reflect.Slice:
		return "[]" + shapeOf(t.Elem(), seen)
	case reflect.Map:
		return "map[" + shapeOf(t.Key(), seen) + "]" + shapeOf(t.Elem(), seen)
	case reflect.Struct:
		if seen[t] {
			return t.Name()
		}
		seen[t] = true
		var fs []string
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fs = append(fs, f.Name+" "+shapeOf(f.Type, seen))
		}
		sort.Strings(fs)
		return "{" + strings.Join(fs, "; ") + "}"
	}
	return t.Kind().String()
}

// keptShapes are the shapes of the kept forms of format KeptFormat.
var keptShapes = []string{
	"map[string]{Headers []{Name string; Regex string}; Key string; Methods []string; PathRegex string}",
	"{Ports []int32}",
	"*{Dest {Name string; Namespace string}; HTTP []{Headers []{Name string; Regex string}; Key string; Methods []string; PathRegex string}; HasHTTPRule bool; Sources []Identity; TCPAll bool; TCPPorts []int32}",
	"*{Apex {Name string; Namespace string}; Backends []{Service NN; Weight uint32}}",
	"*{Destinations []Subject; Policy {BackoffBase int64; NumRetries *uint32; PerTryTimeout int64; RetryOn []string}; Source {Name string; Namespace string}}",
	"*{ConnectTimeout int64; HTTPLimit *{Headers []{Name string; Value string}; StatusCode uint32; TokenBucket TokenBucket}; MaxConnections *uint32; MaxPendingRequests *uint32; MaxRequests *uint32; MaxRequestsPerConnection *uint32; MaxRetries *uint32; Outlier *{BaseEjectionTime int64; Consecutive5xx *uint32; FailurePercentage *{EnforcementPercentage uint32; MinimumHosts *uint32; RequestVolume *uint32; Threshold *uint32}; Interval int64; MaxEjectionPercent *uint32}; Routes []{Limit *HTTPLimit; PathRegex string; Timeout int64}; Service {Name string; Namespace string}; TCPLimit *{Burst uint32; Fill int64; Tokens uint32}}",
	"{Backends []{Port int32; Protocol string; SNIHosts []string; Service string; SkipClientCertValidation bool}; HTTP []{Headers []{Name string; Regex string}; Key string; Methods []string; PathRegex string}; IPRanges []string; Principals []string; Services []{Name string; Namespace string}}",
	"{HTTP []{Headers []{Name string; Regex string}; Key string; Methods []string; PathRegex string}; Hosts []string; IPRanges []string; Ports []{Number int32; Protocol string}; Sources []{Name string; Namespace string}}",
}
